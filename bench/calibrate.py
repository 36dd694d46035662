"""The performance model next to published training throughput.

Each row of the project's research notes (research/throughput.md, kept outside
this repository; each row below names its source) that names its model, card,
count, parallel layout and batch is rebuilt here as a layout and run through
fake_llm_training.step_parts.  Printed: published tokens/s per GPU, the model's,
and both as MFU (model FLOPs 6N + 12*L*h*s per token, over the card's dense
BF16 peak, so rows compare on one definition).  Where a source gives TFLOP/s
instead of tokens/s, tokens/s is derived with that source's own FLOP formula
(noted per row).  Run: python3 bench/calibrate.py [--markdown]
"""
import collections
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fake_llm_training as flt  # noqa: E402

CATALOG = flt.load_catalog()
M = flt.Model
# Shapes not in data/models.txt, from the papers / model cards.
SHAPES = {
    "GPT-2-8.3B": M("GPT-2-8.3B", "gpt2", 72, 3072, 32, 32, None, 12288, 51200, 1024, True, "gelu", None, None, ""),
    "GPT-1T": M("GPT-1T", "gpt2", 128, 25600, 160, 160, None, 102400, 51200, 2048, True, "gelu", None, None, ""),
    "GPT-145.6B": M("GPT-145.6B", "gpt2", 80, 12288, 96, 96, None, 49152, 51200, 2048, True, "gelu", None, None, ""),
    "GPT-3-175B": M("GPT-3-175B", "gpt2", 96, 12288, 96, 96, None, 49152, 50257, 2048, True, "gelu", None, None, ""),
    "BLOOM-176B": M("BLOOM-176B", "bloom", 70, 14336, 112, 112, None, 57344, 250880, 2048, True, "gelu", None, None, ""),
    "MPT-70B": M("MPT-70B", "mpt", 80, 8192, 64, 64, None, 32768, 50432, 2048, True, "gelu", None, None, ""),
    "MPT-3B": M("MPT-3B", "mpt", 32, 2560, 32, 32, None, 10240, 50432, 2048, True, "gelu", None, None, ""),
    # spot-check shapes: MPT from llm-foundry's yamls (NumParams column agrees within 0.3%), Megatron's
    # weak-scaling GPTs from Narayanan et al. Table 1 (heads, hidden, layers; 4h MLP, 51200 vocab), NeMo's
    # GPT-3 5B/20B from its configs (their model TFLOP/s over tokens/s agrees with 6N + 12lhs within 0.5%)
    "MPT-7B": M("MPT-7B", "mpt", 32, 4096, 32, 32, None, 16384, 50432, 2048, True, "gelu", None, None, ""),
    "MPT-13B": M("MPT-13B", "mpt", 40, 5120, 40, 40, None, 20480, 50432, 2048, True, "gelu", None, None, ""),
    "MPT-30B": M("MPT-30B", "mpt", 48, 7168, 64, 64, None, 28672, 50432, 2048, True, "gelu", None, None, ""),
    "GPT-1.7B": M("GPT-1.7B", "gpt2", 24, 2304, 24, 24, None, 9216, 51200, 2048, True, "gelu", None, None, ""),
    "GPT-7.5B": M("GPT-7.5B", "gpt2", 36, 4096, 32, 32, None, 16384, 51200, 2048, True, "gelu", None, None, ""),
    "GPT-39.1B": M("GPT-39.1B", "gpt2", 48, 8192, 64, 64, None, 32768, 51200, 2048, True, "gelu", None, None, ""),
    "GPT-310.1B": M("GPT-310.1B", "gpt2", 96, 16384, 128, 128, None, 65536, 51200, 2048, True, "gelu", None, None,
                    ""),
    "GPT-529.6B": M("GPT-529.6B", "gpt2", 105, 20480, 128, 128, None, 81920, 51200, 2048, True, "gelu", None, None,
                    ""),
    "GPT-3-5B": M("GPT-3-5B", "gpt2", 24, 4096, 32, 32, None, 16384, 50304, 2048, True, "gelu", None, None, ""),
    "GPT-3-175B-131K": M("GPT-3-175B-131K", "gpt2", 96, 12288, 96, 96, None, 49152, 131072, 4096, True, "gelu",
                         None, None, ""),
    "GPT-3-20B": M("GPT-3-20B", "gpt2", 44, 6144, 48, 48, None, 24576, 50304, 2048, True, "gelu", None, None, ""),
}
# torchtitan's Grand Teton H100s: 96 GB HBM2e at 2.4 TB/s, 500 W power limit; "the actual peak TFLOPs
# number is between SXM and NVL" (benchmarks/llama3_h100_202412_torchtitan.md, footnote 2): taken half
# way between the SXM's 989 and the NVL's 835 dense BF16.  torchtitan's MFU divides by the SXM's 989.
CARDS = {"H100-GT": CATALOG.gpus["H100"]._replace(key="H100-GT", name="NVIDIA H100 96GB HBM2e (500 W)",
                                                   memory_mib=98304, tflops=(989 + 835) / 2.0, power_cap_w=500,
                                                   hbm_gbs=2400)}
