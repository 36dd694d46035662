"""Ways out and refusals as a user sees them: every exit names the session on a
clean line, output errors end quietly (or in one line), Python 2 and unusable
tmux set-ups are one line, monochrome leaves the terminal's own colours, and
the key lists match what the keys do."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fake_llm_training as flt
from conftest import ROOT, run_program
from test_frames import frame_at

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell, pty and /dev/full")
SESSION_LINE = re.compile(r"^fake_llm_training: session --seed 5 --start-at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# ---- colours ---------------------------------------------------------------------------

# An SGR sequence that sets a foreground or background colour (30-37, 40-47, 38;5;N,
# 48;5;N); 39 and 49 (the terminal's own colours) do not count.
EXPLICIT_COLOUR = re.compile(rb"\x1b\[(?:\d*;)*(?:[34][0-7]|[34]8;[\d;]+)(?:;\d*)*m")


def pty_run(args, env, seconds=3.0, width=100, height=30):
    """(exit status, everything the program writes to a real terminal in `seconds`, then q)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    full_env = dict(os.environ)
    for name in ("NO_COLOR", "LINES", "COLUMNS"):
        full_env.pop(name, None)
    full_env.update(env)
    proc = subprocess.Popen([sys.executable, "-m", "fake_llm_training"] + args, stdin=slave, stdout=slave,
                            stderr=slave, cwd=ROOT, env=full_env)
    os.close(slave)
    out, quit_at, deadline = b"", time.monotonic() + seconds, time.monotonic() + seconds + 20
    while time.monotonic() < deadline:
        if quit_at and time.monotonic() > quit_at:
            os.write(master, b"q")
            quit_at = None
        ready = select.select([master], [], [], 0.1)[0]
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:          # EIO: the program has gone and closed the terminal
                break
            if not chunk:
                break
            out += chunk
    os.close(master)
    return proc.wait(10), out


def pty_output(args, env, seconds=3.0):
    code, out = pty_run(args, env, seconds)
    assert code == 0
    return out


@pytest.mark.slow
@POSIX
@pytest.mark.parametrize("how", [["--no-color"], "NO_COLOR"], ids=["--no-color", "NO_COLOR=1"])
def test_monochrome_sets_no_colours_of_its_own(how):
    args = ["--seed", "5"] + (how if isinstance(how, list) else [])
    env = {"TERM": "xterm-256color"}
    if how == "NO_COLOR":
        env["NO_COLOR"] = "1"
    mono = pty_output(args, env)
    assert b"\x1b[?1049h" in mono and b"iteration" in mono     # the screen was drawn
    assert EXPLICIT_COLOUR.findall(mono) == []
    coloured = pty_output(["--seed", "5"], {"TERM": "xterm-256color"})
    assert EXPLICIT_COLOUR.search(coloured), "the colour run sets colours (the check can fail)"


# ---- output errors --------------------------------------------------------------------------

