#!/usr/bin/env python3
"""Benchmark of fake_llm_training, measured from outside the process.

Run it from the repository root:

    python3 bench/bench.py            # full run, about 6 minutes
    python3 bench/bench.py --quick    # smoke run for CI, under about 45 seconds

Standard library only; Linux (or another Unix with /proc) for the best
figures; Python 3.6 or newer.  Every figure is taken from outside the program:
the bench starts `python3 -m fake_llm_training` as a child, in a pseudo
terminal for the full screen or with a pipe for plain text and JSON lines, and
reads the child's CPU time, memory and output.

Figures:

1. time to the first full frame in a 120x40 pty (the GPU panel's `CLUSTER`
   line and the footer's ` step N/M` have been written), median of 5, next to
   a bare `python3 -c pass` started the same way, and again without a
   bytecode cache (a read-only copy, PYTHONDONTWRITEBYTECODE): the module is
   compiled on every start;
2. CPU seconds per wall second of the full screen at speed 1 for several GPU
   counts and terminal sizes, start-up (the first 2 s, or until the first
   frame) left out; likewise of `--format plain` and `--format jsonl` written
   to a pipe at speed 1 for 64 and 1024 GPUs (start-up: the first 2 s);
3. bytes written to the terminal per second in the same runs;
4. peak resident memory (ru_maxrss) of the same full-screen runs, and of
   `--format jsonl` (64 and 1024 GPUs) and `--format plain` (64 GPUs) at
   speed 1,000,000, their output read and discarded by the bench;
5. fast-forward throughput: lines per CPU second of the JSON-lines output at
   speed 1,000,000 (every step, every GPU every 10 simulated seconds, every log
   line), and optimizer steps per CPU second of the simulation core alone
   (step_metrics called in a loop, no output);
6. resident memory of a long fast-forward soak, after the first run ended and
   at the end;
7. CPU milliseconds from a fresh session to the state (run, moment, GPU readings)
   an hour, a month and a year into it, median and worst of 11 seeds.

Each figure is printed next to its target, then the lot again as a markdown
table for the README.  The exit status is 0 whatever the figures; it is 1
only when the program does not run at all.
"""

from __future__ import print_function

import argparse
import errno
import fcntl
import hashlib
import json
import os
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable or "python3"
PROGRAM = [PYTHON, "-m", "fake_llm_training"]

# Targets
FIRST_FRAME_MS = 150.0
FIRST_FRAME_VS_BARE = 3.0
CPU_64_120x40 = 1.0          # percent of one core
CPU_1024_200x60 = 2.0
CPU_PIPE = 1.0               # plain and jsonl to a pipe at speed 1: they sleep between writes
BYTES_PER_S = 2000.0          # 2 KB/s
PEAK_RSS_MIB = 30.0
JSONL_LINES_PER_CPU_S = 50000.0   # every step, every GPU every 10 simulated s, every log line
CORE_STEPS_PER_CPU_S = 50000.0
SOAK_FLAT_MIB = 4.0           # "within a few MiB"

SETTLE_S = 2.0                # start-up left out of the steady-state figures
SETTLE_MAX_S = 6.0            # ... unless the first frame is slower than that
HWM_POLL_S = 0.1              # how often a child's peak resident size (VmHWM) is read

# The first full frame: the GPU panel's first line, then the footer's progress.
FULL_FRAME = re.compile(br"CLUSTER.*? step \d+/\d+", re.S)

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# Settings of the caller's environment that would measure something other
# than the program as people run it (PYTHONUNBUFFERED turns every write of the
# JSON lines into a system call; PYTHONDONTWRITEBYTECODE compiles the module
# on every start).  They are left out of the children's environment.
SKEWING_VARS = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONDEVMODE", "PYTHONMALLOC",
                "PYTHONMALLOCSTATS", "PYTHONTRACEMALLOC", "PYTHONPROFILEIMPORTTIME", "PYTHONVERBOSE",
                "PYTHONINSPECT", "PYTHONWARNINGS", "PYTHONOPTIMIZE", "PYTHONDEBUG", "PYTHONSTARTUP",
                "PYTHONPYCACHEPREFIX", "LINES", "COLUMNS", "NO_COLOR")
DROPPED = [name for name in SKEWING_VARS if name in os.environ]
PYCACHE = tempfile.mkdtemp(prefix="fake_llm_bench_")   # compiled bytecode, outside the repo
NO_CACHE = tempfile.mkdtemp(prefix="fake_llm_bench_cold_")   # stays empty: nothing is written there
# A start without a bytecode cache, as from a read-only copy or with
# PYTHONDONTWRITEBYTECODE: the module is compiled on every start (Python 3.8+;
# older ones ignore the prefix and may read a __pycache__ beside the file).
COLD_START = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": NO_CACHE}


