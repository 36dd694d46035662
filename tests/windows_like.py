"""Run fake_llm_training as a Windows console would see it, on Linux.

    python tests/windows_like.py MODE REPORT [program arguments...]

After importing the program (as Windows would have, with everything it needs at
import time), this driver makes the interpreter look like CPython on Windows:
sys.platform is "win32"; termios, tty, pty, fcntl, resource, grp and pwd do not
import; the signal module has only Windows' names (SIGBREAK is 21 there, which
Linux delivers as SIGTTIN, so a test can press Ctrl+Break with os.kill); TERM is
unset (consoles set none); time.gmtime refuses times outside 1970-3000 with
OSError(EINVAL) as the Windows C library does.  MODE then picks what is installed:

  curses     a stand-in for the windows-curses wheel: a module holding only names
             the real one has (A_DIM is 0 as in PDCurses, window.encoding is
             "cp65001" as under `chcp 65001`), drawing into cells that REPORT
             receives as JSON (initscr/endwin counts and the frame before each key);
             keys come from WINDOWS_LIKE_KEYS: comma-separated characters, curses
             names (PADPLUS, PADENTER, KEY_RESIZE:60x20 to resize) or "none" (a
             frame's time without a key), then WINDOWS_LIKE_THEN (default q) forever.
  no-curses  windows-curses is not installed; with WINDOWS_LIKE_VT=1 the console
             lets virtual-terminal processing be switched on (a stand-in for
             kernel32's GetConsoleMode/SetConsoleMode), else ctypes has no windll.
  einval     a closed pipe on stdout, as Windows reports it: OSError(EINVAL)
             on flush until stdout is pointed elsewhere.

What this cannot show: the real console, PDCurses' drawing, the real code page,
process creation and Windows' own signal delivery.
"""
import errno
import json
import os
import signal
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import fake_llm_training as flt  # noqa: E402  (imported before the patching, as the issue asks)

POSIX_ONLY = ("termios", "tty", "pty", "fcntl", "resource", "grp", "pwd")
WINDOWS_SIGNALS = ("SIGABRT", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM", "SIGBREAK", "SIG_DFL", "SIG_IGN",
                   "CTRL_C_EVENT", "CTRL_BREAK_EVENT")
GMTIME_END = 32535216000      # 3001-01-01T00:00:00Z: _gmtime64 stops at 3000-12-31 23:59:59 UTC


def names_of_windows_curses():
    """The [module] and [window] names of tests/windows_curses_names.txt."""
    sections, current = {}, None
    with open(os.path.join(HERE, "windows_curses_names.txt")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), set())
            else:
                current.add(line)
    return sections


class CursesError(Exception):
    pass


class Window(object):
    """A console window as PDCurses keeps it: cells, a size, scripted keys."""
    encoding = "cp65001"

    def __init__(self, module, width, height, keys, report):
        self.module, self.width, self.height, self.keys, self.report = module, width, height, keys, report
        self.cells = [[" "] * width for _ in range(height)]

    def keypad(self, flag):
        pass

    def getmaxyx(self):
        return self.height, self.width

    def addstr(self, y, x, text):
        text.encode(self.encoding)           # what the wheel does with str (a cp65001 console: UTF-8)
        for i, ch in enumerate(text):
            if x + i >= self.width:
                raise CursesError("addstr() returned ERR")
            self.cells[y][x + i] = ch

    def insstr(self, y, x, text):
        self.cells[y][x:x + len(text)] = list(text)
        del self.cells[y][self.width:]

    def chgat(self, y, x, n, attr):
        pass

    def noutrefresh(self):
        pass

    def refresh(self):
        pass

    def timeout(self, ms):
        self.wait = ms / 1000.0

    def erase(self):
        self.cells = [[" "] * self.width for _ in range(self.height)]

    def move(self, y, x):
        pass

    def clrtoeol(self):
        pass

    def getch(self):
        self.report["frames"].append(["".join(row) for row in self.cells])
        key = self.keys.pop(0) if self.keys else os.environ.get("WINDOWS_LIKE_THEN", "q")
        if key == "none":                    # no key within the frame's time
            time.sleep(getattr(self, "wait", 0))
            return -1
        if key.startswith("KEY_RESIZE:"):
            self.width, self.height = (int(n) for n in key.split(":")[1].split("x"))
            self.erase()
            return self.module.KEY_RESIZE
        return getattr(self.module, key) if len(key) > 1 else ord(key)


