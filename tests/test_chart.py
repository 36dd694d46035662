"""The loss chart, the GPU history and the wall view: pure frames at fixed seeds and clocks.

Golden files pin the chart's exact text (ASCII and braille) at three sizes; the other tests
assert what an engineer checks on a chart: a line in every column, labelled axes, and a
legend whose numbers are the ones the JSON-lines stream prints for that step."""
import json
import re

import pytest

import fake_llm_training as flt
from conftest import CATALOG, EPOCH, assert_golden, run_program, text_of

SMOOTH_LINE = set("-/\\|^o")  # what the ASCII chart draws its smoothed line (and markers) with


def state_at(seed, tau=0.0, pins=None, from_start=False, unicode=False, **ui_options):
    session = flt.Session(CATALOG, seed, pins or {}, "rare", from_start)
    rs = session.run_at(tau)
    ui = flt.Ui(unicode=unicode)
    for key, value in ui_options.items():
        setattr(ui, key, value)
    return flt.ScreenState(rs, rs.local(tau), EPOCH + rs.start_tau - rs.offset, [], ui)


def chart_at(seed, width, height, tau=0.0, unicode=False, **options):
    return flt.chart_lines(state_at(seed, tau, unicode=unicode, **options), width, height)


def plot_rows(lines):
    """(rows of the plot area, column where the plot starts): rows with the y axis '|' or '+'."""
    rows = [l.text for l in lines if re.match(r"^ *[\d.]* [|+]", l.text) and not re.match(r"^ *\+[-+]", l.text)]
    start = re.match(r"^ *[\d.]* [|+]", rows[0]).end()
    return [r[start:] for r in rows], start


def y_labels(lines):
    return [float(m.group(1)) for m in (re.match(r"^ *([\d.]+) \+", l.text) for l in lines) if m]


def x_labels(lines):
    return lines[-1].text.split()


CASES = [(5, 80, 24, 0.0), (8, 120, 32, 0.0), (12, 200, 60, 600.0)]


@pytest.mark.parametrize("unicode", [False, True], ids=["ascii", "unicode"])
@pytest.mark.parametrize("seed,width,height,tau", CASES)
def test_chart_is_exactly_the_golden_text(seed, width, height, tau, unicode):
    assert_golden("chart_seed%d_%dx%d_%s.txt" % (seed, width, height, "unicode" if unicode else "ascii"),
                  text_of(chart_at(seed, width, height, tau, unicode)))


@pytest.mark.parametrize("unicode", [False, True], ids=["ascii", "unicode"])
@pytest.mark.parametrize("seed,width,height,tau", CASES + [(3, 100, 30, 0.0), (21, 57, 16, 0.0)])
def test_a_line_in_every_column_and_labelled_axes(seed, width, height, tau, unicode):
    lines = chart_at(seed, width, height, tau, unicode)
    assert len(lines) == height and all(len(l.text) == width for l in lines)
    rows, start = plot_rows(lines)
    for x in range(width - start):
        column = [r[x] for r in rows]
        if unicode:
            assert any(0x2800 < ord(c) <= 0x28FF or c == "\u25cb" for c in column), "no line in column %d" % x
        else:
            assert SMOOTH_LINE & set(column), "no line in column %d:\n%s" % (x, text_of(lines))
    assert 4 <= len(y_labels(lines)) <= 6, text_of(lines)
    assert len(x_labels(lines)) >= 3, text_of(lines)
    assert all(re.match(r"^\d+(\.\d)?[kMB]?$", label) for label in x_labels(lines)), x_labels(lines)


def test_y_ticks_are_one_two_five_and_the_range_ignores_the_early_drop():
    lines = chart_at(5, 120, 32)                 # a pretraining run from ln(vocab), 2800 steps in
    ticks = y_labels(lines)
    steps = {round(b - a, 6) for a, b in zip(ticks[1:], ticks)}
    assert len(steps) == 1
    step = steps.pop()
    assert re.match(r"^[125]0*$", ("%g" % (step * 1000)).replace(".", "")), step
    state = state_at(5)
    assert max(ticks) < flt.loss_at(state.cfg, 1) - 2      # ln(vocab) is far above the top
    assert min(ticks) <= state.metrics.loss <= max(ticks)
    log = chart_at(5, 120, 32, log_scale=True)
    assert "log scale" in log[0].text and max(y_labels(log)) >= flt.loss_at(state.cfg, 1) - 1