def child_env(term=True):
    env = dict(os.environ)
    for name in SKEWING_VARS:
        env.pop(name, None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE     # Python 3.8+; older ones use __pycache__ (git-ignored)
    if term:
        env["TERM"] = "xterm-256color"
    return env


def note(text):
    """Progress goes to stderr; the report goes to stdout."""
    sys.stderr.write("bench: %s\n" % text)
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# Reading a child from outside: /proc, wait4
# ---------------------------------------------------------------------------

def proc_cpu_seconds(pid):
    """utime + stime of a live process from /proc/<pid>/stat, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / float(CLK_TCK)
    except (OSError, IOError, IndexError, ValueError):
        return None


def proc_status_kib(pid, field):
    """A field of /proc/<pid>/status in KiB (VmRSS, VmHWM) of a live process, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, IOError, ValueError):
        pass
    return None


def proc_rss_kib(pid):
    return proc_status_kib(pid, "VmRSS")


def rusage_cpu(ru):
    return ru.ru_utime + ru.ru_stime


def rusage_maxrss_mib(ru):
    """ru_maxrss is KiB on Linux, bytes on macOS.  On Linux it is also at least
    the resident size of the process that called exec, which for our children is
    the copy of the bench itself made at fork: peak_mib() prefers VmHWM."""
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0
    return ru.ru_maxrss / scale


def exit_code(status):
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def reap(pid, grace=5.0):
    """Wait for a child we started; SIGTERM, then SIGKILL, if it lingers.
    Returns (exit code, rusage)."""
    deadline = time.monotonic() + grace
    sent = None
    while True:
        got, status, ru = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return exit_code(status), ru
        if time.monotonic() > deadline:
            if sent is None:
                os.kill(pid, signal.SIGTERM)
                sent = signal.SIGTERM
                deadline = time.monotonic() + 3.0
            else:
                os.kill(pid, signal.SIGKILL)
                got, status, ru = os.wait4(pid, 0)
                return exit_code(status), ru
        time.sleep(0.01)


# ---------------------------------------------------------------------------
# Pseudo terminals
# ---------------------------------------------------------------------------

def spawn_in_pty(argv, cols, rows, extra_env=None):
    """Start argv on a new pty of cols x rows; returns (pid, master fd, start time)."""
    env = child_env(term=True)
    env.update(extra_env or {})
    start = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:                                   # the child: size the terminal, exec
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.chdir(REPO)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.set_inheritable(fd, False)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return pid, fd, start


def read_master(fd):
    """Whatever the child wrote so far: (bytes, eof)."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return b"", False
    except OSError as exc:
        if exc.errno == errno.EIO:                 # Linux: the slave side is closed
            return b"", True
        raise
    return data, data == b""


def drain_until_eof(fd, seconds):
    """Keep reading so the child never blocks on a full pty; True on EOF."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            _, eof = read_master(fd)
            if eof:
                return True
    return False


def visible_tail(data, n=400):
    """The last characters of terminal output without escape sequences."""
    text = re.sub(br"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b.", b"", data)
    return text.decode("utf-8", "replace").strip()[-n:]


# ---------------------------------------------------------------------------
# 1. Time to the first full frame
# ---------------------------------------------------------------------------

def bare_start():
    """Seconds from spawn until `python3 -c pass` in a 120x40 pty has exited."""
    pid, fd, start = spawn_in_pty([PYTHON, "-c", "pass"], 120, 40)
    drain_until_eof(fd, 10.0)
    reap(pid)
    elapsed = time.monotonic() - start
    os.close(fd)
    return elapsed


def first_frame(extra_env=None):
    """Seconds from spawn until the first full frame at 120x40 (None if never),
    and the output seen."""
    argv = PROGRAM + ["--seed", "7", "--gpus", "64", "--exit-after", "15s"]
    pid, fd, start = spawn_in_pty(argv, 120, 40, extra_env)
    seen, elapsed = b"", None
    deadline = start + 10.0
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        data, eof = read_master(fd)
        seen += data
        if FULL_FRAME.search(seen):
            elapsed = time.monotonic() - start
            break
        if eof:
            break
    try:
        os.write(fd, b"q")                          # quit the normal way
    except OSError:
        pass
    drain_until_eof(fd, 5.0)
    reap(pid)
    os.close(fd)
    return elapsed, seen


