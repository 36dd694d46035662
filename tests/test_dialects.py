"""Each framework's own log dialect, with the core's numbers in it.

The regular expressions are written from the frameworks' real output: their
source (Megatron-LM megatron/training/training.py training_log and
arguments.py; DeepSpeed deepspeed/utils/logging.py, runtime/engine.py,
utils/timer.py; transformers trainer.py; torchtitan components/metrics.py
and checkpoint.py; Lightning's TQDMProgressBar; torch.distributed.run;
NCCL's INFO lines) and from logs people posted in those projects' issues.
"""
import json
import re

import pytest

import fake_llm_training as flt
from conftest import HF_STEP_DICT, LIGHTNING_BAR, TQDM_BAR, printed_flops_per_token, run_program

TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
NCCL = r"^[\w.-]+:\d+:\d+ \[\d\] NCCL INFO .+$"            # host:pid:tid [localrank] NCCL INFO ...
TORCHRUN = r"^(\d+: )?W\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ torch/distributed/run\.py:\d+\] .*$"
COMMON = [NCCL, TORCHRUN,
          r"^Converting checkpoint \S+ to Hugging Face safetensors \(\d+ shards?\) -> \S+$",
          r"^Saved \d+ files \([\d.]+ [KMGT]?B\) to \S+: .+$",
          r"^WARNING: slow rank detected: node \S+ \(ranks \d+-\d+\) step time \d+% of median; .+$",
          r"^node \S+ back to normal step time$",
          r"^WARNING: loss spike at iteration \d+ .+$"]

# Megatron-LM training_log (2024+, with --log-throughput)
MEGATRON_STEP = (r"^ \[(?P<ts>" + TS + r")\] iteration\s+(?P<it>\d+)/\s*(?P<total>\d+) \| consumed samples:\s+"
                 r"(?P<samples>\d+) \| elapsed time per iteration \(ms\): (?P<ms>\d+\.\d) \| throughput per GPU "
                 r"\(TFLOP/s/GPU\): (?P<tflops>\d+\.\d) \| learning rate: (?P<lr>\d\.\d{6}E[+-]\d\d) \| global batch "
                 r"size:\s+(?P<gbs>\d+) \| lm loss: (?P<loss>\d\.\d{6}E[+-]\d\d) \| loss scale: (?P<scale>\d+\.\d) \|"
                 r"( grad norm: (?P<gn>\d+\.\d{3}) \|)? number of skipped iterations:\s+(?P<skip>\d+) \| number of nan "
                 r"iterations:\s+(?P<nan>\d+) \|$")
# Megatron-DeepSpeed's own training_log fields (megatron/training.py): consumed tokens, .3E learning
# rate, actual seqlen, samples per second, tgs and TFLOPs; no timestamp, grad norm only with a pipeline
MDS_STEP = (r"^ iteration\s+(?P<it>\d+)/\s*(?P<total>\d+) \| consumed samples:\s+(?P<samples>\d+) \| consumed "
            r"tokens:\s+(?P<tokens>\d+) \| elapsed time per iteration \(ms\): (?P<ms>\d+\.\d) \| learning rate: "
            r"(?P<lr>\d\.\d{3}E[+-]\d\d) \| global batch size:\s+(?P<gbs>\d+) \|( lm loss: (?P<loss>\d\.\d{6}E[+-]\d\d) \|)?"
            r" loss scale: (?P<scale>\d+\.\d) \|( grad norm: (?P<gn>\d+\.\d{3}) \|)? actual seqlen:\s+(?P<seq>\d+) \| "
            r"number of skipped iterations:\s+(?P<skip>\d+) \| number of nan iterations:\s+(?P<nan>\d+) \| samples per "
            r"second: (?P<sps>\d+\.\d{3}) \| tokens per gpu per second \(tgs\): (?P<tgs>\d+\.\d{3}) \| TFLOPs: "
            r"(?P<tflops>\d+\.\d\d) \|$")
