"""The simulation core: every figure follows from one consistent run."""
import json
import math

import pytest

import fake_llm_training as flt
from conftest import run_program

CATALOG = flt.load_catalog()
SEEDS = range(1, 121)


def first_run(seed, **pins):
    session = flt.Session(CATALOG, seed, pins, "rare", from_start=True)
    return session.current


WINDOW = 1500     # steps of a run checked one by one (real runs are up to hundreds of thousands)


def steps_of(rs, limit=WINDOW):
    """The step events of the first `limit` steps of the run's first training segment."""
    tl = rs.timeline
    seg = tl.train_segments()[0]
    last = min(seg.last, seg.first + limit)
    end = tl.step_end(seg, last)
    return [e for e in flt.run_events(tl, -1, end) if e.kind == "step" and e.data.step <= last]


def test_parameter_counts_match_published_sizes():
    published = {"Llama-3.1-8B": 8.03e9, "Llama-3.1-70B": 70.6e9, "Llama-3.1-405B": 405.9e9,
                 "Mistral-7B-v0.1": 7.24e9, "Mixtral-8x7B": 46.7e9, "Qwen2.5-7B": 7.62e9,
                 "Gemma-2-9B": 9.24e9, "GPT-2-124M": 124.4e6, "Llama-2-7B": 6.74e9}
    for name, size in published.items():
        assert abs(flt.count_params(CATALOG.models[name]) - size) / size < 0.01, name
    mixtral = CATALOG.models["Mixtral-8x7B"]
    assert abs(flt.count_params(mixtral, active_only=True) - 12.9e9) / 12.9e9 < 0.02


def test_nicknames_borrow_real_shapes():
    for name, model in CATALOG.models.items():
        assert flt.count_params(model) == flt.count_params(CATALOG.models[model.shape])


@pytest.mark.parametrize("seed", SEEDS)
def test_configuration_is_consistent(seed):
    cfg = flt.make_run_config(CATALOG, seed, 1)
    m = cfg.shape
    assert cfg.tp * cfg.pp * cfg.cp * cfg.dp == cfg.gpus == cfg.nodes * cfg.gpus_per_node
    assert m.heads % cfg.tp == 0 and cfg.tp <= cfg.gpus_per_node
    assert m.layers % cfg.pp == 0 or cfg.framework == "megatron"      # Megatron splits stages unevenly
    assert cfg.global_batch == cfg.micro_batch * cfg.dp * cfg.grad_accum
    assert cfg.tokens_per_step == cfg.global_batch * cfg.seq_len
    assert cfg.mem_need_bytes <= cfg.gpu.memory_mib * flt.MIB
    assert cfg.mem_used_mib < cfg.gpu.memory_mib
    assert 0.05 <= cfg.mfu <= 0.7
    tps = cfg.mfu * cfg.gpus * cfg.gpu.tflops * 1e12 / cfg.flops_per_token
    assert abs(cfg.tokens_per_s - tps) / tps < 1e-9
    assert abs(sum(cfg.step_parts) - cfg.step_time_s) < 1e-9 and min(cfg.step_parts) >= 0
    assert abs(cfg.step_time_s * cfg.tokens_per_s - cfg.tokens_per_step) < 1
    assert 2 <= cfg.ckpt_bytes / cfg.params <= 18
    shards = [b for n, b in cfg.export_files if n.endswith(".safetensors")]
    assert abs(sum(shards) - 2 * cfg.params) / (2 * cfg.params) < 0.01
    assert all(b <= 5e9 + 1e6 for b in shards) and shards[-1] <= max(shards)   # save_pretrained: 5 GB shards
    assert (len(shards) > 1) == any(n == "model.safetensors.index.json" for n, _ in cfg.export_files)
    assert 0 <= cfg.warmup_steps < cfg.total_steps and cfg.min_lr < cfg.peak_lr
    assert 0.08 <= cfg.step_time_s <= 60
    assert cfg.total_steps * cfg.step_time_s <= 21 * 86400                  # weeks at most, never years