def measure_first_frame(count):
    note("first frame: %d bare starts and %d program starts, interleaved" % (count, count))
    bare_start()                                   # warm-ups, not counted
    first_frame()
    bares, frames, failed = [], [], None
    for _ in range(count):
        bares.append(bare_start())
        elapsed, seen = first_frame()
        if elapsed is None:
            failed = seen
        else:
            frames.append(elapsed)
    return bares, frames, failed


# ---------------------------------------------------------------------------
# 2-4. Speed 1 (full screen in a pty; plain and JSON lines to a pipe): CPU,
#      bytes, memory.  Several children are read side by side.
# ---------------------------------------------------------------------------

def proc_cpu_precise(pid):
    """CPU seconds of a live process to the nanosecond, summed over its threads'
    /proc/<pid>/task/*/schedstat (the same clock as wait4's rusage); falls back
    to the 10 ms ticks of /proc/<pid>/stat, or None."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
    except (OSError, IOError, IndexError, ValueError):
        return proc_cpu_seconds(pid)
    return total / 1e9


class ChildRun(object):
    """One child whose output we read without blocking (see run_side_by_side).
    Subclasses start it (pid, fd, t0, deadline) and end it (finish)."""

    def __init__(self, label, seconds):
        self.label, self.seconds = label, seconds
        self.bytes = 0
        self.tail = b""
        self.sample = None            # (time, cpu seconds or None, bytes) after start-up
        self.hwm_kib = None           # the last VmHWM read (it only grows)
        self.hwm_at = 0.0
        self.eof_at = None
        self.code = self.rusage = None

    def settled(self, age):
        return age >= SETTLE_S

    def feed(self, data, now):
        self.bytes += len(data)
        self.tail = (self.tail + data)[-4096:]

    def tick(self, now):
        """Take the after-start-up sample once start-up is over."""
        if self.sample is None and self.settled(now - self.t0):
            self.sample = (now, proc_cpu_precise(self.pid), self.bytes)
        if now >= self.hwm_at:
            self.hwm_at = now + HWM_POLL_S
            self.hwm_kib = proc_status_kib(self.pid, "VmHWM") or self.hwm_kib

    def peak_mib(self):
        """Peak resident memory of the program: VmHWM as last read while it ran
        (memory it took only in its last 0.1 s is missed); ru_maxrss where
        there is no /proc (it includes the bench's own size at fork)."""
        if self.hwm_kib is not None:
            return self.hwm_kib / 1024.0
        return rusage_maxrss_mib(self.rusage) if self.rusage is not None else None

    def window(self):
        """(wall seconds, CPU seconds, bytes) of the steady part of the run."""
        if self.rusage is None:
            return None
        cpu_end = rusage_cpu(self.rusage)
        if self.sample is None or self.sample[1] is None:   # no /proc: the whole run
            return self.eof_at - self.t0, cpu_end, self.bytes
        t, cpu, nbytes = self.sample
        return self.eof_at - t, cpu_end - cpu, self.bytes - nbytes

    def steady(self):
        """window() of a run that ended well, else None."""
        win = self.window()
        if self.code != 0 or win is None or win[0] <= 0:
            return None
        return win


class ScreenRun(ChildRun):
    """One full-screen child in a pty."""

    def __init__(self, gpus, cols, rows, seconds):
        ChildRun.__init__(self, "%d GPUs %dx%d" % (gpus, cols, rows), seconds)
        self.gpus, self.cols, self.rows = gpus, cols, rows
        self.frame_at = None          # seconds after spawn of the first full frame

    def start(self):
        argv = PROGRAM + ["--gpus", str(self.gpus), "--seed", "7", "--exit-after", "%ds" % self.seconds]
        self.pid, self.fd, self.t0 = spawn_in_pty(argv, self.cols, self.rows)
        self.deadline = self.t0 + self.seconds + 20.0

    def feed(self, data, now):
        if self.frame_at is not None:
            ChildRun.feed(self, data, now)
            return
        self.bytes += len(data)
        self.tail += data
        if FULL_FRAME.search(self.tail):
            self.frame_at = now - self.t0
            self.tail = b""

    def settled(self, age):
        """Start-up is the first 2 s, or until the first frame if that is later."""
        return age >= SETTLE_S and (self.frame_at is not None or age >= SETTLE_MAX_S)

    def finish(self, now):
        self.eof_at = now
        self.code, self.rusage = reap(self.pid)
        os.close(self.fd)


class PipeRun(ChildRun):
    """One `--format plain|jsonl` child writing to a pipe that we read and discard."""

    def __init__(self, fmt, gpus, speed, seconds):
        ChildRun.__init__(self, "%s, %d GPUs" % (fmt, gpus), seconds)
        self.fmt, self.gpus, self.speed = fmt, gpus, speed
        self.stderr = ""

    def start(self):
        argv = PROGRAM + ["--format", self.fmt, "--gpus", str(self.gpus), "--seed", "7",
                          "--speed", str(self.speed), "--exit-after", "%ds" % self.seconds]
        self.errors = tempfile.TemporaryFile()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=child_env(term=False),
                                     stdout=subprocess.PIPE, stderr=self.errors)
        self.pid, self.fd = self.proc.pid, self.proc.stdout.fileno()
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.deadline = self.t0 + self.seconds + 20.0

    def finish(self, now):
        self.eof_at = now
        self.code, self.rusage = reap(self.pid)
        self.proc.returncode = self.code               # reaped by us, not by Popen
        self.proc.stdout.close()
        self.errors.seek(0)
        self.stderr = self.errors.read().decode("utf-8", "replace")
        self.errors.close()