MEGATRON_OTHER = [
    r"^using world size: \d+, data-parallel(-| )size: \d+, (context-parallel size: \d+,? (hierarchical context-parallel "
    r"sizes: None(, )?)?|sequence-parallel size: 1, )tensor-model-parallel size: \d+, (encoder-tensor-model-parallel "
    r"size: 0, )?pipeline-model-parallel size: \d+( |, encoder-pipeline-model-parallel size: 0)?$",   # by release
    r"^using torch\.(bfloat16|float16) for parameters \.\.\.$",
    r"^-+ (end of )?arguments -+$", r"^  \w+ \.+ .*$",
    r"^setting number of micro-batches to constant \d+$", r"^> building \S+ tokenizer \.\.\.$",
    r"^ > padded vocab \(size: \d+\) with \d+ dummy tokens \(new size: \d+\)$",
    r"^> initialized (tensor|pipeline) model parallel with size \d+$", r"^building GPT model \.\.\.$",
    r"^ > number of parameters on \(tensor, pipeline\) model parallel rank \((\d+), (\d+)\): (\d+)$",
    r"^ loading (distributed )?checkpoint from \S+ at iteration \d+$",
    r"^ loading release (distributed )?checkpoint from \S+$",
    r"^  successfully loaded checkpoint from \S+ \[ t \d+/\d+, p \d+/\d+ \] at iteration \d+$",
    r"^\[(before the start of training step|after training is done)\] datetime: " + TS + " $",
    r"^\(min, max\) time across ranks \(ms\):$", r"^    (evaluate|save-checkpoint) \.+: \(\d+\.\d\d, \d+\.\d\d\)$",
    r"^-+$", r"^ validation loss at iteration \d+ \| lm loss value: \d\.\d{6}E[+-]\d\d \| lm loss PPL: "
             r"\d\.\d{6}E[+-]\d\d \| $",
    r"^saving checkpoint at iteration\s+\d+ to \S+ in torch_dist format$",
    r"^  successfully saved checkpoint from iteration\s+\d+ to \S+ \[ t \d+/\d+, p \d+/\d+ \]$",
]
DS_PREFIX = r"^(\S+: )?\[" + TS + r",\d{3}\] \[INFO\] \[[\w.]+:\d+:\w+\] "
DEEPSPEED_OTHER = [
    DS_PREFIX + r"cmd = .+ -m deepspeed\.launcher\.launch .+$",
    DS_PREFIX + r"(nnodes=\d+, num_local_procs=\d+, node_rank=\d+|dist_world_size=\d+|Setting CUDA_VISIBLE_DEVICES=[\d,]+)$",
    DS_PREFIX + r"(Using IP address of [\d.]+ for node \S+|Running on the following workers: [\w,-]+"
                r"|WORLD INFO DICT: \{('[\w-]+': \[[\d, ]+\](, )?)+\}"
                r"|global_rank_mapping=defaultdict\(<class 'list'>, \{('[\w-]+': \[[\d, ]+\](, )?)+\}\))$",
    DS_PREFIX + r"\[Rank 0\] step=(?P<step>\d+), skipped=(?P<skipped>\d+), lr=\[(?P<lr>[^\],]*)(, (?P=lr))*\], mom=\[\(0\.9, 0\.95\)(, \(0\.9, 0\.95\))*\]$",
    DS_PREFIX + r"epoch=\d+/micro_step=\d+/global_step=\d+, RunningAvgSamplesPerSec=[\d.e+-]+, CurrSamplesPerSec=[\d.e+-]+, "
                r"MemAllocated=[\d.]+GB, MaxMemAllocated=[\d.]+GB$",
    DS_PREFIX + r"\[Rank 0\] \[Torch\] Checkpoint global_step\d+ is (about to be saved|begin to save)!$",   # 0.17
    DS_PREFIX + r"(\[Rank 0\] )?\[Torch\] (Loading checkpoint from \S+\.\.\.|Loaded checkpoint from \S+\."
                r"|Begin Load checkpoint from \S+\.\.\.|End Load checkpoint from \S+\.\.\.)$",
    DS_PREFIX + r"\[Rank 0\] Saving model checkpoint: \S+/global_step\d+/(zero_pp_rank_0_)?mp_rank_00_model_states\.pt$",
    DS_PREFIX + r"(bf16_)?zero checkpoint saved \S+/global_step\d+/(bf16_)?zero_pp_rank_0_mp_rank_00_optim_states\.pt$",
    DS_PREFIX + r"\[Torch\] Checkpoint global_step\d+ is ready now!$",
    DS_PREFIX + r"\[Torch\] Load(ing|ed) checkpoint from (/checkpoints/\S+/global_step\d+|/models/\S+)/"
                r"(bf16_)?(zero_pp_rank_0_)?mp_rank_00_(model|optim)_states\.pt(\.\.\.|\.)$",
    r"^  successfully loaded checkpoint from \S+ at iteration \d+$",
    DS_PREFIX + r"\[Rank 0\] (DeepSpeed info: version=[\d.]+, git-hash=\w+, git-branch=\w+"
                r"|DeepSpeed Flops Profiler Enabled: False|Using client Optimizer as basic optimizer"
                r"|Removing param_group that has no 'params' in the basic Optimizer|DeepSpeed Basic Optimizer = \w+"
                r"|Creating torch\.(bfloat16|float16) ZeRO stage \d optimizer|DeepSpeed Final Optimizer = \w+"
                r"|DeepSpeed using client LR scheduler|DeepSpeed LR Scheduler = <[\w.]+ object at 0x[0-9a-f]+>)$",
    DS_PREFIX + r"\[deepspeed\] OVERFLOW! Rank 0 Skipping step\. Attempted loss scale: \d+, "
                r"(reducing to \d+|but hysteresis is \d\. Reducing hysteresis to \d)$",
    DS_PREFIX + r"(Reduce bucket size [\d,]+|Allgather bucket size [\d,]+|Prefetch bucket size [\d,]+|CPU Offload: False"
                r"|Round robin gradient partitioning: False)$",
    DS_PREFIX + r"(DeepSpeedEngine configuration:|  \w+ \.* (\S+|\{('\w+': \w+(, )?)+\})|  json = \{)$",
    r'^( +("\w+":.*|\},?)|\})$',                                   # the rest of the JSON dump
]
TITAN = r"^\[rank0\]:\[titan\] " + TS + r",\d{3} - root - INFO - "
TORCHTITAN_STEP = (TITAN + r"step:\s*(?P<step>\d+)  loss:\s*(?P<loss>[\d.]+)  grad_norm:\s*(?P<gn>[\d.]+)  memory:\s*"
                   r"(?P<mem>[\d.]+)GiB\((?P<pct>[\d.]+)%\)  tps: (?P<tps>[\d,]+)  tflops: (?P<tflops>[\d,.]+)  "
                   r"mfu: (?P<mfu>[\d.]+)%$")