def test_ascii_and_unicode_charts_show_the_same_data():
    ascii_lines, braille = chart_at(8, 120, 32), chart_at(8, 120, 32, unicode=True)
    assert y_labels(ascii_lines) == y_labels(braille) and x_labels(ascii_lines) == x_labels(braille)
    numbers = re.compile(r"\d+\.\d{4}")
    assert numbers.findall(ascii_lines[0].text) == numbers.findall(braille[0].text)
    assert all(ord(c) < 128 for l in ascii_lines for c in l.text)


@pytest.mark.slow
def test_the_legend_has_the_values_the_jsonl_stream_prints():
    seed = 11
    out = run_program(["--format", "jsonl", "--seed", str(seed), "--speed", "1000000", "--from-start",
                       "--exit-after", "4s"], timeout=60).stdout
    events = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    events = [e for e in events if e.get("run") == 1]
    steps = [e for e in events if e["event"] == "step"]
    vals = [e for e in events if e["event"] == "val"]
    assert len(steps) > 300 and len(vals) >= 3
    checked = 0
    for ev in steps[100::40][:6]:
        state = state_at(seed, ev["t"] + 1e-6, from_start=True)
        assert state.step == ev["step"]
        legend = " ".join(l.text for l in flt.chart_lines(state, 120, 32)[:2])
        assert "train %.4f" % ev["loss"] in legend, (legend, ev)
        done = [v for v in vals if v["t"] <= ev["t"]]
        assert "val %.4f" % done[-1]["val_loss"] in legend, (legend, done[-1])
        checked += 1
    assert checked == 6


def test_log_scale_key_toggles_and_is_in_the_help():
    ui = flt.Ui()
    flt.handle_key(ord("L"), ui, None, 0.0)
    assert ui.log_scale
    flt.handle_key(ord("L"), ui, None, 0.0)
    assert not ui.log_scale
    assert any(t.startswith("L ") for t in flt.HELP_KEYS)


# ---------------------------------------------------------------------------
# GPU history and the wall view
# ---------------------------------------------------------------------------

def frame(seed, width, height, tau=0.0, pins=None, unicode=False, **options):
    state = state_at(seed, tau, pins, unicode=unicode, **options)
    return flt.render_frame(state, width, height)


def test_gpus_view_fills_the_pane_with_history():
    lines = frame(5, 120, 40, pins={"gpus": 16}, view="gpus")
    used = sum(1 for l in lines if l.text.strip())
    assert used >= 0.8 * 40, text_of(lines)
    rows = [l.text for l in lines if re.match(r"^\s+\d+ \[", l.text)]
    assert len(rows) == 16 and all(" util " in r and " pwr " in r for r in rows), text_of(lines)


def test_one_node_of_eight_shows_its_gpus_at_120x40():
    lines = frame(5, 120, 40, pins={"gpus": 8})
    rows = [l.text for l in lines if re.match(r"^\s+\d+ \[#", l.text)]
    assert len(rows) == 8, text_of(lines)              # issue 10, defect 4: was one aggregate row
    assert any("loss (" in l.text for l in lines)      # the chart stays beside the panel


def first_checkpoint(seed, pins):
    """Session times (start, end) of the first checkpoint after the session joins its run."""
    rs = flt.Session(CATALOG, seed, pins, "rare").current
    events = flt.run_events(rs.timeline, rs.offset, rs.timeline.duration)
    start = [ev.t for ev in events if ev.kind == "ckpt_start"][0]
    end = [ev.t for ev in events if ev.kind == "checkpoint"][0]
    assert not [ev for ev in flt.run_events(rs.timeline, start - 150, start) if ev.kind == "checkpoint"]
    return start - rs.offset, end - rs.offset


def history_levels(text, ramp):
    return [ramp.index(c) for c in text if c in ramp]