MFU_PEAK = {"H100-GT": 989.0}
Row = collections.namedtuple("Row", "ref model gpu count fabric_gbit style tp pp cp ep vp sharding recompute "
                                    "mbs seq gbs precision published note")


def narayanan_tokens(tflops, model, seq):
    """Tokens/s/GPU from Megatron's hardware TFLOP/s (Narayanan et al. eq.: 96 l h^2 (1 + s/6h + V/16lh), recompute counted)."""
    l, h, v = model.layers, model.hidden, model.vocab
    per_token = 96.0 * l * h * h * (1 + seq / (6.0 * h) + v / (16.0 * l * h))
    return tflops * 1e12 / per_token


def model_tokens(tflops, model, seq, hardware=False):
    """Tokens/s/GPU from TFLOP/s counted as 6N + 12lhs (times 4/3 when the source counts recompute)."""
    active = flt.count_params(model, active_only=True)
    per_token = flt.flops_per_token(model, seq, active) * (4.0 / 3 if hardware else 1.0)
    return tflops * 1e12 / per_token


def mfu_tokens(mfu, model, seq, peak=989.0):
    """Tokens/s/GPU from an MFU over the H100's dense BF16 peak (6N + 12lhs FLOPs a token)."""
    return model_tokens(mfu * peak, model, seq)


