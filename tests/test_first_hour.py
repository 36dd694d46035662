"""What a new user meets in the first hour (issue 21): a chart that is a chart from a job's
first frame, start-up bars that say how long is left, small panes used well, tqdm bars
that redraw in place, and piped output that starts with the job's recent past."""
import calendar
import json
import os
import re
import shlex
import shutil
import sys
import time

import pytest

import fake_llm_training as flt
from conftest import run_program

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATALOG = flt.load_catalog()
EPOCH = 1790000000.0          # a fixed wall clock: 2026-09-21 14:13:20 UTC
Y_LABEL = re.compile(r"(?:^| )(\d+(?:\.\d+)?) \+")


def screen_at(session, tau, log=None, **ui_options):
    ui = flt.Ui()
    for key, value in ui_options.items():
        setattr(ui, key, value)
    rs = session.run_at(tau)
    return flt.ScreenState(rs, rs.local(tau), EPOCH + rs.start_tau - rs.offset, log or [], ui)


def first_seconds(seed):
    """Session times from a job's launch to just after its third step (from the start)."""
    session = flt.Session(CATALOG, seed, {}, "rare", True)
    tl = session.current.timeline
    train = tl.train_segments()[0]
    end = tl.step_end(train, train.first + 3) + 0.5
    return session, [end * k / 24.0 for k in range(25)]


def decimals(label):
    return len(label.split(".")[1]) if "." in label else 0


def check_y_axis(lines):
    """Each column of y labels in the frame: evenly spaced in value and in rows, no label with more
    digits than its tick; returns how many label columns were checked."""
    by_column = {}
    for row, line in enumerate(lines):
        for m in Y_LABEL.finditer(line.text):
            by_column.setdefault(m.end(), []).append((row, m.group(1)))
    for labels in by_column.values():
        assert len(labels) >= 2, labels
        values = [float(label) for _, label in labels]
        ticks = set(round(a - b, 9) for a, b in zip(values, values[1:]))
        assert len(ticks) == 1, labels                       # round values, one tick apart
        tick = ticks.pop()
        assert all(decimals(label) == decimals("%g" % tick) for _, label in labels), (tick, labels)
        gaps = set(b - a for (a, _), (b, _) in zip(labels, labels[1:]))
        assert len(gaps) == 1, labels                        # the same number of rows apart
    return len(by_column)


@pytest.mark.parametrize("seed", [4, 6, 10])
def test_a_jobs_first_seconds_show_axes_never_a_one_point_scale(seed):
    session, taus = first_seconds(seed)
    waiting = labelled = 0
    for width, height in ((80, 24), (120, 40), (200, 60)):
        for tau in taus:
            for view in ("all", "chart", "wall"):
                lines = flt.render_frame(screen_at(session, tau, view=view), width, height)
                text = "\n".join(l.text for l in lines)
                waiting += "waiting for the first step" in text
                labelled += check_y_axis(lines)
                assert not re.search(r"\d\.\d{5,} \+", text), text
    assert waiting and labelled            # both states were drawn and checked


def test_the_chart_title_names_what_its_x_axis_counts():
    state = screen_at(flt.Session(CATALOG, 8, {}, "rare"), 0.0, x_tokens=True)
    title = flt.chart_lines(state, 120, 32)[0].text
    assert " tokens 0-%s" % flt.fmt_count(state.step * state.cfg.tokens_per_step) in title
    assert " step 0-" not in title


def test_start_up_bars_count_down_the_phase():
    session = flt.Session(CATALOG, 4, {}, "rare", True)
    tl = session.current.timeline
    seen = set()
    for seg in tl.segments:
        if seg.phase not in ("launch", "build", "load", "queue"):
            continue
        t = seg.t0 + 0.25 * (seg.t1 - seg.t0)
        bar = flt.render_frame(screen_at(session, t), 120, 40)[-2].text
        left = re.search(r" \d\d:\d\d<(\d\d):(\d\d) *$", bar)
        assert left, bar
        assert int(left.group(1)) * 60 + int(left.group(2)) == int(seg.t1 - t), (bar, seg)
        seen.add(seg.phase)
    assert {"launch", "build"} <= seen


@pytest.mark.parametrize("seed", [42, 7])
def test_a_60x20_pane_gives_free_rows_to_the_log_and_cuts_the_footer_at_a_field(seed):
    session = flt.Session(CATALOG, seed, {}, "rare")
    sink = flt.LogSink()
    writer = flt.LogWriter(session, sink, "screen", EPOCH)
    writer.recent_past(0.0)
    writer.advance(0.0, 30.0)
    state = screen_at(session, 30.0, sink.lines)
    lines = [l.text for l in flt.render_frame(state, 60, 20)]
    panel = [i for i, l in enumerate(lines) if l.startswith("CLUSTER")]
    summaries = lines[panel[0] + 1:-2]
    assert summaries and all(re.search(r"\d+\.\dkW$", l.rstrip()) for l in summaries)   # one line a node
    assert len(summaries) == state.cfg.nodes and lines[panel[0] - 1].strip()      # the log fills the rest
    fields = lines[-1].rstrip().split(" | ")
    m = state.metrics
    whole = ["loss %.4f" % m.loss, "lr %.2e" % m.lr, "gnorm %.2f" % m.grad_norm, flt.fmt_rate(m.tokens_per_s),
             "%.2f s/it" % m.step_time_s, "MFU %.1f%%" % (100 * m.mfu)]
    assert len(fields) < len(whole) and fields == whole[:len(fields)], lines[-1]