def run_side_by_side(runs):
    """Start the runs together, read them all until each has ended; returns runs."""
    for run in runs:
        run.start()
    active = list(runs)
    while active:
        ready, _, _ = select.select([r.fd for r in active], [], [], 0.05)
        now = time.monotonic()
        for run in list(active):
            if run.fd in ready:
                data, eof = read_master(run.fd)
                run.feed(data, now)
                if eof:
                    run.finish(now)
                    active.remove(run)
                    continue
            run.tick(now)
            if now > run.deadline:                  # hung: stop it, report it
                os.kill(run.pid, signal.SIGTERM)
                drain_until_eof(run.fd, 3.0)
                run.finish(time.monotonic())
                active.remove(run)
    return runs


# ---------------------------------------------------------------------------
# 5-6. JSON lines through a pipe: throughput and the soak
# ---------------------------------------------------------------------------

class StreamResult(object):
    def __init__(self):
        self.steps = 0
        self.lines = 0
        self.summaries = 0
        self.run_span = {}            # run -> [first t, last t] seen
        self.first_summary_at = None
        self.rss_after_first = None   # (seconds after spawn, KiB)
        self.rss_last = None
        self.hwm_kib = None           # VmHWM as last read
        self.code = self.rusage = None
        self.wall = 0.0
        self.stderr = ""

    def simulated_hours(self):
        return sum(last - first for first, last in self.run_span.values()) / 3600.0


def _note_line(res, line):
    try:
        rec = json.loads(line.decode("utf-8"))
    except ValueError:
        return
    span = res.run_span.setdefault(rec.get("run"), [rec.get("t", 0.0), rec.get("t", 0.0)])
    if rec.get("event") == "config":
        span[0] = rec.get("t", 0.0)
    span[1] = max(span[1], rec.get("t", 0.0))