def test_gpu_history_dips_during_a_checkpoint():
    pins = {"gpus": 16, "model": "Llama-3.1-8B"}          # a 13 s save mid-run: a few columns of history
    start, end = first_checkpoint(14, pins)
    lines = frame(14, 120, 40, end + 20.0, pins, view="gpus")
    ramp = flt.GLYPHS_ASCII["spark"]
    row = [l.text for l in lines if " node 0  ranks 0-7 " in l.text][0]
    util = history_levels(row.split(" util ")[1].split(" pwr ")[0], ramp)
    assert max(util) == len(ramp) - 1 and min(util) <= 3, row
    before = frame(14, 120, 40, start - 1.0, pins, view="gpus")       # just before it: no dip yet
    row = [l.text for l in before if " node 0  ranks 0-7 " in l.text][0]
    assert min(history_levels(row.split(" util ")[1].split(" pwr ")[0], ramp)) >= len(ramp) - 2, row


def test_wall_view_shows_big_figures_health_and_the_chart():
    state = state_at(5, view="wall")
    lines = flt.render_frame(state, 120, 40)
    text = text_of(lines)
    assert "train loss" in text and "tokens/s" in text and "ETA" in text
    assert sum(1 for l in lines if l.text.count("##") >= 6) >= 5       # block letters
    assert any(re.match(r"cluster OK \| (\d+)/\1 GPUs up", l.text) for l in lines), text
    assert any(l.text.startswith("loss (") for l in lines)
    assert all(ord(c) < 128 for c in text)
    assert lines[0].text == flt.render_frame(state_at(5), 120, 40)[0].text     # same run, same clock
    big = flt.big_text("%.4f" % state.metrics.loss, "#", 2)             # double size at 120x40
    assert any(big[0].rstrip() in l.text for l in lines)                # the loss the footer shows


@pytest.mark.parametrize("width,height", [(20, 3), (40, 10), (80, 24), (120, 40), (200, 60)])
@pytest.mark.parametrize("unicode", [False, True], ids=["ascii", "unicode"])
def test_wall_and_gpus_views_fit_every_size(width, height, unicode):
    for view in ("wall", "gpus", "chart"):
        lines = frame(5, width, height, unicode=unicode, view=view)
        assert len(lines) == height and all(len(l.text) == width for l in lines), (view, width, height)
        assert all(0 <= s < width and s + n <= width for l in lines for s, n, _ in l.spans)


VIEW_CASES = [("wall", 5, 120, 40, {}, False), ("wall", 8, 80, 24, {}, True),
              ("gpus", 5, 120, 40, {"gpus": 16}, False), ("gpus", 5, 120, 40, {"gpus": 16}, True)]


@pytest.mark.parametrize("view,seed,width,height,pins,unicode", VIEW_CASES)
def test_wall_and_gpus_views_are_exactly_the_golden_text(view, seed, width, height, pins, unicode):
    assert_golden("%s_seed%d_%dx%d_%s.txt" % (view, seed, width, height, "unicode" if unicode else "ascii"),
                  text_of(frame(seed, width, height, 0.0, pins, unicode, view=view)))


def test_legend_and_lines_carry_their_styles():
    lines = chart_at(8, 120, 32)
    styles = set(st for l in lines for _, _, st in l.spans)
    assert {"dim", "chart", "title"} <= styles            # raw faint, smoothed, validation


def test_t_key_puts_tokens_on_the_x_axis():
    ui = flt.Ui()
    flt.handle_key(ord("t"), ui, None, 0.0)
    assert ui.x_tokens and any(t.startswith("t ") for t in flt.HELP_KEYS)
    steps = chart_at(8, 120, 32)
    tokens = flt.chart_lines(state_at(8, x_tokens=True), 120, 32)
    state = state_at(8)
    assert " tokens 0-%s " % flt.fmt_count(state.step * state.cfg.tokens_per_step) in tokens[0].text
    assert " step 0-%d " % state.step in steps[0].text and " tokens " not in steps[0].text
    step_labels, token_labels = x_labels(steps), x_labels(tokens)
    assert len(token_labels) >= 3 and all(label[-1] in "kMBT" for label in token_labels[1:]), token_labels
    assert step_labels != token_labels