def fake_windows_curses(keys, report, width=120, height=40):
    """A `curses` module with only windows-curses' names (values as in PDCurses' curses.h)."""
    m = types.ModuleType("curses")
    m.error = CursesError
    m.A_NORMAL, m.A_DIM, m.A_BOLD, m.A_REVERSE = 0, 0, 0x00800000, 0x00200000
    m.A_STANDOUT = m.A_BOLD | m.A_REVERSE
    for i, name in enumerate(("BLACK", "BLUE", "GREEN", "CYAN", "RED", "MAGENTA", "YELLOW", "WHITE")):
        setattr(m, "COLOR_" + name, i)                  # PDCurses' BGR order
    m.KEY_ENTER, m.PADENTER, m.PADMINUS, m.PADPLUS, m.KEY_RESIZE = 0x157, 0x1cb, 0x1d0, 0x1d1, 0x222
    window = Window(m, width, height, keys, report)

    def initscr():
        report["initscr"] += 1
        return window

    def endwin():
        report["endwin"] += 1

    def wrapper(func, *args, **kwds):
        stdscr = initscr()
        try:
            m.start_color()
            return func(stdscr, *args, **kwds)
        finally:
            endwin()
    for name, value in (("initscr", initscr), ("endwin", endwin), ("wrapper", wrapper),
                        ("curs_set", lambda v: 1), ("has_colors", lambda: True), ("start_color", lambda: None),
                        ("use_default_colors", lambda: None), ("init_pair", lambda n, fg, bg: None),
                        ("color_pair", lambda n: n << 24), ("doupdate", lambda: None),
                        ("resize_term", lambda h, w: None), ("setupterm", lambda *a, **k: None)):
        setattr(m, name, value)
    return m


class EinvalStdout(object):
    """stdout on a pipe whose reader has gone, as Windows reports it (EINVAL),
    until fd 1 is pointed at the null device."""

    def __init__(self):
        self.buffered = []

    def _closed(self):
        return not os.path.samestat(os.fstat(1), os.stat(os.devnull))

    def write(self, text):
        self.buffered.append(text)
        if len(self.buffered) > 64:
            self.flush()
        return len(text)

    def flush(self):
        if self.buffered and self._closed():
            raise OSError(errno.EINVAL, "Invalid argument")
        self.buffered = []

    def isatty(self):
        return False

    def fileno(self):
        return 1


class Kernel32(object):
    """A console that accepts ENABLE_VIRTUAL_TERMINAL_PROCESSING (Windows 10 and later)."""

    def GetConsoleMode(self, handle, mode):
        mode._obj.value = 0x0003             # processed and wrapped output, VT not yet on
        return 1

    def SetConsoleMode(self, handle, mode):
        return 1


def console_with_vt():
    import ctypes
    ctypes.windll = types.SimpleNamespace(kernel32=Kernel32())
    sys.modules["msvcrt"] = types.SimpleNamespace(get_osfhandle=lambda fd: fd)


def look_like_windows():
    sys.platform = "win32"
    for name in POSIX_ONLY:
        sys.modules[name] = None
    for name in list(vars(signal)):
        if name.startswith("SIG") and name not in WINDOWS_SIGNALS:
            delattr(signal, name)
    signal.SIGBREAK, signal.CTRL_C_EVENT, signal.CTRL_BREAK_EVENT = 21, 0, 1
    os.environ.pop("TERM", None)
    real_gmtime = time.gmtime

    def windows_gmtime(seconds=None):
        if seconds is not None and not 0 <= seconds < GMTIME_END:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_gmtime(seconds)
    time.gmtime = windows_gmtime


def main():
    mode, report_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    report = {"initscr": 0, "endwin": 0, "frames": []}
    look_like_windows()
    if mode == "curses":
        keys = [k for k in os.environ.get("WINDOWS_LIKE_KEYS", "").split(",") if k]
        sys.modules["curses"] = fake_windows_curses(keys, report)
    else:
        sys.modules["curses"] = sys.modules["_curses"] = None
    if os.environ.get("WINDOWS_LIKE_VT"):
        console_with_vt()
    if mode == "einval":
        sys.stdout = EinvalStdout()
    sys.argv = ["fake_llm_training"] + argv
    try:
        flt.entry_point()
    finally:
        with open(report_path, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
