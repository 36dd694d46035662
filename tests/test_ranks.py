"""Restarts, resumes, ranks and pipeline stages as the real code runs them (issue 18)."""
import json
import re

import pytest

import fake_llm_training as flt
from conftest import run_program

CATALOG = flt.load_catalog()


def session_output(fmt, args):
    out = run_program(["--format", fmt, "--speed", "1000000", "--from-start"] + list(args), timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def run1_events(args):
    events = [json.loads(l) for l in session_output("jsonl", args).splitlines()]
    return [e for e in events if e.get("run") == 1 and e["event"] != "gpu"]


# DeepSpeed seed 12 with incidents often: a GPU fails at step 540 of a continued pretraining, the
# other node waits out DeepSpeed's 30-minute watchdog timeout, the job relaunches on a spare node
# from global_step500 (training again at ~90 min) and runs steps 501-540 again.
REPLAY = ["--style", "deepspeed", "--seed", "12", "--incidents", "often", "--exit-after-sim", "105m"]


def test_a_relaunch_replays_the_data_but_not_the_timings():
    events = run1_events(REPLAY)
    first = {e["step"]: e for e in events if e["event"] == "step"}
    redone = [e for e in events if e["event"] == "step_redone"]
    assert len(redone) >= 20, "the seed relaunches and runs steps again"
    assert all(e["loss"] == first[e["step"]]["loss"] and e["grad_norm"] == first[e["step"]]["grad_norm"]
               for e in redone), "a deterministic data loader: the same batches, the same losses"
    assert all(e["micro_losses"] == first[e["step"]]["micro_losses"] for e in redone)
    same = [e for e in redone if e["step_time_s"] == first[e["step"]]["step_time_s"]]
    assert not same, "a new launch on other hardware times every step anew"
    parts = lambda e: [e["parts"][k] for k in ("compute", "data", "gc")]
    assert sum(parts(e) != parts(first[e["step"]]) for e in redone) == len(redone)


def test_the_relaunch_prints_new_throughput_for_the_same_iterations():
    text = session_output("plain", REPLAY)
    rates = {}
    for line in text.splitlines():
        m = re.search(r"global_step=(\d+), RunningAvgSamplesPerSec=\S+ CurrSamplesPerSec=([\d.]+)", line)
        if m:
            rates.setdefault(int(m.group(1)), []).append(m.group(2))
    lines = {}
    for line in text.splitlines():
        m = re.search(r" iteration +(\d+)/ *\d+ \|.*elapsed time per iteration \(ms\): ([\d.]+) \|.* lm loss: (\S+) \|",
                      line)
        if m:
            lines.setdefault(int(m.group(1)), []).append((m.group(2), m.group(3)))
    twice = [k for k, v in lines.items() if len(v) == 2]
    assert twice, "iterations printed by both launches"
    assert all(lines[k][0][1] == lines[k][1][1] for k in twice), "the same lm loss"
    assert all(lines[k][0][0] != lines[k][1][0] for k in twice), "another elapsed time per iteration"


# (framework, seed, how the load line names the step resumed from, and the path if it prints one)
RESUMES = [
    ("megatron", 21, r" loading distributed checkpoint from (/checkpoints/\S+) at iteration (\d+)$"),
    ("deepspeed", 12, r"\[Torch\] Loading checkpoint from (/checkpoints/\S+/global_step(\d+))/(?:zero_pp_rank_0_)?mp_rank_00_model_states"),
    ("torchtitan", 35, r"Loading the checkpoint from (/outputs/\S+/checkpoint/step-(\d+))\.$"),
    ("hf", 211, r"Continuing training from global step (\d+)$"),
    ("lightning", 211, r"Restoring states from the checkpoint path at (/outputs/\S+/checkpoints/"
                       r"epoch=\d+-step=(\d+)\.ckpt)$"),
]


@pytest.mark.slow
@pytest.mark.parametrize("framework,seed,pattern", RESUMES)
def test_a_relaunch_resumes_from_a_checkpoint_it_saved(framework, seed, pattern):
    args = ["--style", framework, "--seed", str(seed), "--incidents", "often", "--exit-after-sim", "110m"]
    events = run1_events(args)
    relaunch = [e for e in events if e["event"] == "phase" and e["phase"] == "train" and e["attempt"] == 1]
    assert relaunch and relaunch[0]["step"] > 0, "the seed relaunches after saving"
    failed = [e for e in events if e["event"] == "xid"][0]
    saved = {e["step"]: e["path"] for e in events if e["event"] == "checkpoint" and e["t"] < failed["t"]}
    resumed = relaunch[0]["step"]
    assert resumed == max(saved), "the newest checkpoint written before the failure"
    text = session_output("plain", args)
    found = [re.search(pattern, line) for line in text.splitlines()]
    found = [m for m in found if m]
    assert found and int(found[-1].groups()[-1]) == resumed
    if len(found[-1].groups()) == 2:
        named = found[-1].group(1)
        if framework == "megatron":     # it names its --load directory; the save went to iter_%07d there
            assert saved[resumed] == "%s/iter_%07d" % (named, resumed)
        else:
            assert named == saved[resumed]


def test_lightning_resumes_only_from_a_checkpoint_that_was_top_1():
    checked = 0
    for seed in range(1, 12):
        cfg = flt.make_run_config(CATALOG, seed, 1, {"framework": "lightning", "kind": "finetune"})
        losses = {k: flt.val_loss_at(cfg, k) for k in range(cfg.ckpt_interval, cfg.total_steps, cfg.ckpt_interval)}
        worse = [k for k in losses if any(losses[j] <= losses[k] for j in losses if j < k)]
        for k in worse:                   # 'val_loss' was not in top 1: nothing written, the best one stays
            best = max(j for j in losses if j < k and all(losses[i] > losses[j] for i in losses if i < j))
            assert not flt.is_saved(cfg, k) and flt.last_checkpoint_step(cfg, k) == best
            checked += 1
    assert checked, "some fine-tune's evaluation is not the best so far"


def test_resumed_jobs_start_from_a_multiple_of_their_save_interval():
    resumed = [flt.make_run_config(CATALOG, seed, 1, {"kind": "resume"}) for seed in range(1, 22)]
    assert len(set(c.start_step for c in resumed)) > 10
    assert all(c.start_step > 0 and c.start_step % c.ckpt_interval == 0 for c in resumed)


def layer_split_count(config, tp_rank_stage):
    """Parameters of one (tensor, pipeline) rank, from the config record: the layers of its stage
    (an even split, the first stages one more), each layer's weights over TP and its two norms
    whole; the padded embedding on the first stage, the final norm and output layer on the last."""
    c, stage = config, tp_rank_stage
    h, tp, pp = c["hidden"], c["tp"], c["pp"]
    hd = c.get("head_dim", h // c["heads"])
    vocab = -(-c["vocab"] // (128 * tp)) * 128 * tp
    mlp = (2 if c["mlp"] == "gelu" else 3) * h * c["ffn_hidden"]
    layer = (h * hd * 2 * (c["heads"] + c["kv_heads"]) + mlp) // tp + 2 * h
    layers = c["layers"] // pp + (1 if stage < c["layers"] % pp else 0)
    count = layers * layer + (vocab * h // tp if stage == 0 else 0)
    if stage == pp - 1:
        count += h + (vocab * h // tp if not c["tied_embeddings"] or pp > 1 else 0)
    return count


@pytest.mark.parametrize("seed", [16, 18, 17])     # 17: tied embeddings, copied to the last stage
def test_megatron_prints_each_ranks_own_parameter_count(seed):
    args = ["--style", "megatron", "--seed", str(seed), "--exit-after-sim", "10m"]
    config = run1_events(args)[0]
    assert config["event"] == "config" and config["pp"] >= 3 and "experts" not in config
    counts = {}
    for line in session_output("plain", args).splitlines():
        m = re.match(r"^ > number of parameters on \(tensor, pipeline\) model parallel rank \((\d+), (\d+)\): (\d+)$",
                     line)
        if m:
            counts.setdefault((int(m.group(1)), int(m.group(2))), set()).add(int(m.group(3)))
    tp, pp = config["tp"], config["pp"]
    assert sorted(counts) == [(t, p) for t in range(tp) for p in range(pp)], "every (t, p) of data-parallel rank 0"
    by_stage = [counts[(0, p)].pop() for p in range(pp)]
    assert by_stage == [layer_split_count(config, p) for p in range(pp)]
    first, middle, last = by_stage[0], by_stage[pp // 2], by_stage[-1]
    assert first != middle and last != middle
    assert all(counts[(t, p)] == set([by_stage[p]]) for t in range(1, tp) for p in range(pp) if counts[(t, p)])


def test_the_tp2_13b_rank_holds_more_than_half_the_model():
    model = CATALOG.models["Llama-2-13B"]
    layout = flt.Layout(2, 1, 1, 1, 1, 8, "zero1", "none", 1)
    assert flt.count_params(model) == 13015864320
    assert flt.rank_params(model, layout, 0, 32000) == 6508139520      # norms replicated on both TP ranks


SMI = ["--seed", "5", "--model", "Llama-2-70B"]


def test_the_first_pipeline_stage_holds_more_memory_than_the_last():
    cfg = flt.Session(CATALOG, 5, {"model": "Llama-2-70B"}, "rare").current.cfg
    assert cfg.pp > 1 and cfg.grad_accum >= cfg.pp and cfg.nodes * cfg.gpus_per_node == cfg.gpus
    used = {}
    for node in (0, cfg.nodes - 1):
        out = run_program(["nvidia-smi"] + SMI + ["--node", str(node)])
        assert out.returncode == 0, out.stderr
        used[node] = [int(x) for x in re.findall(r"(\d+)MiB /\s+\d+MiB", out.stdout)]
        assert len(used[node]) == cfg.gpus_per_node
    first, last = sum(used[0]) / 8.0, sum(used[cfg.nodes - 1]) / 8.0
    assert first - last > 2048, "1F1B: the first stage holds pp micro-batches in flight, the last one"
    out = run_program(["--format", "jsonl", "--speed", "1000000", "--exit-after-sim", "20s"] + SMI)   # joins mid-run
    events = [json.loads(l) for l in out.stdout.splitlines()]
    assert [e["phase"] for e in events if e["event"] == "phase"] in ([], ["train"])
    newest = max(e["t"] for e in events if e["event"] == "gpu")       # once: inside the filter it was quadratic
    gpus = [e for e in events if e["event"] == "gpu" and e["t"] == newest]
    per_stage = cfg.gpus // cfg.pp
    stage_mem = lambda s: [g["mem_used_mib"] for g in gpus if g["gpu"] // per_stage == s]
    assert min(stage_mem(0)) > max(stage_mem(cfg.pp - 1))
