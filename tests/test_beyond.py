"""Runs already in progress, incidents, panes that agree, and the nvidia-smi look-alike."""
import json
import re
import subprocess
import sys
import time

import pytest

import fake_llm_training as flt
from conftest import CATALOG, EPOCH, ROOT, frame_at, run_program, text_of


def jsonl_steps(seed, *extra):
    out = run_program(["--format", "jsonl", "--seed", str(seed), "--speed", "1000000", "--exit-after-runs", "1"]
                      + list(extra))
    assert out.returncode == 0, out.stderr
    return [json.loads(l) for l in out.stdout.splitlines()]


def test_a_session_joins_a_run_in_progress_with_its_history():
    lines = frame_at(5, 120, 40)
    text = text_of(lines)
    log = [l.text for l in lines[1:21]]
    assert all(l.strip() for l in log), "the log region is full from the first frame"
    stamps = re.findall(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\]", "\n".join(log))
    assert stamps and all(s < time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH)) for s in stamps)
    step = int(re.search(r" step (\d+)/(\d+)", text).group(1))
    assert re.search(r"step 0-%d\b" % step, text), "the chart covers the run since step 0"
    rs = flt.Session(CATALOG, 5, {}, "rare").current
    since = max(-1, rs.offset - 2 * rs.cfg.ckpt_interval * rs.cfg.step_time_s)     # two intervals back
    saved = [ev.data["step"] for ev in flt.run_events(rs.timeline, since, rs.offset, every_step=False)
             if ev.kind == "checkpoint"]
    assert saved, "a run joined this far in has saved before"
    assert saved[-1] == flt.last_checkpoint_step(rs.cfg, step)     # what Ctrl-C reports as kept
    # the stream joins the same run at the same moment: a frame 2 s in shows the step it printed
    events = jsonl_steps(5, "--exit-after-sim", "30s")
    later = text_of(frame_at(5, 120, 40, tau=2.0))
    step = int(re.search(r" step (\d+)/(\d+)", later).group(1))
    by_step = {e["step"]: e for e in events if e["event"] == "step"}
    assert min(by_step) <= step <= max(by_step), (step, min(by_step))
    assert abs(by_step[step]["loss"] - float(re.search(r"loss (\d+\.\d{4}) \|", later).group(1))) <= 5e-5
    tokens = re.search(r"([\d.]+[KMBT])/([\d.]+[KMBT]) tok", later).group(1)
    assert tokens == flt.fmt_tokens(step * events[0]["tokens_per_step"])


def test_a_save_in_the_visible_log_names_the_checkpoint_kept():
    rs = flt.Session(CATALOG, 5, {}, "rare").current          # Megatron: "successfully saved checkpoint"
    events = flt.run_events(rs.timeline, rs.offset, rs.timeline.duration, every_step=False)
    saved = [ev for ev in events if ev.kind == "checkpoint"][0]
    text = text_of(frame_at(5, 120, 40, tau=saved.t - rs.offset + 1.0))      # a second after the first save
    history = [l for l in text.splitlines() if "successfully saved checkpoint" in l]
    assert history, text
    step = int(re.search(r" step (\d+)/(\d+)", text).group(1))
    assert int(re.search(r"iteration\s+(\d+)", history[-1]).group(1)) == flt.last_checkpoint_step(rs.cfg, step)


def test_the_default_start_point_is_the_same_for_a_seed():
    a = jsonl_steps(14)
    b = jsonl_steps(14)
    first = [e for e in a if e["event"] == "step"][0]
    assert first == [e for e in b if e["event"] == "step"][0]
    assert first["step"] > a[0]["start_step"] + 10         # joined mid-run, not at launch


def forced(seed, kind, at_fraction=0.5, pins=None):
    session = flt.Session(CATALOG, seed, pins or {}, "off", from_start=True)
    rs = session.current
    cfg = rs.cfg
    step = cfg.start_step + int((cfg.total_steps - cfg.start_step) * at_fraction)
    rs = flt.RunState(rs.base_cfg, rs.incident_rate, rs.start_tau, rs.offset, [(kind, step)])
    ctx = flt.LogContext(rs, EPOCH)
    events = flt.run_events(rs.timeline, -1, rs.timeline.duration)
    lines = [text for ev in events for _, text in flt.event_lines(ctx, ev)]
    return rs, step, events, lines


