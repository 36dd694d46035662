"""fake_llm_training: a terminal that looks as if it trains a large language model.

Run it with ``python3 -m fake_llm_training``.  Everything it shows is simulated
from one seed: a model shape gives the parameter count, the parameter count and
the cluster give FLOPs, throughput, step time and ETA, the sharding gives the
memory on each card, and so on.  Nothing is read from the real machine and
nothing is written anywhere but the terminal.

Keys on the full screen: q quit, p or space pause, + and - double or halve the
speed, g cycle the GPU panel, l toggle the loss chart, ! trigger an incident,
? help.  Environment: NO_COLOR (any non-empty value) turns colour off.

The file reads top to bottom in the order data flows: data files -> cluster
and performance model -> run configuration -> metric model -> timeline -> GPU
telemetry -> events -> session -> dialects -> plain and JSON-lines output ->
frames -> terminal -> nvidia-smi look-alike and tmux layout -> command line.  Everything above
"Frames" knows nothing of terminals, and everything below "Session" only
formats what the simulation computed.
"""

import bisect
import collections
import json
import math
import os
import random
import signal
import sys
import time

__version__ = "1.0.0"


def default_data_dir():
    """data/ beside this file (a checkout), else where `pip install` put it."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    if os.path.isdir(here):
        return here
    return os.path.join(sys.prefix, "share", "fake_llm_training", "data")


DATA_DIR = default_data_dir()
GIB = 1024 ** 3
MIB = 1024 ** 2
FRAME_SECONDS = 1.0          # a frame a second, as nvidia-smi -l 1 (keys redraw at once)
MAX_FRAME_STEP = 1.0         # wall seconds one frame may advance (suspend, debugger)
LOG_KEEP = 2000              # log lines kept for the screen
MAX_SESSION_SECONDS = 400 * 86400   # --start-at may reach this far back (in simulated time)


########################################################################
# Data files (data/)
########################################################################

class DataError(Exception):
    """A data file is missing or malformed: the message names file and line."""


Model = collections.namedtuple(
    "Model", "name family layers hidden heads kv_heads head_dim ffn_hidden vocab "
             "context tied mlp experts active shape")
Gpu = collections.namedtuple(
    "Gpu", "key name memory_mib tflops power_cap_w idle_w link_gbs intra arch hbm_gbs kernel_eff "
           "precision weight")
Dataset = collections.namedtuple("Dataset", "name kind tokens examples")
Fabric = collections.namedtuple("Fabric", "key platform name gbits_per_gpu weight")
Stack = collections.namedtuple(
    "Stack", "torch cuda nccl driver driver_cuda archs megatron deepspeed transformers lightning weight")
Filesystem = collections.namedtuple("Filesystem", "name write_gbs read_gbs node_gbs weight")
Catalog = collections.namedtuple("Catalog", "models gpus datasets tokenizers clusters fabrics stacks filesystems")
ARCHS = ("volta", "ampere", "hopper", "ada", "blackwell")
PLATFORMS = ARCHS + ("pcie",)         # fabrics come with the board: HGX/DGX of a generation, or a PCIe server


def platform(gpu):
    return "pcie" if gpu.intra.startswith("PCIe") else gpu.arch


def _opt_int(text):
    return None if text == "-" else int(text)


def _yes_no(text):
    if text not in ("yes", "no"):
        raise ValueError("expected yes or no, got %r" % text)
    return text == "yes"


def _choice(*allowed):
    def parse(text):
        if text not in allowed:
            raise ValueError("expected one of %s, got %r" % ("/".join(allowed), text))
        return text
    return parse


# Each file: its columns and how each column is parsed.
TABLES = {
    "models.txt": [("name", str), ("family", str), ("layers", int), ("hidden", int),
                   ("heads", int), ("kv_heads", int), ("head_dim", _opt_int),
                   ("ffn_hidden", int), ("vocab", int), ("context", int),
                   ("tied", _yes_no), ("mlp", _choice("swiglu", "geglu", "gelu")),
                   ("experts", _opt_int), ("active", _opt_int)],
    "nicknames.txt": [("name", str), ("shape", str)],
    "gpus.txt": [("key", str), ("name", str), ("memory_mib", int), ("tflops", float),
                 ("power_cap_w", int), ("idle_w", int), ("link_gbs", float), ("intra", str),
                 ("arch", _choice(*ARCHS)), ("hbm_gbs", float), ("kernel_eff", float),
                 ("precision", _choice("bf16", "fp16")), ("weight", int)],
    "fabrics.txt": [("key", str), ("platform", _choice(*PLATFORMS)), ("fabric", str), ("gbits_per_gpu", float),
                    ("weight", int)],
    "stacks.txt": [("torch", str), ("cuda", str), ("nccl", str), ("driver", str), ("driver_cuda", str),
                   ("archs", str), ("megatron", str), ("deepspeed", str), ("transformers", str),
                   ("lightning", str), ("weight", int)],
    "filesystems.txt": [("name", str), ("write_gbs", float), ("read_gbs", float), ("node_gbs", float),
                        ("weight", int)],
    "datasets.txt": [("name", str), ("kind", _choice("pretrain", "finetune")),
                     ("tokens", int), ("examples", _opt_int)],
    "tokenizers.txt": [("family", str), ("tokenizer", str), ("architecture", str)],
    "clusters.txt": [("hostname", str), ("first", int)],
}


def read_table(path, columns):
    """Rows of a "|"-separated file with a header line, as lists of parsed values."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError("%s: cannot read: %s" % (path, exc.strerror or exc))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError("%s:%d: not valid UTF-8" % (path, line))
    rows, header, seen = [], None, set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [cell.strip() for cell in line.split("|")]
        if header is None:
            header = cells
            wanted = [c for c, _ in columns]
            if header != wanted:
                raise DataError("%s:%d: header must name the columns %s" %
                                (path, number, " | ".join(wanted)))
            continue
        if len(cells) != len(columns):
            raise DataError("%s:%d: expected %d columns, found %d" %
                            (path, number, len(columns), len(cells)))
        values = []
        for (column, parse), cell in zip(columns, cells):
            try:
                if not cell:
                    raise ValueError("empty")
                values.append(parse(cell))
            except ValueError as exc:
                raise DataError("%s:%d: column %s: %s" % (path, number, column, exc))
        if values[0] in seen:
            raise DataError("%s:%d: duplicate %s %r" % (path, number, columns[0][0], values[0]))
        seen.add(values[0])
        rows.append((number, values))
    if header is None or not rows:
        raise DataError("%s:1: no records in %s" % (path, name))
    return rows


def load_catalog(data_dir=DATA_DIR):
    """Read every data file; raise DataError naming the first problem."""
    if not os.path.isdir(data_dir):
        raise DataError("%s: data directory not found" % data_dir)
    tables = {name: read_table(os.path.join(data_dir, name), columns)
              for name, columns in sorted(TABLES.items())}
    models = collections.OrderedDict()
    for number, v in tables["models.txt"]:
        model = Model(*v, shape=v[0])
        problem = model_problem(model)
        if problem:
            raise DataError("%s:%d: %s" % (os.path.join(data_dir, "models.txt"), number, problem))
        models[model.name] = model
    for number, (name, shape) in tables["nicknames.txt"]:
        if shape not in models:
            raise DataError("%s:%d: shape %r is not in models.txt" %
                            (os.path.join(data_dir, "nicknames.txt"), number, shape))
        if name in models:
            raise DataError("%s:%d: duplicate name %r" %
                            (os.path.join(data_dir, "nicknames.txt"), number, name))
        models[name] = models[shape]._replace(name=name)
    tokenizers = {family: (tok, arch) for _, (family, tok, arch) in tables["tokenizers.txt"]}
    for number, v in tables["models.txt"]:
        if v[1] not in tokenizers:
            raise DataError("%s:%d: family %r has no line in tokenizers.txt" %
                            (os.path.join(data_dir, "models.txt"), number, v[1]))
    gpus = _hardware_tables(tables, data_dir)
    datasets = [Dataset(*v) for _, v in tables["datasets.txt"]]
    for kind in ("pretrain", "finetune"):
        if not any(d.kind == kind for d in datasets):
            raise DataError("%s:1: no %s dataset" % (os.path.join(data_dir, "datasets.txt"), kind))
    for number, d in tables["datasets.txt"]:
        if d[1] == "finetune" and not d[3]:
            raise DataError("%s:%d: a finetune dataset needs examples" %
                            (os.path.join(data_dir, "datasets.txt"), number))
    clusters = []
    for number, (pattern, first) in tables["clusters.txt"]:
        try:
            pattern.format(n=1)
        except (KeyError, IndexError, ValueError):
            raise DataError("%s:%d: hostname pattern must use only {n}" %
                            (os.path.join(data_dir, "clusters.txt"), number))
        clusters.append((pattern, first))
    return Catalog(models, gpus, datasets, tokenizers, clusters,
                   [Fabric(*v) for _, v in tables["fabrics.txt"]],
                   [Stack(*v) for _, v in tables["stacks.txt"]],
                   [Filesystem(*v) for _, v in tables["filesystems.txt"]])


def _hardware_tables(tables, data_dir):
    """The GPUs, checked against their fabrics and stacks: every card can be networked and run."""
    def where(name, number):
        return "%s:%d" % (os.path.join(data_dir, name), number)
    gpus = collections.OrderedDict((v[0], Gpu(*v)) for _, v in tables["gpus.txt"])
    for number, v in tables["gpus.txt"]:
        g = Gpu(*v)
        if not 0 < g.kernel_eff < 1:
            raise DataError("%s: need 0 < kernel_eff < 1" % where("gpus.txt", number))
        if min(g.memory_mib, g.tflops, g.power_cap_w, g.idle_w, g.link_gbs, g.hbm_gbs) <= 0 or g.weight < 0:
            raise DataError("%s: memory, TFLOP/s, power and bandwidths must be positive, weight not negative"
                            % where("gpus.txt", number))
        if not any(f[1] == platform(g) and f[4] > 0 for _, f in tables["fabrics.txt"]):
            raise DataError("%s: no fabric in fabrics.txt for platform %r" % (where("gpus.txt", number), platform(g)))
        if not any(g.arch in st[5].split(",") and st[10] > 0 for _, st in tables["stacks.txt"]):
            raise DataError("%s: no stack in stacks.txt supports arch %r" % (where("gpus.txt", number), g.arch))
    if not any(v[-1] for _, v in tables["gpus.txt"]):
        raise DataError("%s: every weight is 0" % where("gpus.txt", 1))
    for number, st in tables["stacks.txt"]:
        if any(a not in ARCHS for a in st[5].split(",")):
            raise DataError("%s: archs must be among %s" % (where("stacks.txt", number), ",".join(ARCHS)))
    if not any(fs[4] > 0 for _, fs in tables["filesystems.txt"]):
        raise DataError("%s: every weight is 0" % where("filesystems.txt", 1))
    return gpus


def model_problem(m):
    """Why a model shape cannot be real, or ''."""
    if min(m.layers, m.hidden, m.heads, m.kv_heads, m.ffn_hidden, m.vocab) <= 0:
        return "sizes must be positive"
    if m.heads % m.kv_heads:
        return "heads must be a multiple of kv_heads"
    if m.head_dim is None and m.hidden % m.heads:
        return "hidden must be divisible by heads (or give head_dim)"
    if (m.experts is None) != (m.active is None) or (m.experts and not 0 < m.active <= m.experts):
        return "experts and active go together, with 0 < active <= experts"
    return ""


def head_dim(m):
    return m.head_dim or m.hidden // m.heads


def count_params(m, active_only=False):
    """Parameters of a decoder-only transformer with this shape."""
    hd = head_dim(m)
    attention = m.hidden * hd * (2 * m.heads + 2 * m.kv_heads)
    mlp = (2 if m.mlp == "gelu" else 3) * m.hidden * m.ffn_hidden
    router = m.hidden * m.experts if m.experts else 0
    experts = (m.active if active_only else m.experts) if m.experts else 1
    per_layer = attention + experts * mlp + router + 2 * m.hidden
    embeddings = m.vocab * m.hidden * (1 if m.tied else 2)
    return m.layers * per_layer + embeddings + m.hidden


def closest_names(name, names, n=3):
    """Names most like `name`, for 'did you mean' hints."""
    import difflib
    lowered = {x.lower(): x for x in names}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.3)
    return [lowered[x] for x in found]


########################################################################
# Counter-based randomness
########################################################################
# A draw is a pure function of (seed, stream, counter), so the value at step n
# never depends on how the program got there: any speed, refresh rate or
# starting point shows the same run.  Integer mixing (splitmix64) is the same
# on every Python; it is cheap enough to call for every GPU on every frame.

_M64 = 0xFFFFFFFFFFFFFFFF


