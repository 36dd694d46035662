"""The command line as a user meets it: flags, data files, formats (packaging: test_packaging.py)."""
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_program

BAD_FLAGS = [
    (["--speed", "fast"], "--speed must be a number"),
    (["--speed", "0"], "--speed must be from 0.001 to 1e+09"),
    (["--speed", "-3"], "--speed must be from 0.001 to 1e+09"),
    (["--gpus", "0"], "--gpus must be between 1 and 4096"),
    (["--gpus", "1000000"], "--gpus must be between 1 and 4096"),
    (["--gpus", "12"], "multiple of 8"),
    (["--gpus", "eight"], "whole number"),
    (["--seed", "x"], "--seed must be a whole number"),
    (["--exit-after", "soon"], "bad duration"),
    (["--exit-after", "0s"], "out of range"),
    (["--exit-after-runs", "0"], "--exit-after-runs must be between"),
    (["--model", "Lama-3.1-8B"], "did you mean Llama-3.1-8B"),
    (["--gpu-type", "H10"], "did you mean"),
    (["--format", "html"], "invalid choice"),
    (["--style", "keras"], "invalid choice"),
    (["--start-at", "yesterday"], "bad --start-at"),
    (["--model", "Llama-3.1-405B", "--gpu-type", "L40S", "--gpus", "8"], "does not fit"),
]


@pytest.mark.parametrize("args,message", BAD_FLAGS)
def test_bad_flags_exit_2_with_one_line(args, message):
    out = run_program(args + ["--format", "plain", "--exit-after", "1s"] if "--exit-after" not in args
                      else args + ["--format", "plain"], timeout=30)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("usage:")
    assert len([l for l in out.stderr.splitlines() if "error" in l]) == 1


def make_data(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(os.path.join(ROOT, "data"), str(data))
    return data


def replace_line(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


DATA_ERRORS = [
    ("gpus.txt", "| 989    |", "| lots   |", r"gpus\.txt:\d+: column tflops"),
    ("models.txt", "| 14336      | 128256 | 131072  | no   | swiglu | -       | -",
     "| 14336      | 128256 | 131072  | no   | swiglu | -", r"models\.txt:\d+: expected 14 columns"),
    ("models.txt", "Llama-2-7B        |", "Llama-2-13B       |", r"models\.txt:\d+: duplicate name"),
    ("datasets.txt", "name ", "title ", r"datasets\.txt:\d+: header must name the columns"),
    ("nicknames.txt", "| Llama-3.1-8B", "| Llama-9-8B", r"nicknames\.txt:\d+: shape 'Llama-9-8B'"),
]


@pytest.mark.parametrize("name,old,new,pattern", DATA_ERRORS)
def test_data_file_errors_name_file_and_line(tmp_path, name, old, new, pattern):
    data = make_data(tmp_path)
    replace_line(data / name, old, new)
    out = run_program(["--data-dir", str(data), "--format", "plain"], timeout=30)
    assert out.returncode == 1
    assert re.search(pattern, out.stderr), out.stderr
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr


def test_invalid_utf8_empty_file_and_missing_directory(tmp_path):
    data = make_data(tmp_path)
    (data / "clusters.txt").write_bytes(b"hostname | first\nnode\xff{n} | 1\n")
    out = run_program(["--data-dir", str(data)], timeout=30)
    assert out.returncode == 1 and re.search(r"clusters\.txt:2: not valid UTF-8", out.stderr)
    (data / "clusters.txt").write_text("# nothing here\n")
    out = run_program(["--data-dir", str(data)], timeout=30)
    assert out.returncode == 1 and "clusters.txt:1: no records" in out.stderr
    out = run_program(["--data-dir", str(tmp_path / "nowhere")], timeout=30)
    assert out.returncode == 1 and "data directory not found" in out.stderr


def test_user_data_dir_adds_a_model(tmp_path):
    data = make_data(tmp_path)
    with open(str(data / "nicknames.txt"), "a") as f:
        f.write("Meeting-Summarizer-70B     | Llama-3.1-70B\n")
    out = run_program(["--data-dir", str(data), "--list-models", "--fun"], timeout=30)
    assert out.returncode == 0 and "Meeting-Summarizer-70B" in out.stdout


def test_lists_and_version():
    models = run_program(["--list-models"])
    assert "Llama-3.1-405B" in models.stdout and "405.85B" in models.stdout
    gpus = run_program(["--list-gpus"])
    assert "NVIDIA H100 80GB HBM3" in gpus.stdout and "81559MiB" in gpus.stdout
    version = run_program(["--version"])
    assert re.match(r"fake_llm_training \d+\.\d+\.\d+", version.stdout)


@pytest.mark.slow
def test_plain_output_to_a_file_has_no_escape_sequences():
    out = run_program(["--format", "plain", "--seed", "4", "--speed", "2000", "--exit-after", "3s"])
    assert out.returncode == 0
    assert len(out.stdout.splitlines()) > 20
    assert "\x1b" not in out.stdout
    # without --format, piped stdout also gets plain text
    auto = run_program(["--seed", "4", "--speed", "2000", "--exit-after", "2s"])
    assert auto.returncode == 0 and "\x1b" not in auto.stdout and len(auto.stdout.splitlines()) > 5
    assert not any(line.startswith('{"event"') for line in auto.stdout.splitlines())     # log lines, not JSON


@pytest.mark.slow
def test_exit_after_ends_on_time_at_speed_one():
    started = time.monotonic()
    out = run_program(["--format", "plain", "--seed", "8", "--exit-after", "3s"])
    elapsed = time.monotonic() - started
    assert out.returncode == 0
    assert 2.9 <= elapsed < 4.5


def test_closed_stdout_ends_quietly():
    proc = subprocess.Popen("'%s' -m fake_llm_training --format plain --seed 3 --speed 1000 | head -5"
                            % sys.executable, shell=True, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    out, err = proc.communicate(timeout=60)
    assert len(out.splitlines()) == 5
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_start_at_too_far_back_for_the_speed_is_refused():
    out = run_program(["--start-at", "2020-01-01T00:00:00Z", "--speed", "5", "--format", "plain"], timeout=30)
    assert out.returncode == 2 and "too far in the past" in out.stderr


def test_a_mistyped_flag_prints_the_short_usage_and_the_name_it_was_run_as():
    out = run_program(["--bad"], timeout=30)
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["usage: fake_llm_training [options]   (fake_llm_training --help lists them)",
                                       "fake_llm_training: error: unrecognized arguments: --bad"]


def test_the_console_script_names_itself(tmp_path):
    script = tmp_path / "fake-llm-training"
    script.write_text("import sys\nsys.path.insert(0, %r)\nimport fake_llm_training\n"
                      "fake_llm_training.entry_point()\n" % ROOT)
    out = subprocess.run([sys.executable, str(script), "--bad"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=30)
    assert out.returncode == 2 and "fake-llm-training: error: unrecognized arguments: --bad" in out.stderr


def test_nvidia_smi_help_lists_only_its_own_flags():
    out = run_program(["nvidia-smi", "--help"], timeout=30)
    assert out.returncode == 0
    listed = set(re.findall(r"^\s+(?:-\w \w+, )?(--[\w-]+)", out.stdout, re.M))
    assert {"--seed", "--start-at", "--node", "--loop", "--model"} <= listed, listed
    assert not listed & {"--view", "--format", "--tmux", "--unicode", "--rank", "--list-models",
                         "--exit-after-runs", "--no-color"}, listed