def rows():
    m = dict(CATALOG.models)
    m.update(SHAPES)
    R = Row
    return [
        R(1, m["GPT-2-8.3B"], "V100", 512, 100, "megatron", 8, 1, 1, 1, 1, "none", "full", 8, 1024, 512, "fp16",
          model_tokens(15.1e3 / 512, m["GPT-2-8.3B"], 1024, True), "15.1 PF/512, hardware FLOPs assumed"),
        R(3, m["GPT-1T"], "A100-80GB", 3072, 200, "megatron", 8, 64, 1, 1, 1, "zero1", "full", 1, 2048, 3072, "bf16",
          narayanan_tokens(163, m["GPT-1T"], 2048), "163 TFLOP/s (Narayanan formula)"),
        R(4, m["GPT-145.6B"], "A100-80GB", 1536, 200, "megatron", 8, 8, 1, 1, 1, "zero1", "full", 1, 2048, 2304,
          "bf16", narayanan_tokens(148, m["GPT-145.6B"], 2048), "148 TFLOP/s (Narayanan formula)"),
        R(5, m["BLOOM-176B"], "A100-80GB", 384, 200, "deepspeed", 4, 12, 1, 1, 1, "zero1", "full", 2, 2048, 2048,
          "bf16", 19.463 * 2048 / 384, "samples/s x 2048 / 384"),
        R(8, m["Llama-2-13B"], "A100-80GB", 512, 100, "megatron", 2, 1, 1, 1, 1, "zero1", "selective", 1, 2048,
          2048, "bf16", 1845, "layout, batch assumed"),
        R(9, m["MPT-70B"], "A100-40GB", 128, 200, "hf", 1, 1, 1, 1, 1, "fsdp", "full", 4, 2048, 512, "bf16", 376,
          "micro-batch assumed (4 a GPU)"),
        R(10, m["MPT-70B"], "H100", 512, 400, "hf", 1, 1, 1, 1, 1, "fsdp", "full", 8, 2048, 4096, "bf16", 1007,
          "micro-batch assumed (8 a GPU)"),
        R(11, m["MPT-3B"], "H100", 8, 400, "hf", 1, 1, 1, 1, 1, "fsdp", "none", 6, 2048, 480, "fp8", 30586,
          "micro-batch assumed"),
        R(12, m["Llama-2-70B"], "A100-80GB", 128, 100, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "full", 6, 4096, 768,
          "bf16", 380, "seq and card assumed"),
        R(13, m["Llama-3.1-70B"], "A100-80GB", 64, 200, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "full", 1, 8192, 64,
          "bf16", 331, ""),
        R(14, m["Llama-3.1-70B"], "H100-GT", 256, 400, "torchtitan", 8, 1, 1, 1, 1, "fsdp", "full", 16, 8192, 512,
          "fp8", 876, ""),
        R(15, m["Llama-3.1-405B"], "H100-GT", 512, 400, "torchtitan", 8, 8, 1, 1, 2, "fsdp", "full", 4, 8192, 256,
          "fp8", 128, "local batch 32 in pp=8 micro-batches of 4 (torchtitan's default count)"),
        R(16, m["Llama-3.1-8B"], "H200", 64, 400, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "none", 2, 8192, 128, "fp8",
          10753, ""),
        R(18, m["Llama-2-7B"], "H100", 8, 400, "megatron", 1, 1, 1, 1, 1, "zero1", "none", 1, 4096, 128, "fp8",
          16847, ""),
        R(19, m["GPT-3-175B"], "H100", 512, 400, "megatron", 4, 8, 1, 1, 6, "zero1", "selective", 2, 2048, 2048,
          "fp8", 782, "MBS 2 as the NeMo table gives it"),
        R(20, m["Llama-3.1-70B"], "H100", 64, 400, "megatron", 4, 4, 2, 1, 5, "zero1", "selective", 1, 8192, 128,
          "fp8", 1533, ""),
        R(21, m["GPT-3-175B"], "H100", 10752, 400, "megatron", 4, 8, 1, 1, 4, "zero1", "selective", 1, 2048, 2688,
          "fp8", 5505024 / 0.9310762882232666 / 10752, "MLPerf v3.1 train_step_timing (the log's throughput, "
          "5152984 tokens/s, is tokens over train_epoch_timing, evaluations included); vp assumed"),
        R(22, m["Llama-3.1-405B"], "H100", 2304, 400, "megatron", 8, 9, 2, 1, 7, "zero1", "selective", 1, 8192, 1008,
          "fp8", 668626.0 / 2304, ""),
        R(23, m["Llama-3.1-405B"], "H100", 1024, 400, "megatron", 8, 8, 2, 1, 8, "zero1", "selective", 1, 8192, 1536,
          "fp8", 311, ""),
        R("24b", m["Llama-3.1-70B"], "H100", 64, 400, "megatron", 4, 8, 1, 1, 5, "zero1", "selective", 1, 8192, 256,
          "fp8", 1621, "row 24's DGX-H100 line"),
        R(25, m["Llama-3.1-405B"], "B200", 128, 400, "megatron", 4, 8, 2, 1, 8, "zero1", "selective", 1, 8192, 64,
          "fp8", 661, ""),
        R(26, m["Llama-3.1-8B"], "B200", 8, 400, "megatron", 1, 1, 1, 1, 1, "zero1", "none", 2, 8192, 128, "fp8",
          30624, ""),
        R(32, m["Mixtral-8x7B"], "H100", 64, 400, "megatron", 1, 4, 1, 8, 8, "zero1", "selective", 1, 4096, 256,
          "bf16", model_tokens(468, m["Mixtral-8x7B"], 4096), "468 TFLOP/s (6N+12lhs assumed)"),
    ]


