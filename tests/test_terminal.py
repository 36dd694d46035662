"""The terminal layer against a stand-in window that behaves like curses where
it matters: writing the bottom-right cell raises (after drawing it), text past
the right edge raises, and attributes are kept per cell."""
import pytest

import fake_llm_training as flt
from conftest import frame_at


class Error(Exception):
    pass


class FakeCurses(object):
    """The names Terminal uses from the curses module, for a terminal with or without colours."""
    error = Error
    A_BOLD, A_DIM, A_REVERSE, A_STANDOUT = 1 << 16, 1 << 17, 1 << 18, 1 << 19
    COLOR_BLACK, COLOR_RED, COLOR_GREEN, COLOR_YELLOW, COLOR_BLUE, COLOR_MAGENTA, COLOR_CYAN, COLOR_WHITE = range(8)

    def __init__(self, colors):
        self.colors, self.pairs, self.updates = colors, {}, 0

    def curs_set(self, visibility):
        if not self.colors:
            raise Error("curs_set() returned ERR")      # as on TERM=vt100 style terminals

    def has_colors(self):
        return self.colors

    def start_color(self):
        pass

    def use_default_colors(self):
        pass

    def init_pair(self, number, fg, bg):
        self.pairs[number] = (fg, bg)

    def color_pair(self, number):
        return number << 8

    def doupdate(self):
        self.updates += 1


class FakeWindow(object):
    def __init__(self, width, height):
        self.width, self.height = width, height
        self.cells = [[" "] * width for _ in range(height)]
        self.attrs = [[0] * width for _ in range(height)]

    def keypad(self, flag):
        pass

    def getmaxyx(self):
        return self.height, self.width

    def addstr(self, y, x, text):
        for i, ch in enumerate(text):
            if x + i >= self.width:
                raise Error("addstr() returned ERR")
            self.cells[y][x + i] = ch
        if y == self.height - 1 and x + len(text) >= self.width:
            raise Error("addstr() returned ERR")       # the cursor cannot move past the last cell

    def insstr(self, y, x, text):
        self.cells[y][x:x + len(text)] = list(text)
        del self.cells[y][self.width:]

    def chgat(self, y, x, n, attr):
        for i in range(x, min(self.width, x + n)):
            self.attrs[y][i] = attr

    def noutrefresh(self):
        pass

    def text(self):
        return ["".join(row) for row in self.cells]


@pytest.mark.parametrize("width,height", [(80, 24), (120, 40), (20, 3), (1, 1)])
def test_a_frame_fills_the_window_to_the_bottom_right_cell(width, height):
    window, fake = FakeWindow(width, height), FakeCurses(colors=True)
    term = flt.Terminal(window, True, fake)
    lines = frame_at(5, width, height)
    term.draw(lines)
    assert window.text() == [line.text for line in lines]
    assert fake.updates == 1


def test_colour_and_monochrome_palettes():
    lines = frame_at(5, 120, 40)
    coloured, mono = FakeWindow(120, 40), FakeWindow(120, 40)
    flt.Terminal(coloured, True, FakeCurses(colors=True)).draw(lines)
    flt.Terminal(mono, True, FakeCurses(colors=False)).draw(lines)
    header_colour, header_mono = coloured.attrs[0][0], mono.attrs[0][0]
    assert header_colour & 0xFF00, "the header has a colour pair on a colour terminal"
    assert header_mono == FakeCurses.A_REVERSE, "and reverse video without colours"
    no_color = FakeWindow(120, 40)
    flt.Terminal(no_color, False, FakeCurses(colors=True)).draw(lines)     # --no-color / NO_COLOR
    assert not any(a & 0xFF00 for row in no_color.attrs for a in row)


def test_a_line_wider_than_a_shrunken_window_is_cut_not_wrapped():
    """A resize between render and draw: the old frame's lines are cut at the edge."""
    window = FakeWindow(40, 5)
    term = flt.Terminal(window, False, FakeCurses(colors=False))
    term.draw([flt.Line("x" * 60, [(0, 60, "header")])] + [flt.Line("y" * 60, [])] * 6)
    assert window.text() == ["x" * 40] + ["y" * 40] * 4
    assert window.attrs[0] == [FakeCurses.A_REVERSE] * 40


def key_ui(**options):
    ui = flt.Ui(seed=5)
    for name, value in options.items():
        setattr(ui, name, value)
    return ui


def test_keys_change_the_viewers_choices():
    rs = flt.Session(flt.load_catalog(), 5, {}, "rare").current
    ui = key_ui()
    for key, check in ((ord("p"), lambda: ui.paused), (ord(" "), lambda: not ui.paused),
                       (ord("+"), lambda: ui.speed == 2), (ord("-"), lambda: ui.speed == 1),
                       (ord("g"), lambda: ui.gpu_mode == "nodes"), (ord("l"), lambda: not ui.chart),
                       (ord("?"), lambda: ui.help), (27, lambda: not ui.help),
                       (ord("?"), lambda: ui.help), (10, lambda: not ui.help)):
        flt.handle_key(key, ui, rs, rs.offset)
        assert check(), chr(key)
    assert ui.touched


def test_bang_forces_an_incident_and_its_notice_fades():
    rs = flt.Session(flt.load_catalog(), 5, {}, "rare").current
    ui = key_ui()
    flt.handle_key(ord("!"), ui, rs, rs.offset)
    assert ui.notice == "incident: spike" and rs.forced
    for _ in range(flt.NOTICE_FRAMES):
        ui.next_frame()
    assert ui.notice == ""
