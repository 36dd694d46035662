"""Pins are requests (issue 19): every set of pins that can exist gets a run; a
refusal names the pins that make it impossible; bad input ends in one line."""
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time

import pytest

import fake_llm_training as flt
from conftest import run_program

CATALOG = flt.load_catalog()


def jsonl_run(args, sim="10m"):
    out = run_program(args + ["--format", "jsonl", "--from-start", "--speed", "1e6", "--exit-after-sim", sim,
                              "--exit-after", "30s"])
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    return [e for e in events if e["event"] == "config"], [e for e in events if e["event"] == "step"]


ISSUE_CONFIGURATIONS = [
    ["--model", "Llama-3.1-405B", "--gpu-type", "H100", "--gpus", "576", "--style", "megatron", "--kind", "pretrain"],
    ["--model", "Llama-2-70B", "--gpu-type", "A100-80GB", "--gpus", "64", "--style", "hf", "--kind", "pretrain"],
    ["--model", "Llama-3.1-70B", "--gpu-type", "H100", "--gpus", "64", "--kind", "pretrain"],
]


@pytest.mark.parametrize("args", ISSUE_CONFIGURATIONS, ids=lambda a: " ".join(a[1:6:2]))
def test_published_configurations_run(args):
    configs, steps = jsonl_run(args, "1h")
    pins = dict(zip(args[::2], args[1::2]))
    c = configs[0]
    assert c["model"] == pins["--model"] and c["gpus"] == int(pins["--gpus"]) and c["kind"] == "pretrain"
    assert pins["--gpu-type"].split("-")[0] in c["gpu_type"]
    assert len(steps) >= 5 and steps[-1]["step"] > steps[0]["step"]
    assert c["total_steps"] <= 1000              # from scratch this would take years: a performance run


@pytest.mark.parametrize("framework", flt.FRAMEWORKS)
def test_a_framework_pin_never_refuses(framework):
    for seed in range(200):
        cfg = flt.make_run_config(CATALOG, seed, 1, {"framework": framework})
        assert cfg.framework == framework


def model_pins_never_refuse(seeds):
    for name in CATALOG.models:
        for seed in seeds:
            cluster = flt.make_cluster(CATALOG, seed, {"model": name})
            cfg = flt.make_run_config(CATALOG, seed, 1, {"model": name}, cluster)
            assert cfg.model == name and cfg.gpus <= cluster.nodes * cluster.gpus_per_node


def test_a_model_pin_never_refuses_quick():
    model_pins_never_refuse(range(100, 108))       # seeds 100-140 refused the 405B before


@pytest.mark.slow
def test_a_model_pin_never_refuses():
    model_pins_never_refuse(range(200))


def test_torchtitan_alone_never_draws_a_v100():
    assert flt.make_cluster(CATALOG, 56).gpu.key == "V100"      # the seed's own card lacks bf16
    cfg = flt.make_run_config(CATALOG, 56, 1, {"framework": "torchtitan"})
    assert cfg.gpu.precision == "bf16"


def test_a_model_and_card_size_the_cluster():
    assert flt.make_cluster(CATALOG, 4, {"gpu_type": "H100"}).nodes * 8 <= 32     # too small for 405B
    cfg = flt.make_run_config(CATALOG, 4, 1, {"model": "Llama-3.1-405B", "gpu_type": "H100"})
    assert cfg.model == "Llama-3.1-405B" and cfg.gpu.key == "H100"


def test_a_refusal_names_only_the_pins_given():
    out = run_program(["--model", "Llama-3.1-405B", "--gpu-type", "L40S", "--gpus", "8", "--format", "plain"])
    assert out.returncode == 2
    line = out.stderr.splitlines()[-1]
    assert "--model Llama-3.1-405B" in line and "--gpus 8" in line and "GiB short" in line
    assert "--kind" not in line and "--style" not in line and len(out.stderr.splitlines()) == 2


def test_a_rank_is_in_every_run_of_the_session():
    session = flt.Session(CATALOG, 22, {"min_gpus": 9}, from_start=True)
    runs = [session.run_at(tau) for tau in (0.0, session.first.end_tau + 1, session.first.end_tau * 3)]
    assert all(rs.cfg.gpus >= 9 for rs in runs)
    assert flt.make_run_config(CATALOG, 22, 3).gpus == 8      # without the pin a later run has 8 GPUs


