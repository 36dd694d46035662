"""Every capture and seed example in the README, made again from the current code.

The README holds each one between `<!-- capture: NAME -->` and `<!-- /capture -->`;
this script prints what each block should hold now.  Run it before a release:

    python3 bench/readme_captures.py            # print every block
    python3 bench/readme_captures.py --check    # exit 1 and name the blocks the README has wrong
    python3 bench/readme_captures.py --write    # put the blocks into README.md

Frames are drawn by the program's own frame functions from a session as the
program builds it (`--seed N`, its log written up to that moment), with the wall
clock fixed at CLOCK so that the text does not change from one day to the next.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import fake_llm_training as flt  # noqa: E402

README = os.path.join(ROOT, "README.md")
CLOCK = 1796068741.0          # the wall clock of every capture: 2026-11-30 19:59:01 UTC
BLOCK = re.compile(r"(<!-- capture: ([\w-]+) -->\n)(.*?)(<!-- /capture -->)", re.S)
TMUX_WINDOW = (160, 44)       # the --tmux capture's window; tmux 3.3a splits it 24 + 1 + 19 rows, 95 + 1 + 64
KIND_WORDS = {"pretrain": "pretraining", "resume": "resumed pretraining", "continue": "continued pretraining",
              "finetune": "fine-tune"}


def session(seed, pins=None, from_start=False):
    return flt.Session(flt.load_catalog(), seed, pins or {}, "rare", from_start)


def frame(seed, width, height, tau=0.0, pins=None, view="all", unicode=False):
    """The screen `python3 -m fake_llm_training --seed SEED` draws `tau` seconds in (speed 1)."""
    s = session(seed, pins)
    sink = flt.LogSink()
    writer = flt.LogWriter(s, sink, "screen", CLOCK)
    writer.recent_past(0.0)
    if tau:
        writer.advance(0.0, tau)
    rs = s.run_at(tau)
    state = flt.ScreenState(rs, rs.local(tau), CLOCK + rs.start_tau - rs.offset, sink.lines,
                            flt.Ui(1.0, view, unicode, seed))
    return [line.text.rstrip() for line in flt.render_frame(state, width, height)]


def fenced(lines, cut=None):
    """A code block of the lines (the first `cut` of them and '...', when cut)."""
    body = list(lines[:cut]) + ["..."] if cut else list(lines)
    return "```\n" + "\n".join(body) + "\n```\n"


def first_frame():
    return ("A capture at 100x30 (`--seed 42 --no-color`), the first frame:\n\n" + fenced(frame(42, 100, 30)))


def run_end():
    s = session(42)
    tau = s.first.end_tau - 10.0                 # ten seconds before the next job's launch: the summary
    return ("The same session %d minutes later (`--seed 42`, 100x30):\n\n" % round(tau / 60.0)
            + fenced(frame(42, 100, 30, tau)))


def chart_subject(seed):
    rs = session(seed).run_at(0.0)
    moment = rs.timeline.moment(rs.local(0.0))
    return "a %s run%s" % (KIND_WORDS[rs.cfg.kind], " during a validation pass" if moment.phase == "val" else "")


def chart():
    return ("The loss chart as `--view chart` draws it at 100x30 (`--seed 8 --no-color`, %s):\n\n"
            % chart_subject(8) + fenced(frame(8, 100, 30, view="chart")))


def chart_braille():
    return fenced(frame(8, 100, 30, view="chart", unicode=True)[1:13], cut=12)


def wall():
    return fenced(frame(8, 100, 30, view="wall"))


def gpus_view():
    return fenced(frame(5, 120, 40, pins={"gpus": 16}, view="gpus"), cut=13)


def nvidia_smi():
    rs = session(42).run_at(0.0)
    readings, pids = flt.node_readings(rs, 0, rs.local(0.0))
    lines = flt.nvidia_smi_table(rs.cfg, readings, pids, CLOCK).splitlines()
    return fenced(lines, cut=20)


def tmux_panes():
    """The three panes of `--tmux --seed 42` as tmux draws them, its borders included."""
    width, height = TMUX_WINDOW
    top_h, bottom_h, left_w = 24, height - 24 - 1, 95
    log = frame(42, width, top_h, view="log")
    gpus = frame(42, left_w, bottom_h, view="gpus")
    chart_pane = frame(42, width - left_w - 1, bottom_h, view="chart")
    rows = log + ["\u2500" * left_w + "\u252c" + "\u2500" * (width - left_w - 1)]
    rows += [(a.ljust(left_w) + "\u2502" + b).rstrip() for a, b in zip(gpus, chart_pane)]
    return fenced(rows)


def jsonl_step():
    s = session(42)
    lines = []

    class Out(object):
        def write(self, text):
            lines.extend(text.splitlines())
    writer = flt.LogWriter(s, Out(), "jsonl", CLOCK)
    writer.advance(0.0, s.run_at(0.0).cfg.step_time_s * 1.5)
    step = [l for l in lines if l.startswith('{"event": "step"')][0]
    cfg = s.run_at(0.0).cfg
    return ("A `step` line (`--seed 42`, %s %s on %dx %s):\n\n" % (
        "an fp16" if cfg.precision == "fp16" else "a " + cfg.precision, KIND_WORDS[cfg.kind], cfg.gpus, cfg.gpu.key)
        + fenced([step]))


DIALECTS = (  # (framework, what to show, the lines to keep: a regular expression)
    ("megatron", "Megatron-LM", r"^ \[\S+ \S+\] iteration "),
    ("deepspeed", "Megatron-DeepSpeed", None),
    ("hf", "Hugging Face Trainer", r"^(\{'loss'| *\d+%\|)"),
    ("torchtitan", "torchtitan", r" - root - INFO - step: "),
    ("lightning", "PyTorch Lightning", r"^Epoch \d+: "),
)


def dialect_lines(framework):
    """`--format plain --seed 31 --speed 1000000 --exit-after-sim 2m --framework NAME`: its lines, and its run."""
    s = session(31, {"framework": framework})
    lines = []

    class Out(object):
        def write(self, text):
            lines.extend(text.splitlines())
    writer = flt.LogWriter(s, Out(), "plain", CLOCK)
    writer.recent_past(0.0)
    writer.advance(0.0, 120.0)
    return lines, s.run_at(120.0).cfg


def deepspeed_excerpt(lines):
    """The last step before a validation and the validation (or the last step's lines)."""
    ends = [i for i, l in enumerate(lines) if l.startswith(" validation loss at iteration")]
    steps = [i for i, l in enumerate(lines) if "[Rank 0] step=" in l and (not ends or i < ends[-1])]
    first = steps[-1]
    last = ends[-1] + 1 if ends else min(len(lines) - 1, first + 2)
    return lines[first:last + 1], bool(ends)


def dialects():
    out = []
    for framework, title, keep in DIALECTS:
        lines, cfg = dialect_lines(framework)
        what = "%s (%s, %s)" % (title, cfg.model, KIND_WORDS[cfg.kind])
        if keep is None:
            excerpt, with_val = deepspeed_excerpt(lines)
            what += ", a step and the validation after it" if with_val else ", a step"
        else:
            excerpt = [l for l in lines if re.search(keep, l)][-(4 if framework == "hf" else 3):]
        out.append("%s:\n%s" % (what, fenced(excerpt)))
    return "".join(out)


CAPTURES = (("first-frame", first_frame), ("chart", chart), ("chart-braille", chart_braille), ("wall", wall),
            ("gpus-view", gpus_view), ("run-end", run_end), ("nvidia-smi", nvidia_smi),
            ("tmux-panes", tmux_panes), ("dialects", dialects), ("jsonl-step", jsonl_step))


def captures():
    """{name: the block's text now}."""
    return dict((name, make()) for name, make in CAPTURES)


def readme_blocks(text):
    """{name: the block's text in the README}."""
    return dict((m.group(2), m.group(3)) for m in BLOCK.finditer(text))


def main(argv):
    now = captures()
    if "--check" in argv or "--write" in argv:
        with open(README, encoding="utf-8") as f:
            text = f.read()
        if "--write" in argv:
            text = BLOCK.sub(lambda m: m.group(1) + now.get(m.group(2), m.group(3)) + m.group(4), text)
            with open(README, "w", encoding="utf-8") as f:
                f.write(text)
        stale = sorted(name for name in now if readme_blocks(text).get(name) != now[name])
        for name in stale:
            sys.stdout.write("README capture %r differs from the code now\n" % name)
        return 1 if stale else 0
    for name, _ in CAPTURES:
        sys.stdout.write("<!-- capture: %s -->\n%s<!-- /capture -->\n\n" % (name, now[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