def test_the_cluster_line_keeps_its_node_count_in_a_gpu_fault():
    session = flt.Session(CATALOG, 1, {}, "often", True)
    tl = session.current.timeline
    crash = [seg for seg in tl.segments if seg.phase == "crash"][0]
    for t in (crash.t0 - 5, (crash.t0 + crash.t1) / 2):
        state = screen_at(session, t)
        fault = state.rs.telemetry.cluster(t)["failed"]
        for width in (57, 70, 80, 100, 120):           # 57: the panel beside the chart at 120x40
            line = flt.cluster_line(state, width).text
            assert flt.plural(state.cfg.nodes, "node") in line, line
            assert ("GPU FAULT" in line) == bool(fault), line
    assert state.rs.telemetry.cluster(t)["failed"]           # the second moment is in the fault


@pytest.mark.parametrize("seed,style", [(44, "hf"), (7, "lightning")])
def test_tqdm_bars_redraw_in_place_on_the_screen(seed, style):
    session = flt.Session(CATALOG, seed, {"framework": style} if style else {}, "rare")
    sink, plain = flt.LogSink(), []

    class Lines(object):
        def write(self, text):
            plain.extend(text.splitlines())
    screen = flt.LogWriter(session, sink, "screen", EPOCH)
    piped = flt.LogWriter(session, Lines(), "plain", EPOCH)
    for writer in (screen, piped):
        writer.recent_past(0.0)
        writer.advance(0.0, 600.0)
    bars = [l for l in plain if flt.bar_key(l) is not None]
    shown = [text for _, text in sink.lines if flt.bar_key(text) is not None]
    assert len(bars) >= 20                                  # piped output keeps a line per update
    assert shown and len(shown) <= 3, shown                 # the screen keeps the bar's latest state
    assert shown[-1] == bars[-1]
    if style == "hf":                                       # metrics dicts land above the live bar
        assert flt.bar_key(list(sink.lines)[-1][1]) is not None


def stamp_of(line):
    """Wall-clock second of a Megatron iteration line ('[2026-12-08 00:05:21] iteration ...')."""
    m = re.search(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] iteration", line)
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) if m else None


@pytest.mark.slow
def test_piped_plain_output_begins_with_the_jobs_recent_past():
    began = int(time.time())
    out = run_program(["--format", "plain", "--style", "megatron", "--seed", "4", "--exit-after", "6s"],
                      timeout=60).stdout
    stamps = [s for s in (stamp_of(l) for l in out.splitlines()) if s is not None]
    backlog = [s for s in stamps if s < began]
    assert len(backlog) >= 20, out[:2000]
    assert stamps[:len(backlog)] == sorted(backlog)          # the recent past first, in order, then live
    assert "iteration" in out.splitlines()[-1] or len(stamps) > len(backlog)


def test_from_start_piped_output_starts_at_the_launch():
    began = int(time.time())
    out = run_program(["--format", "plain", "--style", "megatron", "--seed", "4", "--exit-after", "2s",
                       "--from-start"], timeout=60).stdout
    m = re.search(r"^\d+: W(\d\d)(\d\d) (\d\d:\d\d:\d\d)\.", out)     # the first node's torchrun warning (glog)
    assert m, out[:500]
    year = time.gmtime(began).tm_year
    first = calendar.timegm(time.strptime("%d-%s-%s %s" % (year, m.group(1), m.group(2), m.group(3)),
                                          "%Y-%m-%d %H:%M:%S"))
    assert first >= began - 1


def test_frames_write_nothing_into_the_model():
    session = flt.Session(CATALOG, 12, {}, "rare")
    rs = session.run_at(600.0)
    before = dict(vars(rs))
    cache = flt.FrameCache()
    for view in flt.VIEWS:
        ui = flt.Ui(view=view)
        flt.render_frame(flt.ScreenState(rs, rs.local(600.0), EPOCH, [], ui, cache), 200, 60)
    assert vars(rs) == before and cache.memos


def test_piped_jsonl_begins_with_the_jobs_recent_steps():
    out = run_program(["--format", "jsonl", "--style", "megatron", "--seed", "4", "--exit-after", "2s"], timeout=60).stdout
    events = [json.loads(l) for l in out.splitlines()]
    config = events[0]
    assert config["event"] == "config"
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) >= 20 and config["total_steps"] > steps[-1]["step"]     # more than 2 s of steps
    assert [e["t"] for e in steps] == sorted(e["t"] for e in steps)
    assert steps[-1]["t"] - steps[0]["t"] > 20 * min(e["step_time_s"] for e in steps)


@pytest.mark.slow          # the real program in tmux, three sizes
@pytest.mark.parametrize("width,height", [(80, 24), (120, 40), (200, 60)])
def test_the_real_program_draws_a_waiting_chart_at_a_jobs_launch(tmp_path, width, height):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    from tmuxutil import Tmux
    tmux = Tmux(tmp_path)
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "fake_llm_training", "--seed", "4",
                                                "--from-start", "--no-color", "--view", "chart"])
    try:
        tmux.start("cd %s && %s" % (shlex.quote(ROOT), command), width, height)
        lines = tmux.wait_for(lambda ls: any("waiting for the first step" in l for l in ls), 15, "the waiting chart")
        assert any(" step 0-0" in l for l in lines[:3]), "\n".join(lines)
        assert not any(Y_LABEL.search(l) for l in lines), "\n".join(lines)      # no scale from no points
    finally:
        tmux.kill()
