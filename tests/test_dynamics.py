"""Loss levels that follow the data, and GPU readings that follow the step's anatomy."""
import math
import random

import fake_llm_training as flt

CATALOG = flt.load_catalog()
DATASETS = {d.name: d for d in CATALOG.datasets}
WEB = "HuggingFaceFW/fineweb"
CODE = "bigcode/the-stack-v2-dedup"


def on_corpus(cfg, name):
    """The same run (model, tokens, schedule) on another pretraining corpus."""
    corpus = DATASETS[name]
    floor = flt.initial_losses(random.Random(0), cfg.kind, cfg.shape, cfg.params, corpus)[1]
    return cfg._replace(corpus=corpus, dataset=name, loss_floor=floor)


def pretrains(seeds):
    return [flt.make_run_config(CATALOG, seed, 1, {"kind": "pretrain"}) for seed in seeds]


def test_code_ends_near_half_of_web_text_and_every_corpus_starts_at_ln_vocab():
    for cfg in pretrains(range(1, 13)):
        web, code = on_corpus(cfg, WEB), on_corpus(cfg, CODE)
        end = cfg.total_steps
        ratio = flt.expected_loss(code, end) / flt.expected_loss(web, end)
        assert 0.5 <= ratio <= 0.6, (cfg.model, ratio)
        for run in (web, code):
            assert abs(flt.loss_at(run, 1) - math.log(cfg.shape.vocab)) < 1.5
        order = ["togethercomputer/RedPajama-Data-V2", WEB, "HuggingFaceFW/fineweb-edu",
                 "cerebras/SlimPajama-627B", "EleutherAI/pile-deduped", CODE]
        ends = [flt.expected_loss(on_corpus(cfg, name), end) for name in order]
        assert ends == sorted(ends, reverse=True), list(zip(order, ends))


def test_drawn_code_pretrains_end_below_web_text_pretrains_of_the_same_model():
    by_model = {}
    for cfg in pretrains(range(1, 161)):
        kind = "code" if cfg.dataset == CODE else "web" if DATASETS[cfg.dataset].loss_level >= 0.98 else None
        if kind:
            by_model.setdefault(cfg.model, {}).setdefault(kind, []).append(
                flt.expected_loss(cfg, cfg.total_steps))
    pairs = [(max(v["code"]), min(v["web"])) for v in by_model.values() if "code" in v and "web" in v]
    assert len(pairs) >= 3
    assert all(code < 0.7 * web for code, web in pairs), pairs


def test_single_pass_gap_follows_the_data_and_repeats_widen_it():
    cfg = pretrains([1])[0]
    dedup, raw = on_corpus(cfg, CODE), on_corpus(cfg, "togethercomputer/RedPajama-Data-V2")
    mid = cfg.total_steps // 2
    assert flt.repeats(raw, cfg.total_steps) == 0
    assert 0 < flt.pretrain_val_gap(dedup, mid) < flt.pretrain_val_gap(raw, mid) <= 0.011
    small = next(c for c in pretrains(range(1, 200)) if flt.repeats(c, c.total_steps) >= 2.5)
    per_pass = small.corpus.tokens / float(small.tokens_per_step)
    steps = [int(per_pass * x) for x in (0.5, 1.5, 2.5, min(3.5, small.total_steps / per_pass))]
    gaps = [flt.pretrain_val_gap(small, s) for s in steps]
    assert abs(gaps[0] - small.corpus.val_gap) < 1e-9 and gaps[0] < 0.01
    assert gaps[0] < gaps[1] < gaps[2] < gaps[3] < 0.15, gaps
    assert gaps[3] - gaps[2] > gaps[2] - gaps[1] > gaps[1] - gaps[0]        # every repeat widens it more
    # up to ~4 passes repeated tokens are worth nearly as much as new ones (Muennighoff et al.)
    tokens = 4.0 * small.corpus.tokens
    assert 0.9 * tokens < flt.effective_tokens(small, tokens) < tokens


def test_fine_tunes_start_and_end_by_the_nature_of_their_data():
    runs = [flt.make_run_config(CATALOG, seed, 1, {"kind": "finetune"}) for seed in range(1, 81)]
    chat = [c for c in runs if DATASETS[c.dataset].loss_level >= 0.95]
    math_code = [c for c in runs if c.dataset in ("meta-math/MetaMathQA", "ise-uiuc/Magicoder-OSS-Instruct-75K")]
    assert chat and math_code
    mean = lambda xs: sum(xs) / len(xs)
    assert mean([c.loss_start for c in math_code]) < 0.75 * mean([c.loss_start for c in chat])
    assert mean([flt.expected_loss(c, c.total_steps) for c in math_code]) < \
        0.75 * mean([flt.expected_loss(c, c.total_steps) for c in chat])
    for c in runs[:20]:                       # in the first epoch the held-out split sits the data's gap above
        half = flt.epoch_steps(c) // 2
        gap = flt.val_loss_at(c, half) / flt.expected_loss(c, half) - 1
        assert abs(gap - c.corpus.val_gap) < 0.02, (c.dataset, gap)