TORCHTITAN_OTHER = [TITAN + r"(Starting job: .+ training|Building \d-D device mesh with .+|\[GC\] .+ \d\.\d\d seconds\.?"
                            r"|Preparing .+ dataset|CUDA capacity: .+ with [\d.]+GiB memory"
                            r"|Model .+ size: [\d,]+ total parameters|Applied .+ to the model"
                            r"|Peak FLOPS used for computing MFU: \d\.\d{3}e\+\d\d"
                            r"|CUDA memory usage for model: [\d.]+GiB\([\d.]+%\)"
                            r"|Trainer is initialized with local batch size \d+, global batch size \d+, gradient "
                            r"accumulation steps \d+, sequence length \d+, total steps \d+ \(warmup \d+\)"
                            r"|Loading the checkpoint from \S+\.|Finished loading the checkpoint in [\d.]+ seconds\."
                            r"|Training starts at step \d+|validate step:\s*\d+  loss:\s*[\d.]+  memory:\s*[\d.]+GiB"
                            r"\([\d.]+%\)  tps: [\d,]+"
                            r"|Saving the checkpoint \(or staging if async is enabled\)\."
                            r"|Saving a full checkpoint at last step, step \d+\."
                            r"|Finished saving the checkpoint \(or staging if async is enabled\)in [\d.]+ seconds\."
                            r"|Sleeping 2 seconds for other ranks to complete|Training completed)$"]