def spot_rows():
    """Published measurements NOT in throughput.md, kept out of tuning: how the model generalises.
    Sources (each row's note names its line):
      S1-S5   Narayanan et al., arXiv 2104.04473, Table 1 (transcribed in SotaroKaneda/MLCarbon
              data/megatron_table.csv): A100-80GB on Selene (8 HDR rails a node), hardware TFLOP/s.
      S6-S11  NVIDIA/NeMo docs/source/performance/performance_summary.md @070a0bb (NeMo 24.07, DGX-H100,
              FP8), Pretraining table rows not in throughput.md.
      S12-S14 NVIDIA-NeMo/Megatron-Bridge docs/performance-summary-archive.md @0a25f91, 25.11 > DGX-H100.
      S15-S17 pytorch/torchtitan docs/performance.md @0413364 (64 A100-80GB, FSDP2, bf16).
      S18-S21 pytorch/torchtitan benchmarks/llama3_h100_202412_torchtitan.md Tables 1, 2, 3, 6 (Grand
              Teton H100 96GB HBM2e at 500 W, 400 Gb/s a GPU; below the SXM card modelled here).
      S22-S28 mosaicml/llm-foundry scripts/train/benchmarking/README.md @061f2c7 (H100 BF16, H100 FP8,
              A100 80GB with 1600 Gb/s RoCE a node).
      S29-S30 mlcommons/training_results_v3.1 NVIDIA/results/eos_n64 and eos-dfw_n512 gpt3 result_0.txt:
              train_step_timing at the end of the log, 4194304 tokens a step (GBS 2048 x 2048).
      S31     pytorch/torchtitan benchmarks/llama3_h100_202412_torchtitan.md @820504e Table 3 (BF16, 128 GPUs).
      S32     NVIDIA/Megatron-LM README.md @core_v0.13.1 L97: GPT-3 175B (vocab 131072, seq 4096, batch 1152)
              at 47% MFU on 96 H100, BF16 (its layout is in an image: TP4 PP8 and selective recompute assumed).
      S33-S34 Dubey et al., "The Llama 3 Herd of Models", arXiv 2407.21783, Table 4: 405B, BF16, TP8 CP1 PP16,
              seq 8192, 16M tokens a batch; 430 and 400 TFLOP/s a GPU on 8192 and 16384 H100 (interleaving
              depth and recompute not given: vp 4 and selective assumed)."""
    m = dict(CATALOG.models)
    m.update(SHAPES)
    R = Row
    nt = narayanan_tokens
    return [
        R("S1", m["GPT-1.7B"], "A100-80GB", 32, 200, "megatron", 1, 1, 1, 1, 1, "zero1", "full", 1, 2048, 512,
          "bf16", nt(137, m["GPT-1.7B"], 2048), "Table 1 row 1.7B: 137 TFLOP/s"),
        R("S2", m["GPT-7.5B"], "A100-80GB", 128, 200, "megatron", 4, 1, 1, 1, 1, "zero1", "full", 1, 2048, 512,
          "bf16", nt(142, m["GPT-7.5B"], 2048), "Table 1 row 7.5B: 142 TFLOP/s"),
        R("S3", m["GPT-39.1B"], "A100-80GB", 512, 200, "megatron", 8, 2, 1, 1, 1, "zero1", "full", 1, 2048, 1536,
          "bf16", nt(138, m["GPT-39.1B"], 2048), "Table 1 row 39.1B: 138 TFLOP/s"),
        R("S4", m["GPT-310.1B"], "A100-80GB", 1920, 200, "megatron", 8, 16, 1, 1, 1, "zero1", "full", 1, 2048, 2160,
          "bf16", nt(155, m["GPT-310.1B"], 2048), "Table 1 row 310.1B: 155 TFLOP/s"),
        R("S5", m["GPT-529.6B"], "A100-80GB", 2520, 200, "megatron", 8, 35, 1, 1, 1, "zero1", "full", 1, 2048,
          2520, "bf16", nt(163, m["GPT-529.6B"], 2048), "Table 1 row 529.6B: 163 TFLOP/s"),
        R("S6", m["GPT-3-5B"], "H100", 64, 400, "megatron", 1, 1, 1, 1, 1, "zero1", "none", 4, 2048, 2048, "fp8",
          22521, "NeMo 24.07 GPT3-5B"),
        R("S7", m["GPT-3-20B"], "H100", 64, 400, "megatron", 2, 1, 1, 1, 1, "zero1", "none", 2, 2048, 256, "fp8",
          5851, "NeMo 24.07 GPT3-20B"),
        R("S8", m["GPT-3-175B"], "H100", 128, 400, "megatron", 4, 8, 1, 1, 6, "zero1", "selective", 1, 2048, 256,
          "fp8", 726, "NeMo 24.07 GPT3-175B (128)"),
        R("S9", m["Llama-2-13B"], "H100", 16, 400, "megatron", 1, 4, 1, 1, 10, "zero1", "none", 1, 4096, 128,
          "fp8", 8646, "NeMo 24.07 LLAMA2-13B"),
        R("S10", m["Llama-2-70B"], "H100", 64, 400, "megatron", 4, 4, 1, 1, 20, "zero1", "selective", 1, 4096, 128,
          "fp8", 1707, "NeMo 24.07 LLAMA2-70B"),
        R("S11", m["Llama-3.1-8B"], "H100", 8, 400, "megatron", 1, 1, 2, 1, 1, "zero1", "none", 1, 8192, 128,
          "fp8", 12036, "NeMo 24.07 LLAMA3-8B (CP2)"),
        R("S12", m["Llama-3.1-8B"], "H100", 8, 400, "megatron", 1, 1, 1, 1, 1, "fsdp", "none", 1, 8192, 128, "fp8",
          14451, "Megatron-Bridge 25.11 LLAMA3_8B (FSDP 8)"),
        R("S13", m["Llama-3.1-70B"], "H100", 64, 400, "megatron", 4, 8, 1, 1, 5, "zero1", "selective", 1, 8192, 128,
          "fp8", 1602, "Megatron-Bridge 25.11 LLAMA3_70B"),
        R("S14", m["Llama-3.1-405B"], "H100", 1024, 400, "megatron", 8, 8, 2, 1, 8, "zero1", "selective", 1, 8192,
          512, "fp8", 292, "Megatron-Bridge 25.11 LLAMA3.1_405B (GBS 512)"),
        R("S15", m["Llama-3.1-8B"], "A100-80GB", 64, 200, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "selective", 1, 8192,
          64, "bf16", 2904, "Llama 3 8B, batch 1, selective layer AC"),
        R("S16", m["Llama-2-13B"], "A100-80GB", 64, 200, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "none", 2, 4096, 128,
          "bf16", 2162, "Llama 2 13B, batch 2, no AC"),
        R("S17", m["Llama-2-70B"], "A100-80GB", 64, 200, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "full", 2, 4096, 128,
          "bf16", 353, "Llama 2 70B, batch 2, full AC"),
        R("S18", m["Llama-3.1-8B"], "H100-GT", 8, 400, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "selective", 2, 8192, 16,
          "bf16", 6667, "Table 1, FSDP + torch.compile"),
        R("S19", m["Llama-3.1-8B"], "H100-GT", 128, 400, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "selective", 2, 8192,
          256, "fp8", 8380, "Table 3, FSDP + compile + Float8"),
        R("S20", m["Llama-3.1-8B"], "H100-GT", 8, 400, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "full", 1, 32768, 8,
          "fp8", 3890, "Table 2, FSDP 8 CP 1, seq 32768"),
        R("S21", m["Llama-3.1-405B"], "H100-GT", 512, 400, "torchtitan", 8, 8, 1, 1, 1, "fsdp", "full", 1, 32768, 64,
          "fp8", 76, "Table 6, FSDP 8 CP 1, 1F1B, local batch 8 in 8 micro-batches"),
        R("S22", m["MPT-7B"], "H100", 8, 400, "hf", 1, 1, 1, 1, 1, "fsdp", "none", 6, 2048, 48, "bf16", 10643,
          "H100 BF16 7b 2048 x8"),
        R("S23", m["MPT-13B"], "H100", 64, 400, "hf", 1, 1, 1, 1, 1, "fsdp", "none", 2, 2048, 128, "bf16", 4800,
          "H100 BF16 13b 2048 x64"),
        R("S24", m["MPT-30B"], "H100", 32, 400, "hf", 1, 1, 1, 1, 1, "fsdp", "full", 14, 2048, 1344, "bf16", 2308,
          "H100 BF16 30b 2048 x32"),
        R("S25", m["MPT-7B"], "H100", 8, 400, "hf", 1, 1, 1, 1, 1, "fsdp", "full", 2, 32768, 32, "bf16", 3318,
          "H100 BF16 7b 32768 x8"),
        R("S26", m["MPT-3B"], "H100", 8, 400, "hf", 1, 1, 1, 1, 1, "fsdp", "none", 3, 8192, 144, "fp8", 19146,
          "H100 FP8 3b 8192 x8"),
        R("S27", m["MPT-13B"], "A100-80GB", 8, 200, "hf", 1, 1, 1, 1, 1, "fsdp", "none", 2, 2048, 48, "bf16", 2262,
          "A100 80GB 13b 2048 x8"),
        R("S28", m["MPT-70B"], "A100-80GB", 64, 200, "hf", 1, 1, 1, 1, 1, "fsdp", "full", 8, 2048, 2048, "bf16", 410,
          "A100 80GB 70b 2048 x64"),
        R("S29", m["GPT-3-175B"], "H100", 512, 400, "megatron", 4, 8, 1, 1, 4, "zero1", "selective", 1, 2048, 2048,
          "fp8", 4194304 / 11.04 / 512, "MLPerf v3.1 eos_n64: 11.04 s a step; vp assumed"),
        R("S30", m["GPT-3-175B"], "H100", 4096, 400, "megatron", 4, 8, 1, 1, 4, "zero1", "selective", 1, 2048,
          2048, "fp8", 4194304 / 1.609 / 4096, "MLPerf v3.1 eos-dfw_n512: 1.609 s a step; vp assumed"),
        R("S31", m["Llama-3.1-8B"], "H100-GT", 128, 400, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "selective", 2, 8192,
          256, "bf16", 6514, "Table 3, FSDP + torch.compile, BF16"),
        R("S32", m["GPT-3-175B-131K"], "H100", 96, 400, "megatron", 4, 8, 1, 1, 1, "zero1", "selective", 1, 4096,
          1152, "bf16", mfu_tokens(0.47, m["GPT-3-175B-131K"], 4096), "README: 47% MFU; layout assumed"),
        R("S33", m["Llama-3.1-405B"], "H100", 8192, 400, "megatron", 8, 16, 1, 1, 4, "zero1", "selective", 1, 8192,
          2048, "bf16", model_tokens(430, m["Llama-3.1-405B"], 8192), "430 TFLOP/s (43%); vp assumed"),
        R("S34", m["Llama-3.1-405B"], "H100", 16384, 400, "megatron", 8, 16, 1, 1, 4, "zero1", "selective", 1, 8192,
          2048, "bf16", model_tokens(400, m["Llama-3.1-405B"], 8192), "400 TFLOP/s (41%); vp assumed"),
    ]