def data_stall_step(tl, seg, block):
    """The step of block `block` (DATA_STALL_BLOCK steps) whose data wait holds
    the block's slow batch, read from the steps' named parts (None unless the
    whole block is inside the segment)."""
    first, last = block * flt.DATA_STALL_BLOCK, (block + 1) * flt.DATA_STALL_BLOCK - 1
    if first <= seg.first or last > seg.last:
        return None
    data = {k: tl.step_parts(seg, k)["data"] for k in range(first, last + 1)}
    stall = max(data, key=data.get)
    assert data[stall] >= min(data.values()) + 0.5 * tl.stall_s, "a block has one slow batch"
    return stall


def _steady(cfg, node=-1):
    tl = flt.Timeline(cfg)
    seg = tl.train_segments()[0]
    return tl, seg, flt.step_load(tl, seg, seg.first + 10, node)


def test_data_stalls_and_first_steps_read_idle_while_steady_steps_read_busy():
    for seed in (3, 5, 13, 27):        # runs long enough for a whole block (seeds 11 and 55 end before one)
        cfg = flt.make_run_config(CATALOG, seed, 1)
        tl, seg, (busy, power) = _steady(cfg)
        assert busy >= 0.95
        stall = data_stall_step(tl, seg, seg.first // flt.DATA_STALL_BLOCK + 1)
        assert stall is not None, seed
        s_busy, s_power = flt.step_load(tl, seg, stall, -1)
        first_busy, _ = flt.step_load(tl, seg, seg.first + 1, -1)
        assert s_busy < busy - 0.05 and s_power < power and first_busy < 0.75


def test_tiny_micro_batches_leave_launch_gaps():
    cluster = flt.make_cluster(CATALOG, 1, {"gpu_type": "H100", "gpus": 8})

    def share(name, mbs, seq):
        model = CATALOG.models[name]
        params = flt.count_params(model)
        layout = flt.Layout(1, 1, 1, 1, 1, 8, "zero1", "none", mbs)
        parts = flt.step_parts(model, params, params, cluster, layout, seq, 4, "deepspeed", "bf16")
        return flt.kernel_share(model, layout, 4, parts.compute)
    assert share("GPT-2-124M", 1, 1024) < 0.7 < 0.99 < share("GPT-2-124M", 4, 2048)
    assert share("Llama-3.1-8B", 1, 4096) > 0.99


def test_communication_bound_layouts_read_busy_at_low_power():
    pins = {"model": "Llama-3.1-8B", "gpus": 32, "framework": "hf"}
    nvlink = flt.make_run_config(CATALOG, 1, 1, dict(pins, gpu_type="H100"))
    pcie = flt.make_run_config(CATALOG, 1, 1, dict(pins, gpu_type="H100-PCIe"))
    assert pcie.step_parts.comm > 0.3 * pcie.step_time_s and nvlink.step_parts.comm < 0.1 * nvlink.step_time_s
    (_, _, (busy_n, power_n)), (_, _, (busy_p, power_p)) = _steady(nvlink), _steady(pcie)
    assert busy_p >= 0.97 and busy_n >= 0.97               # NCCL kernels count as busy ...
    assert power_p < 0.6 * power_n                          # ... but draw little power
    rs = flt.Session(CATALOG, 1, dict(pins, gpu_type="H100-PCIe"), "off", from_start=True).current
    seg = rs.timeline.train_segments()[0]
    r = rs.telemetry.reading(0, rs.timeline.step_end(seg, seg.first + 200))
    assert r.util >= 90 and r.power_w < 0.6 * pcie.gpu.power_cap_w


def test_a_sample_inside_a_long_steps_stall_reads_idle():
    """nvidia-smi averages over its sample period, not over the step: a 1 s sample inside
    the data stall of a 12 s step reads idle, a sample in the step's kernels busy."""
    for seed in range(1, 60):
        cfg = flt.make_run_config(CATALOG, seed, 1)
        tl = flt.Timeline(cfg)
        seg = tl.train_segments()[0]
        stall = data_stall_step(tl, seg, seg.first // flt.DATA_STALL_BLOCK + 1)
        if cfg.step_time_s > 5 and stall is not None:
            break
    start = tl.step_end(seg, stall - 1) + tl.pause_after(stall - 1)
    assert tl.stall_s >= 1.0
    idle_util, idle_power = flt.window_load(tl, seg, start + 1.0, -1)
    busy_util, busy_power = flt.window_load(tl, seg, start + 4.0, -1)
    whole, _ = flt.step_load(tl, seg, stall, -1)
    assert idle_util < 0.05 < 0.9 < whole and busy_util > 0.95 and idle_power < 0.5 * busy_power
