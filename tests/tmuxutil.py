"""Drive a program inside a private tmux server, for end-to-end screen tests.

Each Tmux object owns one server (`tmux -L <name>`), so tests never share state.
The server is configured from a tiny file: no status line (the pane is the whole
window), and panes stay around after their program exits (so the exit status and
the last screen can be read).  resize-window works on a detached session as is; note
that `set -g window-size manual` in the config file makes tmux 3.3a's server exit
at start-up ("server exited unexpectedly"), so it is not set.
"""

import os
import signal
import subprocess
import time
import uuid

CONFIG = """\
set -g status off
set -g remain-on-exit on
set -g escape-time 0
set -g default-terminal screen
set -g history-limit 0
"""


class Tmux(object):
    def __init__(self, config_dir, name=None):
        self.name = name or "flt-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        self.config = os.path.join(str(config_dir), "tmux.conf")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        # The server copies its environment from the first client: keep it
        # predictable (UTF-8, so that stray non-ASCII output shows up as such).
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("TMUX", "TMUX_PANE", "LINES", "COLUMNS", "NO_COLOR", "LC_ALL")}
        self.env["LANG"] = "C.UTF-8"
        self.started = False

    # -- raw tmux ---------------------------------------------------------
    def tmux(self, *args, check=True):
        cmd = ["tmux", "-u", "-L", self.name, "-f", self.config] + [str(a) for a in args]
        p = subprocess.run(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=10)
        if check and p.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
        return p.stdout

    def start(self, command, width=120, height=40):
        """Run `command` (a shell command line) in a new detached WxH window."""
        self.tmux("new-session", "-d", "-x", width, "-y", height, command)
        self.started = True

    def kill(self):
        if self.started:
            self.tmux("kill-server", check=False)
            self.started = False

    # -- looking --------------------------------------------------------------
    def display(self, fmt):
        return self.tmux("display-message", "-p", fmt).rstrip("\n")

    def lines(self):
        """The visible screen, one string per row (tmux strips trailing blanks)."""
        out = self.tmux("capture-pane", "-p")
        rows = out.split("\n")
        if rows and rows[-1] == "":
            rows.pop()
        return rows

    def text(self):
        return "\n".join(self.lines())

    def size(self):
        w, h = self.display("#{pane_width} #{pane_height}").split()
        return int(w), int(h)

    def dead(self):
        return self.display("#{pane_dead}") == "1"

    def dead_status(self, timeout=5.0):
        """Exit status of the pane's (dead) process; 128+N if a signal N killed it.

        tmux marks the pane dead when its pty closes, and learns the status when
        it reaps the process on SIGCHLD.  tmux 3.3a sometimes misses that SIGCHLD
        (the process stays a zombie, #{pane_dead_status} stays empty), so after a
        moment nudge the server with another SIGCHLD: it then reaps the process.
        """
        deadline = time.monotonic() + timeout
        nudge = time.monotonic() + 0.5
        while True:
            info = self.display("#{pane_dead}|#{pane_dead_status}|#{pane_dead_signal}|#{pid}")
            dead, status, sig, server = info.split("|")
            if dead == "1" and (status or sig):
                return int(status) if status else 128 + int(sig)
            if time.monotonic() > deadline:
                raise AssertionError("no exit status from tmux after %.0fs (%r)" % (timeout, info))
            if dead == "1" and time.monotonic() > nudge:
                os.kill(int(server), signal.SIGCHLD)
                nudge = time.monotonic() + 0.5
            time.sleep(0.05)

    def alternate_on(self):
        return self.display("#{alternate_on}") == "1"

    def cursor_visible(self):
        return self.display("#{cursor_flag}") == "1"

    # -- doing ----------------------------------------------------------------
    def send(self, *keys):
        """Named keys, e.g. send('q'), send('C-c'), send('Space')."""
        self.tmux("send-keys", *keys)

    def type(self, text):
        """Literal characters (safe for '+', '-', ...)."""
        self.tmux("send-keys", "-l", "--", text)

    def resize(self, width, height):
        self.tmux("resize-window", "-x", width, "-y", height)

    # -- waiting ----------------------------------------------------------------
    def wait_for(self, predicate, timeout=10.0, what="condition"):
        """Poll the screen until predicate(lines) is true; return those lines.

        On timeout, fail with the last screen so the report shows what was there.
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %.0fs waiting for %s; screen was:\n%s"
                                     % (timeout, what, "\n".join(lines)))
            time.sleep(0.05)

    def wait_text(self, needle, timeout=10.0):
        return self.wait_for(lambda lines: needle in "\n".join(lines), timeout, repr(needle))

    def wait_dead(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not self.dead():
            if time.monotonic() > deadline:
                raise AssertionError("program still running after %.0fs; screen was:\n%s"
                                     % (timeout, self.text()))
            time.sleep(0.05)


def wait_until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(0.05)


def children(pid):
    """Pids of the direct children of `pid` (from /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ..." -- comm may contain spaces, so split after ')'
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
