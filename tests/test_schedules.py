"""Learning rates as each framework's scheduler computes them, and evaluations
as each framework runs them: the program's jsonl read back and every logged
rate recomputed here from the frameworks' formulas (written out again, from
their sources), to the digits the log prints."""
import json
import math
import re

import pytest

from conftest import run_program


def jsonl_runs(args):
    """{run: {"config": ..., "steps": {step: event}, "logs": [text], "vals": [event]}}."""
    proc = run_program(["--format", "jsonl", "--speed", "1000000", "--from-start"] + list(args), timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = {}
    for line in proc.stdout.splitlines():
        ev = json.loads(line)
        run = runs.setdefault(ev["run"], {"config": None, "steps": {}, "logs": [], "vals": []})
        if ev["event"] == "config":
            run["config"] = ev
        elif ev["event"] == "step":
            run["steps"][ev["step"]] = ev
        elif ev["event"] == "log":
            run["logs"].append(ev["text"])
        elif ev["event"] == "val":
            run["vals"].append(ev)
    return runs


def release(text):
    return tuple(int(x) for x in text.split(".")[:3])


# -- the schedulers, from the frameworks' code ------------------------------------
def transformers_lr(c, n):
    """optimization.py: LambdaLR(base_lr x lambda(n)); linear and cosine reach 0 at
    max_steps, cosine_with_min_lr maps the cosine onto [min_lr_rate, 1]."""
    w, total = c["warmup_steps"], c["total_steps"]
    if n < w:
        return c["peak_lr"] * (float(n) / float(max(1, w)))
    if c["lr_decay"] == "linear":
        return c["peak_lr"] * max(0.0, float(total - n) / float(max(1, total - w)))
    progress = float(n - w) / float(max(1, total - w))
    cosine = 0.5 * (1.0 + math.cos(math.pi * float(0.5) * 2.0 * progress))
    if c["lr_decay"] == "cosine_with_min_lr":
        cosine = max(0, cosine * (1 - c["min_lr_ratio"]) + c["min_lr_ratio"])
    return c["peak_lr"] * max(0.0, cosine)


def megatron_sched_lr(c, n):
    """OptimizerParamScheduler.get_lr, its steps counted in samples."""
    gbs = c["global_batch_size"]
    steps, warm, decay = n * gbs, c["warmup_steps"] * gbs, c["total_steps"] * gbs
    hi, lo = c["peak_lr"], c["min_lr"]
    if steps <= warm:
        return 0.0 + (hi - 0.0) * float(steps) / float(warm)
    if steps > decay:
        return lo
    ratio = float(steps - warm) / float(decay - warm)
    coeff = 1.0 - ratio if c["lr_decay"] == "linear" else 0.5 * (math.cos(math.pi * ratio) + 1.0)
    return lo + coeff * (hi - lo)


def torchtitan_lr(c, n):
    """components/lr_scheduler.py at v0.2.2 (decay_ratio unset): linear_warmup_stable_decay."""
    w, total = c["warmup_steps"], c["total_steps"]
    decay = total - w
    stable = total + 1 - w - decay
    if n < w:
        factor = float((n + 1) / float(w))
    elif n < w + stable:
        factor = 1.0
    else:
        progress = float(n + 1 - (w + stable)) / decay
        factor = {"linear": 1 - progress, "sqrt": 1 - math.sqrt(progress),
                  "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}[c["lr_decay"]]
        factor = c["min_lr_ratio"] + (1 - c["min_lr_ratio"]) * factor
    return c["peak_lr"] * factor


BAR = re.compile(r"^\s*\d+%\|.{10}\| (?P<n>\d+)/(?P<total>\d+) \[")
HF_LR = re.compile(r"^\{'loss': [\d.]+, 'grad_norm': [\d.e+-]+, 'learning_rate': (?P<lr>[\d.e+-]+), ")


@pytest.mark.parametrize("seed", [11, 3, 42, 7, 8, 12])
def test_hf_learning_rate_is_the_trainers_schedule(seed):
    """The logged learning_rate is transformers' schedule at the Trainer's own step count:
    read after lr_scheduler.step() before v4.51 (the next step's rate), before it since."""
    runs = jsonl_runs(["--seed", str(seed), "--framework", "hf", "--kind", "finetune", "--gpu-type", "H100",
                       "--exit-after-runs", "1"])
    run = runs[1]
    c = run["config"]
    assert c["lr_scheduler"] == "hf" and c["lr_decay"] in ("linear", "cosine", "cosine_with_min_lr")
    after = release(c["software"]["transformers"]) < (4, 51)
    block = {}                          # the "Running training" block (evaluations repeat Num examples)
    for text in run["logs"]:
        m = re.match(r"^.*>> +(Num examples|Num Epochs|Instantaneous batch size per device|"
                     r"Gradient Accumulation steps|Total optimization steps) = ([\d,]+)$", text)
        if m:
            block.setdefault(m.group(1), m.group(2))
    examples, micro, accum = (int(block[k].replace(",", "")) for k in (
        "Num examples", "Instantaneous batch size per device", "Gradient Accumulation steps"))
    per_rank = -(-(-(-examples // micro)) // c["gpus"])            # accelerate's even batches per rank
    per_epoch = per_rank // accum + int(per_rank % accum > 0)      # set_initial_training_values
    assert int(block["Total optimization steps"].replace(",", "")) == per_epoch * int(block["Num Epochs"]) \
        == c["total_steps"]
    bar_step, checked = None, 0
    for text in run["logs"]:
        bar = BAR.match(text)
        if bar:
            bar_step = int(bar.group("n"))
            assert int(bar.group("total")) == c["total_steps"]
        m = HF_LR.match(text)
        if m:
            n = bar_step if after else bar_step - 1
            assert float(m.group("lr")) == transformers_lr(c, n), (bar_step, m.group("lr"))
            checked += 1
    assert checked >= 5
    last = run["steps"][c["total_steps"]]
    floor = c["peak_lr"] * c["min_lr_ratio"]
    assert last["lr"] == pytest.approx(floor, abs=1e-18)          # 0 unless cosine_with_min_lr
    assert (c["lr_decay"] == "cosine_with_min_lr") == (c["min_lr"] > 0)


def test_hf_releases_both_read_the_rate():
    """The parametrized seeds cover both releases (before and since v4.51)."""
    seen = set()
    for seed in (11, 3, 42, 7, 8, 12):
        out = run_program(["--format", "jsonl", "--seed", str(seed), "--framework", "hf", "--kind", "finetune",
                           "--gpu-type", "H100", "--speed", "1000000", "--from-start", "--exit-after-sim", "1s"])
        config = json.loads(out.stdout.splitlines()[0])
        seen.add(release(config["software"]["transformers"]) < (4, 51))
    assert seen == {True, False}


@pytest.mark.parametrize("seed", [1, 2, 5, 9])
def test_deepspeed_step_lr_is_the_client_scheduler(seed):
    """Megatron-DeepSpeed: DeepSpeed's `step=N ... lr=[x]` prints, after its scheduler
    step, Megatron's OptimizerParamScheduler (the client scheduler) at full precision."""
    runs = jsonl_runs(["--seed", str(seed), "--framework", "deepspeed", "--gpu-type", "H100",
                       "--exit-after-sim", "2h"])
    c = runs[1]["config"]
    assert c["lr_scheduler"] == "megatron"
    checked = 0
    for text in runs[1]["logs"]:
        m = re.search(r"\[Rank 0\] step=(\d+), skipped=(\d+), lr=\[([\d.e+-]+(?:, [\d.e+-]+)*)\]", text)
        if m and int(m.group(1)) > 0:                    # one rate per parameter group, all on one schedule
            assert int(m.group(2)) == 0
            for lr in m.group(3).split(", "):
                assert float(lr) == megatron_sched_lr(c, int(m.group(1)))
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_torchtitan_lr_is_its_lambda(seed):
    """torchtitan's rate after each step (jsonl lr) and the one the step ran with
    (lr_used, what its metrics logger records) are its LambdaLR at v0.2.2."""
    runs = jsonl_runs(["--seed", str(seed), "--framework", "torchtitan", "--exit-after-sim", "30m"])
    c = runs[1]["config"]
    assert c["lr_scheduler"] == "torchtitan" and c["min_lr_ratio"] > 0
    steps = runs[1]["steps"]
    assert len(steps) >= 10
    for n, s in steps.items():
        assert s["lr"] == torchtitan_lr(c, n)
        assert s["lr_used"] == torchtitan_lr(c, n - 1)
