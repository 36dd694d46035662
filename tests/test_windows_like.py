"""The Windows-like tier: the program as a Windows console sees it, run on Linux
through tests/windows_like.py (see its docstring for what it patches and what it
cannot show), plus a static check that every curses name the program uses exists
in windows-curses."""
import ast
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

DRIVER = os.path.join(ROOT, "tests", "windows_like.py")
pytestmark = pytest.mark.skipif(sys.platform == "win32" or sys.version_info < (3, 8),
                                reason="a Linux stand-in for Windows (a pty; the cp65001 codec needs 3.8)")
SESSION_LINE = re.compile(r"^fake_llm_training: session --seed 5 --start-at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", re.M)


def windows_like(tmp_path, mode, args, keys="", signal_after=None, tty=True, timeout=60, then="q", vt=False):
    """Run the driver; (exit status, stdout+stderr text or (stdout, stderr), report)."""
    report = str(tmp_path / "report.json")
    env = dict(os.environ, WINDOWS_LIKE_KEYS=keys, WINDOWS_LIKE_THEN=then, WINDOWS_LIKE_VT="1" if vt else "")
    env.pop("NO_COLOR", None)
    command = [sys.executable, DRIVER, mode, report] + args
    if not tty:
        p = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                           cwd=ROOT, env=env, timeout=timeout)
        return p.returncode, (p.stdout, p.stderr), json.load(open(report))
    import pty
    import select
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env)
    os.close(slave)
    out, start = b"", time.monotonic()
    while time.monotonic() - start < timeout:
        if signal_after is not None and time.monotonic() - start > signal_after[1]:
            os.kill(proc.pid, signal_after[0])
            signal_after = None
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    os.close(master)
    return proc.wait(10), out.decode("utf-8", "replace").replace("\r\n", "\n"), json.load(open(report))


def frames_text(report):
    return ["\n".join(frame) for frame in report["frames"]]


def test_with_term_unset_and_curses_present_the_screen_starts(tmp_path):
    code, text, report = windows_like(tmp_path, "curses", ["--seed", "5", "--no-color"], keys="none,none")
    assert code == 0, text
    assert report["initscr"] == 1 and report["endwin"] == 1          # the screen was entered and left
    frames = frames_text(report)
    assert len(frames) == 3 and all("loss " in f and "UTC" in f for f in frames), frames[-1]
    assert "TERM=" not in text and SESSION_LINE.search(text), text


@pytest.mark.parametrize("vt", [False, True], ids=["old-console", "vt-console"])
def test_without_curses_plain_lines_and_the_install_hint(tmp_path, vt):
    code, text, report = windows_like(tmp_path, "no-curses", ["--seed", "5", "--from-start", "--speed", "1000",
                                                              "--exit-after", "2s"], vt=vt)
    assert code == 0 and report["initscr"] == 0
    hints = [line for line in text.splitlines() if "windows-curses" in line]
    assert hints == ["fake_llm_training: the screen needs windows-curses (pip install windows-curses); "
                     "writing plain log lines"], text
    assert "torch/distributed/run.py" in text          # torchrun's warnings, which a terminal shows in colour
    assert ("\x1b[33m" in text) == vt, text[:2000]    # colour only once virtual-terminal processing is on


@pytest.mark.parametrize("unicode", [True, False], ids=["--unicode", "ascii"])
def test_unicode_is_honoured_under_code_page_65001(tmp_path, unicode):
    args = ["--seed", "5", "--no-color"] + (["--unicode"] if unicode else [])
    code, text, report = windows_like(tmp_path, "curses", args)
    assert code == 0, text
    frame = frames_text(report)[-1]
    assert ("\u2588" in frame) == unicode and ("[###" in frame) != unicode, frame


