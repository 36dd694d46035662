"""Shared helpers: where the program is, how to run it as a user would, frames
at a fixed clock, golden files, and the patterns of lines several tests read."""
import io
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fake_llm_training as flt  # noqa: E402  (after the path: the checkout's copy)

CATALOG = flt.load_catalog()
EPOCH = 1790000000.0          # a fixed wall clock: 2026-09-21 14:13:20 UTC
GOLDEN = os.path.join(ROOT, "tests", "golden")


def run_program(args, timeout=120, env=None, cwd=ROOT, python=None):
    """Run `python -m fake_llm_training ARGS`; return the CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.pop("NO_COLOR", None)
    if env:
        full_env.update(env)
    return subprocess.run([python or sys.executable, "-m", "fake_llm_training"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def frame_at(seed, width, height, tau=0.0, **ui_options):
    """The full-screen frame of seed `seed` at session time tau, its log backlog
    written as the screen writes it, on the wall clock EPOCH."""
    session = flt.Session(CATALOG, seed, {}, "rare")
    sink = flt.LogSink()
    writer = flt.LogWriter(session, sink, "screen", EPOCH)
    writer.recent_past(0.0)
    if tau:
        writer.advance(0.0, tau)
    ui = flt.Ui()
    for key, value in ui_options.items():
        setattr(ui, key, value)
    rs = session.run_at(tau)
    state = flt.ScreenState(rs, rs.local(tau), EPOCH + rs.start_tau - rs.offset, sink.lines, ui)
    return flt.render_frame(state, width, height)


def text_of(lines):
    """A frame's text, a line a row."""
    return "\n".join(line.text for line in lines) + "\n"


def assert_golden(name, got):
    """`got` is exactly the text of tests/golden/NAME.  With UPDATE_GOLDEN=1 in
    the environment the file is rewritten first (read its diff before committing)."""
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN"):
        with io.open(path, "w", encoding="utf-8") as f:
            f.write(got)
    with io.open(path, encoding="utf-8") as f:
        want = f.read()
    assert got == want, "%s differs (UPDATE_GOLDEN=1 rewrites it; then read the diff)" % name


def printed_flops_per_token(config):
    """FLOPs per token behind a framework's printed TFLOP/s, each framework's own
    count, from the run's jsonl config (written out here again, from their sources)."""
    L, h, a, g = config["layers"], config["hidden"], config["heads"], config["kv_heads"]
    hd, s, ffn = config.get("head_dim", h // a), config["seq_len"], config["ffn_hidden"]
    topk, gated = config.get("active_experts", 1), config["mlp"] != "gelu"
    vocab = -(-config["vocab"] // (128 * config["tp"])) * 128 * config["tp"]      # padded as Megatron does
    if config["framework"] == "megatron":          # num_floating_point_operations
        major_minor = tuple(int(x) for x in config["software"]["megatron"].split(".")[:2])
        half = 2.0 if major_minor >= (0, 12) else 1.0
        return 12.0 * L * h * h * ((1 + g / a + s / (half * h)) * hd * a / h + ffn / h * topk * (1.5 if gated else 1)
                                   + vocab / (2.0 * L * h))
    if config["framework"] == "deepspeed":         # Megatron-DeepSpeed's throughput_calculator
        bmm = L * 2 * hd * a * s
        fwd = L * (1 + 2 // (a // g) + 1) * h * h + bmm + L * (3 if gated else 2) * ffn * h * topk + vocab * h
        return 2.0 * (3 * fwd + {"full": fwd, "selective": bmm}.get(config["recompute"], 0))
    if config["framework"] == "torchtitan":        # get_dense_model_nparams_and_flops
        return 6.0 * (config["params"] - config["vocab"] * h) + 12.0 * L * a * hd * s
    return config["flops_per_token"]


# The progress lines HF Trainer and Lightning print, read by the dialect tests
# (is every line in its format?) and the instrument tests (is every figure
# right?): one copy, so the two cannot drift apart.
TQDM_BAR = (r"^\s*(?P<pct>\d{1,3})%\|(?P<bar>[# 0-9]{10})\| (?P<n>\d+)/(?P<total>\d+) \[(?P<el>[\d:]+)<"
            r"(?P<rem>[\d:?]+), +(?P<rate>[\d.]+)(?P<unit>it/s|s/it)\]$")
HF_STEP_DICT = (r"^\{'loss': (?P<loss>[\d.]+), 'grad_norm': (?P<gn>[\d.e+-]+), 'learning_rate': (?P<lr>[\d.e+-]+), "
                r"'epoch': (?P<epoch>[\d.]+)\}$")
LIGHTNING_BAR = (r"^Epoch (?P<ep>\d+):\s+(?P<pct>\d{1,3})%\|[# 0-9]{10}\| (?P<n>\d+)/(?P<tot>\d+) \[(?P<el>[\d:]+)<"
                 r"(?P<rem>[\d:?]+), +(?P<rate>[\d.]+)it/s, v_num=\d+, train_loss=(?P<loss>[\d.e+-]+)\]$")


# The quick tier (`sh tests/run.sh --quick`): the first QUICK_CASES cases of each
# parametrized test and none of the tests marked `slow` (end to end in tmux,
# installs, whole-run soaks).  The full suite runs everything.
QUICK_CASES = 2


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true",
                     help="the quick tier: a few cases of each test, no tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: left out of the quick tier (--quick)")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--quick"):
        return
    cases, kept, dropped = {}, [], []
    for item in items:
        base = item.nodeid.split("[")[0]
        cases[base] = cases.get(base, 0) + 1
        if item.get_closest_marker("slow") or cases[base] > QUICK_CASES:
            dropped.append(item)
        else:
            kept.append(item)
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept
