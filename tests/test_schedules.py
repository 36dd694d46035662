"""Learning rates as each framework's scheduler computes them, and evaluations
as each framework runs them: the program's jsonl read back and every logged
rate recomputed here from the frameworks' formulas (written out again, from
their sources), to the digits the log prints."""
import json
import math
import re

import pytest

import fake_llm_training as flt
from conftest import CATALOG, run_program


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


# -- evaluations -------------------------------------------------------------------
HF_EVAL = re.compile(r"^\{'eval_loss': [\d.]+, 'eval_runtime': (?P<rt>[\d.]+), 'eval_samples_per_second': "
                     r"(?P<sps>[\d.]+), 'eval_steps_per_second': (?P<steps>[\d.]+), 'epoch': [\d.]+\}$")


def training_samples_per_s(run):
    """The run's median training rate, samples per second, from its steps."""
    times = sorted(s["step_time_s"] for s in run["steps"].values())
    return run["config"]["global_batch_size"] / times[len(times) // 2]


@pytest.mark.parametrize("seed", [3, 11, 5])
def test_hf_eval_steps_follow_the_eval_batch(seed):
    """speed_metrics: N over the runtime, and ceil(N / (per-device batch x world)) steps
    over it: a step is one eval batch on every rank, not the training global batch; a
    forward pass alone runs at about three times training's samples per second."""
    runs = jsonl_runs(["--seed", str(seed), "--framework", "hf", "--kind", "finetune", "--exit-after-sim", "4h"])
    run = runs[1]
    c = run["config"]
    texts = run["logs"]
    heads = [i for i, t in enumerate(texts) if t == "***** Running Evaluation *****"]
    evals = [HF_EVAL.match(t) for t in texts if HF_EVAL.match(t)]
    assert heads and evals
    n = int(re.search(r"Num examples = (\d+)$", texts[heads[0] + 1]).group(1))
    batch = int(re.search(r"Batch size = (\d+)$", texts[heads[0] + 2]).group(1))
    assert batch == c["micro_batch_size"] and c["global_batch_size"] > batch * c["gpus"] or c["grad_accum_steps"] == 1
    steps = -(-n // (batch * c["gpus"]))
    for m in evals:
        runtime = float(m.group("rt"))
        assert abs(float(m.group("steps")) - steps / runtime) <= 0.0015 + steps / runtime * 1e-4
        assert abs(float(m.group("sps")) - n / runtime) <= 0.0015 + n / runtime * 1e-4
        ratio = float(m.group("sps")) / training_samples_per_s(run)
        assert 2.0 < ratio < 5.0, ratio                  # forward only, no accumulation


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_lightning_validation_counts_this_ranks_batches(seed):
    runs = jsonl_runs(["--seed", str(seed), "--framework", "lightning", "--kind", "finetune", "--exit-after-sim", "4h"])
    c = runs[1]["config"]
    per_rank = -(-(-(-c["eval_samples"] // c["dp"])) // c["eval_batch"])        # DistributedSampler, then batches
    bars = [re.match(r"^Validation DataLoader 0: 100%\|#{10}\| (\d+)/(\d+) ", t) for t in runs[1]["logs"]]
    bars = [b for b in bars if b]
    assert bars and all(int(b.group(1)) == int(b.group(2)) == per_rank for b in bars)


@pytest.mark.parametrize("seed", [1, 5, 3, 2])          # gradient accumulation 8, 1, 32, 2
def test_torchtitan_validation_tps_is_a_forward_pass(seed):
    """The validator's tps: its batches' tokens per device over the time, about three
    times training's, whatever the gradient accumulation."""
    runs = jsonl_runs(["--seed", str(seed), "--framework", "torchtitan", "--exit-after-sim", "6h"])
    run = runs[1]
    c = run["config"]
    vals = [int(m.group(1).replace(",", "")) for m in (re.search(r"validate step: +\d+ .* tps: ([\d,]+)", t)
                                                       for t in run["logs"]) if m]
    assert vals, "the run validates within 6 h"
    per_device = training_samples_per_s(run) * c["seq_len"] / c["gpus"]
    for tps in vals:
        assert 2.0 < tps / per_device < 5.0, (tps, per_device, c["grad_accum_steps"])


def deepspeed_warmup_decay_lr(peak, warmup, total, n):
    """WarmupDecayLR (lr_schedules.py at v0.16.4) after n steps: built at iteration -1
    (warmup_min_lr 0), log warm-up by default, linear decay to 0 at total_num_steps."""
    if n == 0:
        return 0.0
    it = n - 1
    if it < warmup:
        gamma = 1.0 / math.log(warmup) * math.log(it + 1)
    else:
        gamma = max(0.0, float(total - it) / float(max(1.0, total - warmup)))
    return 0.0 + (peak - 0.0) * gamma


def test_deepspeed_warmup_decay_lr_is_its_scheduler():
    """A plain DeepSpeed script's WarmupDecayLR, as the metric model computes it (no drawn
    run uses it yet: Megatron-DeepSpeed hands DeepSpeed Megatron's own scheduler)."""
    cfg = flt.make_run_config(CATALOG, 1, 1, {"framework": "deepspeed"})._replace(lr_scheduler="deepspeed")
    w, total = cfg.warmup_steps, cfg.total_steps
    assert w >= 2
    for n in list(range(0, w + 3)) + list(range(total - 3, total + 1)):
        assert flt.lr_at(cfg, n) == deepspeed_warmup_decay_lr(cfg.peak_lr, w, total, n)
    assert flt.lr_at(cfg, 1) == 0.0 and flt.lr_at(cfg, total + 1) == 0.0     # log(1) = 0; 0 at the end