def test_keypad_plus_minus_and_enter(tmp_path):
    code, text, report = windows_like(tmp_path, "curses", ["--seed", "5", "--no-color"],
                                      keys="PADPLUS,PADPLUS,PADMINUS,?,PADENTER,KEY_RESIZE:60x20,none")
    assert code == 0, text
    frames = frames_text(report)
    footers = [f.splitlines()[-1] for f in frames]
    assert " x2 " not in footers[0] + " " and "x4" in footers[2] and "x2" in footers[3], footers
    assert "Esc, Enter or ? closes" in frames[4] and "Esc, Enter or ? closes" not in frames[5]
    assert [len(line) for line in report["frames"][-1]] == [60] * 20      # KEY_RESIZE redrew at 60x20


def test_ctrl_break_ends_cleanly_with_the_session_line(tmp_path):
    code, text, report = windows_like(tmp_path, "curses", ["--seed", "5", "--no-color", "--exit-after", "30s"],
                                      then="none", signal_after=(21, 2.0))
    assert code == 128 + 21, text                     # SIGBREAK is 21 on Windows
    assert report["endwin"] == 1 and SESSION_LINE.search(text), text


def test_einval_on_stdout_exits_0_quietly(tmp_path):
    code, (out, err), report = windows_like(tmp_path, "einval", ["--format", "plain", "--seed", "5", "--speed",
                                                                 "100000", "--exit-after", "5s"], tty=False)
    assert code == 0 and err == "", err


@pytest.mark.parametrize("when", ["1969-06-01", "3001-01-01", "99999999999"])
def test_start_at_outside_1970_3000_exits_2(tmp_path, when):
    for argv in (["--start-at", when], ["nvidia-smi", "--start-at", when]):
        code, (out, err), report = windows_like(tmp_path, "no-curses", argv + ["--seed", "5"], tty=False)
        assert code == 2 and "--start-at" in err and "internal error" not in err, err


def test_tmux_on_windows_exits_2_with_one_line(tmp_path):
    code, text, report = windows_like(tmp_path, "curses", ["--tmux", "--seed", "5"])
    assert code == 2 and report["initscr"] == 0
    assert text.strip().splitlines() == ["fake_llm_training: error: --tmux is not available on Windows "
                                         "(open panes in your terminal and give each --seed and --start-at)"], text


# ---- the names the program uses from curses -----------------------------------------------

def curses_names_used():
    """(module names, window method names) the program uses from curses."""
    with open(os.path.join(ROOT, "fake_llm_training.py")) as f:
        text = f.read()
    module, window = set(), set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in ("curses", "curses_module"):
                module.add(node.attr)
            elif node.value.id in ("stdscr", "scr"):
                window.add(node.attr)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr in (
                "curses", "scr"):
            (module if node.value.attr == "curses" else window).add(node.attr)
    import fake_llm_training as flt
    module |= {"COLOR_" + colour.upper() for colour, _, _ in flt.PALETTE.values() if colour} | {"COLOR_BLACK"}
    module |= set(re.findall(r'\("(PAD\w+)", "', text))
    return module, window


def test_every_curses_name_the_program_uses_is_in_windows_curses():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import windows_like
    names = windows_like.names_of_windows_curses()
    module, window = curses_names_used()
    assert {"wrapper", "KEY_RESIZE", "A_DIM", "PADPLUS", "COLOR_CYAN"} <= module and {"addstr", "getch"} <= window
    assert sorted(module - names["module"]) == [] and sorted(window - names["window"]) == []
    fake = windows_like.fake_windows_curses([], {"initscr": 0, "endwin": 0, "frames": []})
    assert {n for n in vars(fake) if not n.startswith("__")} <= names["module"], "the stand-in has only real names"


def test_dim_styles_read_on_pdcurses():
    """PDCurses has no dim (A_DIM is 0): with colour, dim text is the console's grey."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import windows_like
    import fake_llm_training as flt
    fake = windows_like.fake_windows_curses([], {"initscr": 0, "endwin": 0, "frames": []})
    assert fake.A_DIM == 0
    colour = flt.Terminal(fake.initscr(), True, curses_module=fake).attrs
    assert colour["dim"] not in (0, colour["good"]) and colour["idle"] == colour["dim"]