def stream_run(extra, seconds, watch_rss=False):
    """`--format jsonl --seed 7` plus extra, stdout counted by us; a StreamResult."""
    argv = PROGRAM + ["--format", "jsonl", "--seed", "7", "--exit-after", "%ds" % seconds] + extra
    res = StreamResult()
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, env=child_env(term=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fd = proc.stdout.fileno()
    rest = b""
    next_rss = start + 0.5
    deadline = start + seconds + 30.0
    step_mark, summary_mark = b'{"event": "step"', b'{"event": "summary"'
    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        now = time.monotonic()
        if ready:
            data = os.read(fd, 1 << 20)
            if not data:
                break
            buf = rest + data
            cut = buf.rfind(b"\n") + 1
            whole, rest = buf[:cut], buf[cut:]
            if whole:
                res.lines += whole.count(b"\n")
                res.steps += whole.count(step_mark)
                if summary_mark in whole or b'{"event": "config"' in whole:
                    for line in whole.splitlines():
                        if line.startswith(summary_mark) or line.startswith(b'{"event": "config"'):
                            _note_line(res, line)
                        if line.startswith(summary_mark):
                            res.summaries += 1
                            if res.first_summary_at is None:
                                res.first_summary_at = now - start
                _note_line(res, whole[whole.rfind(b"\n", 0, len(whole) - 1) + 1:])
        if watch_rss and now >= next_rss:
            next_rss = now + 0.5
            rss = proc_rss_kib(proc.pid)
            res.hwm_kib = proc_status_kib(proc.pid, "VmHWM") or res.hwm_kib
            if rss is not None:
                res.rss_last = (now - start, rss)
                if res.rss_after_first is None and res.first_summary_at is not None and now - start >= 3.0:
                    res.rss_after_first = (now - start, rss)
        if now > deadline:
            proc.terminate()
            deadline = now + 30.0
    code, res.rusage = reap(proc.pid)
    proc.returncode = res.code = code             # reaped by us, not by Popen
    res.wall = time.monotonic() - start
    res.stderr = proc.stderr.read().decode("utf-8", "replace")
    proc.stdout.close()
    proc.stderr.close()
    return res


CORE_CODE = r"""
import json, sys, time
import fake_llm_training as f
budget = float(sys.argv[1])
catalog = f.load_catalog()
session = f.Session(catalog, 7, {"gpus": 64}, "rare", True)
tl = session.current.timeline
segments = [s for s in tl.train_segments() if s.last > s.first]
n = 0
t0 = time.process_time()
while segments:
    for seg in segments:
        for step in range(seg.first + 1, seg.last + 1):
            f.step_metrics(tl, seg, step)
            n += 1
            if n % 1000 == 0 and time.process_time() - t0 >= budget:
                break
        else:
            continue
        break
    if time.process_time() - t0 >= budget:
        break
cpu = time.process_time() - t0
print(json.dumps({"steps": n, "cpu": cpu, "model": tl.cfg.model, "gpus": tl.cfg.gpus}))
"""


STATE_COST_MS = 50.0          # reaching the state at any simulated time (issue 19): flat in the clock
STATE_TIMES = (("an hour", 3600.0), ("a month", 30 * 86400.0), ("a year", 365 * 86400.0))

STATE_CODE = r"""
import json, sys, time
import fake_llm_training as f
catalog = f.load_catalog()
out = {}
for tau in [float(x) for x in sys.argv[1:]]:
    costs = []
    for seed in range(1, 12):
        session = f.Session(catalog, seed, {}, "rare")     # built before the clock starts: the session's start
        t0 = time.process_time()
        rs = session.run_at(tau)                           # the run, its moment and its GPUs at that time
        t = rs.local(tau)
        rs.timeline.moment(t)
        rs.telemetry.cluster(t)
        costs.append((time.process_time() - t0) * 1000.0)
    costs.sort()
    out[str(tau)] = {"median": costs[len(costs) // 2], "max": costs[-1]}
print(json.dumps(out))
"""


def state_cost():
    """CPU milliseconds from a fresh session to the state at each of STATE_TIMES (median and
    worst of 11 seeds), in a fresh interpreter; (figures, None) or (None, error lines)."""
    out = subprocess.run([PYTHON, "-c", STATE_CODE] + [str(t) for _, t in STATE_TIMES], cwd=REPO,
                         env=child_env(term=False), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    if out.returncode != 0:
        return None, out.stderr.strip().splitlines()[-1:] or ["exit %d" % out.returncode]
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def report_state_cost(report):
    """7. The cost of reaching the state an hour, a month and a year into a session."""
    note("state cost: the run, moment and GPUs an hour, a month, a year in")
    figures, error = state_cost()
    for name, tau in STATE_TIMES:
        if figures is None:
            report.add("state %s into a session" % name, "failed", "runs", False)
            print("    %s" % " ".join(error))
            return
        cost = figures[str(tau)]
        report.add("state %s into a session, CPU ms (median, worst)" % name,
                   "%.0f, %.0f" % (cost["median"], cost["max"]), "< %.0f ms" % STATE_COST_MS,
                   cost["median"] < STATE_COST_MS)


def core_throughput(budget):
    """Steps per CPU second of step_metrics alone, in a fresh interpreter."""
    out = subprocess.run([PYTHON, "-c", CORE_CODE, str(budget)], cwd=REPO, env=child_env(term=False),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if out.returncode != 0:
        return None, out.stderr.strip().splitlines()[-1:] or ["exit %d" % out.returncode]
    return json.loads(out.stdout.strip().splitlines()[-1]), None


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

class Report(object):
    def __init__(self):
        self.rows = []

    def add(self, name, value, target="", ok=None):
        """ok: True, False, or None (no target)."""
        status = {True: "OK", False: "MISS", None: ""}[ok]
        self.rows.append((name, value, target, status))
        print("%-46s %16s   %-44s %s" % (name, value, target, status))
        sys.stdout.flush()

    def markdown(self):
        lines = ["| Measurement | Result | Target | |", "|---|---:|---|---|"]
        for name, value, target, status in self.rows:
            lines.append("| %s | %s | %s | %s |" % (name, value, target or "-", status))
        return "\n".join(lines)

    def misses(self):
        return [r for r in self.rows if r[3] == "MISS"]


def program_version():
    """sha256 of fake_llm_training.py, and the git commit when there is one."""
    with open(os.path.join(REPO, "fake_llm_training.py"), "rb") as f:
        text = "fake_llm_training.py sha256 %s" % hashlib.sha256(f.read()).hexdigest()[:12]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, universal_newlines=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fake_llm_training.py"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
        if head.returncode == 0:
            text += ", git %s%s" % (head.stdout.strip(), " (modified)" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return text


def ms(seconds):
    return "%.0f ms" % (seconds * 1000.0)


def main():
    try:
        return bench()
    finally:
        shutil.rmtree(PYCACHE, ignore_errors=True)
        shutil.rmtree(NO_CACHE, ignore_errors=True)


def durations(quick):
    """--exit-after of each kind of run, in seconds (the core's is CPU seconds)."""
    if quick:
        return {"screen": 6, "pipe": 4, "jsonl": 3, "memory": 6, "soak": 20, "core": 1.0}
    return {"screen": 20, "pipe": 15, "jsonl": 10, "memory": 20, "soak": 60, "core": 5.0}


def print_header(quick):
    load = "load %.2f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else "load unknown"
    print("fake_llm_training benchmark (%s mode), Python %s, %s, %d CPUs, %s" % (
        "quick" if quick else "full", sys.version.split()[0], sys.platform, os.cpu_count() or 0, load))
    print("program: %s" % program_version())
    if DROPPED:
        print("left out of the program's environment: %s" % ", ".join(DROPPED))
    if quick:
        print("quick mode: short runs, the speed-1 runs side by side; figures are indicative,"
              " take the README's from a full run")
    print()


def report_first_frame(report):
    """1. Time to the first full frame; False when there was none."""
    bares, frames, failed = measure_first_frame(5)
    bare = statistics.median(bares)
    if not frames:
        print("first frame: never drawn within 10 s; output ended with:\n%s" % visible_tail(failed or b""))
        return False
    frame = statistics.median(frames)
    report.add("first frame (120x40, median of %d)" % len(frames), ms(frame),
               "< %d ms and < %gx bare (bare %s)" % (FIRST_FRAME_MS, FIRST_FRAME_VS_BARE, ms(bare)),
               frame * 1000.0 < FIRST_FRAME_MS and frame < FIRST_FRAME_VS_BARE * bare)
    print("    (fastest %s, bare fastest %s)" % (ms(min(frames)), ms(min(bares))))
    if failed is not None:
        report.add("first frame: runs without a frame", "%d of 5" % (5 - len(frames)), "0", False)
    note("first frame without a bytecode cache: 5 starts")
    cold = [elapsed for elapsed, _ in (first_frame(COLD_START) for _ in range(5)) if elapsed is not None]
    if cold:
        report.add("first frame without a bytecode cache (median of %d)" % len(cold),
                   ms(statistics.median(cold)), "(reported beside the cached %s)" % ms(frame))
    return True


SCREEN_CASES = [(8, 80, 24), (64, 80, 24), (512, 80, 24), (1024, 80, 24),
                (8, 200, 60), (64, 200, 60), (512, 200, 60), (1024, 200, 60),
                (64, 120, 40)]
PIPE_CASES = [("plain", 64), ("plain", 1024), ("jsonl", 64), ("jsonl", 1024)]


def run_speed_one(quick, secs):
    """The speed-1 runs: (screen runs, pipe runs).  The pipe runs sleep between
    writes, so they run side by side (in quick mode with the screens too)."""
    screens = [ScreenRun(g, c, r, secs["screen"]) for g, c, r in SCREEN_CASES]
    pipes = [PipeRun(fmt, gpus, 1, secs["pipe"]) for fmt, gpus in PIPE_CASES]
    if quick:
        note("speed 1: %d full-screen runs of %d s and %d pipe runs of %d s, side by side"
             % (len(screens), secs["screen"], len(pipes), secs["pipe"]))
        run_side_by_side(screens + pipes)
        return screens, pipes
    note("full screen: %d runs of %d s, one after another (about %d s)"
         % (len(screens), secs["screen"], len(screens) * (secs["screen"] + 1)))
    for run in screens:
        run_side_by_side([run])
    note("plain and jsonl to a pipe: %d runs of %d s side by side" % (len(pipes), secs["pipe"]))
    run_side_by_side(pipes)
    return screens, pipes


def report_failure(report, name, run):
    report.add(name, "failed", "exit 0", False)
    print("    exit %s; output ended with: %s" % (run.code, visible_tail(run.tail, 200)))
    if getattr(run, "stderr", ""):
        print("    stderr: %s" % run.stderr.strip()[-300:])


def report_screens(report, runs, secs):
    """2-4. CPU, bytes and peak memory of the full screen at speed 1."""
    targets = {(64, 120, 40): CPU_64_120x40, (1024, 200, 60): CPU_1024_200x60}
    for run in runs:
        add_cpu(report, run, "CPU, speed 1, %s" % run.label, targets.get((run.gpus, run.cols, run.rows)))
    for run in runs:
        win = run.steady()
        if win is not None:
            rate = win[2] / win[0]
            report.add("output, speed 1, %s" % run.label, "%.0f B/s" % rate,
                       "< %.0f B/s (2 KB/s)" % BYTES_PER_S, rate < BYTES_PER_S)
    for run in runs:
        peak = run.peak_mib()
        if peak is not None:
            report.add("peak RSS, speed 1, %s" % run.label, "%.1f MiB" % peak,
                       "< %g MiB" % PEAK_RSS_MIB, peak < PEAK_RSS_MIB)
    slowest = max((r.frame_at for r in runs if r.frame_at is not None), default=None)
    print("    (%d s runs, %s left out of CPU and bytes%s)" % (
        secs["screen"], skipped_start(), ("; slowest first frame %.2f s" % slowest) if slowest else ""))


def skipped_start():
    return "first %.0f s" % SETTLE_S if os.path.exists("/proc/self/stat") else "none (no /proc)"


def add_cpu(report, run, name, limit):
    """One CPU row (percent of one core over the steady window); the window, or None."""
    win = run.steady()
    if win is None:
        report_failure(report, name, run)
        return None
    pct = 100.0 * win[1] / win[0]
    report.add(name, "%.2f %%" % pct, "< %g%% of one core" % limit if limit else "", pct < limit if limit else None)
    return win


def report_pipes_cpu(report, runs, secs):
    """CPU of plain text and JSON lines written to a pipe at speed 1."""
    rates = []
    for run in runs:
        win = add_cpu(report, run, "CPU, speed 1, %s to a pipe" % run.label, CPU_PIPE)
        if win is not None:
            rates.append("%s %.0f B/s" % (run.label, win[2] / win[0]))
    print("    (%d s runs, %s left out; written: %s)" % (secs["pipe"], skipped_start(), "; ".join(rates)))


def report_fast_forward(report, secs):
    """5. Steps per CPU second of JSON lines at speed 1e6, and of the core alone."""
    note("fast-forward: jsonl at speed 1e6 for %d s" % secs["jsonl"])
    ff = stream_run(["--gpus", "64", "--speed", "1000000"], secs["jsonl"])
    if ff.code != 0 or ff.rusage is None:
        report.add("jsonl fast-forward, 64 GPUs", "failed (exit %s)" % ff.code, "exit 0", False)
    else:
        cpu = rusage_cpu(ff.rusage)
        rate = ff.lines / cpu if cpu > 0 else 0.0      # jobs of real length: GPU lines outnumber steps
        report.add("jsonl fast-forward lines / CPU s, 64 GPUs", "{:,.0f}".format(rate),
                   ">= {:,.0f}".format(JSONL_LINES_PER_CPU_S), rate >= JSONL_LINES_PER_CPU_S)
        print("    (%s steps in %s lines, %.2f CPU s over %.1f s wall)"
              % ("{:,}".format(ff.steps), "{:,}".format(ff.lines), cpu, ff.wall))
    note("core: step_metrics for %.1f CPU s" % secs["core"])
    core, error = core_throughput(secs["core"])
    if core is None:
        report.add("core step_metrics steps / CPU s", "failed", "runs", False)
        print("    %s" % " ".join(error))
        return
    rate = core["steps"] / core["cpu"] if core["cpu"] > 0 else 0.0
    report.add("core step_metrics steps / CPU s, 64 GPUs", "{:,.0f}".format(rate),
               ">= {:,.0f}".format(CORE_STEPS_PER_CPU_S), rate >= CORE_STEPS_PER_CPU_S)
    print("    (%s steps of %s on %d GPUs in %.2f CPU s)"
          % ("{:,}".format(core["steps"]), core["model"], core["gpus"], core["cpu"]))


MEMORY_CASES = [("jsonl", 64), ("jsonl", 1024), ("plain", 64)]


def report_fast_forward_memory(report, quick, secs):
    """Peak resident memory of plain and JSON lines at speed 1e6, the output
    read and discarded by us (one after another; side by side in quick mode)."""
    runs = [PipeRun(fmt, gpus, 1000000, secs["memory"]) for fmt, gpus in MEMORY_CASES]
    note("fast-forward memory: %d runs of %d s at speed 1e6%s"
         % (len(runs), secs["memory"], " side by side" if quick else ", one after another"))
    if quick:
        run_side_by_side(runs)
    else:
        for run in runs:
            run_side_by_side([run])
    written = []
    for run in runs:
        if run.code != 0 or run.rusage is None:
            report_failure(report, "peak RSS, speed 1e6, %s" % run.label, run)
            continue
        peak = run.peak_mib()
        report.add("peak RSS, speed 1e6, %s" % run.label, "%.1f MiB" % peak,
                   "< %g MiB" % PEAK_RSS_MIB, peak < PEAK_RSS_MIB)
        written.append("%s %.1f MB in %.2f CPU s, ru_maxrss %.1f MiB" % (
            run.label, run.bytes / 1e6, rusage_cpu(run.rusage), rusage_maxrss_mib(run.rusage)))
    print("    (%d s runs; read and discarded: %s)" % (secs["memory"], "; ".join(written)))
    print("    (peak RSS is the child's VmHWM read every %g s; wait4's ru_maxrss also counts the"
          " bench's own pages copied at fork)" % HWM_POLL_S)


def report_soak(report, secs):
    """6. Resident memory of a long fast-forward soak."""
    note("soak: jsonl at speed 1e6 for %d s" % secs["soak"])
    soak = stream_run(["--speed", "1000000"], secs["soak"], watch_rss=True)
    if soak.code != 0 or soak.rusage is None:
        report.add("soak RSS", "failed (exit %s)" % soak.code, "exit 0", False)
        print("    %s" % soak.stderr.strip()[-300:])
        return
    if soak.rss_after_first is None or soak.rss_last is None:
        why = "no /proc" if not os.path.exists("/proc/self/stat") else "no run finished"
        report.add("soak RSS after first run", "n/a (%s)" % why, "", None)
        return
    (t1, first), (t2, last) = soak.rss_after_first, soak.rss_last
    growth = (last - first) / 1024.0
    report.add("soak RSS after first run (%.0f s)" % t1, "%.1f MiB" % (first / 1024.0), "", None)
    report.add("soak RSS at end (%.0f s)" % t2, "%.1f MiB" % (last / 1024.0), "", None)
    report.add("soak RSS growth", "%+.1f MiB" % growth, "flat: < %g MiB" % SOAK_FLAT_MIB,
               growth < SOAK_FLAT_MIB)
    peak = soak.hwm_kib / 1024.0 if soak.hwm_kib else rusage_maxrss_mib(soak.rusage)
    report.add("soak peak RSS", "%.1f MiB" % peak, "", None)
    print("    (--exit-after %ds at speed 1e6 ended after %.1f s: %d runs finished, %.1f simulated hours,"
          " %s lines)" % (secs["soak"], soak.wall, soak.summaries, soak.simulated_hours(),
                          "{:,}".format(soak.lines)))


def print_summary(report, began):
    print()
    print(report.markdown())
    print()
    misses = report.misses()
    if misses:
        print("targets missed: %d of %d" % (len(misses), len([r for r in report.rows if r[3]])))
    else:
        print("all targets met")
    print("bench time: %.0f s" % (time.monotonic() - began))


def bench():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short runs (CI smoke test, under about 45 s)")
    quick = parser.parse_args().quick
    began = time.monotonic()
    secs = durations(quick)
    report = Report()

    # Does it run at all?  (also compiles the module once, so later starts are warm)
    note("checking that the program runs")
    check = stream_run(["--gpus", "64", "--speed", "1000"], 1)
    if check.code != 0 or check.lines == 0:
        sys.stderr.write("bench: the program did not run (exit %s, %d lines of output)\n%s\n"
                         % (check.code, check.lines, check.stderr))
        return 1
    print_header(quick)
    if not report_first_frame(report):
        return 1
    screens, pipes = run_speed_one(quick, secs)
    report_screens(report, screens, secs)
    report_pipes_cpu(report, pipes, secs)
    report_fast_forward(report, secs)
    report_fast_forward_memory(report, quick, secs)
    report_soak(report, secs)
    report_state_cost(report)
    print_summary(report, began)
    return 0

if __name__ == "__main__":
    sys.exit(main())
