"""It never crashes, never leaks, never touches the machine, and runs on every Python."""
import functools
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from conftest import ROOT, run_program

PYTHONS = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
PYTHONS = [p for p in PYTHONS if re.search(r"/3\.(6|7|8|9|10|11|12|13)\.", p)]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- It only pretends --------------------------------------------------------------------

WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")
FORBIDDEN_CALLS = re.compile(r"^\d+\s+(socket|connect|bind|sendto|rename|renameat2?|unlink|unlinkat|mkdir|mkdirat|"
                             r"rmdir|creat|link|symlink|truncate|uname)\(")
MACHINE_FILES = re.compile(r'"/(etc/(hostname|passwd|group|machine-id|hosts)|proc/(cpuinfo|meminfo|driver|\d+/)|'
                           r'sys/(class|devices|bus)|dev/nvidia|var/run/utmp|run/utmp)')


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed")
@pytest.mark.parametrize("args", [
    ["--format", "plain", "--seed", "3", "--speed", "100000", "--exit-after", "2s"],
    ["--format", "jsonl", "--seed", "5", "--speed", "1000000", "--exit-after-runs", "1"],
    ["nvidia-smi", "--seed", "5"],
])
def test_strace_shows_no_writes_sockets_or_machine_reads(tmp_path, args):
    # A first run lets Python cache its own bytecode; the traced run is then the program alone.
    run_program(args[:1] + ["--version"] if args[0] != "nvidia-smi" else ["--version"])
    log = str(tmp_path / "trace")
    cmd = ["strace", "-f", "-qq", "-e", "trace=%file,%network,%desc,uname", "-o", log,
           sys.executable, "-m", "fake_llm_training"] + args
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    assert out.returncode == 0, out.stderr
    problems = []
    with open(log) as f:
        for line in f:
            if re.search(r"\bopen(at)?\(", line) and WRITE_FLAGS.search(line) and "/dev/null" not in line:
                problems.append(line)
            if FORBIDDEN_CALLS.search(line) or MACHINE_FILES.search(line):
                problems.append(line)
    assert not problems, "".join(problems[:10])


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info < (3, 8), reason="audit hooks need Python 3.8")
def test_audit_hooks_see_no_writes_sockets_or_processes():
    driver = textwrap.dedent("""
        import io, sys
        seen = []
        def hook(event, args):
            if event == "open" and args[1] and any(c in str(args[1]) for c in "wax+"):
                seen.append((event, args[0], args[1]))
            elif event.startswith(("socket.", "subprocess.", "os.rename", "os.remove", "os.unlink", "os.mkdir",
                                   "os.rmdir", "os.system", "os.exec", "os.posix_spawn", "os.fork", "shutil.")):
                seen.append((event, args))
        sys.addaudithook(hook)
        import fake_llm_training as f
        out = io.StringIO()
        sys.stdout = out
        status = f.main(["--format", "jsonl", "--seed", "13", "--speed", "1000000", "--exit-after-runs", "1"])
        status2 = f.main(["nvidia-smi", "--seed", "13"])
        sys.stdout = sys.__stdout__
        print(status, status2, len(out.getvalue().splitlines()), seen)
    """)
    out = subprocess.run([sys.executable, "-c", driver], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    status, status2, lines, seen = out.stdout.strip().split(" ", 3)
    assert (status, status2) == ("0", "0") and int(lines) > 1000
    assert seen == "[]"


# ---- Days of running -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the resident size from /proc (Linux)")
def test_four_simulated_days_with_flat_memory():
    """Days of runs (incidents often: crashes, restarts, new jobs) in fast-forward; the
    resident size after the first seconds stays within a few MiB to the end."""
    proc = subprocess.Popen([sys.executable, "-m", "fake_llm_training", "--format", "plain", "--seed", "99",
                             "--speed", "1000000000", "--incidents", "often", "--exit-after-sim", "96h"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    samples, lines = [], 0
    try:
        for line in proc.stdout:
            lines += 1
            if lines % 2000 == 0:
                samples.append(rss_kib(proc.pid))
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr.read()
    assert lines > 20000 and len(samples) >= 10
    first, rest = samples[len(samples) // 5], samples[len(samples) // 5:]
    assert max(rest) - first < 4 * 1024, "resident size grew from %d KiB to %d KiB" % (first, max(rest))


# ---- Windows and other platforms ----------------------------------------------------------

def test_runs_without_posix_only_names_and_without_curses():
    driver = textwrap.dedent("""
        import signal, sys
        for name in ("SIGHUP", "SIGQUIT", "SIGTSTP", "SIGWINCH"):
            if hasattr(signal, name):
                delattr(signal, name)
        for name in ("curses", "_curses", "termios", "fcntl"):
            sys.modules[name] = None          # import fails, as on Windows without windows-curses
        import fake_llm_training as f
        catalog = f.load_catalog()
        parser = f.build_parser("fake_llm_training")
        args = f.resolve_args(parser.parse_args(["--seed", "3", "--speed", "5000", "--exit-after", "1s"]), catalog)
        f.install_signal_handlers()
        session = f.Session(catalog, args.seed, args.pins, args.incidents, args.from_start)
        sys.exit(f.run_screen(session, args, "fake_llm_training"))
    """)
    out = subprocess.run([sys.executable, "-c", driver], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install windows-curses" in out.stderr and len(out.stderr.splitlines()) == 1
    assert len(out.stdout.splitlines()) > 5 and "\x1b" not in out.stdout
    assert not any(line.startswith('{"event"') for line in out.stdout.splitlines())


def test_source_needs_nothing_newer_than_python_3_6():
    vermin = shutil.which("vermin")
    if not vermin:
        pytest.skip("vermin is not installed (tests/run.sh installs it)")
    out = subprocess.run([vermin, "--target=3.6-", "--violations", "--no-tips", "--eval-annotations",
                          "fake_llm_training.py"], cwd=ROOT, stdout=subprocess.PIPE, universal_newlines=True)
    assert out.returncode == 0, out.stdout


# ---- Every Python ------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def step_lines(python=None):
    """The step records of seed 7's whole first run, as `python` writes them."""
    jsonl = run_program(["--format", "jsonl", "--seed", "7", "--speed", "1000000", "--exit-after-runs", "1"],
                        python=python)
    assert jsonl.returncode == 0, jsonl.stderr
    return [l for l in jsonl.stdout.splitlines() if '"event": "step"' in l]


@pytest.mark.slow
@pytest.mark.skipif(not PYTHONS, reason="no pyenv Pythons on this machine")
@pytest.mark.parametrize("python", PYTHONS, ids=lambda p: p.split("/")[-3])
def test_plain_and_jsonl_on_every_python(python):
    plain = run_program(["--format", "plain", "--seed", "7", "--speed", "3000", "--exit-after", "1s"], python=python)
    assert plain.returncode == 0, plain.stderr
    assert len(plain.stdout.splitlines()) > 5
    steps = step_lines(python)
    assert steps and steps == step_lines()          # the same records as this interpreter's, once computed


@pytest.mark.slow
@pytest.mark.skipif(not PYTHONS or not shutil.which("tmux"), reason="needs pyenv Pythons and tmux")
@pytest.mark.parametrize("python", PYTHONS, ids=lambda p: p.split("/")[-3])
def test_screen_and_q_on_every_python(python, tmp_path):
    sock = "flt-py-" + uuid.uuid4().hex[:8]
    status = tmp_path / "status"
    cmd = "cd %s && %s -m fake_llm_training --seed 5 --no-color; echo $? > %s" % (ROOT, python, status)
    tmux = ["tmux", "-L", sock]
    subprocess.check_call(tmux + ["new-session", "-d", "-x", "100", "-y", "30", cmd])
    try:
        deadline = time.monotonic() + 15
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(tmux + ["capture-pane", "-p"], stdout=subprocess.PIPE,
                                    universal_newlines=True).stdout
            if "CLUSTER" in screen and " step " in screen:
                break
            time.sleep(0.2)
        assert "CLUSTER" in screen and " step " in screen, screen
        subprocess.check_call(tmux + ["send-keys", "q"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not status.exists():
            time.sleep(0.1)
        assert status.read_text().strip() == "0"
    finally:
        subprocess.call(tmux + ["kill-server"], stderr=subprocess.DEVNULL)