HF = r"^\[INFO\|[\w.]+:\d+\] " + TS + r",\d{3} >> "
HF_OTHER = [HF + r"(loading weights file \S+/model\.safetensors(\.index\.json)?|\*\*\*\*\* Running training \*\*\*\*\*"
                 r"|All model checkpoint weights were used when initializing \w+\.|  Continuing training from epoch \d+"
                 r"|  Num examples = [\d,]+|  Num Epochs = [\d,]+|  Instantaneous batch size per device = [\d,]+"
                 r"|  Total train batch size \(w\. parallel, distributed & accumulation\) = [\d,]+"
                 r"|  Gradient Accumulation steps = \d+|  Total optimization steps = [\d,]+"
                 r"|  Number of trainable parameters = [\d,]+|  Batch size = \d+"
                 r"|  Continuing training from checkpoint, will skip to saved global_step"
                 r"|  Continuing training from global step \d+|Saving model checkpoint to \S+/checkpoint-\d+"
                 r"|tokenizer config file saved in \S+/tokenizer_config\.json"
                 r"|Special tokens file saved in \S+/special_tokens_map\.json|Saving model checkpoint to \S+/final"
                 r"|Configuration saved in \S+/(generation_)?config\.json|Model weights saved in \S+/model\.safetensors"
                 r"|The model is bigger than the maximum size per checkpoint \(5GB\) and is going to be split in \d+ "
                 r"checkpoint shards\. You can find where each parameters has been saved in the index located at "
                 r"\S+/model\.safetensors\.index\.json\.|)$",
            r"^\*\*\*\*\* Running Evaluation \*\*\*\*\*$", r"^$",
            r"^Loading checkpoint shards: 100%\|#{10}\| (\d+)/\1 \[[\d:]+<00:00, +[\d.]+(it/s|s/it)\]$",
            r"^Training completed\. Do not forget to share your model on huggingface\.co/models =\)$",
            r"^\{'eval_loss': [\d.]+, 'eval_runtime': [\d.]+, 'eval_samples_per_second': [\d.]+, "
            r"'eval_steps_per_second': [\d.]+, 'epoch': [\d.]+\}$",
            r"^\{'train_runtime': [\d.]+, 'train_samples_per_second': [\d.]+, 'train_steps_per_second': [\d.]+, "
            r"'train_loss': [\d.]+, 'epoch': [\d.]+\}$"]
LIGHTNING_OTHER = [r"^(GPU available: True \(cuda\), used: True|TPU available: False, using: 0 TPU cores"
                   r"|HPU available: False, using: 0 HPUs|IPU available: False, using: 0 IPUs|distributed_backend=nccl|-{100}|-{40,80}|"
                   r"|All distributed processes registered\. Starting with \d+ processes)$",
                   r"^Initializing distributed: GLOBAL_RANK: \d+, MEMBER: \d+/\d+$",
                   r"^LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: \[[\d,]+\]$",
                   r"^  \| Name  \| Type\s+\| Params\s*(\| Mode )?$", r"^0 \| model \| \w+ \| [\d.]+ [KMBT]\s*( \| train)?$",
                   r"^[\d.]+ [KMBT]?\s+(Trainable|Non-trainable|Total) params$", r"^0\s+Non-trainable params$",
                   r"^[\d.]+ *Total estimated model params size \(MB\)$",     # "{:<10.3f}": no gap past 10
                   r"^Restoring states from the checkpoint path at \S+$",
                   r"^Validation DataLoader 0: 100%\|#{10}\| \d+/\d+ \[[\d:]+<00:00, +[\d.]+it/s\]$",
                   r"^Epoch \d+, global step \d+: 'val_loss' reached (?P<v>[\d.]+) \(best (?P=v)\), saving model to "
                   r"'\S+/epoch=\d+-step=\d+\.ckpt' as top 1$",
                   r"^Epoch \d+, global step \d+: 'val_loss' was not in top 1$",
                   r"^`Trainer\.fit` stopped: `max_epochs=\d+` reached\.$"]

DIALECTS = {
    "megatron": ([MEGATRON_STEP], MEGATRON_OTHER),
    "deepspeed": ([MDS_STEP], MEGATRON_OTHER + DEEPSPEED_OTHER),
    "torchtitan": ([TORCHTITAN_STEP], TORCHTITAN_OTHER),
    "hf": ([HF_STEP_DICT, TQDM_BAR], HF_OTHER),
    "lightning": ([LIGHTNING_BAR], LIGHTNING_OTHER),
}