def test_straggler_slows_steps_and_its_node_without_a_made_up_message():
    rs, at, events, lines = forced(6, "straggler")
    first, last, factor, node = rs.timeline.incidents.stragglers[0]
    assert not any("slow rank" in l or "straggler" in l.lower() for l in lines)    # no framework says so
    times = {e.data.step: e.data.step_time_s for e in events if e.kind == "step"}
    assert times[first + 2] > 1.2 * times[first - 2]
    t_slow = rs.timeline.step_end(rs.timeline.train_segments()[0], first + 5)
    slow = rs.telemetry.reading(node * rs.cfg.gpus_per_node, t_slow)
    other = rs.telemetry.reading(((node + 1) % rs.cfg.nodes) * rs.cfg.gpus_per_node, t_slow)
    assert slow.util < other.util and slow.power_w < other.power_w


def test_loss_spike_comes_with_a_grad_norm_spike_and_recovers():
    rs, at, events, lines = forced(6, "spike")
    steps = {e.data.step: e.data for e in events if e.kind == "step"}
    assert steps[at].loss > 1.2 * steps[at - 3].loss and steps[at].grad_norm > 4 * steps[at - 3].grad_norm
    assert steps[at + 60].loss < 1.05 * steps[at - 3].loss
    assert not any("loss spike" in l for l in lines)        # it shows in the loss, not in a message


def test_gpu_failure_kills_the_job_and_it_resumes_from_the_checkpoint():
    rs, at, events, lines = forced(8, "crash")
    crash = rs.timeline.incidents.crashes[0]
    seg = [s for s in rs.timeline.segments if s.phase == "crash"][0]
    failed = rs.telemetry.reading(crash[1], seg.t0 + 5)
    assert failed.failed and failed.util == 0
    text = "\n".join(lines)
    assert "uncorrectable ECC error encountered" in text and "Watchdog caught collective operation timeout" in text
    restarts = [l for l in lines if "NCCL INFO NCCL version" in l]
    assert len(restarts) == 2                                  # NCCL initialised again after the restart
    resumed = rs.timeline.train_segments()[1]
    steps = [e.data for e in events if e.kind == "step"]
    redone = [m for m in steps if m.attempt == 1]
    assert redone[0].step == resumed.first + 1 and redone[-1].step == rs.cfg.total_steps
    assert all(m.tokens_seen == m.step * rs.cfg.tokens_per_step for m in steps)
    summary = [e for e in events if e.kind == "summary"][0].data
    assert summary["restarts"] == 1 and summary["wall_s"] == rs.timeline.duration - flt.SUMMARY_SECONDS
    assert summary["steps_redone"] == crash[0] - resumed.first


DRAINED = ["--seed", "911", "--incidents", "often", "--from-start", "--exit-after-sim", "47m", "--speed", "1000000"]
# seed 911: a 16-node Megatron job whose GPU on its first nodes fails ~20 min in; the others hang for
# Megatron's 10-minute watchdog timeout; requeued, it trains again at ~45 min (2727, used before, draws a
# long-context stage since they joined the draw)


def scheme(host):
    return re.sub(r"\d+", "#", host)