REPRODUCTIONS = [
    (["--seed", "42", "--rank", "4095", "--format", "plain", "--exit-after", "2s"], 0),
    (["--seed", "22", "--rank", "8", "--format", "plain", "--speed", "1e6", "--exit-after", "3s"], 0),
    (["--start-at", "2099-01-01", "--exit-after-sim", "1m"], 2),
    (["--start-at", "99999999999999999999"], 2),
    (["--start-at", "2026-02-30"], 2),
    (["--model", ""], 2), (["--gpu-type", ""], 2), (["--exit-after", ""], 2), (["--exit-after-sim", ""], 2),
    (["--exit-after-runs", ""], 2), (["--start-at", ""], 2), (["--data-dir", ""], 2), (["--data-dir", "\n"], 2),
    (["--speed", "5e-324"], 2), (["--model\nx"], 2), (["--seed", "1", "x\ny"], 2),
]


@pytest.mark.parametrize("args,status", REPRODUCTIONS, ids=lambda a: repr(a))
def test_issue_reproductions_end_in_one_line(args, status):
    out = run_program(args, timeout=60)
    assert out.returncode == status, out.stderr
    lines = out.stderr.splitlines()
    assert lines == [] if status == 0 else (len(lines) == 2 and lines[0].startswith("usage:")), out.stderr


def test_nvidia_smi_loop_keeps_to_exit_after():
    out = run_program(["nvidia-smi", "-l", "3600", "--exit-after", "1s"], timeout=60)   # not the hour
    assert out.returncode == 0 and out.stdout.count("NVIDIA-SMI") == 1


def test_data_files_with_bom_crlf_and_stray_separators(tmp_path):
    work = str(tmp_path / "data")
    shutil.copytree(flt.DATA_DIR, work)
    path = os.path.join(work, "gpus.txt")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n"))
    assert flt.load_catalog(work).gpus == CATALOG.gpus                      # BOM and CRLF: the same table
    lines = data.decode("utf-8").split("\n")
    lines[0] = lines[0] + " \u2028 \x0c"                                   # a comment with separators splitlines breaks at
    bad = next(i for i, line in enumerate(lines) if line.startswith("H100 "))
    lines[bad] = lines[bad].replace("| 989 ", "| nan ", 1)
    with open(path, "wb") as f:
        f.write("\n".join(lines).encode("utf-8"))
    with pytest.raises(flt.DataError, match=r"gpus\.txt:%d: column tflops" % (bad + 1)):
        flt.load_catalog(work)


@pytest.mark.parametrize("pattern", ["{n[0]}", "{n.foo}", "{n:c}", "node {n}"])
def test_hostname_patterns_are_checked_at_load(tmp_path, pattern):
    work = str(tmp_path / "data")
    shutil.copytree(flt.DATA_DIR, work)
    with open(os.path.join(work, "clusters.txt"), "a") as f:
        f.write("%s | 1\n" % pattern)
    out = run_program(["--data-dir", work, "--format", "plain"])
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1 and "clusters.txt:" in out.stderr


def test_long_context_continued_pretraining_runs_with_context_parallelism():
    cfg = flt.make_run_config(CATALOG, 7, 1, {"kind": "continue", "framework": "megatron"})
    assert cfg.seq_len >= 32768 and cfg.cp > 1                  # the seed draws a long-context stage
    configs, steps = jsonl_run(["--seed", "7", "--kind", "continue", "--style", "megatron"], "30m")
    c = configs[0]
    assert c["seq_len"] == cfg.seq_len and c["cp"] == cfg.cp and len(steps) >= 5
    assert c["tp"] * c["pp"] * c["cp"] * c["dp"] == c["gpus"]         # Megatron's dp leaves cp out
    assert c["global_batch_size"] == c["micro_batch_size"] * c["dp"] * c["grad_accum_steps"]
    out = run_program(["--seed", "7", "--kind", "continue", "--style", "megatron", "--format", "plain",
                       "--from-start", "--speed", "1e6", "--exit-after-sim", "2m"])
    assert "  context_parallel_size %s %d" % ("." * 27, cfg.cp) in out.stdout
    assert "  data_parallel_size %s %d" % ("." * 30, cfg.dp) in out.stdout


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="a pseudo-terminal")
@pytest.mark.parametrize("view", ["log", "all"])
def test_the_full_screen_at_speed_1e9_keeps_to_exit_after(view):
    """Each frame reaches its moment in bounded time: 1.5 s asked, not the 35 s it took
    when the session walked every run from its start (the timeout is the test)."""
    import fcntl
    import termios
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(os.environ, TERM="xterm")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "fake_llm_training", "--seed", "496537", "--speed", "1e9",
                             "--exit-after", "1.5", "--view", view], stdin=slave, stdout=slave, stderr=slave,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env)
    os.close(slave)
    shown, deadline = b"", time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                shown += os.read(master, 65536)
            except OSError:
                break
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    os.close(master)
    assert proc.returncode == 0 and b"step" in shown