def run_style(style, seed):
    out = run_program(["--format", "jsonl", "--framework", style, "--seed", str(seed), "--speed", "1000000",
                       "--exit-after-runs", "1", "--from-start", "--exit-after-sim", "3h"])   # runs last days
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    config = events[0]
    assert config["event"] == "config" and config["framework"] == style
    steps = {e["step"]: e for e in events if e["event"] == "step"}
    logs = [e for e in events if e["event"] == "log"]
    return config, steps, logs


def close(a, b, unit):
    """a equals b after rounding to `unit` (half a unit of slack, plus float noise)."""
    return abs(a - b) <= unit / 2 + 1e-9 * max(1.0, abs(b))


@pytest.mark.parametrize("style", sorted(DIALECTS))
@pytest.mark.parametrize("seed", [6, 17])
def test_every_line_is_in_the_frameworks_format(style, seed):
    config, steps, logs = run_style(style, seed)
    step_res, other_res = DIALECTS[style]
    patterns = [re.compile(p) for p in step_res + other_res + COMMON]
    strays = [l["text"] for l in logs if not any(p.match(l["text"]) for p in patterns)]
    assert not strays, "lines in no %s format:\n%s" % (style, "\n".join(strays[:10]))
    step_lines, last_bar = [], None
    for l in logs:
        bar = re.match(TQDM_BAR, l["text"])
        if bar:
            last_bar = int(bar.group("n"))       # the HF dict follows the bar of its step
        m = re.match(step_res[0], l["text"])
        if m:
            step_lines.append((m, last_bar))
    assert len(step_lines) >= 5
    for m, bar_step in step_lines:
        check_step_line(style, config, steps, m.groupdict(), bar_step)


