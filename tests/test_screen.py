"""End-to-end tests of the full-screen program: run it in a real tmux pane and
look at what a person would see (capture-pane), press keys, resize, signal it.

Every test gets its own tmux server (tmux -L <unique name>), killed afterwards.
The program runs under a small shell wrapper that records `stty -g` before and
after, and the program's exit status, into the test's tmp_path.
"""

import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tmuxutil import Tmux, alive, children, wait_until  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow          # seconds each, in tmux: the full suite only (sh tests/run.sh)

GPU_ROW = re.compile(r"^\s+\d+ \[[#.]+\]\s+\d+%\s+\d+/\s*\d+MiB\s+\d+C\s+\d+/\s*\d+W")
GPU_ROW_ANY_WIDTH = re.compile(r"^\s+\d+ \[[#.]+\]\s+\d+%")     # narrow panes use a compact cell
BAR = re.compile(r"\[[#.]+\]\s*\d+%")                 # footer line 1: '[####....]  64% ...'
STEP = re.compile(r"step (\d+)/(\d+)")
CLOCK_END = re.compile(r"\d+:\d\d<\d+:\d\d$")          # footer line 1 ends with 'elapsed<eta'


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

class Program(object):
    """fake_llm_training in a tmux pane, wrapped by sh to record stty and status."""

    MARKER = "[test wrapper: program exited]"

    def __init__(self, tmux, directory):
        self.tmux, self.dir = tmux, Path(directory)
        self._pid = None

    def file(self, name):
        return self.dir / name

    def start(self, args, width=120, height=40, env=None, unset=(), stderr_to_file=False, code=None):
        q = shlex.quote
        err = " 2> %s" % q(str(self.file("stderr"))) if stderr_to_file else ""
        script = ["trap : INT",                     # the shell survives C-c; the program gets it
                  "cd %s" % q(str(REPO))]
        script += ["unset %s" % name for name in unset]
        script += ["export %s=%s" % (k, q(v)) for k, v in (env or {}).items()]
        script += ["stty -g > %s" % q(str(self.file("stty.before"))),
                   "echo $$ > %s" % q(str(self.file("shell.pid"))),
                   "%s %s %s%s" % (q(sys.executable), "-c %s" % q(code) if code else "-m fake_llm_training",
                                   " ".join(q(a) for a in args), err),
                   "st=$?",
                   "stty -g > %s" % q(str(self.file("stty.after"))),
                   "echo $st > %s" % q(str(self.file("status"))),
                   # Keep the pane alive (tmux hides the cursor of a dead pane) until
                   # the test has looked; the marker tells it the program's output is in.
                   "echo %s" % q(self.MARKER),
                   "while [ ! -e %s ]; do sleep 0.05; done" % q(str(self.file("release"))),
                   "exit $st"]
        self.file("run.sh").write_text("\n".join(script) + "\n")
        self.tmux.start("sh %s" % q(str(self.file("run.sh"))), width, height)

    def pid(self):
        """Pid of the python process (the wrapper shell's child)."""
        if self._pid is None:
            shell = wait_until(lambda: self.file("shell.pid").exists() and self.file("shell.pid").read_text().strip(),
                               5, "the wrapper to start")
            self._pid = wait_until(lambda: (children(int(shell)) or [None])[0], 5, "the program to start")
        return self._pid

    def exited(self, timeout=10):
        """Wait until the program has exited and tmux has shown all its output; its status."""
        status = wait_until(lambda: self.file("status").exists() and self.file("status").read_text().strip(),
                            timeout, "the program to exit")
        try:   # the marker follows the program's last output; if the terminal is left broken
            self.tmux.wait_text(self.MARKER, 2)    # it may not show, and the checks that follow say why
        except AssertionError:
            pass
        return int(status)

    def release(self, timeout=5):
        """Let the wrapper shell end (after exited()); the pane's exit status."""
        self.file("release").touch()
        self.tmux.wait_dead(timeout)
        return self.tmux.dead_status()

    def stty(self):
        return self.file("stty.before").read_text(), self.file("stty.after").read_text()

    def stderr(self):
        return self.file("stderr").read_text() if self.file("stderr").exists() else ""

    def resize(self, width, height):
        self.tmux.resize(width, height)