def test_a_drained_node_comes_back_as_a_spare_of_the_same_cluster():
    out = run_program(["--format", "jsonl"] + DRAINED)
    events = [json.loads(l) for l in out.stdout.splitlines()]
    launches = [e for e in events if e["event"] == "phase" and e["phase"] == "launch"]
    xid = [e for e in events if e["event"] == "xid"][0]
    queue = [e for e in events if e["event"] == "phase" and e["phase"] == "queue"][0]
    before, after = launches[0]["hostnames"], launches[1]["hostnames"]
    node, drained = xid["node"], xid["host"]
    assert len(before) > 1 and before[node] == drained and queue["drained"] == drained
    spare = after[node]
    assert spare != drained and spare not in before and scheme(spare) == scheme(drained)
    assert after[:node] + after[node + 1:] == before[:node] + before[node + 1:]    # the other nodes stay
    assert [e for e in events if e["event"] == "phase" and e["phase"] == "train"][-1]["attempt"] == 1
    steps = [e["step"] for e in events if e["event"] == "step"]
    redone = [e for e in events if e["event"] == "step_redone"]
    assert steps == sorted(set(steps)), "step events only move forward, as a metrics logger keeps them"
    resumed = [e for e in events if e["event"] == "phase" and e["phase"] == "train"][-1]["step"]
    assert redone and [e["step"] for e in redone] == list(range(resumed + 1, resumed + 1 + len(redone)))
    assert redone[-1]["step"] <= xid["step"]              # from the checkpoint on, up to where the GPU failed
    first = {e["step"]: e for e in events if e["event"] == "step"}
    assert all(e["loss"] == first[e["step"]]["loss"] and e["attempt"] == 1 for e in redone)   # the same data again
    text = run_program(["--format", "plain"] + DRAINED).stdout
    crash = text.index("uncorrectable ECC error encountered")
    restart = text.index("NCCL INFO NCCL version", crash)
    assert drained in text[:crash] and spare not in text[:crash]
    assert spare in text[restart:] and drained not in text[restart:]
    assert "host      : %s" % drained in text[crash:restart]