def check_step_line(style, config, steps, d, bar_step):
    """What one step line must show of its own step (window statistics are
    recomputed in test_instruments.py)."""
    if style in ("megatron", "deepspeed"):
        s = steps[int(d["it"])]
        assert int(d["total"]) == config["total_steps"]
        assert int(d["samples"]) == s["step"] * config["global_batch_size"]
        assert d["lr"] == ("%.6E" if style == "megatron" else "%.3E") % s["lr"]
        assert (d["gn"] is None) == (style == "deepspeed" and config["pp"] == 1 or bool(s.get("skipped")))
        if d["gn"] is not None:
            assert close(float(d["gn"]), s["grad_norm"], 1e-3)
        per_gpu = printed_flops_per_token(config) * config["tokens_per_step"] / (float(d["ms"]) / 1000) / config["gpus"] / 1e12
        assert abs(float(d["tflops"]) - per_gpu) <= 0.1 + 1e-3 * per_gpu      # from the printed time per iteration
    elif style == "torchtitan":
        s = steps[int(d["step"])]
        assert close(float(d["loss"]), s["loss"], 1e-5)
        assert close(float(d["gn"]), s["grad_norm"], 1e-4)
        tps = int(d["tps"].replace(",", ""))
        mfu = 100 * printed_flops_per_token(config) * tps / (config["gpu_peak_tflops"] * 1e12)
        assert abs(float(d["mfu"]) - mfu) <= 0.005 + mfu * 0.5 / tps + 1e-9     # tps is printed rounded
    elif style == "hf":
        s = steps[bar_step]
        assert abs(float(d["gn"]) - s["grad_norm"]) <= 1e-12 * s["grad_norm"]
        since_451 = tuple(int(x) for x in config["software"]["transformers"].split(".")) >= (4, 51)
        assert float(d["lr"]) == s["lr_used" if since_451 else "lr"]         # read before lr_scheduler.step()
        epoch = s["step"] / float(config["total_steps"]) * config["epochs"]
        assert close(float(d["epoch"]), epoch, 0.01) and len(d["epoch"].split(".")[1]) <= 2
    else:
        per_epoch = config["total_steps"] // config["epochs"]
        n_train, dp, micro = config["train_samples"], config["dp"], config["micro_batch_size"]
        batches = -(-(-(-n_train // dp)) // micro) if n_train else per_epoch * config["grad_accum_steps"]
        assert int(d["tot"]) == batches               # Lightning counts this rank's batches
        s = steps[int(d["ep"]) * per_epoch - (-int(d["n"]) // config["grad_accum_steps"])]   # a short last step
        assert abs(float(d["loss"]) - s["micro_losses"][-1]) <= 0.006 * s["loss"]      # rank 0's last batch


def test_tqdm_remaining_is_the_rest_at_the_shown_rate():
    """tqdm computes the remaining time from the rate it shows."""
    config, steps, logs = run_style("hf", 6)
    bars = [m for m in (re.match(TQDM_BAR, l["text"]) for l in logs) if m]
    assert len(bars) >= 10
    for m in bars:
        n, total, rate = int(m.group("n")), int(m.group("total")), float(m.group("rate"))
        per_it = rate if m.group("unit") == "s/it" else 1.0 / rate
        assert (m.group("unit") == "s/it") == (per_it > 1)
        rem = sum(int(x) * 60 ** i for i, x in enumerate(reversed(m.group("rem").split(":"))))
        expect = (total - n) * per_it
        assert abs(rem - expect) <= 1 + 0.005 * (total - n) * per_it, (m.group(0), expect)


def test_auto_style_fits_the_run():
    catalog = flt.load_catalog()
    for seed in range(1, 301):
        cfg = flt.make_run_config(catalog, seed, 1)
        if cfg.kind == "finetune":
            assert cfg.framework in flt.FINETUNE_FRAMEWORKS
        else:
            assert cfg.framework in flt.PRETRAIN_FRAMEWORKS, (seed, cfg.kind, cfg.framework)
        if cfg.framework == "lightning":
            assert cfg.params < 100e9
        if cfg.params > 100e9:
            assert cfg.kind != "finetune" or cfg.gpus >= 64


@pytest.mark.parametrize("seed", [11, 39])           # one node (hf), four nodes (megatron)
def test_incident_lines_use_the_real_error_text(seed):
    catalog = flt.load_catalog()
    session = flt.Session(catalog, seed, {}, "off", from_start=True)
    rs = session.current
    rs = flt.RunState(rs.base_cfg, rs.incident_rate, rs.start_tau, rs.offset, [("crash", rs.cfg.start_step + 20)])
    ctx = flt.LogContext(rs, 1.7e9)
    lines = [text for ev in flt.run_events(rs.timeline, -1, rs.timeline.duration)
             for _, text in flt.event_lines(ctx, ev)]
    text = "\n".join(lines)
    assert re.search(r"\[rank\d+\]: RuntimeError: CUDA error: uncorrectable ECC error encountered\n.*\n"
                     r".*For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
                     r".*Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions\.", text)
    assert "torch.distributed.elastic.multiprocessing.errors.ChildFailedError" in text
    assert re.search(r"train\.py FAILED\n(\d+: )?-{60}\n", text)
    assert re.search(r"exitcode  : 1 \(pid: \d+\)\n(\d+: )?  error_file: <N/A>\n(\d+: )?  traceback : To enable "
                     r"traceback see: https://pytorch\.org/docs/stable/elastic/errors\.html", text)
    timeout = re.search(r"\[Rank (\d+)\] Watchdog caught collective operation timeout: WorkNCCL\(SeqNum=\d+, "
                        r"OpType=(\w+), NumelIn=\d+, NumelOut=\d+, Timeout\(ms\)=\d+\) ran for \d+ milliseconds "
                        r"before timing out\.", text)
    if rs.cfg.nodes == 1:       # torchrun stops the other ranks at once: no one waits for a timeout
        assert not timeout and "srun:" not in text
    else:                       # the other nodes wait in their all-reduce until the NCCL timeout
        assert timeout and "traceback : Signal 6 (SIGABRT) received by PID" in text
        assert (timeout.group(2) == "ALLREDUCE") == (rs.cfg.sharding == "none")    # sharded: gathers, scatters
        assert re.search(r"^srun: error: \S+: task \d+: Exited with exit code 1$", text, re.M)
    assert text.count("NCCL INFO Init COMPLETE") == 0 and text.count("- Init COMPLETE") >= 2   # NCCL re-initialised
