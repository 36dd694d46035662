"""The performance model next to published training throughput.

Each row of ../shared/research/throughput.md that names its model, card,
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
}
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
        R(14, m["Llama-3.1-70B"], "H100", 256, 400, "torchtitan", 8, 1, 1, 1, 1, "fsdp", "full", 16, 8192, 512,
          "fp8", 876, "H100 96GB part"),
        R(15, m["Llama-3.1-405B"], "H100", 512, 400, "torchtitan", 8, 8, 1, 1, 2, "fsdp", "full", 1, 8192, 256,
          "fp8", 128, "H100 96GB part"),
        R(16, m["Llama-3.1-8B"], "H200", 64, 400, "torchtitan", 1, 1, 1, 1, 1, "fsdp", "none", 2, 8192, 128, "fp8",
          10753, ""),
        R(18, m["Llama-2-7B"], "H100", 8, 400, "megatron", 1, 1, 1, 1, 1, "zero1", "none", 1, 4096, 128, "fp8",
          16847, ""),
        R(19, m["GPT-3-175B"], "H100", 512, 400, "megatron", 4, 8, 1, 1, 6, "zero1", "selective", 1, 2048, 2048,
          "fp8", 782, ""),
        R(20, m["Llama-3.1-70B"], "H100", 64, 400, "megatron", 4, 4, 2, 1, 5, "zero1", "selective", 1, 8192, 128,
          "fp8", 1533, ""),
        R(21, m["GPT-3-175B"], "H100", 10752, 400, "megatron", 4, 8, 1, 1, 4, "zero1", "selective", 1, 2048, 2688,
          "fp8", 5152984.38595476 / 10752, "MLPerf v3.1, vp assumed"),
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


def evaluate(row):
    """(tokens/s/GPU, MFU) the performance model gives for a row, and the published MFU on the same definition."""
    gpu = CATALOG.gpus[row.gpu]
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
    return (ours, flt.mfu_of(fpt, ours, 1, gpu.tflops), flt.mfu_of(fpt, row.published, 1, gpu.tflops),
            flt.fits(gpu, mem), parts)


def main(argv):
    markdown = "--markdown" in argv
    head = ("row", "model", "GPUs", "layout", "prec", "pub tok/s/GPU", "model tok/s/GPU", "pub MFU", "model MFU", "diff")
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print("%-4s %-16s %-16s %-24s %-5s %13s %15s %8s %9s %6s" % head)
    within = []
    for row in rows():
        ours, mfu, pub_mfu, fits, parts = evaluate(row)
        layout = "TP%d PP%d%s%s %s%s" % (row.tp, row.pp, " CP%d" % row.cp if row.cp > 1 else "",
                                         " EP%d" % row.ep if row.ep > 1 else "", row.sharding,
                                         "" if fits else " (OOM in model)")
        diff = 100 * (mfu - pub_mfu)
        within.append(abs(diff) <= 8)
        cells = (str(row.ref), row.model.name, "%dx %s" % (row.count, row.gpu), layout, row.precision,
                 "%.0f" % row.published, "%.0f" % ours, "%.1f%%" % (100 * pub_mfu), "%.1f%%" % (100 * mfu),
                 "%+.1f" % diff)
        if markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print("%-4s %-16s %-16s %-24s %-5s %13s %15s %8s %9s %6s" % cells)
    print("\n%d of %d rows within 8 MFU points (MFU: 6N+12Lhs model FLOPs over the dense BF16/FP16 peak)"
          % (sum(within), len(within)))


if __name__ == "__main__":
    main(sys.argv[1:])