@pytest.mark.slow
def test_every_failure_drains_its_node_and_the_choice_is_the_seeds():
    def hosts():
        session = flt.Session(CATALOG, 39, {"framework": "deepspeed"}, "off", from_start=True)
        rs = session.current
        cfg = rs.cfg
        span = cfg.total_steps - cfg.start_step
        forced = [("crash", cfg.start_step + span // 3), ("crash", cfg.start_step + 2 * span // 3)]
        rs = flt.RunState(rs.base_cfg, rs.incident_rate, rs.start_tau, rs.offset, forced)
        return rs, rs.timeline.hosts
    rs, seen = hosts()
    assert seen == hosts()[1] and len(seen) == 3
    cluster = rs.cfg.cluster
    for old, new in zip(seen, seen[1:]):
        changed = [i for i in range(len(old)) if old[i] != new[i]]
        assert len(changed) == 1 and new[changed[0]] not in old
        assert new[changed[0]] >= cluster.first_node + cluster.nodes      # from the spare pool, not a job's node
    assert seen[2][:] != seen[0][:] and len(set(seen[0]) | set(seen[1]) | set(seen[2])) == len(seen[0]) + 2
    ctx = flt.LogContext(rs, EPOCH)
    lines = [t for ev in flt.run_events(rs.timeline, -1, rs.timeline.duration) for _, t in flt.event_lines(ctx, ev)]
    text = "\n".join(lines)
    assert "torch.distributed.elastic" not in text          # DeepSpeed's own launcher tears the job down
    assert text.count("exits with return code = -6") == 2 and "ChildFailedError" not in text
    if rs.cfg.nodes > 1:
        assert text.count("ssh exited with exit code 250") == 2
        workers = [l for l in lines if "Running on the following workers:" in l]
        assert [w.split(": ")[-1].split(",") for w in workers] == [
            [rs.cfg.hostname.format(n=n) for n in h] for h in seen]


def test_the_screen_names_the_drained_node_and_then_shows_its_spare():
    rs = flt.Session(CATALOG, 39, {}, "often", from_start=True).current
    tl = rs.timeline
    queue, resumed = [s for s in tl.segments if s.phase == "queue"][0], tl.train_segments()[1]
    node = [i for i, (a, b) in enumerate(zip(tl.hosts[0], tl.hosts[1])) if a != b][0]
    drained, spare = tl.hostname(node, 0), tl.hostname(node, 1)

    def screen(t, view):
        ui = flt.Ui()
        ui.view = view
        return text_of(flt.render_frame(flt.ScreenState(rs, t, EPOCH, [], ui), 120, 40))
    assert drained in screen(queue.t0 - 30, "gpus") and spare not in screen(queue.t0 - 30, "gpus")
    assert "requeued, %s drained: waiting for nodes" % drained in screen((queue.t0 + queue.t1) / 2, "all")
    after = screen(resumed.t0 + 60, "gpus")
    assert spare in after and drained not in after


def test_fp16_runs_back_off_the_loss_scale_and_skip_iterations():
    events = jsonl_steps(3, "--gpu-type", "V100", "--framework", "megatron", "--kind", "pretrain", "--from-start",
                         "--exit-after-sim", "3h")            # the first thousands of steps of a long run
    logs = [e["text"] for e in events if e["event"] == "log" and re.search(r" iteration +\d+/", e["text"])]
    scales = [float(re.search(r"loss scale: ([\d.]+)", l).group(1)) for l in logs]
    skipped = [int(re.search(r"skipped iterations:\s+(\d+)", l).group(1)) for l in logs]
    assert scales[0] > scales[-1] >= 2 ** 13 and sum(skipped) >= 10
    steps = [e for e in events if e["event"] == "step"]
    rises = [(a, b) for a, b in zip(steps, steps[1:]) if b["loss_scale"] > a["loss_scale"]]
    assert rises, "after a stretch without overflow the scaler doubles the scale again"
    overflows = [e["step"] for e in steps if e["skipped"]]
    for a, b in rises:          # a doubling comes 1000 clean steps (Megatron's window) after an overflow
        last = max([o for o in overflows if o <= b["step"]] or [0])
        assert b["step"] - last >= 1000 and b["loss_scale"] == 2 * a["loss_scale"]


def test_deepspeed_fp16_overflows_spend_hysteresis_then_halve_and_count_as_skipped():
    events = jsonl_steps(4, "--gpu-type", "V100", "--framework", "deepspeed", "--kind", "pretrain", "--from-start",
                         "--exit-after-sim", "3h")
    logs = [e["text"] for e in events if e["event"] == "log"]
    said = [re.search(r"OVERFLOW! Rank 0 Skipping step\. Attempted loss scale: (\d+), (but hysteresis|reducing to (\d+))",
                      l) for l in logs]
    said = [m for m in said if m]
    assert said and said[0].group(2) == "but hysteresis"      # hysteresis 2: the first overflow keeps the scale
    for m in said:
        assert m.group(3) is None or int(m.group(3)) * 2 == int(m.group(1))
    counts = [(int(m.group(1)), int(m.group(2))) for m in
              (re.search(r"step=(\d+), skipped=(\d+)", l) for l in logs) if m]
    overflow_steps = [e["step"] for e in events if e["event"] == "step" and e["skipped"]]
    assert counts[-1][1] == len([s for s in overflow_steps if s <= counts[-1][0]]) == len(said)


def run_now(args):
    return subprocess.Popen([sys.executable, "-m", "fake_llm_training"] + args, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


@pytest.mark.slow
def test_two_processes_with_one_seed_and_start_time_agree():
    start = "%.3f" % (time.time() - 1000 * 900)            # at speed 0.001 the run stands at t = 900 s
    for attempt in range(3):
        a = run_now(["nvidia-smi", "--seed", "23", "--start-at", start, "--speed", "0.001", "--node", "1"])
        b = run_now(["nvidia-smi", "--seed", "23", "--start-at", start, "--speed", "0.001", "--node", "1"])
        out_a, out_b = a.communicate(timeout=30)[0], b.communicate(timeout=30)[0]
        if out_a.splitlines()[0] == out_b.splitlines()[0]:  # the same second on the wall clock
            break
    assert a.returncode == 0 and out_a == out_b and "MiB" in out_a


# The 570-driver nvidia-smi layout, measured on public nvidia-smi 570.133.20 output of an
# 8x H100 80GB HBM3 node (91 columns; `|`/`+` at 0, 42, 67 and 90 in the GPU table; the
# processes table with PID ending at column 32, type at 39, name from 43, memory ending at 88).
SMI_SEPARATORS = [0, 42, 67, 90]          # drivers 550 and later: 91 columns
SMI_SEPARATORS_535 = [0, 42, 65, 88]      # driver 535: the middle column two narrower
SMI_HEADER = re.compile(r"^\| NVIDIA-SMI (\S+) +Driver Version: (\S+) +CUDA Version: (\S+) +\|$")
SMI_ROW1 = re.compile(r"^\| +(\d+)  (.{27}) +(On|Off) +\| +([0-9A-F]{8}:[0-9A-F]{2}:00\.0) (Off|On) \| +(\S+) \|$")
SMI_ROW2 = re.compile(r"^\| N/A +(\d+)C +(P\d) +(\d+)W / +(\d+)W \| +(\d+)MiB / +(\d+)MiB \| +(\d+)% +Default \|$")
SMI_PROC = re.compile(r"^\| +(\d+) +N/A +N/A +(\d+) +C +(\S+) +(\d+)MiB \|$")


@pytest.mark.slow
def test_nvidia_smi_matches_the_real_layout_and_the_run():
    start = "%.3f" % (time.time() - 1000 * 600)            # the run (from its start) stands at t = 600 s
    out = run_program(["nvidia-smi", "--seed", "5", "--from-start", "--start-at", start, "--speed", "0.001"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.match(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} {7}$", lines[0])
    table = lines[1:]
    stack = flt.make_cluster(flt.load_catalog(), 5).stack           # the session's driver, as the run knows it
    assert stack.driver.startswith("535.")                          # seed 5: the narrower 535 table
    assert all(len(l) == 89 for l in table if l.strip()), [l for l in table if len(l) != 89][:3]
    assert SMI_HEADER.match(table[1]).groups() == (stack.driver, stack.driver, stack.driver_cuda)
    gpu_rows = [l for l in table[6:] if l.startswith(("| ", "+-", "|=")) and "Processes" not in l][:33]
    for l in gpu_rows:
        assert [i for i, c in enumerate(l) if c in "|+"] == SMI_SEPARATORS_535, l
    row1 = [SMI_ROW1.match(l) for l in table if SMI_ROW1.match(l)]
    row2 = [SMI_ROW2.match(l) for l in table if SMI_ROW2.match(l)]
    procs = [SMI_PROC.match(l) for l in table if SMI_PROC.match(l)]
    assert len(row1) == len(row2) == len(procs) == 8
    for l in table:
        if SMI_PROC.match(l):
            assert l[17:27].strip().isdigit() and l[33] == "C" and l[37:53] == "/usr/bin/python3" and l[86] == "B"
    stream = jsonl_steps(5, "--from-start", "--exit-after-sim", "11m")     # the readings at t = 600 s
    samples = {e["gpu"]: e for e in stream if e["event"] == "gpu" and e["t"] == 600.0}
    for i, m in enumerate(row2):
        temp, perf, power, cap, used, total, util = m.groups()
        s = samples[i]
        assert (int(temp), int(power), int(cap), int(used), int(total), int(util)) == \
               (s["temp_c"], s["power_w"], s["power_limit_w"], s["mem_used_mib"], s["mem_total_mib"], s["util"])
        assert int(procs[i].group(4)) <= int(used) and row1[i].group(2).strip() == stream[0]["gpu_type"]


@pytest.mark.slow
def test_nvidia_smi_loops_and_rejects_a_missing_node():
    out = run_program(["nvidia-smi", "--seed", "5", "-l", "1", "--exit-after", "2s"], timeout=30)
    driver = flt.make_cluster(flt.load_catalog(), 5).stack.driver
    assert out.returncode == 0 and out.stdout.count("NVIDIA-SMI %s" % driver) >= 2
    bad = run_program(["nvidia-smi", "--seed", "5", "--node", "400"], timeout=30)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_tmux_flag_outside_tmux_is_a_clear_error():
    out = run_program(["--tmux", "--seed", "3"], env={"TMUX": ""})
    assert out.returncode == 2 and "inside a tmux session" in out.stderr