def evaluate(row):
    """(tokens/s/GPU, MFU) the performance model gives for a row, and the published MFU on the same definition."""
    gpu = CARDS[row.gpu] if row.gpu in CARDS else CATALOG.gpus[row.gpu]
    peak = MFU_PEAK.get(row.gpu, gpu.tflops)
    fabric = flt.Fabric("calibration", flt.platform(gpu), "fabric", row.fabric_gbit, 1)
    gpn = min(8, row.count)
    cluster = flt.Cluster(gpu, row.count // gpn, gpn, fabric, row.fabric_gbit / 8.0, CATALOG.filesystems[0],
                          CATALOG.stacks[-1], "node{n:04d}", 1)
    dp = row.count // (row.tp * row.pp * row.cp)
    layout = flt.Layout(row.tp, row.pp, row.cp, row.ep, row.vp, dp, row.sharding, row.recompute, row.mbs)
    ga = max(1, row.gbs // (row.mbs * dp))
    params = flt.count_params(row.model)
    active = flt.count_params(row.model, active_only=True)
    parts = flt.step_parts(row.model, params, active, cluster, layout, row.seq, ga, row.style, row.precision)
    tokens = row.mbs * dp * ga * row.seq
    ours = tokens / sum(parts) / row.count
    fpt = flt.flops_per_token(row.model, row.seq, active)
    mem = flt.memory_model(row.model, params, active, layout, row.seq, row.style, ga)
    return (ours, flt.mfu_of(fpt, ours, 1, peak), flt.mfu_of(fpt, row.published, 1, peak),
            flt.fits(gpu, mem), parts)


FORMAT = "%-4s %-16s %-16s %-24s %-5s %13s %15s %8s %9s %6s"


def table(title, table_rows, markdown):
    """Print one table; return the differences in MFU points."""
    head = ("row", "model", "GPUs", "layout", "prec", "pub tok/s/GPU", "model tok/s/GPU", "pub MFU", "model MFU", "diff")
    print(("**%s**\n" if markdown else "%s\n") % title)
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print(FORMAT % head)
    diffs = []
    for row in table_rows:
        ours, mfu, pub_mfu, fits, parts = evaluate(row)
        layout = "TP%d PP%d%s%s %s%s" % (row.tp, row.pp, " CP%d" % row.cp if row.cp > 1 else "",
                                         " EP%d" % row.ep if row.ep > 1 else "", row.sharding,
                                         "" if fits else " (OOM in model)")
        diff = 100 * (mfu - pub_mfu)
        diffs.append(diff)
        cells = (str(row.ref), row.model.name, "%dx %s" % (row.count, row.gpu), layout, row.precision,
                 "%.0f" % row.published, "%.0f" % ours, "%.1f%%" % (100 * pub_mfu), "%.1f%%" % (100 * mfu),
                 "%+.1f" % diff)
        print(("| " + " | ".join(cells) + " |") if markdown else FORMAT % cells)
    within = sum(1 for d in diffs if abs(d) <= 8)
    print("\n%d of %d rows within 8 MFU points; mean |diff| %.1f, mean diff %+.1f" % (
        within, len(diffs), sum(abs(d) for d in diffs) / len(diffs), sum(diffs) / len(diffs)))
    return diffs


def main(argv):
    markdown = "--markdown" in argv
    table("research/throughput.md (calibration)", rows(), markdown)
    print("")
    table("spot checks (not used for tuning)", spot_rows(), markdown)
    print("\n(MFU: 6N+12Lhs model FLOPs over the dense BF16/FP16 peak, for every row)")


if __name__ == "__main__":
    main(sys.argv[1:])
