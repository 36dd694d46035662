"""Shared helpers: where the program is and how to run it as a user would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_program(args, timeout=120, env=None, cwd=ROOT, python=None):
    """Run `python -m fake_llm_training ARGS`; return the CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.pop("NO_COLOR", None)
    if env:
        full_env.update(env)
    return subprocess.run([python or sys.executable, "-m", "fake_llm_training"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout, env=full_env, cwd=cwd)


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