def python_alive(prog):
    return alive(prog.pid())


def footer(lines):
    """(bar line, figures line) when the two-line footer is at the bottom, else None."""
    if len(lines) >= 2 and BAR.search(lines[-2]):
        return lines[-2], lines[-1]
    return None


def gpu_rows(lines):
    return [l for l in lines if GPU_ROW.match(l)]


def full_frame(width, height):
    """Predicate: the whole screen is a finished frame of this size (header, log, GPUs, footer)."""
    def check(lines):
        f = footer(lines)
        return (len(lines) == height
                and "UTC" in lines[0] and "TP" in lines[0]
                and any(" iteration " in l for l in lines)
                and any(l.startswith("CLUSTER ") for l in lines)
                and f is not None and f[1].startswith("loss ")
                and (width < 80 or CLOCK_END.search(f[0]) is not None))   # drawn for this width
    return check


def screen_text(lines):
    return "\n".join(lines)


@pytest.fixture
def prog(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: these tests run the program in a tmux pane")
    tmux = Tmux(tmp_path)
    try:
        yield Program(tmux, tmp_path)
    finally:
        tmux.kill()


# ---------------------------------------------------------------------------
# 1. what the screen shows
# ---------------------------------------------------------------------------

def test_frame_at_120x40_shows_header_log_gpus_footer_and_moves(prog):
    prog.start(["--seed", "5", "--no-color"])
    lines = prog.tmux.wait_for(lambda ls: len(gpu_rows(ls)) >= 8 and footer(ls) is not None,
                               10, "GPU rows and the footer")
    assert "UTC" in lines[0] and "TP" in lines[0], lines[0]
    assert any(" iteration " in l for l in lines[1:]), screen_text(lines)
    assert len(gpu_rows(lines)) >= 8, screen_text(lines)
    assert any(l.startswith("CLUSTER ") for l in lines), screen_text(lines)
    bar_line, figures = footer(lines)
    assert "[#" in bar_line and "%" in bar_line
    assert figures.startswith("loss ") and "? help" not in figures, "at speed 1 the footer is the run's alone"
    assert prog.tmux.alternate_on(), "the screen should use the alternate screen"
    time.sleep(3)                                  # two snapshots 3 s apart: the run goes on
    later = prog.tmux.lines()
    assert later != lines
    assert later[0] != lines[0], "the header clock should tick"


# ---------------------------------------------------------------------------
# 2./3. resizing
# ---------------------------------------------------------------------------

def _assert_fits(prog, lines, width, height):
    assert prog.tmux.size() == (width, height)
    assert len(lines) == height
    assert all(len(l) <= width for l in lines), "a line is wider than the pane:\n" + screen_text(lines)
    assert python_alive(prog), "the program died after resizing to %dx%d:\n%s" % (width, height, prog.tmux.text())


RESIZE_EXPECT = [
    # size, what must be on screen, description
    ((80, 24), full_frame(80, 24), "the full frame at 80x24"),
    ((60, 15), lambda ls: footer(ls) is not None and "TP" in ls[0], "header and footer at 60x15"),
    ((40, 10), lambda ls: footer(ls) is not None, "the footer at 40x10"),
    ((20, 5), lambda ls: footer(ls) is not None, "the footer (with its %) at 20x5"),
    ((10, 3), lambda ls: any(l.strip() for l in ls), "something (a too-small note) at 10x3"),
    ((1, 1), lambda ls: True, "anything at 1x1"),
    ((80, 24), full_frame(80, 24), "the full frame back at 80x24"),
]


def test_resize_down_to_tiny_and_back(prog):
    prog.start(["--seed", "5", "--no-color"])
    prog.tmux.wait_for(full_frame(120, 40), 10, "the first frame")
    problems = []
    for (w, h), predicate, what in RESIZE_EXPECT:
        prog.resize(w, h)
        try:
            lines = prog.tmux.wait_for(lambda ls: len(ls) == h and predicate(ls), 3, what)
        except AssertionError as exc:   # keep going: later sizes and the return to 80x24 matter too
            problems.append(str(exc))
            lines = prog.tmux.lines()
        _assert_fits(prog, lines, w, h)
        if (w, h) == (80, 24):
            assert any(" iteration " in l for l in lines)
            assert any(l.startswith("CLUSTER ") for l in lines)
    assert not problems, "\n\n".join(problems)


def test_resize_storm_then_full_frame(prog):
    prog.start(["--seed", "5", "--no-color"])
    prog.tmux.wait_for(full_frame(120, 40), 10, "the first frame")
    rng = random.Random(1234)
    for _ in range(30):                    # ~30 resizes in about a second
        prog.resize(rng.randint(1, 200), rng.randint(1, 60))
        time.sleep(0.03)
    prog.resize(100, 30)
    lines = prog.tmux.wait_for(full_frame(100, 30), 5, "a full 100x30 frame after the storm")
    assert any(GPU_ROW_ANY_WIDTH.match(l) for l in lines), screen_text(lines)
    _assert_fits(prog, lines, 100, 30)


# ---------------------------------------------------------------------------
# 4./5. keys
# ---------------------------------------------------------------------------

def test_pause_freezes_and_resume_advances(prog):
    prog.start(["--seed", "5", "--no-color", "--speed", "50"])
    prog.tmux.wait_for(lambda ls: footer(ls) and STEP.search(footer(ls)[0]), 10, "a footer with 'step N/M'")
    prog.tmux.send("p")
    lines = prog.tmux.wait_for(lambda ls: footer(ls) and "PAUSED" in footer(ls)[1], 5, "PAUSED in the footer")
    paused_bar = footer(lines)[0]
    time.sleep(2)
    lines = prog.tmux.lines()
    assert footer(lines) is not None and "PAUSED" in footer(lines)[1]
    assert footer(lines)[0] == paused_bar, "the footer moved while paused"
    paused_step = STEP.search(paused_bar)
    prog.tmux.send("p")
    lines = prog.tmux.wait_for(lambda ls: footer(ls) and footer(ls)[0] != paused_bar, 5, "the footer to move again")
    assert "PAUSED" not in footer(lines)[1]
    step = STEP.search(footer(lines)[0])
    assert paused_step and step, (paused_bar, footer(lines)[0])
    assert step.group(1) != paused_step.group(1)


def test_space_also_pauses(prog):
    prog.start(["--seed", "5", "--no-color", "--speed", "50"])
    prog.tmux.wait_for(lambda ls: footer(ls) is not None, 10, "the footer")
    prog.tmux.send("Space")
    prog.tmux.wait_for(lambda ls: footer(ls) and "PAUSED" in footer(ls)[1], 5, "PAUSED after space")
    prog.tmux.send("Space")
    prog.tmux.wait_for(lambda ls: footer(ls) and "PAUSED" not in footer(ls)[1], 5, "PAUSED gone after space")


def test_speed_keys_show_the_speed(prog):
    prog.start(["--seed", "5", "--no-color"])
    prog.tmux.wait_for(lambda ls: footer(ls) is not None, 10, "the footer")
    assert not speed_shown(footer(prog.tmux.lines())[1])
    prog.tmux.type("+")
    prog.tmux.wait_for(lambda ls: footer(ls) and speed_shown(footer(ls)[1]) == "2", 5, "x2 in the footer")
    prog.tmux.type("-")
    prog.tmux.wait_for(lambda ls: footer(ls) and not speed_shown(footer(ls)[1]), 5, "the speed back to x1")
    prog.tmux.type("-")
    prog.tmux.wait_for(lambda ls: footer(ls) and speed_shown(footer(ls)[1]) == "0.5", 5, "x0.5 in the footer")


def speed_shown(line):
    """The speed field of the footer's second line ('x2 | loss ...'), or None at x1."""
    m = re.search(r"(?:^|\| )x([\d.]+)(?: \||$)", line)
    return m.group(1) if m else None


def test_pause_and_speed_visible_at_80x24(prog):
    """At the most common terminal size the status flags must still be readable."""
    prog.start(["--seed", "5", "--no-color"], 80, 24)
    prog.tmux.wait_for(lambda ls: footer(ls) is not None, 10, "the footer")
    prog.tmux.send("p")
    prog.tmux.type("+")
    prog.tmux.wait_for(lambda ls: footer(ls) and "PAUSED" in footer(ls)[1] and "x2" in footer(ls)[1], 5,
                       "PAUSED and x2 in the footer at 80 columns")


def test_help_gpu_panel_and_chart_keys(prog):
    prog.start(["--seed", "5", "--no-color"])
    prog.tmux.wait_for(lambda ls: len(gpu_rows(ls)) >= 8 and any("loss (" in l for l in ls), 10, "GPUs and chart")
    prog.tmux.type("?")
    lines = prog.tmux.wait_for(lambda ls: any("q Q    quit" in l for l in ls), 5, "the help box")
    assert any("session --seed 5" in l for l in lines) and any("Esc, Enter or ? closes" in l for l in lines)
    assert "? help" in footer(lines)[1], "after a key the footer shows the help hint"
    for close in ("?", "Escape", "Enter"):
        if close != "?":
            prog.tmux.type("?")
            prog.tmux.wait_for(lambda ls: any("q Q    quit" in l for l in ls), 5, "the help box")
        prog.tmux.send(close) if close != "?" else prog.tmux.type(close)
        prog.tmux.wait_for(lambda ls: not any("q Q    quit" in l for l in ls), 5, "%s to close the help box" % close)
    prog.tmux.type("g")                                     # per node: summaries instead of GPU rows
    prog.tmux.wait_for(lambda ls: not gpu_rows(ls) and any(l.startswith("CLUSTER ") for l in ls), 5, "per-node panel")
    prog.tmux.type("g")                                     # hidden
    prog.tmux.wait_for(lambda ls: not any(l.startswith("CLUSTER ") for l in ls), 5, "the GPU panel hidden")
    prog.tmux.type("g")                                     # back to per GPU
    prog.tmux.wait_for(lambda ls: len(gpu_rows(ls)) >= 8, 5, "GPU rows again")
    prog.tmux.type("l")
    prog.tmux.wait_for(lambda ls: not any("loss (" in l for l in ls), 5, "the chart off")
    prog.tmux.type("l")
    prog.tmux.wait_for(lambda ls: any("loss (" in l for l in ls), 5, "the chart on")


# ---------------------------------------------------------------------------
# 6. exit paths restore the terminal
# ---------------------------------------------------------------------------

EXITS = [("q", 0), ("C-c", 130), ("SIGTERM", 143), ("SIGHUP", 129), ("SIGQUIT", 131), ("exit-after", 0)]


@pytest.mark.parametrize("how,code", EXITS, ids=[e[0] for e in EXITS])
def test_exit_paths_restore_the_terminal(prog, how, code):
    args = ["--seed", "5", "--no-color"] + (["--exit-after", "3s"] if how == "exit-after" else [])
    prog.start(args)
    prog.tmux.wait_for(lambda ls: footer(ls) is not None, 10, "the first frame")
    assert prog.tmux.alternate_on()
    if how in ("q", "C-c"):
        prog.tmux.send(how)
    elif how.startswith("SIG"):
        os.kill(prog.pid(), getattr(signal, how))
    assert prog.exited() == code
    assert not prog.tmux.alternate_on(), "still on the alternate screen after exit"
    assert prog.tmux.cursor_visible(), "the cursor is still hidden after exit"
    before, after = prog.stty()
    assert before == after, "stty settings changed"
    after_screen = prog.tmux.text()
    assert prog.release() == code             # tmux's #{pane_dead_status} agrees
    assert "Traceback" not in after_screen, after_screen
    if how == "C-c":
        assert "interrupted at step" in after_screen, after_screen
    else:
        assert "interrupted" not in after_screen, after_screen


# The real program with one drawing function broken, to exercise the last-resort exit path.
BROKEN = "import fake_llm_training as f; f.footer_lines = lambda *a: 1 / 0; f.entry_point()"


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_an_unexpected_error_restores_the_terminal_first(prog, debug):
    prog.start(["--seed", "5", "--no-color"] + (["--debug"] if debug else []), code=BROKEN, stderr_to_file=True)
    assert prog.exited() == (1 if debug else 70)
    assert not prog.tmux.alternate_on() and prog.tmux.cursor_visible()
    before, after = prog.stty()
    assert before == after
    err = prog.stderr()
    if debug:
        assert "Traceback" in err and "ZeroDivisionError" in err
    else:
        assert err.splitlines() == ["fake_llm_training: internal error: ZeroDivisionError: division by zero "
                                    "(run with --debug for details)"]


# ---------------------------------------------------------------------------
# 7. monochrome and odd terminals
# ---------------------------------------------------------------------------

def test_vt100_draws_the_frame_without_colour(prog):
    prog.start(["--seed", "5"], env={"TERM": "vt100"})
    lines = prog.tmux.wait_for(full_frame(120, 40), 10, "a full frame on a vt100")
    assert len(gpu_rows(lines)) >= 8
    prog.tmux.send("q")
    assert prog.exited() == 0
    assert prog.tmux.cursor_visible() and not prog.tmux.alternate_on()
    before, after = prog.stty()
    assert before == after


@pytest.mark.parametrize("term", ["dumb", None], ids=["TERM=dumb", "TERM-unset"])
def test_dumb_or_missing_term_falls_back_to_plain(prog, term):
    env, unset = ({"TERM": term}, ()) if term else ({}, ("TERM",))
    prog.start(["--seed", "5", "--speed", "50", "--exit-after", "2s"], env=env, unset=unset, stderr_to_file=True)
    assert prog.exited() == 0
    text = prog.tmux.text()
    assert " iteration " in text, text                    # the log went to stdout (the pane)
    assert "{\"event\"" not in text, "plain log lines, not JSON"
    assert not prog.tmux.alternate_on()
    assert not any(GPU_ROW_ANY_WIDTH.match(l) for l in text.split("\n")), "a screen was drawn"
    err = prog.stderr().splitlines()
    assert len(err) == 1 and "TERM" in err[0], err
    before, after = prog.stty()
    assert before == after


@pytest.mark.parametrize("extra", [[], ["--unicode"]], ids=["default", "unicode-requested"])
def test_c_locale_draws_only_ascii(prog, extra):
    prog.start(["--seed", "5", "--no-color"] + extra, env={"LANG": "C", "LC_ALL": "C"})
    lines = prog.tmux.wait_for(lambda ls: footer(ls) and any(l.startswith("CLUSTER ") for l in ls),
                               10, "a frame in the C locale")
    bad = sorted({c for c in screen_text(lines) if ord(c) > 127})
    assert not bad, "non-ASCII characters drawn in the C locale: %r" % bad
    # bars and chart points must be visible ASCII, not blanks the terminal cannot show
    assert len(gpu_rows(lines)) >= 8, "GPU bars are not drawn in ASCII:\n" + screen_text(lines)
    assert footer(lines) is not None, "the progress bar is not drawn in ASCII:\n" + screen_text(lines)
    chart = [l[63:] for l in lines[1:-2]]                  # the chart beside the GPU panel
    assert sum(len(re.findall(r"[-/\\|]", l)) for l in chart) >= 40, "the loss chart has no visible line"


def test_exported_lines_columns_do_not_freeze_the_size(prog):
    prog.start(["--seed", "5", "--no-color"], 80, 24, env={"LINES": "12", "COLUMNS": "50"})
    lines = prog.tmux.wait_for(full_frame(80, 24), 10, "a full 80x24 frame")
    assert max(len(l) for l in lines) > 50
    prog.resize(100, 30)
    lines = prog.tmux.wait_for(full_frame(100, 30), 5, "a full 100x30 frame after the resize")
    assert max(len(l) for l in lines) > 80


# ---------------------------------------------------------------------------
# 8. plain output to a file
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", [["--format", "plain"], []], ids=["--format-plain", "default-when-piped"])
def test_plain_output_to_a_file_has_no_escapes(tmp_path, fmt):
    out = tmp_path / "out.txt"
    env = dict(os.environ, TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    with open(str(out), "wb") as f:
        p = subprocess.run([sys.executable, "-m", "fake_llm_training", "--seed", "5", "--speed", "50",
                            "--exit-after", "1s"] + fmt,
                           cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE,
                           timeout=30)
    data = out.read_bytes()
    assert p.returncode == 0, p.stderr
    assert b" iteration " in data
    assert b"\x1b" not in data
    assert p.stderr == b""


# ---------------------------------------------------------------------------
# 9. one region full screen
# ---------------------------------------------------------------------------

def test_view_log_full_screen(prog):
    prog.start(["--seed", "5", "--no-color", "--view", "log"])
    lines = prog.tmux.wait_for(lambda ls: footer(ls) is not None and sum(" iteration " in l for l in ls) >= 6,
                               10, "a screen of log lines")             # each one wrapped over several rows
    assert "UTC" in lines[0]
    assert not gpu_rows(lines) and not any(l.startswith("CLUSTER ") for l in lines)
    assert all(l.strip() for l in lines[1:-2]), "the log should fill the screen"


def test_view_gpus_full_screen(prog):
    prog.start(["--seed", "5", "--no-color", "--view", "gpus"])
    lines = prog.tmux.wait_for(lambda ls: footer(ls) is not None and len(gpu_rows(ls)) >= 16,
                               10, "a screen of GPU rows")
    assert lines[1].startswith("CLUSTER "), lines[1]
    assert not any(" iteration " in l for l in lines)
    assert not any("loss (" in l for l in lines)


def test_view_chart_full_screen(prog):
    prog.start(["--seed", "5", "--no-color", "--view", "chart"])
    lines = prog.tmux.wait_for(lambda ls: footer(ls) is not None and any(l.startswith("loss (") for l in ls),
                               10, "the loss chart")
    assert lines[1].startswith("loss ("), lines[1]
    assert re.match(r"^\s+0(\s+\d+(\.\d)?[kMB]?){2,}$", lines[-3]), \
        "the step axis should sit just above the footer:\n" + screen_text(lines)
    plot = [l for l in lines[2:-4] if re.match(r"^ *[\d.]* [|+]", l)]
    assert len(plot) >= 25, "the plot should use the whole height:\n" + screen_text(lines)
    assert len([l for l in plot if re.search(r"[-/\\|]", l[6:])]) >= 10, screen_text(lines)
    assert not any(" iteration " in l for l in lines) and not gpu_rows(lines)


# ---------------------------------------------------------------------------
# suspension and GNU screen
# ---------------------------------------------------------------------------

def test_ctrl_z_and_fg_do_not_jump_the_run(prog, tmp_path):
    # An interactive shell, so that Ctrl-Z stops the job and fg continues it.
    prog.tmux.start("bash --norc --noprofile -i")
    status = tmp_path / "status"
    prog.tmux.type("cd %s && %s -m fake_llm_training --seed 5 --no-color --speed 20\n"
                   % (shlex.quote(str(REPO)), shlex.quote(sys.executable)))
    lines = prog.tmux.wait_for(lambda ls: footer(ls) is not None and STEP.search(footer(ls)[0]), 10,
                               "the first frame")
    before = int(STEP.search(footer(lines)[0]).group(1))
    prog.tmux.send("C-z")
    prog.tmux.wait_for(lambda ls: any("Stopped" in l for l in ls), 5, "the shell to report the stopped job")
    assert not prog.tmux.alternate_on()
    stopped = time.monotonic()
    time.sleep(4)                             # a long suspension, as a laptop lid would make
    prog.tmux.type("fg\n")
    wall = time.monotonic() - stopped
    lines = prog.tmux.wait_for(lambda ls: footer(ls) is not None and STEP.search(footer(ls)[0])
                               and int(STEP.search(footer(ls)[0]).group(1)) > before, 10, "the run to go on")
    after = int(STEP.search(footer(lines)[0]).group(1))
    step_time = float(re.search(r"([\d.]+) s/it", footer(lines)[1]).group(1))
    jumped = wall * 20 / step_time            # steps a clock counting the suspension would skip
    assert after - before < 0.5 * jumped, (before, after, jumped)
    prog.tmux.send("q")
    prog.tmux.wait_for(lambda ls: not prog.tmux.alternate_on(), 10, "the program to exit")
    prog.tmux.type("echo $? > %s\n" % shlex.quote(str(status)))   # fg's status is the program's
    wait_until(lambda: status.exists() and status.read_text().strip(), 10, "the status")
    assert status.read_text().strip() == "0"


def test_gnu_screen_terminal_type_draws_the_frame(prog):
    prog.start(["--seed", "5"], env={"TERM": "screen"})
    lines = prog.tmux.wait_for(full_frame(120, 40), 10, "a full frame with TERM=screen")
    assert len(gpu_rows(lines)) >= 8
    prog.tmux.send("q")
    assert prog.exited() == 0 and not prog.tmux.alternate_on()


@pytest.mark.parametrize("term", ["xterm-ghostty", "xterm-kitty"])
def test_unknown_xterm_family_terminal_falls_back_to_xterm(prog, term):
    """A new emulator's TERM over ssh, on a server without its terminfo entry."""
    prog.start(["--seed", "5"], env={"TERM": term}, stderr_to_file=True)
    lines = prog.tmux.wait_for(full_frame(120, 40), 10, "a full frame with TERM=%s" % term)
    assert len(gpu_rows(lines)) >= 8
    prog.tmux.send("q")
    assert prog.exited() == 0 and not prog.tmux.alternate_on()
    assert "internal error" not in prog.stderr()


def test_unknown_terminal_of_no_known_family_writes_plain_lines(prog):
    prog.start(["--seed", "5", "--speed", "50", "--exit-after", "2s"], env={"TERM": "alacritty-nightly"},
               stderr_to_file=True)
    assert prog.exited() == 0
    assert " iteration " in prog.tmux.text() and not prog.tmux.alternate_on()
    err = prog.stderr().splitlines()
    assert len(err) == 1 and "TERM=alacritty-nightly" in err[0], err


def test_quitting_names_the_session_to_rejoin(prog):
    prog.start(["--seed", "5", "--no-color"], stderr_to_file=True)
    prog.tmux.wait_for(full_frame(120, 40), 10, "the first frame")
    prog.tmux.send("q")
    assert prog.exited() == 0
    assert re.search(r"session --seed 5 --start-at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prog.stderr()), prog.stderr()


# ---------------------------------------------------------------------------
# 10. the --tmux layout
# ---------------------------------------------------------------------------

def layout_panes(tmux):
    out = tmux.tmux("list-panes", "-F", "#{pane_id} #{pane_dead}")
    return [line.split() for line in out.splitlines() if line.strip()]


def test_tmux_layout_panes_keep_running_and_q_ends_all_of_them(prog):
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    prog.start(["--tmux", "--view", "gpus", "--start-at", start, "--seed", "5", "--no-color"])
    wait_until(lambda: len(layout_panes(prog.tmux)) == 3, 10, "three panes")
    time.sleep(1.5)                 # long enough for a pane with bad arguments to have died
    panes = layout_panes(prog.tmux)
    assert [dead for _, dead in panes] == ["0", "0", "0"], panes
    gpus_pane = panes[1][0]
    prog.tmux.tmux("send-keys", "-t", gpus_pane, "q")
    assert prog.exited() == 0               # the log pane's program, in the launching pane, ends too
    wait_until(lambda: len(layout_panes(prog.tmux)) == 1, 10, "the side panes closed, not left dead")
    assert layout_panes(prog.tmux)[0][1] == "0", "the launching pane stays"


def test_speed_keys_stop_at_their_bounds_and_say_so(prog):
    prog.start(["--seed", "5", "--no-color", "--speed", "1024"])
    prog.tmux.wait_for(lambda ls: footer(ls) is not None, 10, "the footer")
    prog.tmux.type("+++")
    lines = prog.tmux.wait_for(lambda ls: footer(ls) and "fastest the keys go" in footer(ls)[1], 5,
                               "the notice at the top speed")
    assert speed_shown(footer(lines)[1]) == "4096"
    prog.tmux.wait_for(lambda ls: footer(ls) and "fastest" not in footer(ls)[1], 15, "the notice to fade")


# ---------------------------------------------------------------------------
# 10. GPU history, the wall view, the log-scale key
# ---------------------------------------------------------------------------

SPARK_RAMP = ".:-=+*#%@"               # the ASCII history ramp, lowest to highest


def first_checkpoint_end(seed, pins):
    """Session time at which the first checkpoint after the session joins its run ends."""
    sys.path.insert(0, str(REPO))
    import fake_llm_training as flt
    rs = flt.Session(flt.load_catalog(), seed, pins, "rare").current
    ends = [ev.t for ev in flt.run_events(rs.timeline, rs.offset, rs.timeline.duration) if ev.kind == "checkpoint"]
    return ends[0] - rs.offset


def test_view_gpus_with_16_gpus_fills_the_pane_and_its_history_dips_at_a_checkpoint(prog):
    # The session started so long ago that a checkpoint ended 15 s before the program starts.
    pins = {"gpus": 16, "model": "Llama-3.1-8B"}           # a 13 s save: a few columns of history
    start_at = time.time() - (first_checkpoint_end(16, pins) + 15.0)
    prog.start(["--seed", "16", "--no-color", "--gpus", "16", "--model", "Llama-3.1-8B", "--view", "gpus",
                "--start-at", "%.3f" % start_at])
    lines = prog.tmux.wait_for(lambda ls: footer(ls) is not None and len(gpu_rows(ls)) == 16,
                               10, "16 GPU rows with their history")
    used = [l for l in lines if l.strip()]
    assert len(used) >= 0.8 * 40, screen_text(lines)
    node = [l for l in lines if " node 0  ranks 0-7 " in l][0]
    util = [SPARK_RAMP.index(c) for c in node.split(" util ")[1].split(" pwr ")[0].strip()]
    assert max(util) == len(SPARK_RAMP) - 1 and min(util) <= 3, "no dip in the history:\n" + node
    assert all(" util " in l and " pwr " in l for l in gpu_rows(lines)), screen_text(lines)


def test_one_node_of_eight_shows_per_gpu_rows_at_120x40(prog):
    prog.start(["--seed", "5", "--no-color", "--gpus", "8"])
    lines = prog.tmux.wait_for(lambda ls: footer(ls) is not None and any(l.startswith("CLUSTER ") for l in ls),
                               10, "the GPU panel")
    rows = [l for l in lines if GPU_ROW_ANY_WIDTH.match(l)]
    assert len(rows) == 8, screen_text(lines)
    assert any("loss (" in l for l in lines), screen_text(lines)


def test_view_wall_and_the_log_scale_key(prog):
    prog.start(["--seed", "5", "--no-color", "--view", "wall"])
    lines = prog.tmux.wait_for(lambda ls: footer(ls) is not None and any("train loss" in l for l in ls),
                               10, "the wall view")
    assert "UTC" in lines[0] and "TP" in lines[0]
    assert sum(1 for l in lines if l.count("##") >= 6) >= 5, screen_text(lines)   # block letters
    assert any(l.startswith("cluster OK |") for l in lines), screen_text(lines)
    assert not any(" iteration " in l for l in lines)
    prog.tmux.type("L")
    prog.tmux.wait_for(lambda ls: any(l.startswith("loss (") and " log scale " in l for l in ls), 5, "log scale")
    prog.tmux.type("L")
    prog.tmux.wait_for(lambda ls: any(l.startswith("loss (") and " log scale " not in l for l in ls), 5, "linear")
