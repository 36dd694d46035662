"""The --tmux layout as a user meets it: launched from an interactive shell in a
window that already has another pane, in a session with another window.  Every
way out (q or Ctrl-C in any of the three panes) must close exactly the layout's
own panes and give the launching shell back, with the exit status printed."""

import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tmuxutil import Tmux, wait_until  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.skipif(sys.platform == "win32" or shutil.which("tmux") is None
                                 or shutil.which("bash") is None,
                                 reason="needs tmux and bash (POSIX)"),
              pytest.mark.slow]      # end to end in tmux: the full suite only


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        t.kill()


def panes_of(tmux, target):
    """{pane id: dead?} of the window holding `target`."""
    out = tmux.tmux("list-panes", "-t", target, "-F", "#{pane_id} #{pane_dead}")
    return dict((line.split()[0], line.split()[1] == "1") for line in out.splitlines() if line.strip())


def pane_text(tmux, pane):
    return tmux.tmux("capture-pane", "-p", "-t", pane)


def user_session(tmux, width=160, height=45):
    """Window 0: the user's shell (pane `home`) and another pane, which is the
    active one; window 1 beside it.  Returns (home, other)."""
    shell = "bash --norc --noprofile"
    tmux.start(shell, width, height)
    home = tmux.display("#{pane_id}")
    other = tmux.tmux("split-window", "-h", "-t", home, "-P", "-F", "#{pane_id}", shell).strip()
    tmux.tmux("new-window", "-d", shell)
    assert tmux.display("#{pane_id}") == other          # the launch goes to a pane that is not active
    return home, other


def launch(tmux, home, args):
    command = "cd %s && %s -m fake_llm_training %s; echo EXIT=$?" % (
        shlex.quote(str(REPO)), shlex.quote(sys.executable), " ".join(shlex.quote(a) for a in args))
    wait_until(lambda: "$" in pane_text(tmux, home) or "#" in pane_text(tmux, home), 10, "the shell prompt")
    tmux.tmux("send-keys", "-t", home, "-l", command)
    tmux.tmux("send-keys", "-t", home, "Enter")


CASES = [(pane, key) for pane in ("log", "gpus", "chart") for key in ("q", "C-c")]


@pytest.mark.parametrize("which,key", CASES, ids=["%s-%s" % c for c in CASES])
def test_a_key_in_any_pane_ends_exactly_the_layout_and_returns_the_shell(tmux, which, key):
    home, other = user_session(tmux)
    launch(tmux, home, ["--tmux", "--seed", "7", "--no-color"])
    panes = wait_until(lambda: len(panes_of(tmux, home)) == 4 and panes_of(tmux, home), 15, "the layout's panes")
    side = [p for p in panes if p not in (home, other)]
    for pane in side + [home]:        # every pane draws its frame before the key
        wait_until(lambda: "loss " in pane_text(tmux, pane), 15, "a frame in %s" % pane)
    target = {"log": home, "gpus": side[0], "chart": side[1]}[which]
    if which != "log":
        assert "smoothed" in pane_text(tmux, side[1]) and "node 0" in pane_text(tmux, side[0])
    tmux.tmux("send-keys", "-t", target, key)
    code = 0 if key == "q" else 130
    wait_until(lambda: "EXIT=%d" % code in pane_text(tmux, home), 15, "EXIT=%d in the launching shell" % code)
    wait_until(lambda: set(panes_of(tmux, home)) == {home, other}, 10, "the side panes closed")
    assert panes_of(tmux, home) == {home: False, other: False}, "the user's shell and pane stay alive"
    assert len(tmux.tmux("list-windows", "-F", "#{window_id}").split()) == 2
    text = pane_text(tmux, home)
    assert "session --seed 7 --start-at" in text, text
    assert ("interrupted at step" in text) == (key == "C-c"), text
    tmux.tmux("send-keys", "-t", home, "-l", "echo STILL-HERE")  # the shell still answers
    tmux.tmux("send-keys", "-t", home, "Enter")
    wait_until(lambda: pane_text(tmux, home).count("STILL-HERE") >= 2, 10, "the shell to answer")


def test_a_split_tmux_refuses_is_one_line_and_exit_2(tmux, tmp_path):
    home, other = user_session(tmux)
    tmux.tmux("resize-pane", "-t", home, "-x", "4")          # too narrow, too short to split
    tmux.tmux("kill-pane", "-t", other)
    tmux.tmux("split-window", "-v", "-t", home, "-l", "42", "bash --norc --noprofile")
    assert int(tmux.tmux("display-message", "-p", "-t", home, "#{pane_height}")) <= 3
    err = tmp_path / "stderr"
    status = tmp_path / "status"
    command = "cd %s && %s -m fake_llm_training --tmux --seed 7 2>%s; echo $? >%s" % (
        shlex.quote(str(REPO)), shlex.quote(sys.executable), shlex.quote(str(err)), shlex.quote(str(status)))
    tmux.tmux("send-keys", "-t", home, "-l", command)
    tmux.tmux("send-keys", "-t", home, "Enter")
    wait_until(lambda: status.exists() and status.read_text().strip(), 15, "the program to exit")
    assert status.read_text().strip() == "2"
    lines = err.read_text().splitlines()
    assert len(lines) == 1 and "no space for new pane" in lines[0], lines
    assert len(panes_of(tmux, home)) == 2                 # nothing half-made is left behind