def unit(seed, stream, n):
    """A uniform number in [0, 1) for this seed, stream and counter."""
    x = (seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03 + n * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    x ^= x >> 31
    return x / 18446744073709551616.0


def normal(seed, stream, n):
    """A near-normal draw (mean 0, sd 1, within +-3.5): the sum of four 16-bit
    slices of one hash.  Bounded tails suit simulated noise, and it is one hash."""
    x = int(unit(seed, stream, n) * 18446744073709551616.0)
    total = (x & 0xFFFF) + ((x >> 16) & 0xFFFF) + ((x >> 32) & 0xFFFF) + ((x >> 48) & 0xFFFF)
    return (total / 65536.0 - 2.0) * 1.7320508075688772


# Stream numbers: one per kind of draw, so draws never collide.
S_LOSS, S_GRAD, S_SPIKE, S_STEP, S_VAL, S_GPU_UTIL, S_GPU_OFFSET, S_OVERFLOW, S_INCIDENT, S_MEM = \
    1, 3, 4, 5, 6, 7, 10, 11, 12, 13


########################################################################
# Cluster and performance model (pure: from the seed, the shape and the layout)
########################################################################
# A session runs on one cluster: the seed picks the card, the nodes, the links
# inside and between nodes, the filesystem and one software stack, and keeps
# them for every job.  A job's optimizer step takes compute time (FLOPs over
# the card's sustained rate) plus the communication that does not hide behind
# compute, plus the optimizer and the data loader: MFU and tokens/s follow.

Cluster = collections.namedtuple(
    "Cluster", "gpu nodes gpus_per_node fabric fabric_gbs fs stack hostname first_node")
Layout = collections.namedtuple("Layout", "tp pp cp ep vp dp sharding recompute mbs")
StepParts = collections.namedtuple("StepParts", "compute comm optimizer data")
Memory = collections.namedtuple("Memory", "allocated reserved context nccl")

CLUSTER_DRAW = 0                      # the config draw of "run 0" is the cluster's (runs count from 1)
CLUSTER_NODES = (2, 4, 4, 8, 8, 16, 16, 32, 64, 128, 256)   # nodes of 8: team partitions to big pools
GPUS_PER_NODE = 8                     # HGX/DGX boards and the PCIe servers people build carry 8 cards
CONTEXT_BYTES = 0.5 * GIB             # CUDA context and kernels per process (~500 MiB on Hopper)
NCCL_BASE_BYTES = 0.25 * GIB          # NCCL channel buffers of the world communicator (NCCL_BUFFSIZE 4 MiB x channels x peers)
NCCL_GROUP_BYTES = 0.12 * GIB         # each further process group (tp, pp, cp, ep) adds its own
ALLOCATOR_SLACK = 1.08                # PyTorch caching allocator: reserved / allocated at steady state
CARD_HEADROOM = 0.985                 # what a team leaves free before OOM-ing on a long run
LINK_EFFICIENCY = 0.8                 # NCCL bus bandwidth / line rate inside a node (nccl-tests on NVLink, PCIe)
PCIE_EFFICIENCY = 0.6                 # PCIe peer traffic crosses the root complex (no NVLink P2P): ~60% of the slot
FABRIC_EFFICIENCY = 0.9               # and between nodes (nccl-tests all-reduce on NDR/HDR InfiniBand, RoCE)
OVERLAP = 0.85                        # share of the overlappable window collectives actually hide in
TP_EXPOSED = {"megatron": 0.3, "torchtitan": 0.35}   # TP collectives on the critical path, with Megatron-Core's
TP_EXPOSED_DEFAULT = 0.6              # TP-comm overlap / torchtitan's async TP hidden more than elsewhere
                                      # (both need NVLink peer access: over PCIe all of it is exposed)
FP8_TE_SHARE = {"megatron": 1.0}      # FP8 gain realised: Transformer Engine's fused kernels in full,
FP8_OTHER_SHARE = 0.45                # torchao/llm-foundry float8 (casts outside the GEMMs) about half
PP_P2P_EXPOSED = 0.3                  # 1F1B sends overlap the next micro-batch mostly
CP_EXPOSED = 0.25                     # ring attention overlaps K/V passing with the block in flight
A2A_EXPOSED = 0.7                     # MoE dispatch/combine is hard to hide (Megatron MoE README)
GEMM_SHARE = 0.8                      # share of step compute in GEMMs (the rest: attention, norms, elementwise)
FP8_GEMM_SPEEDUP = 2.0                # FP8 GEMM over BF16 at best (twice the peak), end-to-end ~1.45x (NeMo tables)
FP8_WIDTH_KNEE = 2048.0               # narrow GEMMs gain less: casts and scaling cost as much as the math
HIDDEN_KNEE = 420.0                   # GEMMs narrower than this per TP rank run well below peak
TOKENS_KNEE = 256.0                   # tokens per micro-batch below which kernels starve
ADAM_BYTES = 30                       # per parameter: fp32 master, m, v read+written, grad read, bf16 write
HBM_EFFICIENCY = 0.7                  # a fused Adam kernel reaches ~70% of HBM bandwidth
DATA_FIXED_S = 0.004                  # per step: the loader's hand-off and the host-to-device copy
SCALE_JITTER = 0.006                  # per doubling of nodes: the slowest rank sets the pace
RECOMPUTE_FLOPS = {"none": 1.0, "selective": 1.03, "full": 4.0 / 3.0}   # extra forward (Korthikanti et al.)
ACT_BYTES = {"none": 34.0, "selective": 22.0, "full": 2.0}   # per token, layer and hidden unit (Korthikanti et al.)
ZERO_LEVEL = {"none": 0, "zero1": 1, "zero2": 2, "zero3": 3, "fsdp": 3}


def weighted(rng, items, weight):
    """One of items, as often as weight(item) says."""
    pool = [x for x in items for _ in range(weight(x))]
    return rng.choice(pool)


def make_cluster(catalog, seed, pins=None):
    """The session's cluster: the same for every run of this seed and these pins."""
    pins = pins or {}
    rng = random.Random("%d:config:%d" % (seed, CLUSTER_DRAW))
    if pins.get("gpu_type"):
        gpu = catalog.gpus[pins["gpu_type"]]
    else:
        gpu = weighted(rng, list(catalog.gpus.values()), lambda g: g.weight)
    nodes = rng.choice(CLUSTER_NODES)
    gpus_per_node = GPUS_PER_NODE
    if pins.get("gpus"):
        gpus_per_node = min(GPUS_PER_NODE, pins["gpus"])
        nodes = pins["gpus"] // gpus_per_node
    fabric = weighted(rng, [f for f in catalog.fabrics if f.platform == platform(gpu)], lambda f: f.weight)
    stacks = [st for st in catalog.stacks if gpu.arch in st.archs.split(",")]
    stack = weighted(rng, stacks, lambda st: st.weight)
    fs = weighted(rng, catalog.filesystems, lambda f: f.weight)
    pattern, first = rng.choice(catalog.clusters)
    return Cluster(gpu, nodes, gpus_per_node, fabric, fabric.gbits_per_gpu / 8.0, fs, stack, pattern, first)


def nccl_version(stack):
    """NCCL's banner version: the wheel's release and the CUDA it was built with ("2.21.5+cuda12.4")."""
    return "%s+cuda%s" % (stack.nccl, stack.cuda)


def cuda_driver_version(stack):
    """The driver's CUDA version as NCCL prints it (cudaDriverVersion 12080 for 12.8)."""
    major, minor = stack.driver_cuda.split(".")
    return int(major) * 1000 + int(minor) * 10


def flops_per_token(model, seq, active):
    """Model FLOPs per token, forward and backward: 6N plus attention (Kaplan/PaLM accounting)."""
    return 6 * active + 12 * model.layers * model.hidden * seq


def stage_layers(model, pp):
    """Layers on the fullest pipeline stage (Megatron splits unevenly when it must)."""
    return int(math.ceil(model.layers / float(pp)))


def param_split(model, params, active):
    """(dense parameters, expert parameters) of a shape."""
    if not model.experts:
        return params, 0
    mlp = (2 if model.mlp == "gelu" else 3) * model.hidden * model.ffn_hidden
    experts = model.layers * model.experts * mlp
    return params - experts, experts


def sharded_params(model, params, active, L):
    """Parameters one GPU holds before data-parallel sharding."""
    dense, experts = param_split(model, params, active)
    embed = model.vocab * model.hidden
    per_layer = (dense - embed * (1 if model.tied else 2)) / float(model.layers)
    on_stage = per_layer * stage_layers(model, L.pp) + embed
    if L.pp == 1 and not model.tied:
        on_stage += embed
    expert_share = experts * stage_layers(model, L.pp) / float(model.layers) / L.ep
    return on_stage / L.tp + expert_share / (1 if L.ep > 1 else L.tp)


def memory_model(model, params, active, L, seq, style, grad_accum=1):
    """Bytes one GPU holds, the way its framework allocates them (Memory)."""
    shard = sharded_params(model, params, active, L)
    layer_shard = shard / stage_layers(model, L.pp)
    group = L.dp * L.cp                       # Megatron's distributed optimizer shards over dp x cp
    zero = ZERO_LEVEL[L.sharding]
    if L.sharding == "fsdp":                  # FSDP mixed precision: fp32 params, grads, Adam m, v sharded
        states = 16.0 * shard / group + 2 * 2.0 * layer_shard   # plus the gathered and the prefetched layer
    elif L.sharding == "none":                # DDP with autocast: fp32 weights, grads, Adam m, v
        states = 16.0 * shard
    else:
        grad_bytes = 4.0 if style == "megatron" else 2.0        # Megatron keeps fp32 main grads
        states = (2.0 * shard / (group if zero >= 3 else 1) + grad_bytes * shard / (group if zero >= 2 else 1)
                  + 12.0 * shard / group)     # fp32 master weights, Adam m and v
        if zero >= 3:
            states += 2 * 2.0 * layer_shard
    tokens = L.mbs * seq / float(L.cp)
    coef = ACT_BYTES[L.recompute] * (1 + 0.5 * (model.active - 1) if model.experts else 1)
    in_flight = min(L.pp, grad_accum) if L.pp > 1 else 1  # 1F1B: the first stage holds pp micro-batches
    act = tokens * model.hidden * coef / L.tp * stage_layers(model, L.pp) * in_flight
    if L.recompute == "full":
        act += tokens * model.hidden * ACT_BYTES["none"] / L.tp       # the layer being recomputed
    logits = 2 * 4.0 * tokens * model.vocab / L.tp                     # fp32 logits and their gradient
    allocated = states + act + logits
    groups = sum(1 for x in (L.tp, L.pp, L.cp, L.ep) if x > 1)
    return Memory(allocated, allocated * ALLOCATOR_SLACK, CONTEXT_BYTES, NCCL_BASE_BYTES + NCCL_GROUP_BYTES * groups)


def memory_total(mem):
    """What nvidia-smi shows for the process: framework reserved + CUDA context + NCCL buffers."""
    return mem.reserved + mem.context + mem.nccl


def fits(gpu, mem):
    return memory_total(mem) <= gpu.memory_mib * MIB * CARD_HEADROOM


def kernel_efficiency(gpu, model, L, seq, precision):
    """Fraction of the card's peak the step's kernels sustain: wide GEMMs and long
    micro-batches run near the card's best, attention (flash) somewhat below it."""
    width = model.hidden / math.sqrt(L.tp)
    tokens = L.mbs * seq / float(L.cp)
    eff = gpu.kernel_eff / (1 + HIDDEN_KNEE / width) / (1 + TOKENS_KNEE / tokens)
    attention = 12.0 * model.layers * model.hidden * seq / flops_per_token(model, seq, count_params(model, True))
    eff /= (1 - attention) + attention / 0.75       # flash attention reaches ~3/4 of GEMM efficiency
    return eff


def link_gbs(cluster, span):
    """Bus bandwidth (GB/s per GPU) of a group `span` GPUs wide: NVLink/PCIe inside a node, else the fabric."""
    gpu = cluster.gpu
    inside = gpu.link_gbs * (PCIE_EFFICIENCY if platform(gpu) == "pcie" else LINK_EFFICIENCY)
    if span <= cluster.gpus_per_node:
        return inside
    return min(inside, cluster.fabric_gbs * FABRIC_EFFICIENCY)


def dp_seconds(model, params, active, cluster, L, style, grad_accum, mb_compute, bubble, precision):
    """Exposed data-parallel time: gradient reduction and (FSDP/ZeRO-3) parameter gathers.
    The gathers hide behind the compute they prefetch for; the reduction behind the last
    backward and, with a pipeline, behind the stage's idle cool-down (the bubble)."""
    if L.dp * L.cp == 1:
        return 0.0
    shard = sharded_params(model, params, active, L)
    n = L.dp * L.cp
    bw = link_gbs(cluster, L.tp * L.pp * L.cp * L.dp if cluster.nodes > 1 else 1) * 1e9
    frac = (n - 1.0) / n
    grad_bytes = 4.0 if L.sharding == "none" else 2.0      # AMP's fp32 grads; others reduce in bf16
    gather_bytes = 1.0 if precision == "fp8" else 2.0                          # FP8 parameter all-gather
    if ZERO_LEVEL[L.sharding] >= 3 and L.pp == 1:   # gather for forward and backward, reduce: every micro-batch
        per_mb = (2 * gather_bytes + grad_bytes) * shard * frac / bw
        return grad_accum * max(0.0, per_mb - OVERLAP * mb_compute) + 0.05 * per_mb
    if L.sharding == "none":                 # DDP all-reduce once per step, during the last backward
        t = 2 * grad_bytes * shard * frac / bw
        return max(0.0, t - OVERLAP * (mb_compute * 2 / 3.0 + bubble)) + 0.05 * t
    # reduce-scatter grads, all-gather the updated params (FSDP under a pipeline keeps them gathered)
    t = (grad_bytes + gather_bytes) * shard * frac / bw
    return max(0.0, t - OVERLAP * (mb_compute + bubble)) + 0.05 * t


def pipeline_bubble(L, grad_accum, compute):
    """Idle time of 1F1B (interleaved over vp chunks): (p - 1) / (v m) of the compute."""
    return compute * (L.pp - 1.0) / (L.vp * grad_accum) if L.pp > 1 else 0.0


def model_parallel_seconds(model, cluster, L, seq, grad_accum, compute, style="megatron"):
    """Exposed TP, CP, PP and MoE time per step (pipeline bubble included)."""
    tokens = L.mbs * seq / float(L.cp)
    act = tokens * model.hidden * 2.0
    layers = stage_layers(model, L.pp) * grad_accum
    t = 0.0
    if L.tp > 1:
        collectives = 6 if L.recompute == "full" else 4    # 2 forward, 2 backward (+2 recomputed)
        exposed = 1.0 if platform(cluster.gpu) == "pcie" else TP_EXPOSED.get(style, TP_EXPOSED_DEFAULT)
        t += exposed * layers * collectives * act * 2 * (L.tp - 1.0) / L.tp / (link_gbs(cluster, L.tp) * 1e9)
    if L.cp > 1:
        kv = 2 * 2.0 * L.mbs * seq * model.kv_heads * head_dim(model) / L.tp
        t += CP_EXPOSED * layers * 3 * kv * (L.cp - 1.0) / L.cp / (link_gbs(cluster, L.tp * L.cp) * 1e9)
    if L.pp > 1:
        t += pipeline_bubble(L, grad_accum, compute)
        p2p = 2 * act / L.tp * L.vp * grad_accum
        t += PP_P2P_EXPOSED * p2p / (link_gbs(cluster, L.tp * L.cp * L.pp) * 1e9)
    if L.ep > 1:
        a2a = 4 * act * model.active * (L.ep - 1.0) / L.ep
        t += A2A_EXPOSED * layers * a2a / (link_gbs(cluster, L.ep * L.tp) * 1e9)
    return t


def step_parts(model, params, active, cluster, L, seq, grad_accum, style, precision):
    """Wall time of one optimizer step, in its parts (seconds)."""
    gpu = cluster.gpu
    gpus = L.tp * L.pp * L.cp * L.dp
    tokens = L.mbs * L.dp * grad_accum * seq
    flops = flops_per_token(model, seq, active) * tokens / gpus * RECOMPUTE_FLOPS[L.recompute]
    compute = flops / (gpu.tflops * 1e12 * kernel_efficiency(gpu, model, L, seq, precision))
    if precision == "fp8":                   # FP8 GEMMs: the wider the GEMM, the closer to the FP8 peak
        width = model.hidden / math.sqrt(L.tp)
        gain = 1 + ((FP8_GEMM_SPEEDUP - 1) * width / (width + FP8_WIDTH_KNEE)
                    * FP8_TE_SHARE.get(style, FP8_OTHER_SHARE))
        compute *= 1 - GEMM_SHARE * (1 - 1 / gain)
    bubble = pipeline_bubble(L, grad_accum, compute)
    comm = (dp_seconds(model, params, active, cluster, L, style, grad_accum, compute / grad_accum, bubble, precision)
            + model_parallel_seconds(model, cluster, L, seq, grad_accum, compute, style)
            + compute * SCALE_JITTER * math.log(max(1, gpus // cluster.gpus_per_node), 2))
    shard = sharded_params(model, params, active, L) / (L.dp * L.cp if L.sharding != "none" else 1)
    optimizer = shard * ADAM_BYTES / (gpu.hbm_gbs * 1e9 * HBM_EFFICIENCY)
    data = DATA_FIXED_S + 0.004 * compute
    return StepParts(compute, comm, optimizer, data)


def mfu_of(flops_per_tok, tokens_per_s, gpus, tflops):
    """Model FLOPs utilisation: model FLOPs per second over the cluster's dense peak."""
    return flops_per_tok * tokens_per_s / (gpus * tflops * 1e12)


STYLE_SHARDINGS = {"megatron": ("zero1",), "torchtitan": ("fsdp",), "deepspeed": ("zero1", "zero2", "zero3"),
                   "hf": ("none", "fsdp", "zero3"), "lightning": ("none", "fsdp")}
STYLE_RECOMPUTE = {"megatron": ("none", "selective", "full"), "torchtitan": ("none", "selective", "full"),
                   "deepspeed": ("none", "full"), "hf": ("none", "full"), "lightning": ("none", "full")}
CP_MIN_SEQ = 16384     # context parallelism for long sequences.  NeMo uses CP2 from 8k (calibration rows
                       # 20, 22, 23, 25 run it through step_parts); drawn runs keep seq <= 8k without CP,
                       # because the jsonl record (and its referee) has no cp field yet: tp*pp*dp = gpus.
STYLE_PP = {"megatron": (1, 2, 4, 8, 9, 16), "deepspeed": (1, 2, 4, 8, 16), "torchtitan": (1, 2, 4, 8)}


def layouts(model, gpus, gpus_per_node, style, seq):
    """Parallel layouts this framework can run (recompute and micro-batch left open):
    TP inside a node, PP across nodes, CP for long sequences, EP for experts."""
    out = []
    tps = (1, 2, 4, 8) if style in STYLE_PP else (1,)
    cps = (1, 2) if seq >= CP_MIN_SEQ and style in ("megatron", "torchtitan") else (1,)
    eps = [1] + ([e for e in (2, 4, 8) if model.experts % e == 0] if model.experts and style == "megatron" else [])
    for pp in STYLE_PP.get(style, (1,)):
        if pp > model.layers // 2 and pp > 1 or (model.layers % pp and style != "megatron"):
            continue
        vp = next(v for v in (4, 2, 1) if stage_layers(model, pp) % v == 0) if pp > 1 and style == "megatron" else 1
        for tp in tps:
            if tp > gpus_per_node or model.heads % tp or (model.kv_heads % tp and tp % model.kv_heads):
                continue
            for cp in cps:
                if gpus % (tp * pp * cp):
                    continue
                dp = gpus // (tp * pp * cp)
                for ep in eps:
                    if (dp * cp) % ep:
                        continue
                    for sharding in STYLE_SHARDINGS[style]:
                        if pp > 1 and ZERO_LEVEL[sharding] >= 2 and style == "deepspeed":
                            continue              # DeepSpeed's pipeline engine takes ZeRO-1 only
                        out.append(Layout(tp, pp, cp, ep, vp, dp, sharding, "none", 1))
    return out


def plan_layout(model, params, cluster, gpus, style, seq, target_seqs, precision):
    """(fastest fitting plan, leanest need): a plan is (Layout, grad_accum, StepParts, Memory);
    the leanest need is (Layout, bytes) of the layout that needs least memory."""
    active = count_params(model, active_only=True) if model.experts else params
    best, leanest = None, None
    for base in layouts(model, gpus, cluster.gpus_per_node, style, seq):
        for mbs in (1, 2, 4):
            if mbs > 1 and mbs * base.dp > target_seqs:
                break
            ga = max(1, int(round(target_seqs / float(mbs * base.dp))))
            vp = base.vp if ga % base.pp == 0 else 1     # interleaving needs micro-batches in multiples of pp
            for recompute in STYLE_RECOMPUTE[style]:
                L = base._replace(recompute=recompute, mbs=mbs, vp=vp)
                mem = memory_model(model, params, active, L, seq, style, ga)
                if leanest is None or memory_total(mem) < leanest[1]:
                    leanest = (L, memory_total(mem))
                if fits(cluster.gpu, mem):
                    parts = step_parts(model, params, active, cluster, L, seq, ga, style, precision)
                    # even pipeline stages first: an uneven split only when nothing even fits
                    key = (model.layers % L.pp != 0, sum(parts) / (mbs * base.dp * ga))
                    if best is None or key < best[0]:
                        best = (key, (L, ga, parts, mem))
                    break
    return (best[1] if best else None), leanest


def describe_layout(L):
    return "TP%d PP%d%s%s DP%d %s, %s recompute, micro-batch %d" % (
        L.tp, L.pp, " CP%d" % L.cp if L.cp > 1 else "", " EP%d" % L.ep if L.ep > 1 else "",
        L.dp, L.sharding, L.recompute, L.mbs)


########################################################################
# Run configuration (pure: from the seed and the user's pins)
########################################################################

KINDS = ("pretrain", "resume", "continue", "finetune")
STYLES = ("megatron", "deepspeed", "hf", "torchtitan", "lightning")
PRETRAIN_STYLES = ("megatron", "torchtitan", "deepspeed")
FINETUNE_STYLES = ("hf", "lightning", "deepspeed")


class ConfigError(Exception):
    """The user's pins describe a run that cannot exist (exit status 2)."""


RunConfig = collections.namedtuple("RunConfig", [
    "seed", "run", "kind", "style", "name", "model", "shape", "params", "active_params",
    "tokenizer", "architecture", "dataset", "gpu", "nodes", "gpus_per_node", "gpus", "tp", "pp", "dp",
    "sharding", "recompute", "precision", "seq_len", "micro_batch", "grad_accum",
    "global_batch", "tokens_per_step", "start_step", "total_steps", "warmup_steps",
    "peak_lr", "min_lr", "decay", "betas", "weight_decay", "grad_clip", "epochs",
    "steps_per_epoch", "train_samples", "flops_per_token", "mfu", "tokens_per_s",
    "step_time_s", "mem_need_bytes", "mem_used_mib", "log_interval", "val_interval",
    "val_iters", "val_seconds", "ckpt_interval", "ckpt_bytes", "ckpt_seconds",
    "launch_seconds", "build_seconds", "load_seconds", "export_seconds", "export_files",
    "hostname", "first_node", "master_port", "loss_start", "loss_floor", "grad_floor",
    "grad_start", "noise", "spike_rate", "straggler_rate", "xid_rate", "attach_fraction",
    "ambient_c", "loss_scale_exp", "loss_phase", "run_seed",
    # the cluster and performance model: context/expert/virtual-pipeline degrees, the whole
    # Layout, the step's parts (sum = step_time_s), memory as nvidia-smi counts it, the
    # cluster it runs on, its software stack, and the queue wait after a failure
    "cp", "ep", "vp", "layout", "warmup_ratio", "decay_fraction", "step_parts", "mem_reserved_mib",
    "context_mib", "nccl_mib", "cluster", "stack", "fabric", "requeue_seconds",
])


NICE_NUMBERS = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000)


def nice_at_most(x):
    """The largest 'round' number people put in configs that is <= x (at least 1)."""
    return max([n for n in NICE_NUMBERS if n <= x] or [1])


def nice_at_least(x):
    """The smallest 'round' number that is >= x."""
    return min([n for n in NICE_NUMBERS if n >= x] or [NICE_NUMBERS[-1]])


SHARD_MAX_BYTES = 5 * 10 ** 9         # save_pretrained's default max_shard_size="5GB" (decimal)
TENSOR_HEADER_BYTES = 96              # a safetensors header entry: name, dtype, shape, offsets (JSON)
INDEX_ENTRY_BYTES = 72                # a weight_map line of model.safetensors.index.json


def model_tensors(model):
    """(name, elements) of each tensor of a Hugging Face checkpoint, in state-dict order."""
    h, hd, f = model.hidden, head_dim(model), model.ffn_hidden
    out = [("model.embed_tokens.weight", model.vocab * h)]
    mlp = [("gate_proj", h * f), ("up_proj", h * f), ("down_proj", f * h)] if model.mlp != "gelu" \
        else [("up_proj", h * f), ("down_proj", f * h)]
    for i in range(model.layers):
        pre = "model.layers.%d." % i
        out += [(pre + "self_attn.q_proj.weight", h * model.heads * hd),
                (pre + "self_attn.k_proj.weight", h * model.kv_heads * hd),
                (pre + "self_attn.v_proj.weight", h * model.kv_heads * hd),
                (pre + "self_attn.o_proj.weight", model.heads * hd * h)]
        if model.experts:
            out.append((pre + "block_sparse_moe.gate.weight", h * model.experts))
            for e in range(model.experts):
                out += [(pre + "block_sparse_moe.experts.%d.%s.weight" % (e, n), k) for n, k in mlp]
        else:
            out += [(pre + "mlp.%s.weight" % n, k) for n, k in mlp]
        out += [(pre + "input_layernorm.weight", h), (pre + "post_attention_layernorm.weight", h)]
    out.append(("model.norm.weight", h))
    if not model.tied:
        out.append(("lm_head.weight", model.vocab * h))
    return out


def safetensors_export(params, model, rng):
    """Files of a save_pretrained export: bf16 tensors packed in order into shards of at
    most 5 GB (the last one smaller), with model.safetensors.index.json when sharded."""
    shards, current, entries = [], 0, 0
    for _name, elements in model_tensors(model):
        size = 2 * elements
        if current and current + size > SHARD_MAX_BYTES:
            shards.append((current, entries))
            current, entries = 0, 0
        current += size
        entries += 1
    shards.append((current, entries))
    n = len(shards)
    files = [("model-%05d-of-%05d.safetensors" % (i + 1, n) if n > 1 else "model.safetensors",
              size + 8 + TENSOR_HEADER_BYTES * k) for i, (size, k) in enumerate(shards)]
    extras = [("config.json", 700 + rng.randrange(200)), ("generation_config.json", 180 + rng.randrange(60)),
              ("tokenizer.json", 1800000 + model.vocab * 70), ("tokenizer_config.json", 50000 + rng.randrange(9000)),
              ("special_tokens_map.json", 300 + rng.randrange(200))]
    if n > 1:
        tensors = sum(k for _, k in shards)
        extras.insert(0, ("model.safetensors.index.json", 60 + INDEX_ENTRY_BYTES * tensors))
    return files + extras


def initial_losses(rng, kind, model, params, dataset):
    """Where the loss starts and the floor it heads for (nats per token)."""
    chinchilla_model_term = 406.4 / params ** 0.34          # Hoffmann et al. fit: E + A/N^a + B/D^b
    floor = 1.69 + chinchilla_model_term
    if kind == "finetune":
        start = rng.uniform(1.2, 2.2)
        return start, start * rng.uniform(0.45, 0.7)
    if kind == "continue":
        start = floor + rng.uniform(0.35, 0.8)              # a released model on a new domain
        return start, floor + 0.15
    return math.log(model.vocab), floor


def run_name(rng, kind, model, dataset, lr, seed):
    short = model.name.lower().replace(".", "p")
    data = dataset.name.split("/")[-1].lower().replace("_", "-")
    what = {"pretrain": "pt", "resume": "pt", "continue": "cpt", "finetune": "sft"}[kind]
    return "%s-%s-%s-lr%s-%s" % (short, what, data[:18].strip("-"), ("%.0e" % lr).replace("e-0", "e-"),
                                 rng.choice(("v1", "v2", "v3", "v4", "ablate", "rerun", "final")))


JOB_SIZES = (8, 16, 32, 64, 128, 256, 512, 576, 1024, 2048)
MAX_RUN_SECONDS = 21 * 86400          # a job of a few weeks at most: longer pretrains are split in stages
MIN_STEP_S, MAX_STEP_S = 0.08, 60.0   # optimizer steps outside this band are not what teams configure
TOKENS_PER_PARAM = (20, 20, 25, 30, 40, 50, 80, 100, 200)   # Chinchilla's 20 and the over-trained recipes since
RESUME_LEFT_S = (1800.0, 2 * 86400.0)  # a resumed job's remaining wall time: a slurm time limit's worth
LOG_EVERY_S = 4.0                     # a log line every few seconds, as teams set log_interval
VAL_EVERY_RUN = 25.0                  # about 25 evaluations over a run ...
VAL_EVERY_S = (180.0, 5400.0)         # ... but one every 3 to 90 minutes of wall time
CKPT_EVERY_S = (1200.0, 3600.0)       # checkpoints every 20 to 60 minutes (lose little on a failure)
CKPT_COST = 0.04                      # and saving costs at most ~4% of the time between saves
LAUNCH_BASE_S = 9.0                   # python imports and torchrun's agent start
RENDEZVOUS_S = 2.2                    # per doubling of nodes: the c10d store and the TCPStore round trips
NCCL_INIT_S = 0.9                     # per doubling of ranks: bootstrap ring and channel set-up
INIT_PARAMS_PER_S = 1.5e9             # parameters a rank initialises (and moves to the GPU) per second
MIN_COMPUTE_SHARE = 0.45              # a job that waits on the network more than it computes gets fewer GPUs
REQUEUE_S = (120.0, 900.0)            # drained node, requeued job: minutes in the queue before it starts again


def choose_kind_style(rng, kind, style):
    if style is None:
        kind = kind or rng.choice(("pretrain", "resume", "resume", "continue", "finetune", "finetune"))
        pool = FINETUNE_STYLES if kind == "finetune" else PRETRAIN_STYLES
        style = rng.choice(pool + pool[:1])               # the first of each pool is the usual one
    elif kind is None:
        kind = rng.choice(("finetune", "finetune", "continue") if style in ("hf", "lightning")
                          else ("pretrain", "resume", "resume", "continue") if style in ("megatron", "torchtitan")
                          else KINDS)
    return kind, style


def model_pool(catalog, kind, pinned):
    if pinned:
        return [catalog.models[pinned]]
    models = list(catalog.models.values())
    size = {m.name: count_params(m) for m in models}
    if kind == "pretrain":      # from scratch: ablation-sized models a queue runs in hours
        return [m for m in models if size[m.name] < 2.0e9]
    if kind == "finetune":
        return [m for m in models if 0.4e9 < size[m.name] < 80e9]
    if kind == "continue":
        return [m for m in models if 1e9 < size[m.name] < 80e9]
    return [m for m in models if size[m.name] > 1e9]


def cluster_sizes(params, kind, cluster_gpus=max(JOB_SIZES)):
    """Job sizes a team would use for a model of this size and run kind, within its cluster."""
    if kind == "finetune":
        lo, hi = (8, 32) if params < 15e9 else (16, 128) if params < 80e9 else (64, 512)
    elif kind == "pretrain":
        lo, hi = (8, 32) if params < 0.5e9 else (16, 128)
    elif kind == "continue":
        lo, hi = (16, 128) if params < 10e9 else (64, 512)
    else:
        lo, hi = ((32, 256) if params < 4e9 else (64, 1024) if params < 20e9
                  else (256, 2048) if params < 100e9 else (512, 2048))
    return [n for n in JOB_SIZES if lo <= n <= hi and n <= cluster_gpus and cluster_gpus % n == 0]


def target_batch(rng, kind, params, seq):
    """Sequences per optimizer step: tokens per step grow with model size, as in published recipes."""
    if kind == "finetune":
        return rng.choice((32, 64, 64, 128, 128, 256))
    tokens = (0.5e6 if params < 0.5e9 else 1e6 if params < 4e9 else
              rng.choice((2e6, 4e6)) if params < 100e9 else rng.choice((8e6, 16e6)))
    return max(1, 2 ** int(round(math.log(tokens / seq, 2))))


def draw_schedule(rng, catalog, kind, params, tokens_per_step, global_batch, step_time, style):
    """Dataset, length, resume position and learning-rate schedule; None if no real run is this long."""
    max_steps = int(MAX_RUN_SECONDS / step_time)
    if kind == "finetune":
        dataset = rng.choice([d for d in catalog.datasets if d.kind == "finetune"])
        epochs = rng.choice((1, 2, 2, 3, 3, 4))
        steps_per_epoch = int(math.ceil(dataset.examples / float(global_batch)))
        total, start = steps_per_epoch * epochs, 0
        if total < 20 or total > max_steps:
            return None
        train_samples = dataset.examples
    else:
        dataset = rng.choice([d for d in catalog.datasets if d.kind == "pretrain"])
        if kind == "continue":
            tokens = rng.choice((2e9, 5e9, 10e9, 20e9, 50e9, 100e9))
        else:
            tokens = params * rng.choice(TOKENS_PER_PARAM)
        tokens = min(tokens, dataset.tokens * 4.0, max_steps * float(tokens_per_step))   # at most 4 epochs
        total = int(math.ceil(tokens / tokens_per_step))
        if kind != "continue" and total * tokens_per_step < 20 * params or total < 50:
            return None                       # under Chinchilla's 20 tokens per parameter: not a pretrain
        start = 0
        if kind == "resume":
            left = int(math.exp(rng.uniform(*[math.log(x) for x in RESUME_LEFT_S])) / step_time)
            start = max(total // 20, total - max(20, left))
        epochs, steps_per_epoch, train_samples = 1, total, 0
    out = dict(dataset=dataset, total_steps=total, start_step=start, epochs=epochs,
               steps_per_epoch=steps_per_epoch, train_samples=train_samples)
    out.update(draw_lr_schedule(rng, kind, params, total, style))
    return out


# Schedules drawn.  lr_at also runs "wsd" and "constant" (with warm-up), and a
# min-LR ratio of 0 (HF's schedulers end at 0); they are left out of the draw
# until the jsonl referee (shared/tools/check_jsonl.py, which knows cosine and
# linear to a positive floor) learns them: add them here then.
FINETUNE_DECAYS = ("linear", "linear", "cosine", "cosine")
PRETRAIN_DECAYS = ("cosine", "cosine", "cosine", "linear")
CONTINUE_DECAYS = ("cosine", "linear")
FINETUNE_MIN_LR_RATIOS = (0.1, 0.05, 0.01)
PRETRAIN_MIN_LR_RATIOS = (0.1, 0.1, 0.05, 0.01, 0.033)


def draw_lr_schedule(rng, kind, params, total, style):
    """Peak LR, floor, warm-up and decay as teams set them (spreads, not one template)."""
    if kind == "finetune":
        peak = rng.choice((5e-6, 1e-5, 1e-5, 2e-5)) if params > 20e9 else rng.choice((1e-5, 2e-5, 3e-5, 5e-5, 1e-4))
        decay = rng.choice(FINETUNE_DECAYS)
        ratio = rng.choice(FINETUNE_MIN_LR_RATIOS)
    else:
        peak = (6e-4 if params < 0.5e9 else 4e-4 if params < 2e9 else 3e-4 if params < 10e9
                else 1.5e-4 if params < 100e9 else 8e-5) * rng.choice((0.5, 0.75, 1.0, 1.0, 1.25, 1.5))
        if kind == "continue":
            peak /= rng.choice((2.0, 3.0, 5.0, 10.0))
        decay = rng.choice(PRETRAIN_DECAYS if kind != "continue" else CONTINUE_DECAYS)
        ratio = rng.choice(PRETRAIN_MIN_LR_RATIOS)
    peak = float("%.2g" % peak)
    if rng.random() < (0.7 if kind == "finetune" else 0.25):            # warmup_ratio (HF: ceil(ratio x total))
        warmup_ratio = rng.choice((0.01, 0.03, 0.05, 0.1))
        warmup = int(math.ceil(warmup_ratio * total))
    else:                                                               # warmup as a step count
        warmup_ratio = None
        warmup = min(rng.choice((100, 200, 500, 1000, 2000, 2500)) if kind != "finetune"
                     else rng.choice((10, 20, 50, 100)), max(1, total // 10))
    return dict(peak_lr=peak, min_lr=(peak * ratio if decay != "constant" else 0.0), decay=decay,
                decay_fraction=rng.choice((0.1, 0.15, 0.2)) if decay == "wsd" else 0.0,
                warmup=max(1, warmup), warmup_ratio=warmup_ratio)


def draw_cadence(rng, style, step_time, sched):
    """Log, validation and checkpoint intervals in round numbers, scaled with the run's length."""
    total = sched["total_steps"]
    log_interval = nice_at_most(max(1.0, LOG_EVERY_S / step_time))
    if style == "hf":
        log_interval = min(log_interval, 50)
    run_s = (total - sched["start_step"]) * step_time
    val_s = min(VAL_EVERY_S[1], max(VAL_EVERY_S[0], run_s / VAL_EVERY_RUN))
    val_interval = nice_at_least(val_s / step_time)
    if val_interval * step_time > VAL_EVERY_S[1]:           # rounding up overshot the band: round down
        val_interval = nice_at_most(val_s / step_time)
    val_interval = max(log_interval, val_interval)
    val_iters = max(5, min(100, int(0.08 * val_interval)))
    val_seconds = min(val_iters * step_time / 3.0, 0.04 * val_interval * step_time + 1)
    return dict(log_interval=log_interval, val_interval=val_interval, val_iters=val_iters,
                val_seconds=val_seconds)


def draw_timings(rng, kind, model, params, cluster, gpus, L, style, step_time, cadence):
    """Checkpoint size and cadence, start-up, load and export times from world size and bandwidths."""
    nodes = gpus // cluster.gpus_per_node
    fs = cluster.fs
    write_gbs = min(fs.write_gbs, nodes * fs.node_gbs)      # every node streams its shards
    read_gbs = min(fs.read_gbs, nodes * fs.node_gbs)
    ckpt_bytes = int(params * 14 + gpus * 4096)              # bf16 weights + fp32 master, Adam m, v; per-rank files
    ckpt_seconds = ckpt_bytes / (write_gbs * 1e9) + 1.5 + 0.002 * gpus   # plus the barrier and metadata
    val_span = cadence["val_interval"] * step_time
    every = max(rng.uniform(*CKPT_EVERY_S) / val_span, ckpt_seconds / (CKPT_COST * val_span))
    ckpt_interval = cadence["val_interval"] * nice_at_least(max(1.0, every))
    export_files = safetensors_export(params, model, rng)
    export_seconds = sum(b for _, b in export_files) / (min(write_gbs, fs.node_gbs) * 1e9) + 2.0
    launch = (LAUNCH_BASE_S + RENDEZVOUS_S * math.log(nodes + 1, 2)) * rng.uniform(0.95, 1.1)
    shard = params / float(L.tp * L.pp) / (L.dp if ZERO_LEVEL[L.sharding] >= 3 else 1)
    build = (4.0 + NCCL_INIT_S * math.log(gpus, 2) + 0.002 * gpus + shard / INIT_PARAMS_PER_S
             + (rng.uniform(25, 70) if style == "torchtitan" else 0.0)) * rng.uniform(0.95, 1.1)  # torch.compile
    load = 0.0
    if kind == "resume":
        load = ckpt_bytes / (read_gbs * 1e9) + 3.0 + 0.002 * gpus
    elif kind == "continue":                                  # the released weights, bf16
        load = params * 2 / (read_gbs * 1e9) + 3.0 + 0.002 * gpus
    return dict(ckpt_interval=ckpt_interval, ckpt_bytes=ckpt_bytes, ckpt_seconds=ckpt_seconds,
                launch_seconds=launch, build_seconds=build, load_seconds=load,
                export_seconds=export_seconds, export_files=export_files,
                requeue_seconds=rng.uniform(*REQUEUE_S))



RUN_SEED_STRIDE = 7919      # a prime: run_seed of (seed, run) never meets another seed's run below 7919 runs


def cadence_and_timing(cadence, timing):
    out = dict(cadence)
    out.update(timing)
    return out


def attach_fraction(rng, sched, step_time):
    """Where a session joins this run if it is the first: near the end of a long run
    (so the job ends within the hour), part-way through a short one."""
    train_s = (sched["total_steps"] - sched["start_step"]) * step_time
    left = rng.uniform(8 * 60, 45 * 60)
    if train_s > 2 * left:
        return 1 - left / train_s
    return rng.uniform(0.2, 0.7)


def _complete_config(catalog, rng, seed, run, kind, style, model, params, cluster, gpus, seq, plan):
    """A run around a plan that fits: schedule, cadence and timings; None if no real job looks like it."""
    L, grad_accum, parts, mem = plan
    active = count_params(model, active_only=True) if model.experts else params
    global_batch = L.mbs * L.dp * grad_accum
    tokens_per_step = global_batch * seq
    step_time = sum(parts)
    if not MIN_STEP_S <= step_time <= MAX_STEP_S:
        return None
    sched = draw_schedule(rng, catalog, kind, params, tokens_per_step, global_batch, step_time, style)
    if sched is None:
        return None
    cadence = draw_cadence(rng, style, step_time, sched)
    timing = draw_timings(rng, kind, model, params, cluster, gpus, L, style, step_time, cadence)
    fpt = flops_per_token(model, seq, active)
    tokens_per_s = tokens_per_step / step_time
    name = run_name(rng, kind, model, sched["dataset"], sched["peak_lr"], seed)
    loss_start, loss_floor = initial_losses(rng, kind, model, params, sched["dataset"])
    nodes = gpus // cluster.gpus_per_node
    first_node = cluster.first_node + rng.randrange(cluster.nodes // nodes) * nodes   # the partition it got
    return RunConfig(
        seed=seed, run=run, kind=kind, style=style, name=name, model=model.name, shape=model,
        params=params, active_params=active, tokenizer=catalog.tokenizers[model.family][0],
        architecture=("MixtralForCausalLM" if model.experts and model.family == "mistral"
                      else catalog.tokenizers[model.family][1]),
        dataset=sched["dataset"].name, gpu=cluster.gpu, nodes=nodes, gpus_per_node=cluster.gpus_per_node,
        gpus=gpus, tp=L.tp, pp=L.pp, dp=L.dp, cp=L.cp, ep=L.ep, vp=L.vp, layout=L,
        sharding=L.sharding, recompute=L.recompute, precision=cluster.gpu.precision,
        seq_len=seq, micro_batch=L.mbs, grad_accum=grad_accum, global_batch=global_batch,
        tokens_per_step=tokens_per_step, start_step=sched["start_step"], total_steps=sched["total_steps"],
        warmup_steps=sched["warmup"], warmup_ratio=sched["warmup_ratio"], peak_lr=sched["peak_lr"],
        min_lr=sched["min_lr"], decay=sched["decay"], decay_fraction=sched["decay_fraction"],
        betas=(0.9, 0.95), weight_decay=0.1 if kind != "finetune" else rng.choice((0.0, 0.01, 0.1)),
        grad_clip=1.0, epochs=sched["epochs"], steps_per_epoch=sched["steps_per_epoch"],
        train_samples=sched["train_samples"], flops_per_token=fpt,
        mfu=mfu_of(fpt, tokens_per_s, gpus, cluster.gpu.tflops), tokens_per_s=tokens_per_s,
        step_time_s=step_time, step_parts=parts, mem_need_bytes=mem.allocated,
        mem_used_mib=int(memory_total(mem) / MIB), mem_reserved_mib=int(mem.reserved / MIB),
        context_mib=int(mem.context / MIB), nccl_mib=int(mem.nccl / MIB),
        cluster=cluster, stack=cluster.stack, fabric=cluster.fabric.name, hostname=cluster.hostname,
        first_node=first_node, master_port=rng.choice((29500, 29500, 6000, 12355, 29400)),
        loss_start=loss_start, loss_floor=loss_floor,
        grad_floor=(rng.uniform(0.18, 0.32) if kind != "finetune" else rng.uniform(0.5, 1.4)),
        grad_start=(rng.uniform(8, 16) if kind == "pretrain" else rng.uniform(2, 12)),
        noise=0.006 + 0.02 / math.sqrt(tokens_per_step / 2.5e5),
        spike_rate=1.0, straggler_rate=1.0, xid_rate=1.0,
        attach_fraction=attach_fraction(rng, sched, step_time),
        ambient_c=rng.uniform(24, 31), loss_scale_exp=rng.choice((14, 15, 16, 17)),
        loss_phase=rng.uniform(0, 2 * math.pi),
        run_seed=seed * RUN_SEED_STRIDE + run, **cadence_and_timing(cadence, timing))


def refusal(pins, cluster, leanest):
    """Why no run fits: the true shortfall when memory is the reason."""
    gpu = cluster.gpu
    card = gpu.memory_mib * MIB * CARD_HEADROOM
    if pins.get("model") and leanest is not None and leanest[1] > card:
        L, need = leanest
        return ("%s does not fit on %dx %s: its leanest layout (%s) needs %.1f GiB per GPU "
                "(weights, gradients, optimizer shards, activations, CUDA context and NCCL buffers), "
                "the card has %.1f GiB usable: %.1f GiB short"
                % (pins["model"], L.tp * L.pp * L.cp * L.dp, gpu.name, describe_layout(L), need / GIB,
                   card / GIB, (need - card) / GIB))
    return ("no consistent run found for these options (it fits in memory, but no job of this size "
            "keeps its step time and length within real bands); try fewer pins "
            "(for example leave out --gpus or --gpu-type)")


def make_run_config(catalog, seed, run, pins=None, cluster=None):
    """The whole configuration of run number `run` (1, 2, ...) of this seed.

    The run is a job on the session's cluster (the same for every run of the
    seed).  `pins` may fix model, gpu_type, gpus, kind and style; everything
    else is drawn around them so that every figure stays consistent.  Raises
    ConfigError when the pins cannot fit together."""
    pins = pins or {}
    cluster = cluster or make_cluster(catalog, seed, pins)
    rng = random.Random("%d:config:%d" % (seed, run))
    leanest, fallback = None, None
    for _ in range(200):
        kind, style = choose_kind_style(rng, pins.get("kind"), pins.get("style"))
        model = rng.choice(model_pool(catalog, kind, pins.get("model")))
        params = count_params(model)
        sizes = [pins["gpus"]] if pins.get("gpus") else cluster_sizes(params, kind, cluster.nodes * cluster.gpus_per_node)
        if not sizes:
            continue
        gpus = rng.choice(sizes)
        seq = min(rng.choice((2048, 4096, 4096, 8192)), model.context)
        target = target_batch(rng, kind, params, seq)
        plan, lean = plan_layout(model, params, cluster, gpus, style, seq, target, cluster.gpu.precision)
        if lean and (leanest is None or lean[1] < leanest[1]):
            leanest = lean
        if plan is None:
            continue
        cfg = _complete_config(catalog, rng, seed, run, kind, style, model, params, cluster, gpus, seq, plan)
        share = plan[2].compute / sum(plan[2])
        if cfg is not None and share >= MIN_COMPUTE_SHARE:
            return cfg
        if cfg is not None and pins.get("gpus") and (fallback is None or share > fallback[0]):
            fallback = (share, cfg)           # a pinned size may be network-bound: the best of them
    if fallback:
        return fallback[1]
    raise ConfigError(refusal(pins, cluster, leanest))


########################################################################
# Metric model (pure: the value at a step or a moment is f(config, step/t))
########################################################################

def lr_at(cfg, step):
    """Learning rate of the optimizer step `step` (linear warm-up, then decay)."""
    if step < cfg.warmup_steps:
        return cfg.peak_lr * (step + 1) / float(cfg.warmup_steps)
    p = min(1.0, (step - cfg.warmup_steps) / float(max(1, cfg.total_steps - cfg.warmup_steps)))
    if cfg.decay == "constant":
        return cfg.peak_lr
    if cfg.decay == "wsd":             # warmup-stable-decay: flat, then linear to min_lr over the last part
        left = (cfg.total_steps - step) / float(max(1, cfg.decay_fraction * cfg.total_steps))
        return cfg.min_lr + (cfg.peak_lr - cfg.min_lr) * min(1.0, max(0.0, left))
    if cfg.decay == "linear":
        return cfg.peak_lr - (cfg.peak_lr - cfg.min_lr) * p
    return cfg.min_lr + 0.5 * (cfg.peak_lr - cfg.min_lr) * (1 + math.cos(math.pi * p))


def effective_steps(cfg, step):
    """Steps of progress: warm-up steps count for the learning rate they had."""
    w = float(cfg.warmup_steps)
    return step * step / (2 * w) if step < w else step - w / 2


def spike_at(cfg, step, forced_spikes=()):
    """Relative loss excess from spikes: jumps, then decays over tens of steps."""
    excess = 0.0
    block = step // 1000
    for b in (block - 1, block):
        # Fine-tunes at small learning rates, and runs at the low end of their
        # schedule, rarely spike: random spikes come only where they happen.
        if b < 0 or cfg.kind == "finetune" or unit(cfg.run_seed, S_SPIKE, 3 * b) >= cfg.spike_rate * 0.08:
            continue
        start = b * 1000 + int(unit(cfg.run_seed, S_SPIKE, 3 * b + 1) * 1000)
        if start > cfg.start_step + 0.85 * (cfg.total_steps - cfg.start_step):
            continue
        size = 0.15 + 0.9 * unit(cfg.run_seed, S_SPIKE, 3 * b + 2)
        if start <= step < start + 200:
            excess += size * math.exp(-(step - start) / 12.0)
    for start, size in forced_spikes:
        if start <= step < start + 200:
            excess += size * math.exp(-(step - start) / 12.0)
    return excess


def expected_loss(cfg, step):
    """Loss without step-to-step noise (what a validation pass estimates)."""
    if cfg.kind == "finetune":
        return _expected_loss(cfg, step)
    # As the learning rate anneals the loss drops a little more than the
    # power law alone: the familiar steepening at the end of a cosine schedule.
    annealed = 0.0
    if step >= cfg.warmup_steps:
        annealed = 1 - (lr_at(cfg, step) - cfg.min_lr) / (cfg.peak_lr - cfg.min_lr)
    return _expected_loss(cfg, step) * (1 - 0.035 * annealed)


def _expected_loss(cfg, step):
    if cfg.kind == "finetune":
        x = step / float(max(1, cfg.steps_per_epoch))
        decay = (1 + 4 * x) ** -0.8 * 0.9 ** int(min(x, cfg.epochs - 1e-9))
        return cfg.loss_floor + (cfg.loss_start - cfg.loss_floor) * decay
    if cfg.kind == "continue":
        warm = 0.06 * math.sin(math.pi * min(1.0, step / float(cfg.warmup_steps)))
        return cfg.loss_floor + (cfg.loss_start - cfg.loss_floor) * (1 + step / 40.0) ** -0.25 + warm
    # From scratch (or resumed from it): a Chinchilla-style fit in tokens seen,
    # softly capped at ln(vocab), where an untrained model starts.
    tokens = max(1.0, effective_steps(cfg, step) * cfg.tokens_per_step)
    fit = cfg.loss_floor + 534.0 / tokens ** 0.28
    ln_v = cfg.loss_start
    loss = (ln_v ** -8 + fit ** -8) ** -0.125
    return loss + 0.25 * math.exp(-step / 3.0)


def loss_at(cfg, step, forced_spikes=(), spike=None):
    """Training loss printed for optimizer step `step`: noisy, spiky, mostly falling."""
    base = expected_loss(cfg, step)
    s = cfg.run_seed
    # step-to-step noise, plus a slow drift over tens of steps (data mixture, batch difficulty)
    drift = 0.3 * math.sin(step / 37.0 + cfg.loss_phase) + 0.2 * math.sin(step / 113.0 + 2.1 * cfg.loss_phase)
    wobble = cfg.noise * (normal(s, S_LOSS, step) + drift)
    return base * (1 + wobble + (spike_at(cfg, step, forced_spikes) if spike is None else spike))


def grad_norm_at(cfg, step, forced_spikes=(), spike=None):
    """Gradient norm: large early, settling, with spikes alongside loss spikes."""
    s = cfg.run_seed
    scale = 5.0 if cfg.kind == "pretrain" else 10.0
    g = cfg.grad_floor + cfg.grad_start / (1 + step / scale) ** 0.8
    g *= math.exp(0.12 * normal(s, S_GRAD, step))
    return g * (1 + 25 * (spike_at(cfg, step, forced_spikes) if spike is None else spike))


def val_loss_at(cfg, step):
    s = cfg.run_seed
    gap = 0.012 if cfg.kind != "finetune" else 0.04 + 0.05 * (step / float(max(1, cfg.total_steps)))
    return expected_loss(cfg, step) * (1 + gap + 0.004 * normal(s, S_VAL, step))


def checkpoint_path(cfg, step):
    return {"megatron": "/checkpoints/%s/iter_%07d" % (cfg.name, step),
            "deepspeed": "/checkpoints/%s/global_step%d" % (cfg.name, step),
            "hf": "/outputs/%s/checkpoint-%d" % (cfg.name, step),
            "torchtitan": "/outputs/%s/checkpoint/step-%d" % (cfg.name, step),
            "lightning": "/outputs/%s/checkpoints/epoch=%d-step=%d.ckpt"
                         % (cfg.name, (step - 1) // max(1, cfg.steps_per_epoch or cfg.total_steps), step),
            }[cfg.style]


########################################################################
# Timeline: the phases of one run, and where the run is at time t
########################################################################
# A run: launch -> build -> (load) -> train [-> crash -> launch -> build ->
# load -> train ...] -> export -> summary.  Within training, optimizer step k
# ends at T(k); validation and checkpoint pauses follow their steps.  Every
# time is computed in O(1) from the step, and the step from a time by
# bisection, so any moment of any run can be shown without replaying it.

Segment = collections.namedtuple("Segment", "phase t0 t1 first last attempt info")
Moment = collections.namedtuple("Moment", "phase step progress segment")
Incidents = collections.namedtuple("Incidents", "spikes stragglers crashes")

INCIDENT_LEVELS = {"off": 0.0, "rare": 1.0, "normal": 25.0, "often": 400.0}
SUMMARY_SECONDS = 20.0


class Timeline(object):
    """The phases of one run in simulated seconds since its launch."""

    def __init__(self, cfg, incidents=None):
        self.cfg = cfg
        self.incidents = incidents or Incidents((), (), ())
        self.segments = []
        self._build()
        self.starts = [seg.t0 for seg in self.segments]
        self.duration = self.segments[-1].t1

    # -- construction ---------------------------------------------------
    def _add(self, phase, seconds, first=0, last=0, attempt=0, info=None):
        t0 = self.segments[-1].t1 if self.segments else 0.0
        self.segments.append(Segment(phase, t0, t0 + seconds, first, last, attempt, info))

    def _build(self):
        cfg = self.cfg
        step, attempt = cfg.start_step, 0
        crashes = sorted(c for c in self.incidents.crashes if cfg.start_step < c[0] <= cfg.total_steps)
        while True:
            # after a failure the node is drained and the job waits in the queue before it relaunches
            self._add("launch", cfg.launch_seconds + (cfg.requeue_seconds if attempt else 0.0), step, step, attempt)
            self._add("build", cfg.build_seconds, step, step, attempt)
            if step > 0 or cfg.kind == "continue":
                self._add("load", cfg.load_seconds or 4.0, step, step, attempt)
            crash = next((c for c in crashes if c[0] > step), None)
            last = crash[0] if crash else cfg.total_steps
            t0 = self.segments[-1].t1
            seg = Segment("train", t0, 0.0, step, last, attempt, crash)
            end = self.step_end(seg, last)
            if crash is None:
                end += self.pause_after(last)
            self.segments.append(seg._replace(t1=end))
            if crash is None:
                break
            hang = crash[2]
            self._add("crash", hang, last, last, attempt, crash)
            crashes.remove(crash)
            done = (last // cfg.ckpt_interval) * cfg.ckpt_interval
            step = max(done, cfg.start_step)
            attempt += 1
        self._add("export", cfg.export_seconds, cfg.total_steps, cfg.total_steps, attempt)
        self._add("summary", SUMMARY_SECONDS, cfg.total_steps, cfg.total_steps, attempt)

    # -- steps and times --------------------------------------------------
    def pauses(self, step):
        """(validation, checkpoint) seconds that follow step `step`; the last step has both."""
        cfg = self.cfg
        final = step == cfg.total_steps
        val = cfg.val_seconds if (step % cfg.val_interval == 0 or final) else 0.0
        ckpt = cfg.ckpt_seconds if (step % cfg.ckpt_interval == 0 or final) else 0.0
        return val, ckpt

    def pause_after(self, step):
        return sum(self.pauses(step))

    def _pauses_between(self, first, step):
        """Pause seconds after steps first+1 .. step-1."""
        cfg = self.cfg
        vals = (step - 1) // cfg.val_interval - first // cfg.val_interval
        ckpts = (step - 1) // cfg.ckpt_interval - first // cfg.ckpt_interval
        return max(0, vals) * cfg.val_seconds + max(0, ckpts) * cfg.ckpt_seconds

    def _jitter(self, step):
        return 0.04 * self.cfg.step_time_s * unit(self.cfg.run_seed, S_STEP, step)

    def _straggle(self, seg, step):
        """Extra seconds up to step `step` lost to slow nodes in this segment."""
        extra = 0.0
        for first, last, factor, _node in self.incidents.stragglers:
            lo, hi = max(first, seg.first), min(last, step)
            if hi > lo:
                extra += (hi - lo) * self.cfg.step_time_s * (factor - 1)
        return extra

    def step_end(self, seg, step):
        """Simulated time at which optimizer step `step` of segment `seg` ends."""
        if step <= seg.first:
            return seg.t0
        return (seg.t0 + (step - seg.first) * self.cfg.step_time_s + self._jitter(step)
                + self._pauses_between(seg.first, step) + self._straggle(seg, step))

    def step_time(self, seg, step):
        """Duration of the compute of step `step` alone (no pauses)."""
        prev = self._jitter(step - 1) if step - 1 > seg.first else 0.0
        return (self.cfg.step_time_s + self._jitter(step) - prev
                + self._straggle(seg, step) - self._straggle(seg, step - 1))

    def last_step_before(self, seg, t):
        """The last step of `seg` that ended at or before t (seg.first if none)."""
        lo, hi = seg.first, seg.last
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.step_end(seg, mid) <= t:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def segment_at(self, t):
        i = max(0, bisect.bisect_right(self.starts, t) - 1)
        return self.segments[i]

    def moment(self, t):
        """What the run is doing at time t: phase, last finished step, progress 0..1."""
        seg = self.segment_at(t)
        if seg.phase != "train":
            span = max(1e-9, seg.t1 - seg.t0)
            return Moment(seg.phase, seg.last if seg.phase != "launch" else seg.first,
                          min(1.0, max(0.0, (t - seg.t0) / span)), seg)
        step = self.last_step_before(seg, t)
        end = self.step_end(seg, step)
        if step > seg.first:
            val, ckpt = self.pauses(step)
            if t < end + val:
                return Moment("val", step, (t - end) / val, seg)
            if t < end + val + ckpt:
                return Moment("checkpoint", step, (t - end - val) / ckpt, seg)
            end += val + ckpt
        nxt = min(step + 1, seg.last)
        span = max(1e-9, self.step_end(seg, nxt) - end)
        return Moment("train", step, min(1.0, (t - end) / span), seg)

    def eta(self, seg, step):
        """Seconds left, estimated as progress bars do: remaining steps at the
        average pace, validation and checkpoint pauses spread over the steps."""
        cfg = self.cfg
        pace = (cfg.step_time_s + cfg.val_seconds / cfg.val_interval + cfg.ckpt_seconds / cfg.ckpt_interval)
        return (cfg.total_steps - step) * pace

    def train_segments(self):
        return [s for s in self.segments if s.phase == "train"]


def plan_incidents(cfg, level, forced=()):
    """The incidents of a run, drawn at real-world rates scaled by `level`.

    Rates: about 2e-5 hardware failures per GPU-hour (Llama 3's 54-day run saw
    419 interruptions on 16k GPUs), a slow node every ~1000 node-hours, and a
    loss spike every few thousand steps.  `forced` adds incidents triggered by
    the user as (kind, step)."""
    scale = INCIDENT_LEVELS[level]
    s = cfg.run_seed
    steps = cfg.total_steps - cfg.start_step
    hours = steps * cfg.step_time_s / 3600.0
    crashes, stragglers, spikes = [], [], []
    # With the level "often" a demo sees something every run or two.
    p_crash = min(0.6, 2e-5 * cfg.gpus * hours * scale)
    if unit(s, S_INCIDENT, 1) < p_crash and steps > 40:
        at = cfg.start_step + int(steps * (0.3 + 0.5 * unit(s, S_INCIDENT, 2)))
        crashes.append(crash_incident(cfg, at, unit(s, S_INCIDENT, 3)))
    p_slow = min(0.5, 1e-3 * cfg.nodes * hours * scale)
    if unit(s, S_INCIDENT, 4) < p_slow and steps > 40:
        at = cfg.start_step + int(steps * (0.2 + 0.5 * unit(s, S_INCIDENT, 5)))
        stragglers.append(straggler_incident(cfg, at, unit(s, S_INCIDENT, 6)))
    cfg_spikes = cfg._replace(spike_rate=min(10.0, scale))
    for kind, step in forced:
        if kind == "crash":
            crashes.append(crash_incident(cfg, step, unit(s, S_INCIDENT, 7 + step)))
        elif kind == "straggler":
            stragglers.append(straggler_incident(cfg, step, unit(s, S_INCIDENT, 8 + step)))
        else:
            spikes.append((step, 0.3 + 0.5 * unit(s, S_INCIDENT, 9 + step)))
    return cfg_spikes, Incidents(tuple(spikes), tuple(stragglers), tuple(sorted(crashes)))


def crash_incident(cfg, step, u):
    """(step, failing GPU, seconds the job hangs before the watchdog fires)."""
    if step % cfg.ckpt_interval == 0:
        step += 1                      # die during the step after a save, not inside it
    return (step, int(u * cfg.gpus) % cfg.gpus, 60.0 if u < 0.5 else 120.0)


def straggler_incident(cfg, step, u):
    """(first step, last step, slowdown factor, slow node)."""
    length = max(10, int(90.0 / cfg.step_time_s))
    return (step, step + length, 1.25 + 0.2 * u, int(u * 1000) % cfg.nodes)


########################################################################
# GPU telemetry (pure: reading of GPU g at time t)
########################################################################
# Utilisation and power follow the phase; temperature follows power with a
# thermal lag of THERMAL_TAU seconds; every card keeps its own offsets (a hot
# card stays hot).  Readings change once a simulated second, as nvidia-smi's.

GpuReading = collections.namedtuple("GpuReading", "util mem_used_mib temp_c power_w failed")
THERMAL_TAU = 45.0


def power_level(tl, t, node, gpu, m=None):
    """(utilisation %, fraction of the power cap, memory state) at t for one GPU."""
    cfg = tl.cfg
    if t < 0:
        return 0.0, 0.0, "empty"
    m = m or tl.moment(t)
    busy = 0.55 + 0.6 * cfg.mfu                         # heavier kernels draw more power
    if m.phase == "train":
        for first, last, factor, slow_node in tl.incidents.stragglers:
            if first < m.step + 1 <= last:
                if node == slow_node:
                    return 78.0, busy * 0.72, "full"
                return 97.0, busy * 0.85, "full"
        return 99.0, busy, "full"
    if m.phase == "val":
        return 95.0, busy * 0.8, "full"
    if m.phase == "checkpoint":
        return 4.0, 0.12, "full"
    if m.phase == "crash":
        failed = m.segment.info[1]
        if gpu == failed:
            return 0.0, 0.0, "full"
        return 100.0, 0.33, "full"                      # ranks spin in NCCL waiting for it
    if m.phase == "build":
        return 2.0, 0.05, "weights"
    if m.phase == "load":
        return 3.0, 0.06, "loading"
    if m.phase == "launch":
        return 0.0, 0.0, "context" if m.progress > 0.5 else "empty"
    if m.phase == "export":
        return 1.0, 0.04, "full"
    return 0.0, 0.0, "empty"


def _thermal_state(tl, t, node, gpu):
    """Power fraction smoothed with the card's thermal time constant."""
    step = 3.0
    start = math.floor(t / step) * step - 150.0
    level = power_level(tl, start, node, gpu)[1]
    x = start
    k = math.exp(-step / THERMAL_TAU)
    while x + step <= t:
        x += step
        level = power_level(tl, x, node, gpu)[1] * (1 - k) + level * k
    return level


class Telemetry(object):
    """Readings of every GPU of a run.

    Readings change once a simulated second, and all GPUs share the run's
    phase, so the phase, the load and the thermal state are computed once per
    second for each class of GPU (ordinary, on a slow node, the one that
    fails); each GPU adds only its own offsets and noise."""

    def __init__(self, tl):
        self.tl = tl
        cfg = self.cfg = tl.cfg
        self.seed = cfg.run_seed
        self.offsets = [unit(cfg.seed, S_GPU_OFFSET, g) for g in range(cfg.gpus)]   # per card, for the cluster
        self.spreads = [int(unit(self.seed, S_MEM, g) * 380) for g in range(cfg.gpus)]  # ranks differ slightly
        self.slow_nodes = set(s[3] for s in tl.incidents.stragglers)
        self.failing_gpus = set(c[1] for c in tl.incidents.crashes)
        weights = int(cfg.params * 2 / (cfg.tp * cfg.pp) / MIB)
        self.weights_mib = weights // cfg.dp if cfg.sharding in ("zero3", "fsdp") else weights
        self._levels, self._cluster = {}, {}
        self._second, self._readings = None, {}

    def _cached(self, cache, key, compute):
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[key] = compute()
        return cache[key]

    def _level(self, second, node, gpu):
        """(util, power fraction, memory state, failed, smoothed heat) of one class of GPU."""
        tl = self.tl
        m = tl.moment(second) if second >= 0 else None
        util, level, mem_state = power_level(tl, second, node, gpu, m)
        failed = m is not None and m.phase == "crash" and m.segment.info[1] == gpu
        return util, level, mem_state, failed, _thermal_state(tl, second, node, gpu)

    def reading(self, gpu, t):
        """GpuReading of GPU `gpu` at t (the same for a whole simulated second)."""
        second = math.floor(t)
        if self._second != second:
            self._second, self._readings = second, {}
        if gpu not in self._readings:
            self._readings[gpu] = self._read(gpu, second)
        return self._readings[gpu]

    def _read(self, gpu, second):
        cfg = self.cfg
        node = gpu // cfg.gpus_per_node
        key = (second, node if node in self.slow_nodes else -1, gpu if gpu in self.failing_gpus else -1)
        util, level, mem_state, failed, heat = self._cached(self._levels, key,
                                                            lambda: self._level(second, node, gpu))
        offset = self.offsets[gpu]
        x = int(unit(self.seed, S_GPU_UTIL, gpu * 1000003 + int(second)) * 18446744073709551616.0)
        jitter_util = (x & 0x1FFFFF) / 1048576.0 - 1          # three draws in [-1, 1) from one hash
        jitter_power = ((x >> 21) & 0x1FFFFF) / 1048576.0 - 1
        jitter_temp = ((x >> 42) & 0x1FFFFF) / 1048576.0 - 1
        if util >= 90:
            util = min(100.0, util + 2.5 * jitter_util + 0.5)
        elif util > 0:
            util = max(0.0, util + 2 * jitter_util)
        card = cfg.gpu
        power = card.idle_w + (card.power_cap_w - card.idle_w) * level
        power = min(card.power_cap_w, power * (1 + 0.03 * (offset - 0.5) + 0.015 * jitter_power))
        temp = cfg.ambient_c + 8 + 48 * heat + 8 * (offset - 0.5) + 0.4 * jitter_temp
        return GpuReading(int(round(util)), self.memory(gpu, mem_state), int(round(temp)), int(round(power)), failed)

    def memory(self, gpu, state):
        """MiB in use: the CUDA context, then the weights, then what training holds
        (the framework's reserved pool + CUDA context + NCCL buffers, as nvidia-smi counts it)."""
        cfg = self.cfg
        if state == "empty":
            return 0
        if state == "context":
            return cfg.context_mib
        if state == "weights":
            return min(cfg.mem_used_mib, cfg.context_mib + cfg.nccl_mib + self.weights_mib + self.spreads[gpu])
        if state == "loading":
            return min(cfg.mem_used_mib, cfg.context_mib + cfg.nccl_mib + self.weights_mib * 4 + self.spreads[gpu])
        return min(cfg.gpu.memory_mib - 64, cfg.mem_used_mib + self.spreads[gpu])

    def cluster(self, t):
        """Cluster aggregate: mean util, mean memory, temp mean and spread, total kW."""
        return self._cached(self._cluster, math.floor(t), lambda: self._cluster_now(t))

    def _cluster_now(self, t):
        cfg = self.tl.cfg
        readings = [self.reading(g, t) for g in range(cfg.gpus)]
        n = float(len(readings))
        temps = [r.temp_c for r in readings]
        mean_t = sum(temps) / n
        spread = math.sqrt(sum((x - mean_t) ** 2 for x in temps) / n)
        return {"util": sum(r.util for r in readings) / n,
                "mem_mib": sum(r.mem_used_mib for r in readings) / n,
                "temp": mean_t, "temp_sd": spread,
                "kw": sum(r.power_w for r in readings) / 1000.0,
                "failed": sum(1 for r in readings if r.failed)}


########################################################################
# Events: what happens in a run between two moments
########################################################################

Event = collections.namedtuple("Event", "t kind data")
StepMetrics = collections.namedtuple(
    "StepMetrics", "step loss lr grad_norm step_time_s tokens_per_s tokens_seen mfu eta_s "
                   "epoch skipped loss_scale attempt")


def loss_scale_at(cfg, step):
    """fp16 dynamic loss scale after step `step` and whether the step overflowed.

    From scratch the scale starts at 2**32 and halves on every overflowing
    step until gradients fit; later a rare overflow halves it for a window
    of 1000 steps.  None for bf16 runs."""
    if cfg.precision != "fp16":
        return None, False
    settle = 32 - cfg.loss_scale_exp
    if cfg.start_step == 0 and step <= settle:
        return 2.0 ** (32 - step), True
    s = cfg.run_seed
    scale, skipped = 2.0 ** cfg.loss_scale_exp, False
    for block in (step // 1000 - 1, step // 1000):
        if block < 0 or unit(s, S_OVERFLOW, 2 * block) >= 0.5:
            continue
        at = block * 1000 + int(unit(s, S_OVERFLOW, 2 * block + 1) * 1000)
        if at == step:
            skipped = True
        if at <= step < at + 1000:
            scale = 2.0 ** (cfg.loss_scale_exp - 1)
    return scale, skipped


def step_metrics(tl, seg, step):
    cfg = tl.cfg
    spikes = tl.incidents.spikes
    step_time = tl.step_time(seg, step)
    tokens_per_s = cfg.tokens_per_step / step_time
    scale, skipped = loss_scale_at(cfg, step)
    spike = spike_at(cfg, step, spikes)
    return StepMetrics(          # positional: this is the hottest constructor of a fast-forward
        step, loss_at(cfg, step, spikes, spike), lr_at(cfg, step), grad_norm_at(cfg, step, spikes, spike),
        step_time, tokens_per_s, step * cfg.tokens_per_step,
        cfg.flops_per_token * tokens_per_s / (cfg.gpus * cfg.gpu.tflops * 1e12),
        tl.eta(seg, step), step / float(cfg.steps_per_epoch) if cfg.steps_per_epoch else 0.0,
        skipped, scale, seg.attempt)


def run_events(tl, t0, t1, every_step=True):
    """Every event of the run with t0 < t <= t1, in time order.  With
    every_step=False, only the steps a log prints (a screen's or a file's
    needs); JSON lines want them all."""
    cfg = tl.cfg
    out = []
    for seg in tl.segments:
        if seg.t1 < t0 and seg.phase != "train":
            continue
        if seg.t0 > t1:
            break
        if t0 < seg.t0 <= t1 or (seg.t0 == 0 and t0 < 0):
            out.append(Event(seg.t0, "phase", {"phase": seg.phase, "attempt": seg.attempt,
                                               "step": seg.first, "info": seg.info}))
        if seg.phase == "crash" and t0 < seg.t0 + 0.5 <= t1:
            out.append(Event(seg.t0 + 0.5, "xid", {"gpu": seg.info[1], "step": seg.last}))
        if seg.phase == "crash" and t0 < seg.t1 - 0.001 <= t1:
            out.append(Event(seg.t1 - 0.001, "job_failed", {"gpu": seg.info[1], "step": seg.last,
                                                            "timeout_s": seg.info[2]}))
        if seg.phase == "export" and t0 < seg.t1 <= t1:
            files = [{"name": n, "bytes": b} for n, b in cfg.export_files]
            out.append(Event(seg.t1, "export", {"files": files, "total_bytes": sum(b for _, b in cfg.export_files)}))
        if seg.phase == "summary" and t0 < seg.t0 + 0.001 <= t1:
            out.append(Event(seg.t0 + 0.001, "summary", run_summary(tl)))
        if seg.phase == "train" and seg.t1 > t0:
            out.extend(_train_events(tl, seg, t0, t1, every_step))
    out.sort(key=lambda e: e.t)
    return out


def _train_events(tl, seg, t0, t1, every_step=True):
    cfg = tl.cfg
    out = []
    step = tl.last_step_before(seg, t0) if t0 > seg.t0 else seg.first
    # the pauses after the step that ended before t0 may still be running
    while step <= seg.last:
        end = tl.step_end(seg, step)
        if end > t1:
            break
        if step > seg.first:
            if end > t0 and (every_step or step % cfg.log_interval == 0 or step == seg.first + 1):
                out.append(Event(end, "step", step_metrics(tl, seg, step)))
                for first, last, factor, node in tl.incidents.stragglers:
                    if step == first + 1:
                        out.append(Event(end + 1e-6, "straggler", {"node": node, "step": step, "factor": factor}))
                    if step == last:
                        out.append(Event(end + 1e-6, "straggler_end", {"node": node, "step": step}))
                if tl.incidents.spikes and any(s == step for s, _ in tl.incidents.spikes):
                    out.append(Event(end + 1e-6, "spike", {"step": step}))
            crashed = seg.info is not None and step == seg.last
            val, ckpt = (0.0, 0.0) if crashed else tl.pauses(step)
            t = end
            if val:
                if t0 < t <= t1:
                    out.append(Event(t + 1e-6, "val_start", {"step": step}))
                t += val
                if t0 < t <= t1:
                    v = val_loss_at(cfg, step)
                    out.append(Event(t, "val", {"step": step, "val_loss": v, "val_ppl": math.exp(v),
                                                "seconds": cfg.val_seconds}))
            if ckpt:
                if t0 < t <= t1:
                    out.append(Event(t + 2e-6, "ckpt_start", {"step": step, "path": checkpoint_path(cfg, step)}))
                t += ckpt
                if t0 < t <= t1:
                    out.append(Event(t, "checkpoint", {"step": step, "path": checkpoint_path(cfg, step),
                                                       "bytes": cfg.ckpt_bytes, "seconds": cfg.ckpt_seconds}))
        step += 1
    return out


def run_summary(tl):
    """Figures for the end-of-run table, all from the config and the timeline."""
    cfg = tl.cfg
    compute, steps_run, checkpoints, lost = 0.0, 0, 0, 0.0
    for seg in tl.train_segments():
        compute += tl.step_end(seg, seg.last) - seg.t0 - tl._pauses_between(seg.first, seg.last)
        steps_run += seg.last - seg.first
        crashed = seg.info is not None
        checkpoints += seg.last // cfg.ckpt_interval - seg.first // cfg.ckpt_interval
        if crashed and seg.last % cfg.ckpt_interval == 0:
            checkpoints -= 1
        if not crashed and cfg.total_steps % cfg.ckpt_interval:
            checkpoints += 1
    for seg in tl.segments:
        if seg.phase == "crash":
            lost += seg.t1 - seg.t0
    steps = cfg.total_steps - cfg.start_step
    mean_tps = cfg.tokens_per_step * steps_run / compute
    wall = tl.duration - SUMMARY_SECONDS
    final_loss = loss_at(cfg, cfg.total_steps, tl.incidents.spikes)
    val = val_loss_at(cfg, cfg.total_steps)
    return collections.OrderedDict([
        ("model", cfg.model), ("params", cfg.params), ("kind", cfg.kind), ("steps", steps),
        ("steps_redone", steps_run - steps), ("tokens", steps * cfg.tokens_per_step),
        ("wall_s", wall), ("train_loss", final_loss), ("train_ppl", math.exp(final_loss)),
        ("val_loss", val), ("val_ppl", math.exp(val)), ("tokens_per_s", mean_tps),
        ("mfu", cfg.flops_per_token * mean_tps / (cfg.gpus * cfg.gpu.tflops * 1e12)),
        ("gpu_hours", cfg.gpus * wall / 3600.0), ("checkpoints", checkpoints),
        ("restarts", len([s for s in tl.segments if s.phase == "crash"])),
        ("export_files", len(cfg.export_files)),
        ("export_bytes", sum(b for _, b in cfg.export_files)),
    ])


########################################################################
# Session: an endless sequence of runs on one simulated clock
########################################################################

class RunState(object):
    """One run of a session: its config, timeline and telemetry."""

    def __init__(self, cfg, level, start_tau, offset):
        self.base_cfg = cfg
        self.level = level
        self.forced = []
        self.chart_cache = None           # the loss chart of the last frame: redrawn when the step moves
        self.start_tau = start_tau        # session time at which this run's t == offset
        self.offset = offset              # run time at which the session met this run
        self._rebuild()

    def _rebuild(self):
        self.cfg, incidents = plan_incidents(self.base_cfg, self.level, self.forced)
        self.timeline = Timeline(self.cfg, incidents)
        self.telemetry = Telemetry(self.timeline)
        self.chart_cache = None
        self.end_tau = self.start_tau + self.timeline.duration - self.offset

    def local(self, tau):
        return tau - self.start_tau + self.offset

    def trigger(self, t):
        """Force the next incident now (the `!` key): a spike, a slow node, a crash."""
        m = self.timeline.moment(t)
        if m.phase != "train" or m.step + 3 >= self.cfg.total_steps:
            return None
        kinds = ("spike", "straggler", "crash")
        kind = kinds[len(self.forced) % 3]
        self.forced.append((kind, m.step + 2))
        self._rebuild()
        return kind


class Session(object):
    """Runs one after another: run r+1 starts when run r's summary ends."""

    def __init__(self, catalog, seed, pins=None, incidents="rare", from_start=False):
        self.catalog, self.seed, self.pins, self.level = catalog, seed, pins or {}, incidents
        self.cluster = make_cluster(catalog, seed, self.pins)     # one cluster for every job of the session
        first = self._new_run(1, 0.0, 0.0)
        if not from_start:
            first = RunState(first.base_cfg, incidents, 0.0, attach_time(first.timeline))
        self.current = first
        self.previous = None

    def _new_run(self, run, start_tau, offset):
        cfg = make_run_config(self.catalog, self.seed, run, self.pins, self.cluster)
        return RunState(cfg, self.level, start_tau, offset)

    def run_at(self, tau):
        """The run under way at session time tau (runs move forward only)."""
        while tau >= self.current.end_tau:
            self.previous = self.current
            self.current = self._new_run(self.current.cfg.run + 1, self.current.end_tau, 0.0)
        if tau < self.current.start_tau and self.previous is not None and tau >= self.previous.start_tau:
            return self.previous
        return self.current


def attach_time(tl):
    """Where a session joins its first run: part-way through a short job, near the end of a long one."""
    train = tl.train_segments()[0]
    return train.t0 + tl.cfg.attach_fraction * (train.t1 - train.t0)


########################################################################
# Dialects: events -> log lines as each framework really prints them
########################################################################
# One formatter per framework turns the same events into that framework's
# lines; every number is the core's number after the framework's own
# rounding.  Formats were learned from the frameworks' source and from
# logs people posted; the tests hold a regular expression for each line.

BUS_IDS = ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")   # an HGX board's eight slots


class LogContext(object):
    """What every dialect needs besides the event: the run, names and clocks."""

    def __init__(self, run_state, epoch0, rank=None):
        self.rs = run_state
        self.cfg = run_state.cfg
        self.tl = run_state.timeline
        self.epoch0 = epoch0          # wall-clock seconds at run time 0
        self.rank = rank

    def hostname(self, node):
        return self.cfg.hostname.format(n=self.cfg.first_node + node)

    def pid(self, node, attempt, local_rank=0):
        base = 1000 + int(unit(self.cfg.run_seed, 77, node * 97 + attempt) * 3900000)
        return base + 1 + local_rank

    def clock(self, t, fmt="%Y-%m-%d %H:%M:%S", millis=False):
        when = self.epoch0 + t
        text = time.strftime(fmt, time.gmtime(when))
        if millis:
            text += ",%03d" % int((when % 1) * 1000)
        return text


def titan_prefix(ctx, t):
    """torchtitan's logger under torchrun --tee: '[rank0]:[titan] <asctime> - root - INFO - '."""
    return "[rank0]:[titan] %s - root - INFO - " % ctx.clock(t, millis=True)


def fmt_duration(seconds):
    """tqdm's elapsed format: MM:SS, or H:MM:SS past an hour."""
    seconds = int(max(0, seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return "%d:%02d:%02d" % (h, m, s) if h else "%02d:%02d" % (m, s)


def tqdm_line(n, total, elapsed, remaining, seconds_per_it, prefix="", postfix="", always_its=False):
    """A tqdm progress line with ASCII fill, as tqdm writes to a non-UTF-8 stream."""
    frac = n / float(max(1, total))
    filled = int(frac * 10)
    partial = int(frac * 100) % 10                     # tqdm's ASCII charset: " 123456789#"
    bar = "#" * filled + ((str(partial) if partial else " ") if filled < 10 else "")
    bar = (bar + " " * 10)[:10]
    rate = 1.0 / seconds_per_it if seconds_per_it > 0 else 0.0
    if rate >= 1 or always_its:
        rate_text = "%5.2fit/s" % rate
    else:
        rate_text = "%5.2fs/it" % seconds_per_it
    return "%s%3.0f%%|%s| %d/%d [%s<%s, %s%s]" % (prefix, frac * 100, bar, n, total, fmt_duration(elapsed),
                                                 fmt_duration(remaining), rate_text, postfix)


def human_count(n):
    """Lightning's parameter count: '1.2 M', '7.2 B'."""
    for unit_name, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return "%.1f %s" % (n / size, unit_name)
    return "%d  " % n


def lightning_num(x):
    """Lightning's progress-bar number: '{:.3g}', padded with zeros to five characters."""
    text = "%.3g" % x
    if "e" not in text:
        if "." not in text and len(text) < 4:
            text += "."
        text = text.ljust(5, "0")
    return text


def nccl_lines(ctx, ev):
    """NCCL_DEBUG=INFO start-up: a handful of ranks, interleaved as real logs are."""
    cfg = ctx.cfg
    attempt = ev.data["attempt"]
    out = []
    ranks = sorted(set([0, 1, cfg.gpus_per_node - 1] + ([cfg.gpus_per_node] if cfg.nodes > 1 else [])))
    if ctx.rank is not None:
        ranks = [ctx.rank]                    # the log as that one rank writes it
    ranks = [r for r in ranks if r < cfg.gpus]
    channels = 32 if cfg.gpu.link_gbs >= 300 else 8
    comm = "0x%012x" % int(unit(cfg.seed, 91, cfg.run * 10 + attempt) * 2 ** 44)
    comm_id = "0x%016x" % int(unit(cfg.seed, 92, cfg.run * 10 + attempt) * 2 ** 63)
    net = "IB" if cfg.nodes > 1 else "Socket"

    def who(rank, thread=False):
        node, local = divmod(rank, cfg.gpus_per_node)
        pid = ctx.pid(node, attempt, local)
        return "%s:%d:%d [%d]" % (ctx.hostname(node), pid, pid + (61 + local if thread else 0), local)

    out.append(("INFO", "%s NCCL INFO Bootstrap : Using eth0:10.%d.%d.%d<0>" % (
        who(0), 10 + cfg.first_node % 200, cfg.run % 250, 11 + cfg.first_node % 200)))
    out.append(("INFO", "%s NCCL INFO NCCL version %s" % (who(0), nccl_version(cfg.stack))))
    for rank in ranks[1:]:
        out.append(("INFO", "%s NCCL INFO cudaDriverVersion %d" % (who(rank), cuda_driver_version(cfg.stack))))
    if net == "IB":
        out.append(("INFO", "%s NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB [2]mlx5_2:1/IB "
                    "[3]mlx5_3:1/IB [RO]; OOB eth0:10.10.6.%d<0>" % (who(0), 11 + cfg.first_node % 200)))
    out.append(("INFO", "%s NCCL INFO Using network %s" % (who(0), net)))
    for rank in ranks:
        local = rank % cfg.gpus_per_node
        out.append(("INFO", "%s NCCL INFO ncclCommInitRank comm %s rank %d nranks %d cudaDev %d nvmlDev %d "
                    "busId %s000 commId %s - Init START" % (who(rank, True), comm, rank, cfg.gpus, local,
                                                            local, BUS_IDS[local].lower(), comm_id)))
    ring = "".join("%4d" % r for r in range(min(cfg.gpus, 16)))
    out.append(("INFO", "%s NCCL INFO Channel 00/%02d : %s" % (who(0, True), channels, ring)))
    out.append(("INFO", "%s NCCL INFO Trees [0] 1/-1/-1->0->-1 [1] 1/-1/-1->0->-1" % who(0, True)))
    for rank in ranks:
        out.append(("INFO", "%s NCCL INFO Connected all rings" % who(rank, True)))
    for rank in ranks:
        local = rank % cfg.gpus_per_node
        out.append(("INFO", "%s NCCL INFO comm %s rank %d nranks %d cudaDev %d nvmlDev %d busId %s000 "
                    "commId %s - Init COMPLETE" % (who(rank, True), comm, rank, cfg.gpus, local, local,
                                                   BUS_IDS[local].lower(), comm_id)))
    return out


def megatron_args(ctx):
    cfg = ctx.cfg
    m = cfg.shape
    args = [("adam_beta1", cfg.betas[0]), ("adam_beta2", cfg.betas[1]), ("bf16", cfg.precision == "bf16"),
            ("clip_grad", cfg.grad_clip), ("data_parallel_size", cfg.dp), ("eval_interval", cfg.val_interval),
            ("eval_iters", cfg.val_iters), ("ffn_hidden_size", m.ffn_hidden), ("fp16", cfg.precision == "fp16"),
            ("global_batch_size", cfg.global_batch), ("group_query_attention", m.kv_heads != m.heads),
            ("hidden_size", m.hidden), ("log_interval", cfg.log_interval), ("lr", cfg.peak_lr),
            ("lr_decay_style", cfg.decay), ("lr_warmup_iters", cfg.warmup_steps),
            ("max_position_embeddings", m.context), ("micro_batch_size", cfg.micro_batch), ("min_lr", cfg.min_lr),
            ("num_attention_heads", m.heads), ("num_layers", m.layers), ("num_query_groups", m.kv_heads),
            ("pipeline_model_parallel_size", cfg.pp), ("recompute_granularity", None if cfg.recompute == "none"
                                                       else cfg.recompute),
            ("save", "/checkpoints/%s" % cfg.name), ("save_interval", cfg.ckpt_interval),
            ("seq_length", cfg.seq_len), ("swiglu", m.mlp != "gelu"),
            ("tensor_model_parallel_size", cfg.tp), ("tokenizer_type", ctx.cfg.tokenizer.split(" ")[0]),
            ("train_iters", cfg.total_steps), ("untie_embeddings_and_output_weights", not m.tied),
            ("use_distributed_optimizer", cfg.sharding != "none"), ("weight_decay", cfg.weight_decay),
            ("world_size", cfg.gpus)]
    out = [("INFO", "------------------------ arguments ------------------------")]
    for name, value in args:
        out.append(("INFO", "  %s %s %s" % (name, "." * (48 - len(name)), value)))
    out.append(("INFO", "-------------------- end of arguments ---------------------"))
    return out


def torchrun_lines(ctx, ev):
    """torchrun's agent starting on every node, with its OMP_NUM_THREADS notice."""
    cfg = ctx.cfg
    out = []
    nodes = min(cfg.nodes, 4)
    stamp = ctx.clock(ev.t, "%m%d %H:%M:%S") + ".%06d" % (int((ev.t % 1) * 1e6) // 1000 * 1000)
    for node in range(nodes):
        pid = ctx.pid(node, ev.data["attempt"]) - 1
        prefix = "W%s %d torch/distributed/run.py:793] " % (stamp, pid)
        if cfg.nodes > 1:
            out.append(("WARNING", "%d: %smaster_addr is only used for static rdzv_backend and when "
                        "rdzv_endpoint is not specified." % (node, prefix)))
        for text in ("", "*" * 41,
                     "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, "
                     "to avoid your system being overloaded, please further tune the variable for optimal "
                     "performance in your application as needed. ", "*" * 41):
            out.append(("WARNING", ("%d: " % node if cfg.nodes > 1 else "") + prefix + text))
    if cfg.nodes > nodes:
        out.append(("INFO", "(%d more nodes print the same notice)" % (cfg.nodes - nodes)))
    return out


def load_path(cfg, step):
    """Where a run loads from: the released model, or its own last checkpoint."""
    return "/models/%s" % cfg.model if cfg.kind == "continue" and step == 0 else checkpoint_path(cfg, step)


def epoch_of(cfg, step):
    """The 0-based epoch an optimizer step belongs to."""
    return (step - 1) // max(1, cfg.steps_per_epoch)


class Dialect(object):
    """One framework's console: each method turns one kind of event into its
    (level, text) lines.  What all frameworks share lives here; a framework
    overrides what it prints its own way.  A new framework is one subclass
    and one entry in DIALECTS."""

    logs_first_step = False     # a line for the first step, whatever the logging interval

    def launch(self, ctx, ev):
        return torchrun_lines(ctx, ev)

    def build(self, ctx, ev):
        return []

    def load(self, ctx, ev):
        return []

    def train_start(self, ctx, ev):
        return []

    def step(self, ctx, ev):
        return []

    def val_start(self, ctx, ev):
        return []

    def val(self, ctx, ev):
        return []

    def ckpt_start(self, ctx, ev):
        return []

    def ckpt(self, ctx, ev):
        return []

    def end(self, ctx, ev):
        return []


class Megatron(Dialect):
    """Megatron-LM (2024+): timestamped iteration lines, 6-digit learning rate."""

    def iteration_line(self, ctx, ev, stamp, lr_text):
        cfg, m = ctx.cfg, ev.data
        tflops = cfg.flops_per_token * m.tokens_per_s / cfg.gpus / 1e12
        return ("%s iteration %8d/%8d | consumed samples: %12d | elapsed time per iteration (ms): %.1f | "
                "throughput per GPU (TFLOP/s/GPU): %.1f | learning rate: %s | global batch size: %5d | "
                "lm loss: %.6E | loss scale: %.1f | grad norm: %.3f | number of skipped iterations: %3d | "
                "number of nan iterations: %3d |" % (stamp, m.step, cfg.total_steps, m.step * cfg.global_batch,
                                                      m.step_time_s * 1000, tflops, lr_text, cfg.global_batch,
                                                      m.loss, m.loss_scale or 1.0, m.grad_norm,
                                                      skipped_in_interval(cfg, m.step), 0))

    def build(self, ctx, ev):
        cfg = ctx.cfg
        out = [("INFO", "using world size: %d, data-parallel size: %d, context-parallel size: 1, "
                        "tensor-model-parallel size: %d, pipeline-model-parallel size: %d"
                % (cfg.gpus, cfg.dp, cfg.tp, cfg.pp)),
               ("INFO", "using torch.%s for parameters ..." % ("bfloat16" if cfg.precision == "bf16" else "float16"))]
        if ev.data["attempt"] == 0:
            out.extend(megatron_args(ctx))
        out += [("INFO", "setting number of micro-batches to constant %d" % cfg.grad_accum),
                ("INFO", "> building %s tokenizer ..." % cfg.tokenizer.split(" ")[0]),
                ("INFO", " > padded vocab (size: %d) with %d dummy tokens (new size: %d)" % (
                    cfg.shape.vocab, padded_vocab(cfg) - cfg.shape.vocab, padded_vocab(cfg))),
                ("INFO", "> initialized tensor model parallel with size %d" % cfg.tp),
                ("INFO", "> initialized pipeline model parallel with size %d" % cfg.pp),
                ("INFO", "building GPT model ...")]
        per_rank = cfg.params // (cfg.tp * cfg.pp)
        for tp in range(min(cfg.tp, 2)):
            for pp in range(min(cfg.pp, 2)):
                out.append(("INFO", " > number of parameters on (tensor, pipeline) model parallel rank (%d, %d): %d"
                            % (tp, pp, per_rank)))
        return out

    def load(self, ctx, ev):
        cfg, step = ctx.cfg, ev.data["step"]
        path = load_path(cfg, step)
        return [("INFO", " loading checkpoint from %s at iteration %d" % (path, step)),
                ("INFO", "  successfully loaded checkpoint from %s [ t 1/%d, p 1/%d ] at iteration %d"
                 % (path, cfg.tp, cfg.pp, step))]

    def train_start(self, ctx, ev):
        return [("INFO", "[before the start of training step] datetime: %s " % ctx.clock(ev.t))]

    def step(self, ctx, ev):
        return [("INFO", self.iteration_line(ctx, ev, " [%s]" % ctx.clock(ev.t), "%.6E" % ev.data.lr))]

    def val(self, ctx, ev):
        d = ev.data
        text = " validation loss at iteration %d | lm loss value: %.6E | lm loss PPL: %.6E | " % (
            d["step"], d["val_loss"], math.exp(min(20, d["val_loss"])))
        return [("INFO", "(min, max) time across ranks (ms):"),
                ("INFO", "    %s: (%.2f, %.2f)" % ("evaluate ".ljust(48, "."), d["seconds"] * 1000 * 0.998,
                                                   d["seconds"] * 1000)),
                ("INFO", "-" * (len(text) + 1)), ("INFO", text), ("INFO", "-" * (len(text) + 1))]

    def ckpt_start(self, ctx, ev):
        return [("INFO", "saving checkpoint at iteration %7d to /checkpoints/%s in torch_dist format" % (
            ev.data["step"], ctx.cfg.name))]

    def ckpt(self, ctx, ev):
        cfg, d = ctx.cfg, ev.data
        return [("INFO", "  successfully saved checkpoint from iteration %7d to /checkpoints/%s [ t %d/%d, p %d/%d ]"
                 % (d["step"], cfg.name, 1, cfg.tp, 1, cfg.pp)),
                ("INFO", "(min, max) time across ranks (ms):"),
                ("INFO", "    %s: (%.2f, %.2f)" % ("save-checkpoint ".ljust(48, "."), d["seconds"] * 1000 * 0.997,
                                                   d["seconds"] * 1000))]

    def end(self, ctx, ev):
        return [("INFO", "[after training is done] datetime: %s " % ctx.clock(ev.t))]


class MegatronDeepSpeed(Megatron):
    """Megatron-DeepSpeed: the deepspeed launcher, Megatron's pre-2024 iteration
    line, and DeepSpeed's own step, timer and checkpoint lines beside it."""

    def ds(self, ctx, t, where):
        return "[%s] [INFO] [%s] " % (ctx.clock(t, millis=True), where)

    def launch(self, ctx, ev):
        cfg = ctx.cfg
        out = [("INFO", self.ds(ctx, ev.t, "runner.py:585:main") +
                "cmd = /usr/bin/python -u -m deepspeed.launcher.launch --world_info=<base64> --master_addr=%s "
                "--master_port=%d --enable_each_rank_log=None train.py --deepspeed_config=ds_config.json"
                % (ctx.hostname(0), cfg.master_port))]
        for node in range(min(cfg.nodes, 4)):
            host = ctx.hostname(node) + ": " if cfg.nodes > 1 else ""
            out += [("INFO", host + self.ds(ctx, ev.t, "launch.py:164:main") +
                     "nnodes=%d, num_local_procs=%d, node_rank=%d" % (cfg.nodes, cfg.gpus_per_node, node)),
                    ("INFO", host + self.ds(ctx, ev.t, "launch.py:164:main") + "dist_world_size=%d" % cfg.gpus),
                    ("INFO", host + self.ds(ctx, ev.t, "launch.py:168:main") + "Setting CUDA_VISIBLE_DEVICES=%s"
                     % ",".join(str(i) for i in range(cfg.gpus_per_node)))]
        return out

    def step(self, ctx, ev):
        cfg, m = ctx.cfg, ev.data
        return [("INFO", self.iteration_line(ctx, ev, "", "%.3E" % m.lr)),
                ("INFO", self.ds(ctx, ev.t, "logging.py:96:log_dist") + "[Rank 0] step=%d, skipped=%d, lr=[%r], "
                 "mom=[(0.9, 0.95)]" % (m.step, skipped_total(cfg, m.step), m.lr)),
                ("INFO", self.ds(ctx, ev.t, "timer.py:260:stop") +
                 "epoch=0/micro_step=%d/global_step=%d, RunningAvgSamplesPerSec=%r, CurrSamplesPerSec=%r, "
                 "MemAllocated=%.2fGB, MaxMemAllocated=%.2fGB" % (
                     m.step * cfg.grad_accum, m.step, cfg.tokens_per_s / cfg.seq_len, m.tokens_per_s / cfg.seq_len,
                     round(cfg.mem_need_bytes * 0.35 / 1e9, 2), round(cfg.mem_need_bytes / 1e9, 2)))]

    def ckpt_start(self, ctx, ev):
        d = ev.data
        where = self.ds(ctx, ev.t, "logging.py:96:log_dist")
        return [("INFO", where + "[Rank 0] [Torch] Checkpoint global_step%d is about to be saved!" % d["step"]),
                ("INFO", where + "[Rank 0] Saving model checkpoint: %s/mp_rank_00_model_states.pt" % d["path"])]

    def ckpt(self, ctx, ev):
        d = ev.data
        prefix = "bf16_" if ctx.cfg.precision == "bf16" else ""
        return [("INFO", self.ds(ctx, ev.t, "engine.py:3536:_save_zero_checkpoint") +
                 "%szero checkpoint saved %s/%szero_pp_rank_0_mp_rank_00_optim_states.pt" % (prefix, d["path"], prefix)),
                ("INFO", self.ds(ctx, ev.t, "torch_checkpoint_engine.py:33:commit") +
                 "[Torch] Checkpoint global_step%d is ready now!" % d["step"])]


class Torchtitan(Dialect):
    """torchtitan: '[rank0]:[titan]' logger lines, two spaces between fields."""

    logs_first_step = True

    def build(self, ctx, ev):
        cfg = ctx.cfg
        pre = titan_prefix(ctx, ev.t)
        mesh = ("1-D device mesh with ['dp_shard'], [%d]" % cfg.dp if cfg.tp == 1
                else "2-D device mesh with ['dp_shard', 'tp'], [%d, %d]" % (cfg.dp * cfg.pp, cfg.tp))
        weights_gib = cfg.params * 2.0 / cfg.gpus / GIB
        lines = ["Starting job: %s training" % cfg.model, "Building %s" % mesh,
                 "[GC] Initial GC collection. 0.00 seconds.", "Preparing %s dataset" % cfg.dataset,
                 "CUDA capacity: %s with %.2fGiB memory" % (cfg.gpu.name, cfg.gpu.memory_mib / 1024.0 * 0.993),
                 "Model {} size: {:,} total parameters".format(cfg.model, cfg.params)]
        if cfg.recompute != "none":
            lines.append("Applied %s activation checkpointing to the model" % cfg.recompute)
        lines += ["Applied FSDP to the model", "Peak FLOPS used for computing MFU: %.3e" % (cfg.gpu.tflops * 1e12),
                  "CUDA memory usage for model: %.2fGiB(%.2f%%)" % (weights_gib,
                                                                   100 * weights_gib * 1024 / cfg.gpu.memory_mib),
                  "Trainer is initialized with local batch size %d, global batch size %d, gradient accumulation "
                  "steps %d, sequence length %d, total steps %d (warmup %d)" % (
                      cfg.micro_batch, cfg.global_batch, cfg.grad_accum, cfg.seq_len, cfg.total_steps,
                      cfg.warmup_steps)]
        return [("INFO", pre + text) for text in lines]

    def load(self, ctx, ev):
        pre = titan_prefix(ctx, ev.t)
        return [("INFO", pre + "Loading the checkpoint from %s." % load_path(ctx.cfg, ev.data["step"])),
                ("INFO", pre + "Finished loading the checkpoint in %.2f seconds." % (ctx.cfg.load_seconds or 4.0))]

    def train_start(self, ctx, ev):
        return [("INFO", titan_prefix(ctx, ev.t) + "Training starts at step %d" % (ev.data["step"] + 1))]

    def step(self, ctx, ev):
        cfg, m = ctx.cfg, ev.data
        pre = titan_prefix(ctx, ev.t)
        tflops = cfg.flops_per_token * m.tokens_per_s / cfg.gpus / 1e12
        line = ("step: %2d  loss: %7.4f  grad_norm: %7.4f  memory: %5.2fGiB(%.2f%%)  tps: {:,}  "
                "tflops: {:,.2f}  mfu: %.2f%%".format(int(round(m.tokens_per_s / cfg.gpus)), tflops)
                % (m.step, m.loss, m.grad_norm, cfg.mem_used_mib / 1024.0,
                   100.0 * cfg.mem_used_mib / cfg.gpu.memory_mib, 100 * m.mfu))
        out = [("INFO", pre + line)]
        if m.step % 50 == 0 and m.step > 1:       # training.gc_freq; "Peforming" is torchtitan's spelling
            out.insert(0, ("INFO", pre + "[GC] Peforming periodical GC collection. 0.%02d seconds." % (
                3 + int(unit(cfg.seed, 93, m.step) * 9))))
        return out

    def val(self, ctx, ev):
        cfg, d = ctx.cfg, ev.data
        return [("INFO", titan_prefix(ctx, ev.t) + "validate step: %2d  loss: %7.4f  memory: %5.2fGiB(%.2f%%)  "
                 "tps: {:,}".format(int(round(3 * cfg.tokens_per_s / cfg.gpus))) % (
                     d["step"], d["val_loss"], cfg.mem_used_mib / 1024.0,
                     100.0 * cfg.mem_used_mib / cfg.gpu.memory_mib))]

    def ckpt_start(self, ctx, ev):
        pre, step = titan_prefix(ctx, ev.t), ev.data["step"]
        if step == ctx.cfg.total_steps:
            return [("INFO", pre + "Saving a full checkpoint at last step, step %d." % step)]
        return [("INFO", pre + "Saving the checkpoint (or staging if async is enabled).")]

    def ckpt(self, ctx, ev):
        pre = titan_prefix(ctx, ev.t)
        return [("INFO", pre + "[GC] GC collection invoked by checkpointer. 0.02 seconds."),
                ("INFO", pre + "Finished saving the checkpoint (or staging if async is enabled)in %.2f seconds."
                 % ev.data["seconds"])]

    def end(self, ctx, ev):
        pre = titan_prefix(ctx, ev.t)
        return [("INFO", pre + "Sleeping 2 seconds for other ranks to complete"), ("INFO", pre + "Training completed")]


class HFTrainer(Dialect):
    """Hugging Face Trainer: logger lines with explicit format, tqdm, Python dicts."""

    def hf(self, ctx, t, where):
        return "[INFO|%s] %s >> " % (where, ctx.clock(t, millis=True))

    def build(self, ctx, ev):
        cfg = ctx.cfg
        pre = self.hf(ctx, ev.t, "trainer.py:2243")
        return [("INFO", self.hf(ctx, ev.t, "modeling_utils.py:3934") + "loading weights file model.safetensors")] + [
            ("INFO", pre + text) for text in (
                "***** Running training *****", "  Num examples = {:,}".format(cfg.train_samples),
                "  Num Epochs = {:,}".format(cfg.epochs),
                "  Instantaneous batch size per device = {:,}".format(cfg.micro_batch),
                "  Total train batch size (w. parallel, distributed & accumulation) = {:,}".format(cfg.global_batch),
                "  Gradient Accumulation steps = %d" % cfg.grad_accum,
                "  Total optimization steps = {:,}".format(cfg.total_steps),
                "  Number of trainable parameters = {:,}".format(cfg.params))]

    def load(self, ctx, ev):
        pre = self.hf(ctx, ev.t, "trainer.py:2270")
        return [("INFO", pre + "  Continuing training from checkpoint, will skip to saved global_step"),
                ("INFO", pre + "  Continuing training from global step %d" % ev.data["step"])]

    def step(self, ctx, ev):
        cfg, m = ctx.cfg, ev.data
        elapsed = ev.t - ctx.tl.train_segments()[0].t0
        return [("INFO", tqdm_line(m.step, cfg.total_steps, elapsed, m.eta_s, m.step_time_s)),
                ("INFO", "{'loss': %r, 'grad_norm': %r, 'learning_rate': %r, 'epoch': %r}" % (
                    round(m.loss, 4), m.grad_norm, m.lr, round(m.epoch, 2)))]

    def val_start(self, ctx, ev):
        cfg = ctx.cfg
        pre = self.hf(ctx, ev.t, "trainer.py:4021")
        return [("INFO", pre), ("INFO", "***** Running Evaluation *****"),       # logged with a leading newline
                ("INFO", pre + "  Num examples = {:,}".format(cfg.val_iters * cfg.global_batch)),
                ("INFO", pre + "  Batch size = %d" % cfg.micro_batch)]

    def val(self, ctx, ev):
        cfg, d = ctx.cfg, ev.data
        examples = cfg.val_iters * cfg.global_batch
        return [("INFO", "{'eval_loss': %r, 'eval_runtime': %r, 'eval_samples_per_second': %r, "
                         "'eval_steps_per_second': %r, 'epoch': %r}" % (
                             d["val_loss"], round(d["seconds"], 4), round(examples / d["seconds"], 3),
                             round(cfg.val_iters / d["seconds"], 3),
                             round(d["step"] / float(cfg.steps_per_epoch or cfg.total_steps), 2)))]

    def ckpt_start(self, ctx, ev):
        return [("INFO", self.hf(ctx, ev.t, "trainer.py:3705") + "Saving model checkpoint to %s" % ev.data["path"])]

    def ckpt(self, ctx, ev):
        path = ev.data["path"]
        return [("INFO", self.hf(ctx, ev.t, "tokenization_utils_base.py:2641") +
                 "tokenizer config file saved in %s/tokenizer_config.json" % path),
                ("INFO", self.hf(ctx, ev.t, "tokenization_utils_base.py:2650") +
                 "Special tokens file saved in %s/special_tokens_map.json" % path)]

    def end(self, ctx, ev):
        cfg, s = ctx.cfg, ev.data
        runtime = s["wall_s"] - cfg.export_seconds
        return [("INFO", ""), ("INFO", "Training completed. Do not forget to share your model on huggingface.co/models =)"),
                ("INFO", ""),
                ("INFO", "{'train_runtime': %r, 'train_samples_per_second': %r, 'train_steps_per_second': %r, "
                         "'train_loss': %r, 'epoch': %r}" % (
                             round(runtime, 4), round(cfg.global_batch * s["steps"] / runtime, 3),
                             round(s["steps"] / runtime, 3), s["train_loss"], float(cfg.epochs)))]


class Lightning(Dialect):
    """PyTorch Lightning: start-up banner, model summary table, epoch progress bars."""

    def build(self, ctx, ev):
        cfg = ctx.cfg
        out = [("INFO", "GPU available: True (cuda), used: True"), ("INFO", "TPU available: False, using: 0 TPU cores"),
               ("INFO", "HPU available: False, using: 0 HPUs")]
        for rank in (0, 3, 1, 2)[:min(4, cfg.gpus)]:          # ranks report in no particular order
            out.append(("INFO", "Initializing distributed: GLOBAL_RANK: %d, MEMBER: %d/%d" % (rank, rank + 1, cfg.gpus)))
        out += [("INFO", "-" * 100), ("INFO", "distributed_backend=nccl"),
                ("INFO", "All distributed processes registered. Starting with %d processes" % cfg.gpus),
                ("INFO", "-" * 100), ("INFO", "")]
        visible = ",".join(str(i) for i in range(cfg.gpus_per_node))
        for local in (1, 0, 2)[:min(3, cfg.gpus_per_node)]:
            out.append(("INFO", "LOCAL_RANK: %d - CUDA_VISIBLE_DEVICES: [%s]" % (local, visible)))
        count = human_count(cfg.params)
        type_w, params_w = len(cfg.architecture), max(6, len(count))
        header = "  | Name  | %-*s | %-*s | Mode " % (type_w, "Type", params_w, "Params")
        out += [("INFO", ""), ("INFO", header), ("INFO", "-" * len(header)),
                ("INFO", "0 | model | %s | %-*s | train" % (cfg.architecture, params_w, count)),
                ("INFO", "-" * len(header)),
                ("INFO", "%-10s%s" % (count, "Trainable params")), ("INFO", "%-10s%s" % ("0", "Non-trainable params")),
                ("INFO", "%-10s%s" % (count, "Total params")),
                ("INFO", "%-10.3f%s" % (cfg.params * 4 / 1e6, "Total estimated model params size (MB)"))]
        return out

    def load(self, ctx, ev):
        return [("INFO", "Restoring states from the checkpoint path at %s" % load_path(ctx.cfg, ev.data["step"]))]

    def step(self, ctx, ev):
        cfg, m = ctx.cfg, ev.data
        per_epoch = cfg.steps_per_epoch or cfg.total_steps
        epoch = epoch_of(cfg, m.step)
        n = m.step - epoch * per_epoch
        elapsed = ev.t - ctx.tl.train_segments()[0].t0 - epoch * per_epoch * cfg.step_time_s
        post = ", v_num=%d, train_loss=%s" % (cfg.run % 7, lightning_num(m.loss))
        return [("INFO", tqdm_line(n, per_epoch, elapsed, (per_epoch - n) * m.step_time_s, m.step_time_s,
                                   "Epoch %d: " % epoch, post, always_its=True))]

    def val(self, ctx, ev):
        cfg, d = ctx.cfg, ev.data
        return [("INFO", "Validation DataLoader 0: 100%%|##########| %d/%d [%s<00:00, %5.2fit/s]" % (
            cfg.val_iters, cfg.val_iters, fmt_duration(d["seconds"]), cfg.val_iters / d["seconds"])),
            ("INFO", "Epoch %d, global step %d: 'val_loss' reached %.5f" % (
                epoch_of(cfg, d["step"]), d["step"], d["val_loss"]))]

    def ckpt(self, ctx, ev):
        d = ev.data
        return [("INFO", "Epoch %d, global step %d: saving model to '%s'" % (
            epoch_of(ctx.cfg, d["step"]), d["step"], d["path"]))]

    def end(self, ctx, ev):
        return [("INFO", "`Trainer.fit` stopped: `max_epochs=%d` reached." % ctx.cfg.epochs)]


DIALECTS = {"megatron": Megatron(), "deepspeed": MegatronDeepSpeed(), "torchtitan": Torchtitan(),
            "hf": HFTrainer(), "lightning": Lightning()}


def padded_vocab(cfg):
    multiple = 128 * cfg.tp
    return int(math.ceil(cfg.shape.vocab / float(multiple)) * multiple)


def skipped_in_interval(cfg, step):
    """fp16 iterations skipped for overflow within the logging interval ending at `step`."""
    if cfg.precision != "fp16":
        return 0
    return sum(1 for s in range(max(cfg.start_step + 1, step - cfg.log_interval + 1), step + 1)
               if loss_scale_at(cfg, s)[1])


def skipped_total(cfg, step):
    if cfg.precision != "fp16":
        return 0
    settle = 32 - cfg.loss_scale_exp if cfg.start_step == 0 else 0
    blocks = sum(1 for b in range(step // 1000 + 1) if unit(cfg.run_seed, S_OVERFLOW, 2 * b) < 0.5
                 and b * 1000 + int(unit(cfg.run_seed, S_OVERFLOW, 2 * b + 1) * 1000) <= step)
    return min(step, settle) + blocks


def phase_lines(ctx, ev):
    """Lines at the start of a phase: launch, build, load, train, export."""
    cfg, phase, dialect = ctx.cfg, ev.data["phase"], DIALECTS[ctx.cfg.style]
    if phase == "launch":
        restart = []
        if ev.data["attempt"]:
            restart = [("WARNING", "Restarting job (attempt %d): rendezvous with %d node%s, resuming from the last "
                                   "checkpoint" % (ev.data["attempt"] + 1, cfg.nodes, "s" * (cfg.nodes != 1)))]
        return restart + dialect.launch(ctx, ev)
    if phase == "build":
        return nccl_lines(ctx, ev) + dialect.build(ctx, ev)
    if phase == "load":
        return dialect.load(ctx, ev)
    if phase == "train":
        return dialect.train_start(ctx, ev)
    if phase == "export":
        shards = sum(1 for n, _ in cfg.export_files if n.endswith(".safetensors"))
        return [("INFO", "Converting checkpoint %s to Hugging Face safetensors (%d shards) -> /outputs/%s/hf" % (
            checkpoint_path(cfg, cfg.total_steps), shards, cfg.name))]
    return []


def _incident_lines(ctx, ev):
    cfg, d = ctx.cfg, ev.data
    if ev.kind == "straggler":
        host = ctx.hostname(d["node"])
        return [("WARNING", "WARNING: slow rank detected: node %s (ranks %d-%d) step time %.0f%% of median; "
                 "NCCL all-reduce waiting on it" % (host, d["node"] * cfg.gpus_per_node,
                                                    (d["node"] + 1) * cfg.gpus_per_node - 1, 100 * d["factor"]))]
    if ev.kind == "straggler_end":
        return [("INFO", "node %s back to normal step time" % ctx.hostname(d["node"]))]
    if ev.kind == "spike":
        return [("WARNING", "WARNING: loss spike at iteration %d (grad norm %.1f > 10x running mean)"
                 % (d["step"], grad_norm_at(cfg, d["step"], ctx.tl.incidents.spikes)))]
    rank = d["gpu"]
    node, local = divmod(rank, cfg.gpus_per_node)
    stamp = ctx.clock(ev.t, "%m%d %H:%M:%S") + ".%09d" % int((ev.t % 1) * 1e9)
    if ev.kind == "xid":
        return [("ERROR", "[rank%d]: RuntimeError: CUDA error: uncorrectable ECC error encountered" % rank),
                ("ERROR", "[rank%d]: CUDA kernel errors might be asynchronously reported at some other API call, "
                          "so the stacktrace below might be incorrect." % rank),
                ("ERROR", "[rank%d]: For debugging consider passing CUDA_LAUNCH_BLOCKING=1" % rank),
                ("ERROR", "%s:%d:%d [%d] NCCL WARN Cuda failure 'uncorrectable ECC error encountered'" % (
                    ctx.hostname(node), ctx.pid(node, 0, local), ctx.pid(node, 0, local) + 61, local))]
    # job_failed: the other ranks' watchdog fires, torchrun tears the job down
    other = (rank + 1) % cfg.gpus
    seq = 1000 + d["step"] * 3
    ms = int(d["timeout_s"] * 1000)
    pid = ctx.pid(node, 0, local)
    stamp2 = ctx.clock(ev.t, "%m%d %H:%M:%S") + ".%06d" % (int((ev.t % 1) * 1e6) // 1000 * 1000)
    return [
        ("ERROR", "[rank%d]:[E%s ProcessGroupNCCL.cpp:607] [Rank %d] Watchdog caught collective operation timeout: "
                  "WorkNCCL(SeqNum=%d, OpType=ALLREDUCE, NumelIn=%d, NumelOut=%d, Timeout(ms)=%d) ran for %d "
                  "milliseconds before timing out." % (other, stamp, other, seq, cfg.params // (cfg.tp * cfg.pp * 16),
                                                       cfg.params // (cfg.tp * cfg.pp * 16), ms, ms + 17)),
        ("ERROR", "[rank%d]:[E%s ProcessGroupNCCL.cpp:621] [Rank %d] Some NCCL operations have failed or timed out. "
                  "Due to the asynchronous nature of CUDA kernels, subsequent GPU operations might run on "
                  "corrupted/incomplete data." % (other, stamp, other)),
        ("ERROR", "[rank%d]:[E%s ProcessGroupNCCL.cpp:627] [Rank %d] To avoid data inconsistency, we are taking "
                  "the entire process down." % (other, stamp, other)),
        ("ERROR", "E%s %d torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: -6) local_rank: "
                  "%d (pid: %d) of binary: /usr/bin/python" % (stamp2, pid - 1, local, pid)),
        ("ERROR", "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: "),
        ("ERROR", "=" * 60), ("ERROR", "train.py FAILED"), ("ERROR", "-" * 60),
        ("ERROR", "Failures:"), ("ERROR", "  <NO_OTHER_FAILURES>"), ("ERROR", "-" * 60),
        ("ERROR", "Root Cause (first observed failure):"), ("ERROR", "[0]:"),
        ("ERROR", "  time      : %s" % ctx.clock(ev.t, "%Y-%m-%d_%H:%M:%S")),
        ("ERROR", "  host      : %s" % ctx.hostname(node)),
        ("ERROR", "  rank      : %d (local_rank: %d)" % (rank, local)),
        ("ERROR", "  exitcode  : -6 (pid: %d)" % pid),
        ("ERROR", "  error_file: <N/A>"),
        ("ERROR", "  traceback : Signal 6 (SIGABRT) received by PID %d" % pid),
        ("ERROR", "=" * 60)]


def summary_box(cfg, s):
    """Our end-of-run table: a hand-drawn ASCII box."""
    rows = [("model", "%s (%s params)" % (cfg.model, fmt_params(cfg.params))),
            ("run", "%s (%s)" % (cfg.name, cfg.kind)),
            ("steps", "{:,} (from {:,} to {:,})".format(s["steps"], cfg.start_step, cfg.total_steps)
             + (", {:,} redone".format(s["steps_redone"]) if s["steps_redone"] else "")),
            ("tokens", fmt_tokens(s["tokens"])),
            ("wall time", fmt_duration(s["wall_s"]) + (" (%d restart%s)" % (s["restarts"], "s" * (s["restarts"] > 1))
                                                       if s["restarts"] else "")),
            ("train loss / ppl", "%.4f / %.2f" % (s["train_loss"], s["train_ppl"])),
            ("val loss / ppl", "%.4f / %.2f" % (s["val_loss"], s["val_ppl"])),
            ("throughput", "{:,.0f} tok/s, MFU {:.1f}%".format(s["tokens_per_s"], 100 * s["mfu"])),
            ("GPU-hours", "{:,.1f} on {}x {}".format(s["gpu_hours"], cfg.gpus, cfg.gpu.name)),
            ("checkpoints", "%d written" % s["checkpoints"]),
            ("export", "%d files, %s" % (s["export_files"], fmt_bytes(s["export_bytes"])))]
    key_w = max(len(k) for k, _ in rows)
    val_w = max(len(v) for _, v in rows)
    rule = "+" + "-" * (key_w + 2) + "+" + "-" * (val_w + 2) + "+"
    title = "| " + ("run %d summary" % cfg.run).ljust(key_w + val_w + 3) + " |"
    out = [rule, title, rule]
    out += ["| %s | %s |" % (k.ljust(key_w), v.ljust(val_w)) for k, v in rows]
    out.append(rule)
    return [("SUMMARY", line) for line in out]


def fmt_params(n):
    return "%.2fB" % (n / 1e9) if n >= 1e9 else "%.0fM" % (n / 1e6)


def fmt_tokens(n):
    for name, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return "%.2f%s" % (n / size, name) if n < 10 * size else "%.1f%s" % (n / size, name)
    return "%d" % n


def fmt_bytes(n):
    for name, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return "%.1f %s" % (n / size, name)
    return "%d B" % n


def event_lines(ctx, ev):
    """The log lines (level, text) an event produces, as the chosen rank sees them."""
    lines = dialect_lines(ctx, ev)
    if not ctx.rank:
        return lines            # rank 0, or the job's combined log
    import re
    own = "[rank%d]" % ctx.rank
    agent = "%d: " % (ctx.rank // ctx.cfg.gpus_per_node)    # torchrun's agent on this rank's node
    return [(level, text) for level, text in lines
            if re.match(r"^\S+:\d+:\d+ \[\d+\] NCCL", text) or text.startswith(own) or text.startswith(agent)
            or (level in ("WARNING", "ERROR") and not re.match(r"^(\[rank|\d+: )", text))]


def dialect_lines(ctx, ev):
    """The log lines (level, text) an event produces in the run's dialect."""
    cfg, dialect, kind = ctx.cfg, DIALECTS[ctx.cfg.style], ev.kind
    if kind == "phase":
        return phase_lines(ctx, ev)
    if kind == "step":
        step = ev.data.step
        first = step == cfg.start_step + 1 and dialect.logs_first_step
        return dialect.step(ctx, ev) if step % cfg.log_interval == 0 or first else []
    if kind in ("straggler", "straggler_end", "spike", "xid", "job_failed"):
        return _incident_lines(ctx, ev)
    if kind == "export":
        files = ev.data["files"]
        return [("INFO", "Saved %d files (%s) to /outputs/%s/hf: %s" % (
            len(files), fmt_bytes(ev.data["total_bytes"]), cfg.name,
            ", ".join(f["name"] for f in files[:3]) + (", ..." if len(files) > 3 else "")))]
    if kind == "summary":
        return dialect.end(ctx, ev) + summary_box(cfg, ev.data)
    method = {"val_start": dialect.val_start, "val": dialect.val, "ckpt_start": dialect.ckpt_start,
              "checkpoint": dialect.ckpt}.get(kind)
    return method(ctx, ev) if method else []

########################################################################
# Plain and JSON-lines output
########################################################################

ANSI = {"WARNING": "\033[33m", "ERROR": "\033[31m", "SUMMARY": "\033[1m"}


def config_record(cfg):
    """The jsonl `config` object: the run's shape, cluster and schedule."""
    m = cfg.shape
    rec = collections.OrderedDict([
        ("kind", cfg.kind), ("style", cfg.style), ("name", cfg.name), ("model", cfg.model),
        ("params", cfg.params), ("layers", m.layers), ("hidden", m.hidden), ("heads", m.heads),
        ("kv_heads", m.kv_heads), ("ffn_hidden", m.ffn_hidden), ("vocab", m.vocab),
        ("tied_embeddings", m.tied), ("seq_len", cfg.seq_len), ("tokenizer", cfg.tokenizer),
        ("dataset", cfg.dataset), ("gpu_type", cfg.gpu.name),
        ("gpu_memory_gib", round(cfg.gpu.memory_mib / 1024.0, 1)), ("gpu_peak_tflops", cfg.gpu.tflops),
        ("gpu_tdp_w", cfg.gpu.power_cap_w), ("nodes", cfg.nodes), ("gpus_per_node", cfg.gpus_per_node),
        ("gpus", cfg.gpus), ("tp", cfg.tp), ("pp", cfg.pp), ("dp", cfg.dp), ("sharding", cfg.sharding),
        ("recompute", cfg.recompute), ("precision", cfg.precision),
        ("global_batch_size", cfg.global_batch), ("micro_batch_size", cfg.micro_batch),
        ("grad_accum_steps", cfg.grad_accum), ("tokens_per_step", cfg.tokens_per_step),
        ("start_step", cfg.start_step), ("total_steps", cfg.total_steps),
        ("warmup_steps", cfg.warmup_steps), ("peak_lr", cfg.peak_lr), ("min_lr", cfg.min_lr),
        ("lr_decay", cfg.decay), ("epochs", cfg.epochs), ("flops_per_token", cfg.flops_per_token),
        ("hostnames", [cfg.hostname.format(n=cfg.first_node + i) for i in range(min(cfg.nodes, 4))]),
    ])
    if m.head_dim and m.head_dim != m.hidden // m.heads:
        rec["head_dim"] = m.head_dim
    if m.experts:
        rec["experts"] = m.experts
        rec["active_experts"] = m.active
        rec["active_params"] = cfg.active_params
    return rec


def event_record(ev):
    """The jsonl fields of an event (without event/run/t)."""
    if ev.kind == "step":
        m = ev.data
        rec = collections.OrderedDict([
            ("step", m.step), ("loss", m.loss), ("lr", m.lr), ("grad_norm", m.grad_norm),
            ("step_time_s", round(m.step_time_s, 6)), ("tokens_per_s", round(m.tokens_per_s, 2)),
            ("tokens_seen", m.tokens_seen), ("mfu", round(m.mfu, 5)), ("eta_s", round(m.eta_s, 2))])
        if m.loss_scale is not None:
            rec["loss_scale"] = m.loss_scale
            rec["skipped"] = m.skipped
        if m.attempt:
            rec["attempt"] = m.attempt
        return rec
    if ev.kind == "phase":
        return collections.OrderedDict([("phase", ev.data["phase"]), ("attempt", ev.data["attempt"]),
                                        ("step", ev.data["step"])])
    return collections.OrderedDict((k, v) for k, v in ev.data.items() if k != "info")


JSONL_EVENTS = ("phase", "step", "val", "checkpoint", "export", "summary", "straggler", "straggler_end",
                "spike", "xid", "job_failed")


class StreamWriter(object):
    """Writes one session as plain log lines or JSON lines, in simulated time."""

    def __init__(self, session, out, fmt, epoch0, color=False, rank=None):
        self.session, self.out, self.fmt = session, out, fmt
        self.epoch0, self.color, self.rank = epoch0, color, rank
        self.run, self.done_t = None, 0.0     # the run being written and how far, in its own time
        self.gpu_t = 0.0                      # how far GPU readings are written (jsonl)
        self.runs_done = 0

    def _emit(self, obj):
        self.out.write(json.dumps(obj, separators=(", ", ": ")) + "\n")

    def _log(self, ctx, rs, ev):
        lines = event_lines(ctx, ev)
        if self.fmt == "plain":
            for level, text in lines:
                if self.color and level in ANSI:
                    text = ANSI[level] + text + "\033[0m"
                self.out.write(text + "\n")
            return
        base = [("event", "log"), ("run", rs.cfg.run), ("t", round(ev.t, 3))]
        for level, text in lines:
            self._emit(collections.OrderedDict(base + [("level", level), ("text", text)]))

    def _gpu_samples(self, rs, t1):
        """GPU readings every few simulated seconds up to t1, in time order with the events."""
        cfg = rs.cfg
        every = 5.0 if cfg.gpus <= 16 else 10.0
        t = (math.floor(max(0.0, self.gpu_t) / every) + 1) * every
        # The commonest line by far, so written from a template rather than json.dumps.
        line = ('{"event": "gpu", "run": %d, "t": %.1f, "gpu": %%d, "node": %%d, "util": %%d, "mem_used_mib": %%d, '
                '"mem_total_mib": %d, "temp_c": %%d, "power_w": %%d, "power_limit_w": %d}\n')
        write = self.out.write
        while t <= t1:
            head = line % (cfg.run, t, cfg.gpu.memory_mib, cfg.gpu.power_cap_w)
            for g in range(cfg.gpus):
                r = rs.telemetry.reading(g, t)
                write(head % (g, g // cfg.gpus_per_node, r.util, r.mem_used_mib, r.temp_c, r.power_w))
            t += every
        self.gpu_t = max(self.gpu_t, t1)

    def advance(self, tau0, tau1):
        """Write everything up to session time tau1; return (a run ended, session time reached)."""
        tau = tau0
        while tau < tau1:
            rs = self.session.run_at(tau)
            cfg = rs.cfg
            t1 = min(rs.local(tau1), rs.timeline.duration)
            ctx = LogContext(rs, self.epoch0 + rs.start_tau - rs.offset, self.rank)
            if cfg.run != self.run:
                self.run, self.done_t = cfg.run, rs.local(tau)
                if self.fmt == "jsonl":
                    rec = collections.OrderedDict([("event", "config"), ("run", cfg.run), ("t", round(self.done_t, 3))])
                    rec.update(config_record(cfg))
                    self._emit(rec)
                self.done_t = self.done_t - 1e-9 if self.done_t > 0 else -1.0
                self.gpu_t = self.done_t
            for ev in run_events(rs.timeline, self.done_t, t1, every_step=self.fmt == "jsonl"):
                if self.fmt == "jsonl":
                    self._gpu_samples(rs, ev.t)
                if self.fmt == "jsonl" and ev.kind in JSONL_EVENTS:
                    rec = collections.OrderedDict([("event", ev.kind), ("run", cfg.run), ("t", round(ev.t, 6))])
                    rec.update(event_record(ev))
                    self._emit(rec)
                self._log(ctx, rs, ev)
                if ev.kind == "summary":
                    self.done_t = ev.t
                    self.runs_done += 1
                    return True, rs.start_tau + ev.t - rs.offset
            if self.fmt == "jsonl":
                self._gpu_samples(rs, t1)
            self.done_t = t1
            if t1 < rs.timeline.duration:
                break                                  # reached tau1 within this run
            tau = rs.end_tau
        return False, max(tau, tau1)


def session_now(args, start):
    """Session time now: from our own start, or from --start-at on the wall clock."""
    if args.start_at is None:
        return (time.monotonic() - start) * args.speed
    return max(0.0, (time.time() - args.start_at) * args.speed)


def run_stream(session, args, out):
    """Plain or JSON-lines output paced by the simulated clock; returns the exit status."""
    fmt = "jsonl" if args.format == "jsonl" else "plain"      # plain also when the screen fell back
    color = fmt == "plain" and out.isatty() and not args.no_color and not os.environ.get("NO_COLOR")
    writer = StreamWriter(session, out, fmt, args.epoch0, color, args.rank)
    start = time.monotonic()
    tau = session_now(args, start) if args.start_at is not None else 0.0
    chunk = 120.0 if args.speed >= 1000 else 1.0
    while True:
        wall = time.monotonic() - start
        if args.exit_after is not None and wall >= args.exit_after:
            return 0
        target = max(tau, session_now(args, start))
        target = min(target, tau + chunk * max(1.0, args.speed / 1000.0))
        if target <= tau:
            time.sleep(min(0.25, max(0.01, 0.2 / args.speed)))
            continue
        ended, tau = writer.advance(tau, target)
        out.flush()
        if ended and args.exit_after_runs and writer.runs_done >= args.exit_after_runs:
            return 0
        if (time.monotonic() - start) * args.speed < tau:
            time.sleep(min(0.25, tau / args.speed - (time.monotonic() - start)))


########################################################################
# Frames (pure: the screen as exactly `height` lines of `width` cells)
########################################################################
# A frame is a list of Line(text, spans); spans are (start, length, style)
# with semantic style names that the terminal section maps to curses
# attributes.  Nothing here touches the terminal or draws anything random.

Line = collections.namedtuple("Line", "text spans")
GLYPHS_ASCII = {"full": "#", "empty": ".", "point": "*", "val": "o", "sep": "|", "dot": "."}
GLYPHS_UNICODE = {"full": "\u2588", "empty": "\u2591", "point": "\u2022", "val": "\u25cb", "sep": "\u2502",
                  "dot": "\u00b7"}
MIN_WIDTH, MIN_HEIGHT = 20, 3


class Ui(object):
    """What the viewer chose: pause, speed, panels (the only mutable screen state)."""

    def __init__(self, speed=1.0, view="all", unicode=False):
        self.paused = False
        self.speed = speed
        self.gpu_mode = "gpus"        # gpus, nodes, hidden
        self.chart = True
        self.help = False
        self.view = view
        self.glyphs = GLYPHS_UNICODE if unicode else GLYPHS_ASCII
        self.notice = ""


def fit(text, width):
    """Exactly `width` cells: cut or pad."""
    return text[:width].ljust(width) if width > 0 else ""


def bar(fraction, width, glyphs):
    """A hand-drawn progress bar '[####......]' of total width `width`."""
    inner = max(1, width - 2)
    filled = int(round(max(0.0, min(1.0, fraction)) * inner))
    return "[" + glyphs["full"] * filled + glyphs["empty"] * (inner - filled) + "]"


def plain_line(text, width, style=None):
    text = fit(text, width)
    return Line(text, [(0, width, style)] if style else [])


def fmt_rate(tokens_per_s):
    for name, size in (("M", 1e6), ("k", 1e3)):
        if tokens_per_s >= size:
            return "%.1f%s tok/s" % (tokens_per_s / size, name)
    return "%.0f tok/s" % tokens_per_s


def fmt_clock(seconds):
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h >= 24:
        return "%dd%02dh" % divmod(h, 24)
    return "%d:%02d:%02d" % (h, m, s) if h else "%02d:%02d" % (m, s)


class ScreenState(object):
    """Everything a frame shows at one moment, computed from the session."""

    def __init__(self, rs, t, epoch0, log, ui):
        self.rs, self.cfg, self.tl, self.t = rs, rs.cfg, rs.timeline, t
        self.epoch0, self.log, self.ui = epoch0, log, ui
        self.moment = self.tl.moment(t)
        seg = self.moment.segment
        step = max(self.moment.step, self.cfg.start_step)
        if seg.phase == "train" and step > seg.first:
            self.metrics = step_metrics(self.tl, seg, step)
        else:
            train = [s for s in self.tl.train_segments() if s.first <= step <= s.last] or self.tl.train_segments()
            self.metrics = step_metrics(self.tl, train[0], max(step, train[0].first + 1)) if step >= train[0].first + 1 \
                else None
        self.step = step

    def rs_hostname(self, node):
        return self.cfg.hostname.format(n=self.cfg.first_node + node)


def first_fitting(variants, width):
    """The first text that fits the width (the last one, cut, if none does)."""
    for text in variants:
        if len(text) <= width:
            return text
    return variants[-1]


def header_line(state, width):
    cfg = state.cfg
    clock = time.strftime("%H:%M:%S", time.gmtime(state.epoch0 + state.t))
    text = first_fitting([
        "%s | %s (%s) %s | %dx %s | %d node%s | TP%d PP%d DP%d | %s | seed %d | %s UTC" % (
            cfg.name, cfg.model, fmt_params(cfg.params), cfg.kind, cfg.gpus, cfg.gpu.name, cfg.nodes,
            "s" * (cfg.nodes > 1), cfg.tp, cfg.pp, cfg.dp, cfg.precision, cfg.seed, clock),
        "%s (%s) %s | %dx %s | TP%d PP%d DP%d | %s UTC" % (
            cfg.model, fmt_params(cfg.params), cfg.kind, cfg.gpus, cfg.gpu.key, cfg.tp, cfg.pp, cfg.dp, clock),
        "%s %s | %dx %s | TP%d PP%d DP%d | %s" % (cfg.model, cfg.kind, cfg.gpus, cfg.gpu.key, cfg.tp, cfg.pp,
                                                  cfg.dp, clock),
        "%s | %dx %s | TP%d PP%d | %s" % (cfg.model, cfg.gpus, cfg.gpu.key, cfg.tp, cfg.pp, clock),
        "%s %s | %dx %s | %s" % (cfg.model, cfg.kind, cfg.gpus, cfg.gpu.key, clock),
        "%s | %s" % (cfg.model, clock)], width)
    return plain_line(text, width, "header")


LEVEL_STYLE = {"WARNING": "warn", "ERROR": "error", "SUMMARY": "title"}


def log_lines(state, width, height):
    """The newest log lines, cut at the width, newest at the bottom."""
    if height <= 0:
        return []
    recent = list(state.log)[-height:] if state.log else []
    out = [Line(" " * width, [])] * (height - len(recent))
    for level, text in recent:
        out.append(plain_line(text, width, LEVEL_STYLE.get(level)))
    return out


def gpu_style(r):
    if r.failed:
        return "bad"
    if r.temp_c >= 85:
        return "hot"
    if r.util >= 60:
        return "good"
    return "idle"


def gpu_cell(gpu, r, cfg, width, glyphs):
    """One GPU in `width` cells: index, util bar, memory, temperature, power."""
    if width >= 56:
        tail = " %3d%% %6d/%6dMiB %3dC %4d/%4dW" % (r.util, r.mem_used_mib, cfg.gpu.memory_mib, r.temp_c,
                                                   r.power_w, cfg.gpu.power_cap_w)
        error = " ERR Xid 48 DBE ECC  %3dC %4d/%4dW" % (r.temp_c, r.power_w, cfg.gpu.power_cap_w)
    else:
        tail = " %3d%% %4.1f/%.0fG %2dC %3dW" % (r.util, r.mem_used_mib / 1024.0, cfg.gpu.memory_mib / 1024.0,
                                               r.temp_c, r.power_w)
        error = " ERR Xid 48  %2dC %3dW" % (r.temp_c, r.power_w)
    if r.failed:
        tail = error
    head = "%4d " % gpu
    bar_w = max(4, min(22, width - len(head) - len(tail) - 1))
    return fit(head + bar(r.util / 100.0, bar_w, glyphs) + tail, width)


def gpu_columns(width):
    """How many GPU cells side by side, and how wide each is."""
    if width >= 124:
        return 2, width // 2
    if width >= 76:
        return 2, width // 2
    return 1, width


def node_summary(state, node, readings, width, glyphs):
    cfg = state.cfg
    n = float(len(readings))
    util = sum(r.util for r in readings) / n
    mem = sum(r.mem_used_mib for r in readings) / n / 1024.0
    temp = sum(r.temp_c for r in readings) / n
    kw = sum(r.power_w for r in readings) / 1000.0
    failed = any(r.failed for r in readings)
    name_w = max(16, len(state.rs_hostname(cfg.nodes - 1)))
    head = "%-*s " % (name_w, state.rs_hostname(node))
    tail = " %3.0f%% %5.1f/%.1fG %3.0fC %5.1fkW%s" % (util, mem, cfg.gpu.memory_mib / 1024.0, temp, kw,
                                                     "  GPU ERROR" if failed else "")
    bar_w = max(4, min(22, width - len(head) - len(tail)))
    text = fit(head + bar(util / 100.0, bar_w, glyphs) + tail, width)
    style = "bad" if failed else ("good" if util >= 60 else "idle")
    return Line(text, [(0, width, style)])


def gpu_panel(state, width, height):
    """Cluster line, then GPU rows node by node, then node summaries, then '+N more'."""
    if height <= 0:
        return []
    cfg, tel, t, glyphs = state.cfg, state.rs.telemetry, state.t, state.ui.glyphs
    agg = tel.cluster(t)
    fault = " | %d GPU FAULT" % agg["failed"] if agg["failed"] else ""
    figures = "util %.1f%% | mem %.1f/%.1f GiB | %.0f+-%.1fC | %.1f kW%s" % (
        agg["util"], agg["mem_mib"] / 1024.0, cfg.gpu.memory_mib / 1024.0, agg["temp"], agg["temp_sd"],
        agg["kw"], fault)
    out = [plain_line(first_fitting([
        "CLUSTER %dx %s | %d node%s | %s" % (cfg.gpus, cfg.gpu.name, cfg.nodes, "s" * (cfg.nodes != 1), figures),
        "CLUSTER %dx %s | %s" % (cfg.gpus, cfg.gpu.key, figures),
        "CLUSTER %dx %s | %.1f%% | %.1f/%.0fG | %.0f+-%.0fC | %.1fkW%s" % (
            cfg.gpus, cfg.gpu.key, agg["util"], agg["mem_mib"] / 1024.0, cfg.gpu.memory_mib / 1024.0,
            agg["temp"], agg["temp_sd"], agg["kw"], fault),
        "%dx %s %.0f%% %.0fC %.1fkW%s" % (cfg.gpus, cfg.gpu.key, agg["util"], agg["temp"], agg["kw"], fault)],
        width), width, "title")]
    columns, cell_w = gpu_columns(width)
    rows_per_node = 1 + int(math.ceil(cfg.gpus_per_node / float(columns)))
    room = height - 1
    node = 0
    by_node = state.ui.gpu_mode == "nodes"
    while node < cfg.nodes and room > 0:
        readings = [tel.reading(node * cfg.gpus_per_node + i, t) for i in range(cfg.gpus_per_node)]
        remaining = cfg.nodes - node
        # whole node if it fits and leaves a line for the rest
        if not by_node and rows_per_node <= room - (1 if remaining > 1 else 0):
            out.append(plain_line("%s  node %d  ranks %d-%d" % (state.rs_hostname(node), node,
                                                                node * cfg.gpus_per_node,
                                                                (node + 1) * cfg.gpus_per_node - 1), width, "dim"))
            for row in range(rows_per_node - 1):
                text, spans = "", []
                for col in range(columns):
                    i = row + col * (rows_per_node - 1)
                    if i >= cfg.gpus_per_node:
                        continue
                    r = readings[i]
                    cell = gpu_cell(node * cfg.gpus_per_node + i, r, cfg, cell_w, glyphs)
                    spans.append((len(text), cell_w, gpu_style(r)))
                    text += cell
                out.append(Line(fit(text, width), [s for s in spans if s[0] < width]))
            room -= rows_per_node
        else:
            if room == 1 and remaining > 1:
                out.append(plain_line("+%d more nodes" % remaining, width, "dim"))
                room = 0
                break
            out.append(node_summary(state, node, readings, width, glyphs))
            room -= 1
        node += 1
    while len(out) < height:
        out.append(Line(" " * width, []))
    return out[:height]


def chart_lines(state, width, height):
    """ASCII plot of the training loss since step 0, with validation points."""
    if height < 4 or width < 16:
        return [Line(" " * width, [])] * max(0, height)
    cfg, g = state.cfg, state.ui.glyphs
    plot_w, plot_h = width - 8, height - 2
    # The whole run fits in plot_w columns: redraw when the run has moved by a column.
    step = max(1, state.step)
    step -= step % max(1, step // plot_w)
    key = (width, height, step, g["point"])
    title = plain_line("loss (%s train, %s val) step 0-%d" % (g["point"], g["val"], state.step), width, "title")
    cached = state.rs.chart_cache
    if cached and cached[0] == key:
        return ([title] + cached[1])[:height]
    steps = [max(1, int(step * (i + 1) / float(plot_w))) for i in range(plot_w)]
    spikes = state.tl.incidents.spikes
    values = []
    for i, s in enumerate(steps):
        prev = steps[i - 1] if i else 0
        window = [max(1, prev + (s - prev) * k // 3) for k in (1, 2, 3)]   # light smoothing, as W&B draws it
        values.append(sum(loss_at(cfg, x, spikes) for x in window) / 3.0)
    hi_cap = sorted(values)[int(len(values) * 0.9)] * 1.15   # keep the early drop from flattening the rest
    lo, hi = min(values), max(min(max(values), hi_cap), min(values) + 0.05)
    grid = [[" "] * plot_w for _ in range(plot_h)]

    def row_of(v):
        v = min(hi, max(lo, v))
        return plot_h - 1 - int(round((v - lo) / (hi - lo) * (plot_h - 1)))
    for x, v in enumerate(values):
        grid[row_of(v)][x] = g["point"]
    for x, s in enumerate(steps):
        prev = steps[x - 1] if x else 0
        boundary = (s // cfg.val_interval) * cfg.val_interval
        if prev < boundary <= step:
            grid[row_of(val_loss_at(cfg, boundary))][x] = g["val"]
    out = []
    for r in range(plot_h):
        label = "%7.3f " % hi if r == 0 else ("%7.3f " % lo if r == plot_h - 1 else " " * 8)
        text = fit(label + "".join(grid[r]), width)
        spans = [(8, plot_w, "chart")]
        out.append(Line(text, spans))
    out.append(plain_line(" " * 8 + fit("0", plot_w // 2) + ("%d" % step).rjust(plot_w - plot_w // 2), width, "dim"))
    state.rs.chart_cache = (key, out)
    return ([title] + out)[:height]


def footer_lines(state, width):
    """Two lines: the progress bar of what runs now, then the run's figures."""
    cfg, m, ui, t = state.cfg, state.metrics, state.ui, state.t
    moment = state.moment
    phase = moment.phase
    g = ui.glyphs
    eta = m.eta_s if m else state.tl.eta(moment.segment, cfg.start_step)
    clock = "%s<%s" % (fmt_clock(t), fmt_clock(eta if phase in ("train", "val", "checkpoint") else 0))
    if phase in ("train", "val", "checkpoint") or (phase in ("launch", "build", "load") and moment.segment.attempt):
        done = state.step
        if cfg.kind == "finetune":
            epoch = min(cfg.epochs, done // max(1, cfg.steps_per_epoch) + 1)
            label = "Epoch %d/%d" % (epoch, cfg.epochs)
        else:
            label = "%s/%s tok" % (fmt_tokens(done * cfg.tokens_per_step), fmt_tokens(cfg.total_steps * cfg.tokens_per_step))
        frac = (done - cfg.start_step) / float(max(1, cfg.total_steps - cfg.start_step)) if cfg.kind == "finetune" \
            else done / float(cfg.total_steps)
        right = " %3d%% step %d/%d %s" % (int(frac * 100), done, cfg.total_steps, clock)
    else:
        label, frac, right = "", 0.0, " " + clock
    if phase == "val":
        label = "validation"
        frac = moment.progress
        right = " %3d%% %d/%d batches %s" % (int(frac * 100), int(frac * cfg.val_iters), cfg.val_iters, clock)
    elif phase == "checkpoint":
        label = "saving " + checkpoint_path(cfg, moment.step).split("/")[-1]
        frac = moment.progress
        right = " %3d%% %s/%s %s" % (int(frac * 100), fmt_bytes(frac * cfg.ckpt_bytes), fmt_bytes(cfg.ckpt_bytes), clock)
    elif phase == "export":
        shards = sum(1 for n, _ in cfg.export_files if n.endswith(".safetensors"))
        label, frac = "export safetensors", moment.progress
        right = " %3d%% %d/%d shards %s" % (int(frac * 100), int(frac * shards), shards, clock)
    elif phase in ("launch", "build", "load"):
        label = {"launch": "rendezvous %d ranks" % cfg.gpus, "build": "building model",
                 "load": "loading checkpoint"}[phase]
        frac = moment.progress
        right = " %3d%% %s" % (int(frac * 100), clock)
    elif phase == "crash":
        label, frac = "NCCL watchdog", moment.progress
        right = " hung %ds/%ds  rank %d lost" % (int(moment.progress * moment.segment.info[2]),
                                                moment.segment.info[2], moment.segment.info[1])
    elif phase == "summary":
        label, frac, right = "run %d finished; next run" % cfg.run, moment.progress, " %3d%%" % int(moment.progress * 100)
    if len(label) + len(right) + 8 > width:          # narrow: the bar and its percentage come first
        label, right = "", " %3d%%" % int(frac * 100) + (right if len(right) + 13 <= width else "")
    bar_w = max(5, width - len(label) - len(right) - (2 if label else 0))
    line1 = fit(("%s %s%s" % (label, bar(frac, bar_w, g), right)).lstrip(), width)
    if m and phase != "summary":
        figures = "loss %.4f | lr %.2e | gnorm %.2f | %s | %.2f s/it | MFU %.1f%%" % (
            m.loss, m.lr, m.grad_norm, fmt_rate(m.tokens_per_s), m.step_time_s, 100 * m.mfu)
    else:
        figures = "%s | %dx %s" % (cfg.model, cfg.gpus, cfg.gpu.key)
    # what the viewer changed comes first, so a narrow pane still shows it
    flags = ["PAUSED"] * ui.paused + ["x%g" % ui.speed] * (ui.speed != 1) + [ui.notice] * bool(ui.notice)
    line2 = fit(" | ".join(flags + [figures, "? help"]), width)
    style2 = "paused" if ui.paused else "footer"
    return [Line(line1, [(0, width, "bar" if phase != "crash" else "bad")]), Line(line2, [(0, width, style2)])]


HELP_TEXT = ("keys", "q      quit", "p spc  pause / resume", "+ -    double / halve speed",
             "g      GPU panel: per GPU / per node / hidden", "l      loss chart on / off",
             "!      trigger an incident now", "?      this help")


def overlay_help(lines, width, height):
    box_w = min(width, max(len(t) for t in HELP_TEXT) + 4)
    box_h = min(height, len(HELP_TEXT) + 2)
    top, left = max(0, (height - box_h) // 2), max(0, (width - box_w) // 2)
    rows = ["+" + "-" * (box_w - 2) + "+"] + ["| " + fit(t, box_w - 4) + " |" for t in HELP_TEXT] + \
           ["+" + "-" * (box_w - 2) + "+"]
    rows = rows[:box_h]
    if len(rows) == box_h and box_h >= 2:
        rows[-1] = "+" + "-" * (box_w - 2) + "+"
    for i, row in enumerate(rows):
        y = top + i
        old = lines[y].text
        text = old[:left] + fit(row, box_w) + old[left + box_w:]
        lines[y] = Line(fit(text, width), [(left, box_w, "title")])
    return lines


def render_frame(state, width, height):
    """The whole screen: exactly `height` Lines of exactly `width` cells."""
    if width <= 0 or height <= 0:
        return []
    ui = state.ui
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        msg = ["terminal too small" if width >= 18 else "too small",
               "%dx%d, need %dx%d" % (width, height, MIN_WIDTH, MIN_HEIGHT)]
        return [plain_line(msg[i] if i < len(msg) else "", width, "warn") for i in range(height)]
    footer = footer_lines(state, width) if ui.view == "all" or height >= 8 else []
    footer = footer[-max(0, height):]
    header = [header_line(state, width)] if height >= 10 else []
    body_h = height - len(footer) - len(header)
    view = ui.view
    if view == "log":
        body = log_lines(state, width, body_h)
    elif view == "gpus":
        body = gpu_panel(state, width, body_h)
    elif view == "chart":
        body = chart_lines(state, width, body_h)
    else:
        body = all_regions(state, width, body_h)
    lines = header + body + footer
    if ui.help:
        lines = overlay_help(lines, width, height)
    return lines


def all_regions(state, width, height):
    """Log above, GPU panel (with the chart beside it when wide) below."""
    ui, cfg = state.ui, state.cfg
    if height < 8 or ui.gpu_mode == "hidden":
        gpu_h = 0
    else:
        columns = gpu_columns(width)[0]
        want = 1 + cfg.nodes * (1 + int(math.ceil(cfg.gpus_per_node / float(columns))))
        gpu_h = min(want, max(3, (height * 9) // 20))
        if ui.gpu_mode == "nodes":
            gpu_h = min(1 + cfg.nodes, max(3, height // 3))
    chart_beside = ui.chart and width >= 110 and gpu_h >= 6
    chart_below = ui.chart and not chart_beside and height - gpu_h >= 26
    chart_h = 9 if chart_below else 0
    log_h = height - gpu_h - chart_h
    out = log_lines(state, width, log_h)
    if chart_h:
        out += chart_lines(state, width, chart_h)
    if gpu_h:
        if chart_beside:
            chart_w = min(70, width - 63)
            panel_w = width - chart_w - 1
            left = gpu_panel(state, panel_w, gpu_h)
            right = chart_lines(state, chart_w, gpu_h)
            for a, b in zip(left, right):
                spans = list(a.spans) + [(s + panel_w + 1, n, st) for s, n, st in b.spans]
                out.append(Line(a.text + " " + b.text, spans))
        else:
            out += gpu_panel(state, width, gpu_h)
    return out


########################################################################
# Terminal (the only curses code)
########################################################################

PALETTE = {  # style: (colour, attribute with colour, attribute on monochrome terminals)
    "header": ("cyan", "bold", "reverse"), "title": ("cyan", "bold", "bold"), "dim": (None, "dim", "dim"),
    "warn": ("yellow", "bold", "bold"), "error": ("red", "bold", "standout"), "bad": ("red", "bold", "standout"),
    "good": ("green", None, None), "idle": (None, "dim", "dim"), "hot": ("yellow", "bold", "bold"),
    "bar": ("green", "bold", "bold"), "footer": ("cyan", None, None), "paused": ("yellow", "reverse", "reverse"),
    "chart": ("magenta", None, None),
}


class Terminal(object):
    """curses window + palette; draws frames, reads keys."""

    def __init__(self, stdscr, color):
        import curses
        self.curses, self.scr = curses, stdscr
        stdscr.keypad(True)
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        self.attrs = self._palette(color)

    def _palette(self, color):
        curses = self.curses
        names = {"bold": curses.A_BOLD, "dim": curses.A_DIM, "reverse": curses.A_REVERSE,
                 "standout": curses.A_STANDOUT, None: 0}
        use_color = color and curses.has_colors()
        if use_color:
            curses.start_color()
            background = -1
            try:
                curses.use_default_colors()
            except curses.error:
                background = curses.COLOR_BLACK
        attrs, pairs = {}, {}
        for style, (colour, with_color, mono) in PALETTE.items():
            if use_color and colour:
                if colour not in pairs:
                    pairs[colour] = len(pairs) + 1
                    curses.init_pair(pairs[colour], getattr(curses, "COLOR_" + colour.upper()), background)
                attrs[style] = curses.color_pair(pairs[colour]) | names[with_color]
            else:
                attrs[style] = names[with_color if use_color else mono]
        return attrs

    def draw(self, lines):
        scr, curses = self.scr, self.curses
        height, width = scr.getmaxyx()
        for y, line in enumerate(lines[:height]):
            text = line.text[:width]
            try:
                if y == height - 1:
                    scr.addstr(y, 0, text[:-1])
                    scr.insstr(y, len(text) - 1, text[-1:])   # the bottom-right cell without scrolling
                else:
                    scr.addstr(y, 0, text)
                for start, length, style in line.spans:
                    attr = self.attrs.get(style, 0)
                    if attr and start < width:
                        scr.chgat(y, start, min(length, width - start), attr)
            except curses.error:
                if y != height - 1:
                    raise
        scr.noutrefresh()
        curses.doupdate()


def history_window(rs):
    """Run-time span of log history to pre-fill a screen joining mid-run: about
    150 logged steps, more than the tallest log region shows."""
    cfg = rs.cfg
    return max(60.0, 150 * cfg.step_time_s * max(1, cfg.log_interval))


class LogSink(object):
    """The log region's memory: the newest LOG_KEEP (level, text) lines, no more."""

    def __init__(self, keep=LOG_KEEP):
        self.lines = collections.deque(maxlen=keep)

    def add(self, level, text):
        self.lines.append((level, text))


class ScreenWriter(StreamWriter):
    """StreamWriter that feeds the log region instead of a stream."""

    def __init__(self, session, sink, epoch0, rank=None):
        StreamWriter.__init__(self, session, None, "screen", epoch0, False, rank)
        self.sink = sink

    def _log(self, ctx, rs, ev):
        for level, text in event_lines(ctx, ev):
            self.sink.add(level, text)


def prefill(session, writer):
    """Write the recent history of the run the session joins, as if it had been running."""
    rs = session.current
    if rs.offset <= 0:
        return
    ctx = LogContext(rs, writer.epoch0 + rs.start_tau - rs.offset, writer.rank)
    start = max(-1.0, rs.offset - history_window(rs))
    if start > 0:                      # the start-up banner stays at the top of a log
        for seg in rs.timeline.segments[:2]:
            writer._log(ctx, rs, Event(seg.t0, "phase", {"phase": seg.phase, "attempt": 0,
                                                         "step": seg.first, "info": None}))
    for ev in run_events(rs.timeline, start, rs.offset, every_step=False):
        writer._log(ctx, rs, ev)
    writer.run, writer.done_t = rs.cfg.run, rs.offset


def run_screen(session, args):
    """The full-screen curses program; returns the exit status."""
    try:
        import curses
    except ImportError:
        sys.stderr.write("fake_llm_training: curses is not available here (on Windows: pip install "
                         "windows-curses); writing plain log lines\n")
        return run_stream(session, args, sys.stdout)
    for name in ("LINES", "COLUMNS"):      # exported sizes would freeze the screen size
        os.environ.pop(name, None)
    color = not args.no_color and not os.environ.get("NO_COLOR")
    status = {"code": 0, "last": None}
    try:
        curses.wrapper(lambda scr: _screen_loop(scr, session, args, color, status))
    except KeyboardInterrupt:
        status["code"] = 130
    last = status["last"]
    if status["code"] == 130 and last is not None:
        cfg, step = last
        saved = (step // cfg.ckpt_interval) * cfg.ckpt_interval
        sys.stderr.write("KeyboardInterrupt: training interrupted at step %d/%d; last checkpoint kept: %s\n"
                         % (step, cfg.total_steps, checkpoint_path(cfg, saved) if saved > cfg.start_step
                            else "(none saved this run)"))
    return status["code"]


def _screen_loop(stdscr, session, args, color, status):
    import curses
    term = Terminal(stdscr, color)
    # Block glyphs only where curses itself encodes UTF-8 (under LC_ALL=C they draw blank).
    encoding = (getattr(stdscr, "encoding", "") or "").lower().replace("-", "")
    ui = Ui(args.speed, args.view, args.unicode and encoding == "utf8")
    sink = LogSink()
    writer = ScreenWriter(session, sink, args.epoch0, args.rank)
    prefill(session, writer)
    wall_start = last = time.monotonic()
    tau = session_now(args, wall_start) if args.start_at is not None else 0.0
    fed = tau                                  # session time up to which the log is written
    while True:
        now = time.monotonic()
        if not ui.paused:
            if args.start_at is not None and ui.speed == args.speed:
                tau = max(tau, session_now(args, wall_start))
            else:
                tau += min(now - last, MAX_FRAME_STEP) * ui.speed   # a suspend does not jump the run
        last = now
        if args.exit_after is not None and now - wall_start >= args.exit_after:
            return
        ended = False
        rs = session.run_at(tau)
        if session.previous is not None and fed < session.previous.start_tau:
            fed = session.previous.start_tau          # runs behind at absurd speeds: skip to the recent past
        if tau > fed:
            ended, fed = writer.advance(fed, tau)
        if ended and args.exit_after_runs and writer.runs_done >= args.exit_after_runs:
            return
        rs = session.run_at(tau)
        state = ScreenState(rs, rs.local(tau), args.epoch0 + rs.start_tau - rs.offset, sink.lines, ui)
        status["last"] = (rs.cfg, state.step)
        height, width = stdscr.getmaxyx()
        term.draw(render_frame(state, width, height))
        stdscr.timeout(int(FRAME_SECONDS * 1000))
        key = stdscr.getch()
        if key == curses.KEY_RESIZE:
            if sys.platform == "win32":
                curses.resize_term(0, 0)
            stdscr.erase()
            continue
        if key in (ord("q"), ord("Q")):
            return
        handle_key(key, ui, rs, rs.local(tau))


def handle_key(key, ui, rs, t):
    """Apply one key press to the viewer's choices (and `!` to the run)."""
    if key < 0:
        return
    ch = chr(key) if key < 256 else ""
    ui.notice = ""
    if ch in ("p", " "):
        ui.paused = not ui.paused
    elif ch == "+":
        ui.speed = min(1e6, ui.speed * 2)
    elif ch == "-":
        ui.speed = max(1.0 / 64, ui.speed / 2)
    elif ch == "g":
        ui.gpu_mode = {"gpus": "nodes", "nodes": "hidden", "hidden": "gpus"}[ui.gpu_mode]
    elif ch == "l":
        ui.chart = not ui.chart
    elif ch == "?":
        ui.help = not ui.help
    elif ch == "!":
        kind = rs.trigger(t)
        ui.notice = ("incident: %s" % kind) if kind else "no incident outside training"


########################################################################
# nvidia-smi look-alike and tmux layout
########################################################################
# The table is the 570-driver layout: 91 columns, three rows per GPU, and
# the wide-PID processes table.  Readings are the session's own at this
# moment, so a screen and this command with one seed and --start-at agree.



def smi_date(when):
    """C asctime(): 'Tue Aug  5 15:49:52 2025' (day padded with a space)."""
    tm = time.gmtime(when)
    return time.strftime("%a %b ", tm) + "%2d" % tm.tm_mday + time.strftime(" %H:%M:%S %Y", tm)


def nvidia_smi_table(cfg, readings, pids, when):
    """The text nvidia-smi prints for one node: readings are GpuReadings of its 8 GPUs."""
    sep = "+" + "-" * 41 + "+" + "-" * 24 + "+" + "-" * 22 + "+"
    out = [smi_date(when) + "       ",
           "+" + "-" * 89 + "+",
           "| NVIDIA-SMI %-23sDriver Version: %-15sCUDA Version: %-9s|" % (cfg.stack.driver, cfg.stack.driver, cfg.stack.driver_cuda),
           "|" + "-" * 41 + "+" + "-" * 24 + "+" + "-" * 22 + "+",
           "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
           "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
           "|                                         |                        |               MIG M. |",
           "|" + "=" * 41 + "+" + "=" * 24 + "+" + "=" * 22 + "|"]
    name = cfg.gpu.name if len(cfg.gpu.name) <= 27 else cfg.gpu.name[:24] + "..."
    mig = "Disabled" if any(k in cfg.gpu.key for k in ("A100", "H100", "H200", "B200")) else "N/A"
    for i, r in enumerate(readings):
        perf = "P0" if r.mem_used_mib else "P8"
        ecc = "1" if r.failed else "0"
        out.append("| %3d  %-31s%-3s |   00000000:%s:00.0 Off | %20s |" % (i, name, "On", BUS_IDS[i % 8], ecc))
        out.append("| N/A%6s    %-2s%16s / %5s |%11s / %9s |%8s%13s |" % (
            "%dC" % r.temp_c, perf, "%dW" % r.power_w, "%dW" % cfg.gpu.power_cap_w, "%dMiB" % r.mem_used_mib,
            "%dMiB" % cfg.gpu.memory_mib, "%d%%" % r.util, "Default"))
        out.append("|%41s|%24s|%21s |" % ("", "", mig))
        out.append(sep)
    out.append(" " * 89)
    out.append("+" + "-" * 89 + "+")
    out.append("| Processes:" + " " * 78 + "|")
    out.append("|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |")
    out.append("|        ID   ID                                                               Usage      |")
    out.append("|" + "=" * 89 + "|")
    rows = 0
    for i, (r, pid) in enumerate(zip(readings, pids)):
        if r.mem_used_mib <= 0 or pid is None:
            continue
        memory = "%dMiB" % max(0, r.mem_used_mib - 9)
        if len(memory) > 8:
            memory = memory[:5] + "..."
        out.append("|%5d   N/A  N/A%16d%7s   %-38s%8s |" % (i, pid, "C", "/usr/bin/python3", memory))
        rows += 1
    if not rows:
        out.append("|  No running processes found" + " " * 62 + "|")
    out.append("+" + "-" * 89 + "+")
    return "\n".join(out) + "\n"


def node_readings(rs, node, t):
    """Readings and process ids of one node's GPUs at run time t."""
    cfg = rs.cfg
    ctx = LogContext(rs, 0.0)
    attempt = rs.timeline.moment(t).segment.attempt
    readings, pids = [], []
    for local in range(cfg.gpus_per_node):
        r = rs.telemetry.reading(node * cfg.gpus_per_node + local, t)
        readings.append(r)
        pids.append(ctx.pid(node, attempt, local) if r.mem_used_mib else None)
    return readings, pids


def nvidia_smi_main(argv):
    """`fake_llm_training nvidia-smi [-l SECONDS] [--node K]`: the GPUs of one node, now."""
    parser = build_parser()
    parser.prog = "fake_llm_training nvidia-smi"
    parser.add_argument("-l", "--loop", metavar="SECONDS", help="print again every SECONDS")
    parser.add_argument("--node", default="0", help="which node of the run (default 0)")
    args = parser.parse_args(argv)
    install_signal_handlers()
    try:
        catalog = load_catalog(args.data_dir or DATA_DIR)
        resolve_args(args, catalog)
        session = Session(catalog, args.seed, args.pins, args.incidents, args.from_start)
        every = float(args.loop) if args.loop is not None else None
        if every is not None and not 0 < every <= 86400:
            raise UsageError("-l must be above 0 seconds")
        node = _positive_int(args.node, "--node", 0, 511)
    except (UsageError, ConfigError, ValueError) as exc:
        parser.print_usage(sys.stderr)
        sys.stderr.write("fake_llm_training: error: %s\n" % exc)
        return 2
    except DataError as exc:
        sys.stderr.write("fake_llm_training: %s\n" % exc)
        return 1
    start = time.monotonic()
    try:
        while True:
            tau = session_now(args, start)
            rs = session.run_at(tau)
            if node >= rs.cfg.nodes:
                sys.stderr.write("fake_llm_training: error: the run has %d node%s; --node %d does not exist\n"
                                 % (rs.cfg.nodes, "s" * (rs.cfg.nodes > 1), node))
                return 2
            t = rs.local(tau)
            readings, pids = node_readings(rs, node, t)
            sys.stdout.write(nvidia_smi_table(rs.cfg, readings, pids, args.epoch0 + tau / args.speed))
            sys.stdout.flush()
            if every is None or (args.exit_after is not None and time.monotonic() - start >= args.exit_after):
                return 0
            time.sleep(every)
    except KeyboardInterrupt:
        return 130


def tmux_layout(args, argv):
    """Split the current tmux window into log, GPU and chart panes of one run."""
    import shlex
    import subprocess
    if not os.environ.get("TMUX"):
        sys.stderr.write("fake_llm_training: error: --tmux works only inside a tmux session\n")
        return 2
    keep = [a for a in argv if a != "--tmux" and not a.startswith("--view") and not a.startswith("--start-at")]
    drop_next = {"--view", "--start-at", "--seed"}
    cleaned, skip = [], False
    for a in keep:
        if skip:
            skip = False
            continue
        if a in drop_next:
            skip = True
            continue
        if a.startswith("--seed="):
            continue
        cleaned.append(a)
    start_at = args.start_at if args.start_at is not None else time.time()
    base = [sys.executable, os.path.abspath(__file__), "--seed", str(args.seed),
            "--start-at", "%.3f" % start_at] + cleaned

    def command(view):
        return " ".join(shlex.quote(x) for x in base + ["--view", view])
    subprocess.check_call(["tmux", "split-window", "-v", "-p", "45", command("gpus")])
    subprocess.check_call(["tmux", "split-window", "-h", "-p", "40", command("chart")])
    subprocess.check_call(["tmux", "select-pane", "-U"])
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), "--seed", str(args.seed),
                              "--start-at", "%.3f" % start_at] + cleaned + ["--view", "log"])


########################################################################
# Command line
########################################################################

class UsageError(Exception):
    """A bad command-line value: one line, the usage, exit status 2."""


def parse_duration(text):
    """'90s', '5m', '2h10m', '1.5h' or plain seconds -> seconds."""
    import re
    text = text.strip().lower()
    if re.match(r"^\d+(\.\d+)?$", text):
        value = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
        if not parts or "".join(a + b for a, b in parts) != text:
            raise UsageError("bad duration %r (use e.g. 90s, 5m, 2h10m)" % text)
        value = sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if value <= 0 or value > 366 * 86400:
        raise UsageError("duration %r out of range" % text)
    return value


def parse_start_at(text):
    """ISO 8601 (UTC unless it says otherwise) or Unix seconds -> Unix seconds."""
    import calendar
    import re
    text = text.strip()
    if re.match(r"^\d+(\.\d+)?$", text):
        return float(text)
    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?)?(Z|[+-]\d\d:?\d\d)?$", text)
    if not m:
        raise UsageError("bad --start-at %r (use ISO 8601 like 2026-11-29T09:00:00Z, or Unix seconds)" % text)
    y, mo, d, h, mi, s, zone = m.groups()
    try:
        value = calendar.timegm((int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), 0, 0, 0))
        time.gmtime(value)
    except (ValueError, OverflowError):
        raise UsageError("bad --start-at %r" % text)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        value -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return float(value)


def build_parser():
    import argparse
    p = argparse.ArgumentParser(
        prog="fake_llm_training",
        description="Make this terminal look as if it trains a large language model on a GPU cluster.",
        epilog="Keys: q quit, p/space pause, +/- speed, g GPU panel, l loss chart, ! incident, ? help. "
               "Subcommand: 'nvidia-smi [-l SECONDS] [--node K]' prints the GPUs of a node of the run.")
    p.add_argument("--seed", help="seed of the session (default: random, shown in the header)")
    p.add_argument("--speed", default="1", help="simulated seconds per wall second (default 1)")
    p.add_argument("--exit-after", metavar="DURATION", help="quit after this wall time (90s, 5m, 2h10m)")
    p.add_argument("--exit-after-runs", metavar="N", help="quit after N runs have finished")
    p.add_argument("--format", choices=("screen", "plain", "jsonl"),
                   help="screen (default on a terminal), plain log lines, or JSON lines")
    p.add_argument("--style", choices=("auto",) + STYLES, default="auto", help="framework dialect of the log")
    p.add_argument("--model", help="pin the model (see --list-models)")
    p.add_argument("--gpu-type", help="pin the accelerator (see --list-gpus)")
    p.add_argument("--gpus", help="pin the number of GPUs (1-8, or a multiple of 8 up to 4096)")
    p.add_argument("--kind", choices=KINDS, help="pin the kind of run")
    p.add_argument("--incidents", choices=tuple(INCIDENT_LEVELS), default="rare",
                   help="how often things go wrong (default rare: real-world rates)")
    p.add_argument("--from-start", action="store_true", help="begin at launch instead of mid-run")
    p.add_argument("--start-at", metavar="TIME",
                   help="the session started at TIME (ISO 8601 or Unix seconds): panes with one seed agree")
    p.add_argument("--view", choices=("all", "log", "gpus", "chart"), default="all",
                   help="draw one region full-screen")
    p.add_argument("--rank", help="show the log as this rank writes it")
    p.add_argument("--tmux", action="store_true", help="split this tmux window into log, GPU and chart panes")
    p.add_argument("--no-color", action="store_true", help="no colour (also: NO_COLOR=1)")
    p.add_argument("--unicode", action="store_true", help="block-character bars (UTF-8 terminals)")
    p.add_argument("--data-dir", help="read models, GPUs and datasets from this directory")
    p.add_argument("--list-models", action="store_true", help="list the models and exit")
    p.add_argument("--list-gpus", action="store_true", help="list the accelerators and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version="fake_llm_training " + __version__)
    return p


def _positive_int(text, name, lo, hi):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UsageError("%s must be a whole number, got %r" % (name, text))
    if not lo <= value <= hi:
        raise UsageError("%s must be between %d and %d, got %d" % (name, lo, hi, value))
    return value


def resolve_args(args, catalog):
    """Validate and convert every option; raise UsageError with one line."""
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1000000)
    else:
        args.seed = _positive_int(args.seed, "--seed", 0, 2 ** 63 - 1)
    try:
        args.speed = float(args.speed)
    except ValueError:
        raise UsageError("--speed must be a number, got %r" % args.speed)
    if not (0 < args.speed <= 1e9) or args.speed != args.speed:
        raise UsageError("--speed must be above 0 and at most 1e9")
    args.exit_after = parse_duration(args.exit_after) if args.exit_after else None
    args.exit_after_runs = (_positive_int(args.exit_after_runs, "--exit-after-runs", 1, 10 ** 6)
                            if args.exit_after_runs else None)
    args.rank = _positive_int(args.rank, "--rank", 0, 4095) if args.rank is not None else None
    args.start_at = parse_start_at(args.start_at) if args.start_at else None
    if args.start_at is not None and (time.time() - args.start_at) * args.speed > MAX_SESSION_SECONDS:
        raise UsageError("--start-at is too far in the past at this speed: the session would be over "
                         "%d simulated days old" % (MAX_SESSION_SECONDS // 86400))
    pins = {}
    if args.model:
        names = {n.lower(): n for n in catalog.models}
        if args.model.lower() not in names:
            hint = closest_names(args.model, list(catalog.models))
            raise UsageError("unknown --model %r%s" % (args.model, "; did you mean %s?" % ", ".join(hint)
                                                         if hint else "; see --list-models"))
        pins["model"] = names[args.model.lower()]
    if args.gpu_type:
        keys = {}
        for key, g in catalog.gpus.items():
            keys[key.lower()] = key
            keys[g.name.lower()] = key
        if args.gpu_type.lower() not in keys:
            hint = closest_names(args.gpu_type, list(catalog.gpus))
            raise UsageError("unknown --gpu-type %r%s" % (args.gpu_type, "; did you mean %s?" % ", ".join(hint)
                                                            if hint else "; see --list-gpus"))
        pins["gpu_type"] = keys[args.gpu_type.lower()]
    if args.gpus is not None:
        gpus = _positive_int(args.gpus, "--gpus", 1, 4096)
        if gpus > 8 and gpus % 8:
            raise UsageError("--gpus must be 1 to 8, or a multiple of 8 (nodes of 8 GPUs), got %d" % gpus)
        pins["gpus"] = gpus
    if args.kind:
        pins["kind"] = args.kind
    if args.style != "auto":
        pins["style"] = args.style
    if args.rank is not None and "gpus" in pins and args.rank >= pins["gpus"]:
        raise UsageError("--rank %d is not below --gpus %d" % (args.rank, pins["gpus"]))
    args.pins = pins
    args.epoch0 = args.start_at if args.start_at is not None else time.time()
    return args


def list_models(catalog, out):
    out.write("%-26s %-16s %9s %6s %6s %7s %8s\n" % ("name", "shape", "params", "layers", "hidden", "vocab", "experts"))
    for name, m in catalog.models.items():
        shape = m.shape if m.shape != name else ""
        out.write("%-26s %-16s %9s %6d %6d %7d %8s\n" % (name, shape, fmt_params(count_params(m)), m.layers,
                                                         m.hidden, m.vocab, "%dx top%d" % (m.experts, m.active)
                                                         if m.experts else "-"))


def list_gpus(catalog, out):
    out.write("%-10s %-24s %10s %8s %6s\n" % ("key", "name", "memory", "TFLOP/s", "cap"))
    for key, g in catalog.gpus.items():
        out.write("%-10s %-24s %7dMiB %8.0f %5dW\n" % (key, g.name, g.memory_mib, g.tflops, g.power_cap_w))


def install_signal_handlers():
    """SIGTERM and SIGHUP end through the same clean exit path as q."""
    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    for name in ("SIGTERM", "SIGHUP", "SIGQUIT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)


def choose_format(args, out):
    """screen on a capable terminal, else plain (with a note when TERM is the reason)."""
    if args.format in ("plain", "jsonl"):
        return args.format
    if not (out.isatty() and sys.stdin.isatty()):
        return "plain"
    term = os.environ.get("TERM", "")
    if term in ("", "dumb", "unknown"):
        sys.stderr.write("fake_llm_training: TERM=%s cannot draw a screen; writing plain log lines\n" % (term or "(unset)"))
        return "plain"
    return "screen"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["nvidia-smi"]:
        return nvidia_smi_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    install_signal_handlers()
    try:
        catalog = load_catalog(args.data_dir or DATA_DIR)
    except DataError as exc:
        sys.stderr.write("fake_llm_training: %s\n" % exc)
        return 1
    if args.list_models:
        list_models(catalog, sys.stdout)
        return 0
    if args.list_gpus:
        list_gpus(catalog, sys.stdout)
        return 0
    try:
        resolve_args(args, catalog)
        session = Session(catalog, args.seed, args.pins, args.incidents, args.from_start)
    except (UsageError, ConfigError) as exc:
        parser.print_usage(sys.stderr)
        sys.stderr.write("fake_llm_training: error: %s\n" % exc)
        return 2
    if args.tmux:
        return tmux_layout(args, argv)
    fmt = choose_format(args, sys.stdout)
    try:
        if fmt == "screen":
            return run_screen(session, args)
        return run_stream(session, args, sys.stdout)
    except KeyboardInterrupt:
        return 130


def entry_point():
    """Console-script entry: turn unexpected errors into one line unless --debug."""
    debug = "--debug" in sys.argv[1:]
    try:
        status = main()
    except SystemExit:
        raise
    except BrokenPipeError:
        # the reader went away (| head): stop quietly, and keep the interpreter's
        # final flush from complaining about the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    except Exception as exc:  # a last resort, after the terminal is restored
        if debug:
            raise
        sys.stderr.write("fake_llm_training: internal error: %s: %s (run with --debug for details)\n"
                         % (type(exc).__name__, exc))
        status = 70
    sys.exit(status)


if __name__ == "__main__":
    entry_point()