def shell(command):
    return subprocess.run(["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120, cwd=ROOT)


PROGRAM = "%s -m fake_llm_training" % sys.executable
STREAM = "--format plain --seed 3 --speed 1000 --exit-after 3s"


@POSIX
@pytest.mark.parametrize("args,redirect,code", [
    (STREAM, ">&-", 0), ("nvidia-smi --seed 3", ">&-", 0), ("--list-models", ">&-", 0),
    (STREAM, "> /dev/full", 1), ("--list-models", "> /dev/full", 1), ("nvidia-smi --seed 3", "> /dev/full", 1),
    (STREAM + " --format jsonl", "| head -1 >/dev/null", 0)])
def test_output_errors_end_quietly_or_in_one_line(args, redirect, code):
    if "full" in redirect and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    p = shell("%s %s %s; echo status=$? >&2" % (PROGRAM, args, redirect))
    err = p.stderr.splitlines()
    assert err[-1] == "status=%d" % code, p.stderr
    if code:
        assert err[:-1] == ["fake_llm_training: cannot write the output: No space left on device"], err
    else:
        assert err[:-1] == [], err


# ---- Python 2 ---------------------------------------------------------------------------

PYTHON2 = os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python2.7")


@pytest.mark.skipif(not os.path.exists(PYTHON2), reason="no Python 2.7 at " + PYTHON2)
def test_python_2_is_refused_in_one_line():
    p = run_program(["--seed", "3"], python=PYTHON2)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.splitlines() == ["fake_llm_training needs Python 3.6 or newer (this is Python 2.7); "
                                     "run it with python3"], p.stderr


# ---- refusals in one line ------------------------------------------------------------------

@pytest.mark.parametrize("args,env,needle", [
    (["--tmux", "--format", "plain"], {"TMUX": "/tmp/x,1,0"}, "--format plain writes log lines"),
    (["--tmux"], {"TMUX": "/nonexistent/socket,1,0"}, "/nonexistent/socket"),
    (["--tmux"], {"TMUX": "/nonexistent/socket,1,0", "PATH": "/nonexistent"}, "cannot run tmux"),
    (["--tmux"], {"TMUX": "/nonexistent/socket,1,0", "TERM": "dumb"}, "--tmux: TERM=dumb cannot draw a screen"),
    (["nvidia-smi", "-l", "abc"], {}, "-l must be a number of seconds, got 'abc'"),
    (["--start-at", "3001-01-01"], {}, "--start-at"),
    (["--start-at", "1969-06-01", "--speed", "0.001"], {}, "--start-at must be from 1970-01-01 to 3000-12-31"),
    (["nvidia-smi", "--start-at", "99999999999"], {}, "--start-at")])
def test_refusals_are_one_line_and_exit_2(args, env, needle):
    if "PATH" in env and shutil.which("tmux", path=env["PATH"]):
        pytest.skip("tmux found on the empty PATH")
    argv = ["--seed", "3"] + args if args[0] != "nvidia-smi" else args
    if "--tmux" in args and sys.platform != "win32":      # --tmux needs a terminal before it asks tmux
        code, out = pty_run(argv, dict({"TERM": "xterm"}, **env), seconds=30)
        stderr = out.decode("utf-8", "replace").replace("\r\n", "\n")
    else:
        p = run_program(argv, env=env)
        code, stderr = p.returncode, p.stderr
    assert code == 2, stderr
    errors = [line for line in stderr.splitlines() if line and not line.startswith("usage:")]
    assert len(errors) == 1 and needle in errors[0], stderr


def test_format_screen_when_piped_says_why_it_writes_plain():
    p = run_program(["--format", "screen", "--seed", "3", "--speed", "1000", "--exit-after", "2s"])
    assert p.returncode == 0 and " iteration " in p.stdout or "step" in p.stdout
    assert p.stderr.splitlines() == ["fake_llm_training: --format screen needs a terminal on stdin and stdout; "
                                     "writing plain log lines"]


# ---- every exit names the session on a line of its own ------------------------------------------

EXIT_TERMS = [("vt100", "q", 0), ("linux", "C-c", 130), ("vt100", "SIGTERM", 143), ("linux", "SIGHUP", 129),
              ("screen", "SIGTERM", 143)]


@POSIX
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
@pytest.mark.parametrize("term,how,code", EXIT_TERMS, ids=["%s-%s" % e[:2] for e in EXIT_TERMS])
def test_every_exit_names_the_session_on_a_cleared_line(tmp_path, term, how, code):
    from tmuxutil import Tmux
    from test_screen import BAR, Program, footer
    tmux = Tmux(tmp_path)
    try:
        prog = Program(tmux, tmp_path)
        prog.start(["--seed", "5", "--no-color"], env={"TERM": term})
        prog.tmux.wait_for(lambda ls: footer(ls) is not None, 10, "the first frame")
        if how.startswith("SIG"):
            os.kill(prog.pid(), getattr(signal, how))
        else:
            prog.tmux.send(how)
        assert prog.exited() == code
        lines = prog.tmux.lines()
        assert any(SESSION_LINE.match(line) for line in lines), "\n".join(lines)
        if how == "C-c":             # seed 5 joins its run long after its first save
            assert re.search(r"interrupted at step \d+/\d+; last checkpoint kept: /\S+$", "\n".join(lines), re.M)
        if term != "screen":         # no alternate screen: the last frame stays above the exit lines
            assert any(BAR.search(line) for line in lines), "\n".join(lines)
    finally:
        tmux.kill()


# ---- keys ----------------------------------------------------------------------------------

def acting_keys():
    """The printable keys handle_key (or the screen loop, for q and Q) acts on."""
    session = flt.Session(flt.load_catalog(), 5, {}, "rare")
    rs = session.current
    acting = {"q", "Q"}
    for code in range(32, 127):
        ui = flt.Ui()
        before = dict(vars(ui))
        forced = len(rs.forced)
        flt.handle_key(code, ui, rs, rs.offset)
        after = dict(vars(ui))
        for name in ("touched", "notice", "notice_frames"):
            before.pop(name)
            after.pop(name)
        if after != before or len(rs.forced) != forced:
            acting.add(chr(code))
    return acting


def test_the_documented_keys_are_the_keys_that_act():
    acting = acting_keys()
    assert {"q", "p", " ", "+", "-", "g", "l", "L", "t", "!", "?"} <= acting
    docstring = flt.__doc__.split("Keys on the full screen:")[1].split("Environment")[0]
    epilog = flt.build_parser("fake_llm_training").epilog
    for where in (docstring, epilog):
        listed = set(re.findall(r"(?:^|(?<=[\s,/]))(\S)(?=[\s,/])", where))
        if "space" in where:
            listed.add(" ")
        assert listed & (acting | {"?"}) == acting, (where, sorted(acting - listed))
    help_keys = {key for entry in flt.HELP_KEYS for key in entry.split("  ")[0].split()}
    assert help_keys | {"p", " "} >= acting - {" "}


UI_CHANGE = {"g": {"gpu_mode": "nodes"}, "l": {"chart": False}, "L": {"log_scale": True}, "t": {"x_tokens": True}}


@pytest.mark.parametrize("view", flt.VIEWS)
def test_each_views_help_lists_exactly_the_keys_that_change_it(view):
    plain = [line.text for line in frame_at(8, 120, 40, tau=600.0, view=view)]
    shown = "\n".join(line.text for line in frame_at(8, 120, 40, tau=600.0, view=view, help=True))
    for key, change in UI_CHANGE.items():
        changed = [line.text for line in frame_at(8, 120, 40, tau=600.0, view=view, **change)] != plain
        listed = re.search(r"\| %s\s{2,}" % re.escape(key), shown) is not None
        assert listed == changed, (view, key, changed)
    assert "| q Q    quit" in shown


def test_bang_in_a_shared_pane_says_it_has_left_the_session():
    rs = flt.Session(flt.load_catalog(), 5, {}, "rare").current
    ui = flt.Ui()
    ui.shared = True
    flt.handle_key(ord("!"), ui, rs, rs.offset)
    assert rs.forced and ui.notice == "spike: this pane left the session"
    side_pane = frame_at(8, 47, 20, tau=600.0, view="gpus", notice=ui.notice, notice_frames=5)
    assert ui.notice in side_pane[-1].text       # whole in the footer of a --tmux side pane