@pytest.mark.parametrize("seed", SEEDS)
def test_every_step_follows_from_the_configuration(seed):
    rs = first_run(seed)
    cfg = rs.cfg
    steps = steps_of(rs)
    assert len(steps) == min(WINDOW, cfg.total_steps - cfg.start_step)
    prev = None
    for ev in steps:
        m = ev.data
        assert abs(m.tokens_per_s * m.step_time_s - cfg.tokens_per_step) / cfg.tokens_per_step < 1e-6
        assert m.tokens_seen == m.step * cfg.tokens_per_step
        assert abs(m.mfu - cfg.flops_per_token * m.tokens_per_s / (cfg.gpus * cfg.gpu.tflops * 1e12)) < 1e-9
        hiccup = m.parts["gc"] + m.parts["warmup"] + m.parts["data"] - flt.step_parts_of(cfg)[3]
        assert (0.15 if hiccup < 1e-9 else 0.05) <= m.mfu <= 0.7   # a GC pause or slow batch slows its step
        assert abs(sum(m.parts.values()) - m.step_time_s) < 1e-9 * m.step_time_s + 1e-12
        assert 0 <= m.lr <= cfg.peak_lr * (1 + 1e-9)
        assert m.lr > 0 or m.step == cfg.total_steps and cfg.min_lr == 0     # HF's schedules end at 0
        assert 0.3 < m.loss < math.log(cfg.shape.vocab) + 3 and 0 < m.grad_norm < 1000
        if prev is not None:
            assert ev.t - prev.t >= m.step_time_s * 0.999
            if prev.data.step >= cfg.warmup_steps:
                assert m.lr <= prev.data.lr * (1 + 1e-12)
        prev = ev
    losses = [e.data.loss for e in steps]
    ups = sum(1 for a, b in zip(losses, losses[1:]) if b > a)
    assert ups >= 0.15 * (len(losses) - 1)                    # noisy, not monotone
    k = max(1, len(losses) // 10)
    if cfg.start_step == 0 and cfg.kind != "continue":
        assert sum(losses[-k:]) < sum(losses[:k])               # and falling
    if cfg.kind == "pretrain":
        assert abs(losses[0] - math.log(cfg.shape.vocab)) < 1.0  # from scratch: near ln(vocab)


def test_lr_is_exactly_on_schedule():
    """Megatron's OptimizerParamScheduler (the other frameworks' schedulers: test_schedules.py)."""
    cfg = flt.make_run_config(CATALOG, 3, 1)._replace(lr_scheduler="megatron")
    w, total = cfg.warmup_steps, cfg.total_steps
    assert flt.lr_at(cfg, 0) == 0.0 and flt.lr_at(cfg, w // 2) == pytest.approx(cfg.peak_lr * (w // 2) / w)
    assert flt.lr_at(cfg, w) == pytest.approx(cfg.peak_lr)          # after w scheduler steps (Megatron, HF)
    assert flt.lr_at(cfg, total) == pytest.approx(cfg.min_lr)
    for decay in ("cosine", "linear", "wsd", "constant"):
        for min_lr in (0.0, 0.1 * cfg.peak_lr):
            c = cfg._replace(decay=decay, min_lr=min_lr)
            lrs = [flt.lr_at(c, n) for n in range(w, total + 1)]
            assert all(b <= a for a, b in zip(lrs, lrs[1:])) and lrs[0] == pytest.approx(cfg.peak_lr)
            assert lrs[-1] == pytest.approx(cfg.peak_lr if decay == "constant" else min_lr)
            if decay == "wsd":        # stable, then the anneal over the last fifth
                assert lrs[int(0.75 * (total - w))] == pytest.approx(cfg.peak_lr)
            if decay == "cosine":     # half-way down the cosine (seed 3 itself decays linearly)
                mid = w + (total - w) // 2
                expect = min_lr + 0.5 * (cfg.peak_lr - min_lr) * (1 + math.cos(math.pi * (mid - w) / (total - w)))
                assert lrs[mid - w] == pytest.approx(expect)


@pytest.mark.parametrize("seed", range(1, 21))      # every framework and kind of run; each walks a whole run
def test_validation_checkpoints_export_and_gpus(seed):
    rs = first_run(seed)
    cfg, tl = rs.cfg, rs.timeline
    events = flt.run_events(tl, -1, tl.duration, every_step=False)
    vals = [e for e in events if e.kind == "val"]
    assert vals, "every run validates at least at the end"
    for v in [v for v in vals[:50] + vals[-5:] if v.data["step"] > cfg.start_step + 60]:   # past the first drop
        recent = [flt.loss_at(cfg, s, tl.incidents.spikes)
                  for s in range(max(cfg.start_step + 1, v.data["step"] - 19), v.data["step"] + 1)]
        epochs_past = max(0.0, v.data["step"] / float(flt.epoch_steps(cfg)) - flt.GENERALISE_EPOCHS)
        overfit = flt.OVERFIT_PER_EPOCH * epochs_past if cfg.kind == "finetune" else 0.0
        assert min(recent) * 0.8 < v.data["val_loss"] < sum(recent) / len(recent) * (1.2 + 2 * overfit)
        assert v.data["val_ppl"] == pytest.approx(math.exp(v.data["val_loss"]))
    ckpts = [e for e in events if e.kind == "checkpoint"]
    assert ckpts and ckpts[-1].data["step"] == cfg.total_steps
    for c in ckpts:
        assert 0.2e9 <= c.data["bytes"] / c.data["seconds"] <= 200e9
    export = [e for e in events if e.kind == "export"][0]
    assert export.data["total_bytes"] == sum(f["bytes"] for f in export.data["files"])
    names = [f["name"] for f in export.data["files"]]
    assert "config.json" in names and "tokenizer.json" in names
    summary = [e for e in events if e.kind == "summary"][0].data
    assert summary["steps"] == cfg.total_steps - cfg.start_step
    assert summary["checkpoints"] == len(ckpts)
    busy = 0
    samples = 0
    span = tl.duration - tl.segments[0].t0
    for t in [tl.segments[0].t0 + span * i / 240.0 for i in range(240)]:
        for g in range(0, cfg.gpus, max(1, cfg.gpus // 8)):
            r = rs.telemetry.reading(g, t)
            samples += 1
            busy += r.util >= 80
            assert 0 <= r.util <= 100 and 20 <= r.temp_c <= 95
            assert 0 < r.power_w <= cfg.gpu.power_cap_w and 0 <= r.mem_used_mib <= cfg.gpu.memory_mib
            if r.util >= 50:
                assert r.mem_used_mib * flt.MIB >= cfg.params * 2 / cfg.gpus
    assert busy >= 0.5 * samples


def test_temperature_follows_power_with_lag():
    rs = first_run(5)
    tl = rs.timeline
    train = tl.train_segments()[0]
    temps = [rs.telemetry.reading(0, train.t0 + s).temp_c for s in range(0, 200, 10)]
    assert temps[-1] - temps[0] >= 10          # heats up over minutes, not at once
    assert all(abs(b - a) <= 12 for a, b in zip(temps, temps[1:]))


def test_state_is_a_function_of_seed_and_time():
    a, b = first_run(9), first_run(9)
    t = a.timeline.train_segments()[0].t0 + 300
    assert a.timeline.moment(t) == b.timeline.moment(t)
    assert [a.telemetry.reading(g, t) for g in range(8)] == [b.telemetry.reading(g, t) for g in range(8)]
    early = flt.run_events(a.timeline, 0, t)
    chunked = []
    for lo in range(0, int(t), 37):
        chunked += flt.run_events(b.timeline, lo, min(lo + 37, t))
    assert early == chunked                   # the same events, with every figure, in any slicing


def test_a_run_is_the_same_whatever_the_start_point_and_query_order():
    joined = flt.Session(CATALOG, 9, {}, "rare")                    # meets run 1 part-way
    launched = flt.Session(CATALOG, 9, {}, "rare", from_start=True)
    a, b = joined.run_at(0.0), launched.run_at(0.0)
    assert a.cfg == b.cfg
    t = a.offset + 120.0
    assert flt.run_events(a.timeline, a.offset, t) == flt.run_events(b.timeline, a.offset, t)
    assert [a.telemetry.reading(g, t) for g in range(8)] == [b.telemetry.reading(g, t) for g in range(8)]


def test_session_finds_the_run_at_any_time_in_any_order():
    # seed 32: its first five runs lie in one window of session time (seed 31's second run
    # now lasts three days and crosses into the next window, which numbers its runs apart)
    fresh = flt.Session(CATALOG, 32, {}, "rare")
    ends = []
    for _ in range(4):
        rs = fresh.run_at(ends[-1] if ends else 0.0)
        ends.append(rs.end_tau)
    times = [0.0] + [e - 1.0 for e in ends] + [e + 1.0 for e in ends]
    expected = {tau: flt.Session(CATALOG, 32, {}, "rare").run_at(tau).cfg.run for tau in times}
    session = flt.Session(CATALOG, 32, {}, "rare")
    for tau in sorted(times, reverse=True) + sorted(times) + times[::3]:
        assert session.run_at(tau).cfg.run == expected[tau], tau
    assert sorted(set(expected.values())) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        session.run_at(-1.0)


def test_pinned_options_shape_the_run():
    cfg = flt.make_run_config(CATALOG, 4, 1, {"model": "Llama-3.1-70B", "gpu_type": "H100", "gpus": 256})
    assert (cfg.model, cfg.gpu.key, cfg.gpus) == ("Llama-3.1-70B", "H100", 256)
    with pytest.raises(flt.ConfigError, match="does not fit"):
        flt.make_run_config(CATALOG, 4, 1, {"model": "Llama-3.1-405B", "gpu_type": "L40S", "gpus": 8})


def test_incidents_restart_from_the_last_checkpoint():
    rs = first_run(11)
    cfg = rs.cfg
    forced = [("crash", cfg.start_step + (cfg.total_steps - cfg.start_step) // 2)]
    rs = flt.RunState(rs.base_cfg, rs.incident_rate, rs.start_tau, rs.offset, forced)
    tl = rs.timeline
    phases = [s.phase for s in tl.segments]
    assert phases.count("train") == 2 and "crash" in phases
    crashed, resumed = tl.train_segments()
    assert resumed.first == max(cfg.start_step, (crashed.last // cfg.ckpt_interval) * cfg.ckpt_interval)
    events = flt.run_events(tl, -1, tl.duration)
    steps = [e.data for e in events if e.kind == "step"]
    assert steps[-1].step == cfg.total_steps
    assert all(m.tokens_seen == m.step * cfg.tokens_per_step for m in steps)
    summary = [e for e in events if e.kind == "summary"][0].data
    assert summary["restarts"] == 1 and summary["steps_redone"] == crashed.last - resumed.first
    kinds = [e.kind for e in events]
    assert kinds.index("xid") < kinds.index("job_failed")


def test_fine_tunes_overfit_after_an_epoch_and_spikes_reach_validation():
    for seed in range(1, 60):
        cfg = flt.make_run_config(CATALOG, seed, 1, {"kind": "finetune"})
        if cfg.epochs >= 3:
            break
    per = flt.epoch_steps(cfg)
    val = [flt.val_loss_at(cfg, int(per * x)) for x in (0.5, 1.3, 3.0)]
    train = [flt.expected_loss(cfg, int(per * x)) for x in (0.5, 1.3, 3.0)]
    assert val[1] < val[0] and val[2] > val[1] + 0.05 * val[1], val    # bottoms out, then rises
    assert train[2] < train[1] < train[0]                                # while training loss keeps falling
    pre = flt.make_run_config(CATALOG, 6, 1)
    at = pre.start_step + 100
    calm, spiked = flt.val_loss_at(pre, at + 5), flt.val_loss_at(pre, at + 5, ((at, 0.5),))
    assert spiked > 1.1 * calm                                           # the weights, not the batch, spiked


def test_jsonl_stream_is_the_same_at_any_speed():
    fast = run_program(["--format", "jsonl", "--seed", "21", "--speed", "1000000", "--exit-after-runs", "1"])
    slow = run_program(["--format", "jsonl", "--seed", "21", "--speed", "100000", "--exit-after-runs", "1"])
    assert fast.returncode == 0 and slow.returncode == 0

    def key_events(text):
        return [line for line in text.splitlines()
                if json.loads(line)["event"] in ("step", "val", "checkpoint", "export")]
    a, b = key_events(fast.stdout), key_events(slow.stdout)
    assert len(a) > 50 and a == b


def test_jsonl_schema():
    out = run_program(["--format", "jsonl", "--seed", "12", "--speed", "1000000", "--exit-after-runs", "1"])
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    by_kind = {}
    for e in events:
        assert {"event", "run", "t"} <= set(e)
        by_kind.setdefault(e["event"], e)
    for kind, fields in {
        "config": "kind model params layers hidden heads kv_heads ffn_hidden vocab seq_len gpu_type gpu_memory_gib "
                  "gpu_peak_tflops gpu_tdp_w nodes gpus_per_node gpus tp pp dp sharding global_batch_size "
                  "micro_batch_size grad_accum_steps tokens_per_step start_step total_steps warmup_steps peak_lr "
                  "min_lr framework",
        "step": "step loss lr grad_norm step_time_s tokens_per_s tokens_seen mfu eta_s",
        "val": "step val_loss val_ppl", "checkpoint": "step path bytes seconds",
        "gpu": "gpu node util mem_used_mib mem_total_mib temp_c power_w power_limit_w",
        "export": "files total_bytes", "summary": "model steps tokens", "log": "level text"}.items():
        assert kind in by_kind, kind
        assert set(fields.split()) <= set(by_kind[kind]), kind
    assert events[-1]["event"] in ("summary", "log")
