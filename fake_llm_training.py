"""fake_llm_training: a terminal that looks as if it trains a large language model.

Run it with ``python3 -m fake_llm_training``.  Everything it shows is simulated
from one seed: a model shape gives the parameter count, the parameter count and
the cluster give FLOPs, throughput, step time and ETA, the sharding gives the
memory on each card, and so on.  Nothing is read from the real machine and
nothing is written anywhere but the terminal.

Keys on the full screen: q or Q quit, p or space pause, + and - double or halve
the speed, g cycle the GPU panel, l toggle the loss chart, L its log scale, t
its x axis in steps or tokens, ! trigger an incident, ? help (Esc or Enter
closes it).  Environment: NO_COLOR (any non-empty value) turns colour off.

The file reads top to bottom in the order data flows, each section using only
those above it: data files -> counter-based randomness -> cluster and
performance model -> run configuration -> metric model -> timeline -> GPU
telemetry -> events and the per-step record -> session -> number formats ->
dialects -> plain and JSON-lines output -> viewer's choices -> frames ->
nvidia-smi look-alike -> terminal -> command line.  Everything above
"Dialects" is the simulation and knows nothing of log formats or terminals;
the dialects and the output write what it computed; frames are pure functions
of the moment; only "Terminal" touches curses.
"""

import argparse
import base64
import bisect
import collections
import json
import math
import os
import random
import re
import signal
import sys
import time

if sys.version_info < (3, 6):     # old servers answer `python` with 2.7: one line, not a traceback
    sys.stderr.write("fake_llm_training needs Python 3.6 or newer (this is Python %d.%d); "
                     "run it with python3\n" % sys.version_info[:2])
    sys.exit(1)

__version__ = "1.0.0"


def plural(n, noun):
    """'1 node', '2 nodes'."""
    return "%d %s%s" % (n, noun, "" if n == 1 else "s")


def data_places():
    """Where data/ may be, in the order looked: beside this file (a checkout, a
    copied file with its data/, a zipapp), then where `pip install` puts it:
    share/fake_llm_training/data under the directory of this file (`--target
    DIR`), the environment's prefix, or the user base (`--user`)."""
    import site
    import sysconfig
    here = os.path.dirname(os.path.abspath(__file__))
    bases = [here, sys.prefix, sysconfig.get_path("data")]
    user_base = getattr(site, "getuserbase", lambda: None)()
    if user_base:
        bases.append(user_base)
    places = [os.path.join(here, "data")]
    for base in bases:
        path = os.path.join(base, "share", "fake_llm_training", "data")
        if base and path not in places:
            places.append(path)
    return places


def data_bytes(path):
    """A data file's bytes: from the disk, or from the archive this module was
    loaded from (a zipapp: `python3 -m zipapp` of the file, data/ and a __main__.py)."""
    loader = globals().get("__loader__")
    if os.path.isfile(path) or not hasattr(loader, "get_data"):
        with open(path, "rb") as f:
            return f.read()
    archive = os.path.abspath(getattr(loader, "archive", "/")) + os.sep    # zipimport's own names are
    return loader.get_data(path[len(archive):] if path.startswith(archive) else path)   # relative to it


def is_data_dir(path):
    """Whether `path` holds the data tables (models.txt, on the disk or in the zipapp)."""
    if os.path.isdir(path):
        return True
    try:
        data_bytes(os.path.join(path, "models.txt"))
        return True
    except (IOError, OSError):
        return False


def default_data_dir():
    """The first of data_places() that holds the tables, or None."""
    for path in data_places():
        if is_data_dir(path):
            return path
    return None


DATA_DIR = default_data_dir()
GIB = 1024 ** 3
MIB = 1024 ** 2
FRAME_SECONDS = 1.0          # a frame a second, as nvidia-smi -l 1 (keys redraw at once)
MAX_FRAME_STEP = 1.0         # wall seconds one frame may advance (suspend, debugger)
LOG_KEEP = 2000              # log lines kept for the screen
MAX_SESSION_SECONDS = 400 * 86400   # --start-at may reach this far back (in simulated time)
START_AT_END = 32535216000.0        # 3001-01-01T00:00:00Z: Windows' _gmtime64 stops at 3000-12-31 23:59:59 UTC


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
Dataset = collections.namedtuple("Dataset", "name kind tokens examples loss_level val_gap")
Fabric = collections.namedtuple("Fabric", "key platform name gbits_per_gpu weight nccl_net")
Fabric.__new__.__defaults__ = (None,)          # a model-only fabric (bench/calibrate.py) is reached by no NCCL net
# A node type (platforms.txt): its board, cards, fabrics, the 8 slots' PCI buses and the NICs NCCL lists
NodeType = collections.namedtuple("NodeType", "key board gpus fabrics bus_ids nics")
Stack = collections.namedtuple(
    "Stack", "torch cuda nccl driver driver_cuda archs megatron deepspeed transformers lightning weight prints "
             "arguments")
Filesystem = collections.namedtuple("Filesystem", "name write_gbs read_gbs node_gbs weight")
# fun: the joke names of nicknames.txt and the real names they borrow (see serious_catalog);
# node_types: platforms.txt
Catalog = collections.namedtuple("Catalog", "models gpus datasets tokenizers clusters fabrics stacks filesystems fun "
                                             "node_types")
ARCHS = ("volta", "ampere", "hopper", "ada", "blackwell")
PLATFORMS = ARCHS + ("pcie",)         # fabrics come with the board: HGX/DGX of a generation, or a PCIe server


def platform(gpu):
    return "pcie" if gpu.intra.startswith("PCIe") else gpu.arch


def _number(kind, lo, hi):
    """A parser of a number in [lo, hi] (finite: nan and inf are out of every range)."""
    def parse(text):
        value = kind(text)
        if not lo <= value <= hi:
            raise ValueError("expected a number from %.15g to %.15g, got %r" % (lo, hi, text))
        return value
    return parse


def _optional(parse):
    """'-' for none, else `parse`."""
    return lambda text: None if text == "-" else parse(text)


# Bounds of the numeric columns: positive (weights: not negative) and far beyond any real value,
# so that a typo (an extra digit or three, a missing one, nan) is a data error, not a hang or a crash.
SIZE = _number(int, 1, 2 ** 20)          # layers, widths, heads: no model has a million of any
WEIGHT = _number(int, 0, 10 ** 6)        # draw weights
BANDWIDTH = _number(float, 0.01, 1e6)    # GB/s and Gbit/s


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


def _names(text):
    """'a,b,c' -> ('a', 'b', 'c')."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise ValueError("expected names separated by commas, got %r" % text)
    return names


def _bus_ids(text):
    """Eight PCI bus numbers in hex, one per GPU slot."""
    ids = _names(text)
    if len(ids) != 8 or not all(re.match(r"^[0-9a-f]{2}$", b) for b in ids):
        raise ValueError("expected 8 two-digit lower-case hex bus numbers, got %r" % text)
    return ids


LOSS_LEVELS = (0.3, 1.5)     # a corpus's loss relative to web text: code ~0.55 is the lowest we know of
MAX_VAL_GAP = 0.2            # the jsonl referee wants validation within 20% of the training loss


# Each file: its columns and how each column is parsed.
TABLES = {
    "models.txt": [("name", str), ("family", str), ("layers", SIZE), ("hidden", SIZE),
                   ("heads", SIZE), ("kv_heads", SIZE), ("head_dim", _optional(SIZE)),
                   ("ffn_hidden", SIZE), ("vocab", _number(int, 2, 2 ** 24)), ("context", _number(int, 256, 2 ** 24)),
                   ("tied", _yes_no), ("mlp", _choice("swiglu", "geglu", "gelu")),
                   ("experts", _optional(SIZE)), ("active", _optional(SIZE))],
    "nicknames.txt": [("name", str), ("shape", str)],
    "gpus.txt": [("key", str), ("name", str), ("memory_mib", _number(int, 1024, 2 ** 24)),
                 ("tflops", _number(float, 1, 1e6)), ("power_cap_w", _number(int, 10, 10000)),
                 ("idle_w", _number(int, 1, 10000)), ("link_gbs", BANDWIDTH), ("intra", str),
                 ("arch", _choice(*ARCHS)), ("hbm_gbs", BANDWIDTH), ("kernel_eff", _number(float, 0.01, 0.99)),
                 ("precision", _choice("bf16", "fp16")), ("weight", WEIGHT)],
    "fabrics.txt": [("key", str), ("platform", _choice(*PLATFORMS)), ("fabric", str), ("gbits_per_gpu", BANDWIDTH),
                    ("nccl_net", _choice("IB", "RoCE", "Socket", "Libfabric", "GPUDirectTCPX")), ("weight", WEIGHT)],
    "platforms.txt": [("key", str), ("board", str), ("gpus", _names), ("fabrics", _names), ("bus_ids", _bus_ids),
                      ("nics", _names)],
    "stacks.txt": [("torch", str), ("cuda", str), ("nccl", str), ("driver", str), ("driver_cuda", str),
                   ("archs", str), ("megatron", str), ("deepspeed", str), ("transformers", str),
                   ("lightning", str), ("weight", WEIGHT)],
    "filesystems.txt": [("name", str), ("write_gbs", BANDWIDTH), ("read_gbs", BANDWIDTH), ("node_gbs", BANDWIDTH),
                        ("weight", WEIGHT)],
    "datasets.txt": [("name", str), ("kind", _choice("pretrain", "finetune")),
                     ("tokens", _number(int, 10 ** 6, 10 ** 16)), ("examples", _optional(_number(int, 1, 10 ** 10))),
                     ("loss_level", _number(float, *LOSS_LEVELS)), ("val_gap", _number(float, 0, MAX_VAL_GAP))],
    "tokenizers.txt": [("family", str), ("tokenizer", str), ("architecture", str),
                       ("pretrain_tokens", _number(float, 1e9, 1e15)), ("source", str)],
    "clusters.txt": [("hostname", str), ("first", _number(int, 0, 10 ** 6)), ("platforms", _names)],
    "printers.txt": [("package", str), ("since", str), ("field", str), ("value", str), ("source", str)],
    "arguments.txt": [("framework", _choice("megatron", "megatron-deepspeed")), ("argument", str), ("value", str),
                      ("since", str), ("until", str), ("source", str)],
}
KEY_COLUMNS = {"printers.txt": 3, "arguments.txt": 3}     # columns that name a row (the rest: 1, the first)
PRINTED_BY = ("torch", "nccl", "driver", "megatron", "deepspeed", "transformers", "lightning")   # versioned packages


def version_key(text):
    """'2.24.3-1' -> (2, 24, 3, 1): a release as numbers, to compare releases."""
    parts = re.findall(r"\d+", text)
    if not parts:
        raise ValueError("not a version: %r" % text)
    return tuple(int(p) for p in parts)


# Characters no cell may hold: C0 and C1 controls, line and paragraph separators (they would break a log line)
CONTROL_CHARACTER = re.compile(u"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def read_table(path, columns, key=1):
    """Rows of a "|"-separated file with a header line, as lists of parsed values;
    no two rows share their first `key` values."""
    name = os.path.basename(path)
    try:
        raw = data_bytes(path)
    except (IOError, OSError) as exc:
        raise DataError("%s: cannot read: %s" % (path, exc.strerror or exc))
    try:
        text = raw.decode("utf-8-sig")            # a byte-order mark (Windows editors) is not content
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError("%s:%d: not valid UTF-8" % (path, line))
    rows, header, seen = [], None, set()
    for number, line in enumerate(text.split("\n"), 1):     # lines end at \n only (\r\n too): the editor's numbers
        line = line.rstrip("\r").strip(" \t")
        if not line or line.startswith("#"):
            continue
        bad = CONTROL_CHARACTER.search(line)
        if bad:
            raise DataError("%s:%d: control character %r in the line" % (path, number, bad.group()))
        cells = [cell.strip(" \t") for cell in line.split("|")]
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
        name = tuple(values[:key]) if key > 1 else values[0]
        if name in seen:
            raise DataError("%s:%d: duplicate %s %r" % (path, number, " ".join(c for c, _ in columns[:key]), name))
        seen.add(name)
        rows.append((number, values))
    if header is None or not rows:
        raise DataError("%s:1: no records in %s" % (path, name))
    return rows


# A host name pattern: RFC 1123 characters around one node number, plain or zero-padded ({n}, {n:03d})
HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9.-]*\{n(:0?[1-9]?d)?\}[A-Za-z0-9.-]*$")


def _machine_room(tables, data_dir, gpus, fabrics):
    """Node types and host name schemes, checked: each names known cards and fabrics of its
    platform, every card has a node type on a fabric in use, every node type a name scheme."""
    def where(name, number):
        return "%s:%d" % (os.path.join(data_dir, name), number)
    by_key = dict((f.key, f) for f in fabrics)
    node_types = [NodeType(*v) for _, v in tables["platforms.txt"]]
    for (number, _), nt in zip(tables["platforms.txt"], node_types):
        for g in nt.gpus:
            if g not in gpus or any(f not in by_key or by_key[f].platform != platform(gpus[g]) for f in nt.fabrics):
                raise DataError("%s: gpus must be in gpus.txt and fabrics in fabrics.txt, of the cards' platform"
                                % where("platforms.txt", number))
            if sum(1 for other in node_types if g in other.gpus and set(nt.fabrics) & set(other.fabrics)) > 1:
                raise DataError("%s: %s on %s is already another node type" % (
                    where("platforms.txt", number), g, ",".join(nt.fabrics)))
    for number, g in enumerate(gpus.values(), 1):
        if not any(g.key in nt.gpus and by_key[f].weight > 0 for nt in node_types for f in nt.fabrics):
            raise DataError("%s: no node type in platforms.txt carries %s on a fabric in use"
                            % (where("platforms.txt", 1), g.key))
    clusters = []
    for number, (pattern, first, types) in tables["clusters.txt"]:
        if not HOSTNAME_PATTERN.match(pattern):
            raise DataError("%s: hostname pattern %r must be letters, digits, '-' and '.' around one {n} "
                            "or {n:03d}" % (where("clusters.txt", number), pattern))
        if any(t not in [nt.key for nt in node_types] for t in types):
            raise DataError("%s: platforms must be keys of platforms.txt" % where("clusters.txt", number))
        clusters.append((pattern, first, types))
    for nt in node_types:
        if not any(nt.key in types for _, _, types in clusters):
            raise DataError("%s: node type %s has no host name scheme" % (where("clusters.txt", 1), nt.key))
    return node_types, clusters


def serious_catalog(catalog):
    """The catalog a session draws from unless --fun: each joke name's slot holds the real
    model or corpus it borrows, so a seed draws the same figures with or without --fun
    and only real names show."""
    corpora = dict((d.name, d) for d in catalog.datasets)
    return catalog._replace(
        models=collections.OrderedDict((n, catalog.models[m.shape] if n in catalog.fun else m)
                                       for n, m in catalog.models.items()),
        datasets=[corpora[catalog.fun[d.name]] if d.name in catalog.fun else d for d in catalog.datasets])


def model_names(catalog):
    """The names a user may pin and list (a joke name only under --fun)."""
    return [name for name, model in catalog.models.items() if model.name == name]


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
        if g.idle_w >= g.power_cap_w:
            raise DataError("%s: idle_w must be below power_cap_w" % where("gpus.txt", number))
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


# The fields of printers.txt the dialects ask for, so that a damaged file is found when it
# loads, not when a line first needs it.
PRINTED_FIELDS = frozenset("""
    deepspeed.ckpt_commit deepspeed.ckpt_load_begin deepspeed.ckpt_load_end
    deepspeed.ckpt_saving deepspeed.config_arg deepspeed.config_json deepspeed.config_name
    deepspeed.exits deepspeed.hysteresis deepspeed.kill deepspeed.launch_devices
    deepspeed.launch_mapping deepspeed.launch_nnodes deepspeed.launch_size
    deepspeed.launch_world deepspeed.log_dist deepspeed.runner_cmd deepspeed.runner_ip
    deepspeed.scale_reduced deepspeed.timer deepspeed.workers deepspeed.zero12_buckets
    deepspeed.zero3_buckets deepspeed.zero_saved hf.completed hf.config_saved hf.continuing
    hf.generation_config_saved hf.loading_weights hf.logged_lr hf.min_lr_cosine hf.running_eval
    hf.running_training hf.save_checkpoint hf.special_tokens_saved hf.tokenizer_config_saved
    hf.weights_saved hf.weights_sharded hf.weights_used lightning.ipu_line lightning.mode_column
    megatron.load megatron.load_release megatron.world_size nccl.bootstrap nccl.complete_thread
    nccl.init_complete nccl.init_start nccl.p2p nccl.peer nccl.rank_layout pg.abort_lines
    pg.abort_who pg.detected pg.detected_line pg.prefix pg.timeout_line run.failed_line
    run.ident run.omp_line run.prefix smi.bus_width smi.cap_width smi.pid_width
""".split())


class Printed(dict):
    """A stack's printed strings by field: read-only in use, and hashable like the stack that holds it."""
    def __hash__(self):
        return hash(tuple(sorted(self.items())))


def _unquoted(value):
    """A cell's text: '""' is the empty string, quotes keep the spaces at a value's ends."""
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value


def _argument_sets(tables, data_dir):
    """arguments.txt by framework: (argument, value, since, until) with the releases as numbers
    (None: no bound); only Megatron-LM has releases to bound an argument by."""
    sets = collections.defaultdict(list)
    for number, (framework, argument, value, since, until, _) in tables["arguments.txt"]:
        try:
            bounds = [None if b == "-" else version_key(b) for b in (since, until)]
        except ValueError as exc:
            raise DataError("%s:%d: columns since and until: %s" % (
                os.path.join(data_dir, "arguments.txt"), number, exc))
        if framework != "megatron" and bounds != [None, None]:
            raise DataError("%s:%d: %s has no releases: since and until must be -" % (
                os.path.join(data_dir, "arguments.txt"), number, framework))
        sets[framework].append((argument, _unquoted(value), bounds[0], bounds[1]))
    return sets


def _stack_arguments(sets, megatron):
    """Each framework's default arguments in a stack whose Megatron-LM release is `megatron`."""
    release = version_key(megatron)
    return Printed((framework, tuple((argument, value) for argument, value, since, until in rows
                                     if (since is None or since <= release) and (until is None or release < until)))
                   for framework, rows in sets.items())


def _stacks(tables, data_dir):
    """The stacks, each with `prints`: for every field of printers.txt, what that stack's
    release of the package prints (the row with the newest `since` not after it), and
    `arguments`: each framework's default arguments in that stack (arguments.txt)."""
    rows = collections.defaultdict(list)
    package_of = {}
    for number, (package, since, field, value, _) in tables["printers.txt"]:
        where = "%s:%d" % (os.path.join(data_dir, "printers.txt"), number)
        try:
            since_key = version_key(since)
        except ValueError as exc:
            raise DataError("%s: column since: %s" % (where, exc))
        if field not in PRINTED_FIELDS:
            raise DataError("%s: unknown field %r" % (where, field))
        if package not in PRINTED_BY or package_of.setdefault(field, package) != package:
            raise DataError("%s: field %r must belong to one package among %s" % (where, field, ", ".join(PRINTED_BY)))
        rows[field].append((since_key, _unquoted(value)))
    missing = sorted(PRINTED_FIELDS - set(rows))
    if missing:
        raise DataError("%s:%d: no row gives the field %r" % (
            os.path.join(data_dir, "printers.txt"), tables["printers.txt"][-1][0], missing[0]))
    argument_sets = _argument_sets(tables, data_dir)
    stacks = []
    for number, v in tables["stacks.txt"]:
        prints = Printed()
        for field, versions in rows.items():
            try:
                release_key = version_key(v[Stack._fields.index(package_of[field])])
            except ValueError as exc:
                raise DataError("%s:%d: column %s: %s" % (os.path.join(data_dir, "stacks.txt"), number,
                                                          package_of[field], exc))
            known = [(since, value) for since, value in versions if since <= release_key]
            if not known:
                raise DataError("%s:%d: printers.txt has no %s row for this stack's %s" %
                                (os.path.join(data_dir, "stacks.txt"), number, field, package_of[field]))
            prints[field] = max(known)[1]
        megatron = v[Stack._fields.index("megatron")]
        stacks.append(Stack(*v, prints=prints, arguments=_stack_arguments(argument_sets, megatron)))
    return stacks


def model_problem(model):
    """Why a model shape cannot be real, or ''."""
    if min(model.layers, model.hidden, model.heads, model.kv_heads, model.ffn_hidden, model.vocab) <= 0:
        return "sizes must be positive"
    if model.heads % model.kv_heads:
        return "heads must be a multiple of kv_heads"
    if model.head_dim is None and model.hidden % model.heads:
        return "hidden must be divisible by heads (or give head_dim)"
    if (model.experts is None) != (model.active is None) or (model.experts and not 0 < model.active <= model.experts):
        return "experts and active go together, with 0 < active <= experts"
    return ""


def load_catalog(data_dir=DATA_DIR):
    """Read every data file; raise DataError naming the first problem."""
    if data_dir is None:
        raise DataError("data directory not found; looked in %s (or name one with --data-dir)"
                        % ", ".join(data_places()))
    if not is_data_dir(data_dir):
        raise DataError("%s: data directory not found" % data_dir)
    tables = {name: read_table(os.path.join(data_dir, name), columns, KEY_COLUMNS.get(name, 1))
              for name, columns in sorted(TABLES.items())}
    models = collections.OrderedDict()
    for number, v in tables["models.txt"]:
        model = Model(*v, shape=v[0])
        problem = model_problem(model)
        if problem:
            raise DataError("%s:%d: %s" % (os.path.join(data_dir, "models.txt"), number, problem))
        models[model.name] = model
    datasets = [Dataset(*v) for _, v in tables["datasets.txt"]]
    corpora = dict((d.name, d) for d in datasets)
    for number, (name, shape) in tables["nicknames.txt"]:
        where = os.path.join(data_dir, "nicknames.txt")
        if shape not in models and shape not in corpora:
            raise DataError("%s:%d: shape %r is not in models.txt or datasets.txt" % (where, number, shape))
        if name in models or name in corpora:
            raise DataError("%s:%d: duplicate name %r" % (where, number, name))
        if shape in models:
            models[name] = models[shape]._replace(name=name)
        else:
            datasets.append(corpora[shape]._replace(name=name))
    tokenizers = {family: (tok, arch, tokens) for _, (family, tok, arch, tokens, _src) in tables["tokenizers.txt"]}
    for number, v in tables["models.txt"]:
        if v[1] not in tokenizers:
            raise DataError("%s:%d: family %r has no line in tokenizers.txt" %
                            (os.path.join(data_dir, "models.txt"), number, v[1]))
    gpus = _hardware_tables(tables, data_dir)
    for kind in ("pretrain", "finetune"):
        if not any(d.kind == kind for d in datasets):
            raise DataError("%s:1: no %s dataset" % (os.path.join(data_dir, "datasets.txt"), kind))
    for number, d in tables["datasets.txt"]:
        if d[1] == "finetune" and not d[3]:
            raise DataError("%s:%d: a finetune dataset needs examples" %
                            (os.path.join(data_dir, "datasets.txt"), number))
        if not (LOSS_LEVELS[0] <= d[4] <= LOSS_LEVELS[1] and 0 <= d[5] < MAX_VAL_GAP):
            raise DataError("%s:%d: need %g <= loss_level <= %g and 0 <= val_gap < %g" %
                            ((os.path.join(data_dir, "datasets.txt"), number) + LOSS_LEVELS + (MAX_VAL_GAP,)))
    fabrics = [Fabric(key=v[0], platform=v[1], name=v[2], gbits_per_gpu=v[3], nccl_net=v[4], weight=v[5])
               for _, v in tables["fabrics.txt"]]
    node_types, clusters = _machine_room(tables, data_dir, gpus, fabrics)
    return Catalog(models, gpus, datasets, tokenizers, clusters, fabrics,
                   _stacks(tables, data_dir),
                   [Filesystem(*v) for _, v in tables["filesystems.txt"]],
                   dict((name, shape) for _, (name, shape) in tables["nicknames.txt"]), node_types)


def head_dim(model):
    return model.head_dim or model.hidden // model.heads


def count_params(model, active_only=False):
    """Parameters of a decoder-only transformer with this shape."""
    hd = head_dim(model)
    attention = model.hidden * hd * (2 * model.heads + 2 * model.kv_heads)
    mlp = (2 if model.mlp == "gelu" else 3) * model.hidden * model.ffn_hidden
    router = model.hidden * model.experts if model.experts else 0
    experts = (model.active if active_only else model.experts) if model.experts else 1
    per_layer = attention + experts * mlp + router + 2 * model.hidden
    embeddings = model.vocab * model.hidden * (1 if model.tied else 2)
    return model.layers * per_layer + embeddings + model.hidden


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
# The step record and the instruments (micro-batch losses, hiccups, timers, NCCL, log stamps)
S_MICRO, S_GC, S_DATA_STALL, S_EVAL_TIME, S_CKPT_TIME, S_NCCL, S_STAMP = 14, 15, 16, 17, 18, 19, 20
# Incidents the viewer forces (counter 3 * step + kind), process ids (counter per node and attempt)
S_FORCED, S_PID = 21, 22
# The spare node that replaces a drained one (counter: the relaunch)
S_SPARE = 23


########################################################################
# Cluster and performance model (pure: from the seed, the shape and the layout)
########################################################################
# A session runs on one cluster: the seed picks the card, the nodes, the links
# inside and between nodes, the filesystem and one software stack, and keeps
# them for every job.  A job's optimizer step takes compute time (FLOPs over
# the card's sustained rate) plus the communication that does not hide behind
# compute, plus the optimizer and the data loader: MFU and tokens/s follow.

Cluster = collections.namedtuple(
    "Cluster", "gpu nodes gpus_per_node fabric fabric_gbs fs stack hostname first_node node_type")
Cluster.__new__.__defaults__ = (None,)         # a model-only cluster (bench/calibrate.py) has no machine room
Layout = collections.namedtuple("Layout", "tp pp cp ep vp dp sharding recompute mbs")
StepParts = collections.namedtuple("StepParts", "compute comm optimizer data")
# Bytes on one GPU: allocated at the step's peak, of which `states` (weights, gradients,
# optimizer states) stay allocated between steps; the allocator's reserved pool;
# the CUDA context; NCCL's buffers.
Memory = collections.namedtuple("Memory", "allocated reserved context nccl states")

JOB_SIZES = (8, 16, 32, 64, 128, 256, 512, 576, 1024, 2048, 4096)   # GPUs a job asks for (576: NeMo's 405B)
SHORTEST_SEQ = 2048                   # the shortest sequence a drawn run trains on
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
NONGEMM_BYTES = 250.0                 # HBM bytes a token moves outside the GEMMs (norms, activations, residuals,
                                      # rotary, casts), per layer and hidden unit, forward and backward, with
                                      # Transformer Engine's fused kernels: on an H100 (295 FLOP/byte) the GEMMs
                                      # then take 80% of a 4096-wide model's compute, 93% of a 16384-wide one's
GEMM_FLOPS_H2 = 72.0                  # GEMM FLOPs a token costs per layer, over h^2: 6 x 12 h^2 (fwd + bwd)
FUSION_GAP_BYTES = {"megatron": 0.0, "torchtitan": 0.0}   # further bytes where fewer ops are fused: Megatron-Core
FUSION_GAP_DEFAULT = 100.0            # (TE) is the baseline kernel_eff was calibrated on; torchtitan compiles
                                      # its blocks; HF/Composer/DeepSpeed/Lightning run norms, activations and
                                      # rotary eagerly (calibration rows 9-11: MPT under llm-foundry, H100 worst)
FP8_GEMM_SPEEDUP = 2.0                # FP8 GEMM over BF16 at best (twice the peak), end-to-end ~1.45x (NeMo tables)
FP8_WIDTH_KNEE = 300.0                # narrow GEMMs gain less: casts and scaling cost as much as the math; from
                                      # 4096 wide an FP8 GEMM runs ~1.9x its BF16 twin (cuBLAS on H100: ~1450 vs
                                      # ~750 TFLOP/s), which with Hopper's BF16 efficiency keeps the NeMo FP8 rows
HIDDEN_KNEE = 420.0                   # GEMMs narrower than this per TP rank run well below peak
TOKENS_KNEE = 256.0                   # tokens per micro-batch below which kernels starve
GRAD_REDUCE_BYTES = {"megatron": 4.0, "torchtitan": 4.0}   # bytes a gradient crosses the wire: Megatron reduces
                                      # in fp32 for bf16 ("bfloat16 requires gradient accumulation and all-reduce
                                      # to be done in fp32", arguments.py; NeMo's grad_reduce_in_fp32=True),
                                      # torchtitan's mixed_precision_reduce defaults to float32; DeepSpeed and
                                      # the HF/Lightning FSDP bf16 policies reduce in bf16 (2); DDP under AMP: fp32
ADAM_BYTES = 30                       # per parameter: fp32 master, m, v read+written, grad read, bf16 write
HBM_EFFICIENCY = 0.7                  # a fused Adam kernel reaches ~70% of HBM bandwidth
DATA_FIXED_S = 0.004                  # per step: the loader's hand-off and the host-to-device copy
SCALE_JITTER = 0.006                  # per doubling of nodes: the slowest rank sets the pace
RECOMPUTE_FLOPS = {"none": 1.0, "selective": 1.03, "full": 4.0 / 3.0}   # extra forward (Korthikanti et al.)
ACT_BYTES = {"none": 34.0, "selective": 22.0, "full": 2.0}   # per token, layer and hidden unit (Korthikanti et al.)
ZERO_LEVEL = {"none": 0, "zero1": 1, "zero2": 2, "zero3": 3, "fsdp": 3}


def weighted(rng, items, weight):
    """One of items, as often as weight(item) says: the draw rng.choice makes from a pool
    holding weight(x) copies of each x, without building the pool."""
    k = rng.randrange(sum(weight(x) for x in items))
    for x in items:
        k -= weight(x)
        if k < 0:
            return x


def node_type_of(catalog, gpu, fabric):
    """The node type (platforms.txt) that carries this card on this fabric, or None."""
    for nt in catalog.node_types:
        if gpu.key in nt.gpus and fabric.key in nt.fabrics:
            return nt
    return None


def flops_per_token(model, seq, active):
    """Model FLOPs per token, forward and backward: 6N plus attention (Kaplan/PaLM accounting)."""
    return 6 * active + 12 * model.layers * model.hidden * seq


def stage_layers(model, pp):
    """Layers on the fullest pipeline stage (Megatron splits unevenly when it must)."""
    return int(math.ceil(model.layers / float(pp)))


def layers_on_stage(model, pp, stage):
    """Layers of pipeline stage `stage`: an even split; where it cannot be, the first stages one more."""
    return model.layers // pp + (1 if stage < model.layers % pp else 0)


def rank_params(model, L, stage, vocab=None):
    """Parameters one (tensor, pipeline) rank holds, laid out as Megatron-Core builds them: each
    layer's GEMM weights split over TP (experts over EP), its two norms and the router whole on
    every TP rank; the vocabulary-parallel embedding on the first stage; the final norm and the
    output layer on the last (with tied embeddings across stages, a copy of the embedding there).
    `vocab`: the vocabulary as padded (Megatron: to a multiple of 128 x TP)."""
    h, vocab = model.hidden, vocab or model.vocab
    mlp = (2 if model.mlp == "gelu" else 3) * h * model.ffn_hidden
    attention = h * head_dim(model) * (2 * model.heads + 2 * model.kv_heads)
    if model.experts:
        layer = attention // L.tp + model.experts * mlp // (L.ep if L.ep > 1 else L.tp) + h * model.experts
    else:
        layer = (attention + mlp) // L.tp
    count = layers_on_stage(model, L.pp, stage) * (layer + 2 * h)
    if stage == 0:
        count += vocab * h // L.tp
    if stage == L.pp - 1:
        count += h + (vocab * h // L.tp if not model.tied or L.pp > 1 else 0)
    return count


def in_flight_layers(model, L, grad_accum, stage):
    """Layers' worth of micro-batch activations stage `stage` holds at its peak.  1F1B runs
    pp - stage forwards before its first backward; the interleaved schedule warms up with
    2 (pp - stage - 1) + (vp - 1) pp chunks of a vp-th of the stage's layers, plus the one in
    flight (Megatron-Core pipeline_parallel/schedules.py, num_warmup_microbatches)."""
    layers = layers_on_stage(model, L.pp, stage)
    if L.pp == 1:
        return layers
    if L.vp == 1:
        return min(L.pp - stage, grad_accum) * layers
    chunks = min(L.vp * grad_accum, 2 * (L.pp - stage - 1) + (L.vp - 1) * L.pp + 1)
    return chunks * layers / float(L.vp)


def param_split(model, params, active):
    """(dense parameters, expert parameters) of a shape."""
    if not model.experts:
        return params, 0
    mlp = (2 if model.mlp == "gelu" else 3) * model.hidden * model.ffn_hidden
    experts = model.layers * model.experts * mlp
    return params - experts, experts


def sharded_params(model, params, active, L):
    """Parameters one GPU of the fuller end stage holds before data-parallel sharding."""
    return max(rank_params(model, L, 0), rank_params(model, L, L.pp - 1))


def memory_total(mem):
    """What nvidia-smi shows for the process: framework reserved + CUDA context + NCCL buffers."""
    return mem.reserved + mem.context + mem.nccl


def memory_model(model, params, active, L, seq, framework, grad_accum=1, stage=None):
    """Bytes one GPU of pipeline stage `stage` holds, the way its framework allocates them
    (Memory); without a stage, the stage that needs most: the first holds the embedding and
    the most micro-batches in flight, the last the logits and the output layer."""
    if stage is None:
        return max((memory_model(model, params, active, L, seq, framework, grad_accum, s) for s in (0, L.pp - 1)),
                   key=memory_total)
    shard = rank_params(model, L, stage)
    layer_shard = shard / float(layers_on_stage(model, L.pp, stage))
    group = L.dp * L.cp                       # Megatron's distributed optimizer shards over dp x cp
    zero = ZERO_LEVEL[L.sharding]
    if L.sharding == "fsdp":                  # FSDP mixed precision: fp32 params, grads, Adam m, v sharded
        states = 16.0 * shard / group + 2 * 2.0 * layer_shard   # plus the gathered and the prefetched layer
    elif L.sharding == "none":                # DDP with autocast: fp32 weights, grads, Adam m, v
        states = 16.0 * shard
    else:
        grad_bytes = 4.0 if framework == "megatron" else 2.0        # Megatron keeps fp32 main grads
        states = (2.0 * shard / (group if zero >= 3 else 1) + grad_bytes * shard / (group if zero >= 2 else 1)
                  + 12.0 * shard / group)     # fp32 master weights, Adam m and v
        if zero >= 3:
            states += 2 * 2.0 * layer_shard
    tokens = L.mbs * seq / float(L.cp)
    coef = ACT_BYTES[L.recompute] * (1 + 0.5 * (model.active - 1) if model.experts else 1)
    act = tokens * model.hidden * coef / L.tp * in_flight_layers(model, L, grad_accum, stage)
    if L.recompute == "full":
        act += tokens * model.hidden * ACT_BYTES["none"] / L.tp       # the layer being recomputed
    logits = 2 * 4.0 * tokens * model.vocab / L.tp if stage == L.pp - 1 else 0.0   # fp32 logits and gradient
    allocated = states + act + logits
    groups = sum(1 for x in (L.tp, L.pp, L.cp, L.ep) if x > 1)
    return Memory(allocated, allocated * ALLOCATOR_SLACK, CONTEXT_BYTES, NCCL_BASE_BYTES + NCCL_GROUP_BYTES * groups,
                  states)


def fits(gpu, mem):
    return memory_total(mem) <= gpu.memory_mib * MIB * CARD_HEADROOM


def nongemm_ratio(gpu, model, extra_bytes):
    """Time of the HBM-bound work outside the GEMMs over the GEMMs' own, for `extra_bytes` a token,
    layer and hidden unit: bytes ~ h against FLOPs ~ h^2, so it falls with width and grows with the
    card's FLOPs per byte of HBM bandwidth (A100 153, H100 295: the same code fuses worse on Hopper)."""
    return extra_bytes * gpu.tflops * 1e3 / gpu.hbm_gbs / (GEMM_FLOPS_H2 * model.hidden)


def kernel_efficiency(gpu, model, L, seq, precision, framework="megatron"):
    """Fraction of the card's peak the step's kernels sustain: wide GEMMs and long
    micro-batches run near the card's best, attention (flash) somewhat below it, and
    frameworks that fuse less spend longer in memory-bound elementwise kernels."""
    width = model.hidden / math.sqrt(L.tp)
    tokens = L.mbs * seq / float(L.cp)
    eff = gpu.kernel_eff / (1 + HIDDEN_KNEE / width) / (1 + TOKENS_KNEE / tokens)
    eff /= 1 + nongemm_ratio(gpu, model, FUSION_GAP_BYTES.get(framework, FUSION_GAP_DEFAULT))
    attention = 12.0 * model.layers * model.hidden * seq / flops_per_token(model, seq, count_params(model, True))
    eff /= (1 - attention) + attention / 0.75       # flash attention reaches ~3/4 of GEMM efficiency
    return eff


def link_gbs(cluster, span, per_node=1):
    """Bus bandwidth (GB/s per GPU) of a group `span` GPUs wide: NVLink/PCIe inside a node, else the fabric.
    A ring or tree crosses each node boundary once per channel, and NCCL spreads its channels over the
    node's NICs: a collective whose group has `per_node` members on every node (and its sibling groups,
    running the same collective at the same moment) shares the NICs of those members, so its bus bandwidth
    is per_node NIC shares, up to the link inside.  nccl-tests across 8-GPU A100 nodes with 4 HDR NICs:
    all-reduce bus bandwidth 85-96 GB/s of the node's 100 GB/s (nccl-tests #119, nccl #1048), not 12.5."""
    gpu = cluster.gpu
    inside = gpu.link_gbs * (PCIE_EFFICIENCY if platform(gpu) == "pcie" else LINK_EFFICIENCY)
    if span <= cluster.gpus_per_node:
        return inside
    return min(inside, per_node * cluster.fabric_gbs * FABRIC_EFFICIENCY)


def dp_seconds(model, params, active, cluster, L, framework, grad_accum, mb_compute, bubble, precision):
    """Exposed data-parallel time: gradient reduction and (FSDP/ZeRO-3) parameter gathers.
    The gathers hide behind the compute they prefetch for; the reduction behind the last
    backward and, with a pipeline, behind the stage's idle cool-down (the bubble)."""
    if L.dp * L.cp == 1:
        return 0.0
    shard = sharded_params(model, params, active, L)
    n = L.dp * L.cp
    per_node = max(1, min(n, cluster.gpus_per_node // L.tp))     # ranks of one dp x cp group on a node
    bw = link_gbs(cluster, L.tp * L.pp * L.cp * L.dp if cluster.nodes > 1 else 1, per_node) * 1e9
    frac = (n - 1.0) / n
    grad_bytes = 4.0 if L.sharding == "none" else GRAD_REDUCE_BYTES.get(framework, 2.0)
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


def model_parallel_seconds(model, cluster, L, seq, grad_accum, compute, framework="megatron"):
    """Exposed TP, CP, PP and MoE time per step (pipeline bubble included)."""
    tokens = L.mbs * seq / float(L.cp)
    act = tokens * model.hidden * 2.0
    layers = stage_layers(model, L.pp) * grad_accum
    t = 0.0
    if L.tp > 1:
        collectives = 6 if L.recompute == "full" else 4    # 2 forward, 2 backward (+2 recomputed)
        exposed = 1.0 if platform(cluster.gpu) == "pcie" else TP_EXPOSED.get(framework, TP_EXPOSED_DEFAULT)
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


def step_parts(model, params, active, cluster, L, seq, grad_accum, framework, precision):
    """Wall time of one optimizer step, in its parts (seconds)."""
    gpu = cluster.gpu
    gpus = L.tp * L.pp * L.cp * L.dp
    tokens = L.mbs * L.dp * grad_accum * seq
    flops = flops_per_token(model, seq, active) * tokens / gpus * RECOMPUTE_FLOPS[L.recompute]
    flops *= stage_layers(model, L.pp) * L.pp / float(model.layers)   # the fullest stage sets the pipeline's pace
    compute = flops / (gpu.tflops * 1e12 * kernel_efficiency(gpu, model, L, seq, precision, framework))
    if precision == "fp8":                   # FP8 GEMMs: the wider the GEMM, the closer to the FP8 peak
        width = model.hidden / math.sqrt(L.tp)
        gain = 1 + ((FP8_GEMM_SPEEDUP - 1) * width / (width + FP8_WIDTH_KNEE)
                    * FP8_TE_SHARE.get(framework, FP8_OTHER_SHARE))
        gap = FUSION_GAP_BYTES.get(framework, FUSION_GAP_DEFAULT)
        gemm_share = 1 / (1 + nongemm_ratio(gpu, model, NONGEMM_BYTES + gap))
        compute *= 1 - gemm_share * (1 - 1 / gain)
    bubble = pipeline_bubble(L, grad_accum, compute)
    comm = (dp_seconds(model, params, active, cluster, L, framework, grad_accum, compute / grad_accum, bubble, precision)
            + model_parallel_seconds(model, cluster, L, seq, grad_accum, compute, framework)
            + compute * SCALE_JITTER * math.log(max(1, gpus // cluster.gpus_per_node), 2))
    shard = sharded_params(model, params, active, L) / (L.dp * L.cp if L.sharding != "none" else 1)
    optimizer = shard * ADAM_BYTES / (gpu.hbm_gbs * 1e9 * HBM_EFFICIENCY)
    data = DATA_FIXED_S + 0.004 * compute
    return StepParts(compute, comm, optimizer, data)


def forward_seconds(parts, recompute):
    """A forward pass alone over one step's tokens (evaluation): a third of the step's model
    FLOPs (2N of 6N per token), nothing recomputed, no gradient reduction, no optimizer, no
    accumulation; the loader still feeds it.  About three times training's tokens/s per GPU."""
    return parts.compute / RECOMPUTE_FLOPS[recompute] / 3.0 + parts.data


def model_tflops_per_gpu(flops_per_tok, tokens_per_s, gpus):
    """Model TFLOP/s each GPU does at this token rate (the figure frameworks print)."""
    return flops_per_tok * tokens_per_s / gpus / 1e12


def mfu_of(flops_per_tok, tokens_per_s, gpus, tflops):
    """Model FLOPs utilisation: model FLOPs per second over the cluster's dense peak."""
    return model_tflops_per_gpu(flops_per_tok, tokens_per_s, gpus) / tflops


FRAMEWORK_SHARDINGS = {"megatron": ("zero1",), "torchtitan": ("fsdp",), "deepspeed": ("zero1", "zero2", "zero3"),
                   "hf": ("none", "fsdp", "zero3"), "lightning": ("none", "fsdp")}
FRAMEWORK_RECOMPUTE = {"megatron": ("none", "selective", "full"), "torchtitan": ("none", "selective", "full"),
                   "deepspeed": ("none", "full"), "hf": ("none", "full"), "lightning": ("none", "full")}
CP_MIN_SEQ = 16384     # context parallelism for long sequences.  NeMo uses CP2 from 8k (calibration rows
                       # 20, 22, 23, 25 run it through step_parts); drawn runs use it for the long-context
                       # continued pretraining of LONG_CONTEXT_SEQS (Megatron: tp * pp * cp * dp = world)
CP_MIN_TOKENS = 4096   # tokens of a sequence each CP rank keeps at least (Llama 3's 128k stage: CP16 x 8k)
FRAMEWORK_PP = {"megatron": (1, 2, 4, 8, 9, 16), "deepspeed": (1, 2, 4, 8, 16), "torchtitan": (1, 2, 4, 8)}


def layouts(model, gpus, gpus_per_node, framework, seq):
    """Parallel layouts this framework can run (recompute and micro-batch left open):
    TP inside a node, PP across nodes, CP for long sequences, EP for experts."""
    out = []
    tps = (1, 2, 4, 8) if framework in FRAMEWORK_PP else (1,)
    cps = ([cp for cp in (1, 2, 4, 8, 16) if seq // cp >= CP_MIN_TOKENS]
           if seq >= CP_MIN_SEQ and framework in ("megatron", "torchtitan") else (1,))
    eps = [1] + ([e for e in (2, 4, 8) if model.experts % e == 0] if model.experts and framework == "megatron" else [])
    for pp in FRAMEWORK_PP.get(framework, (1,)):
        if pp > model.layers // 2 and pp > 1 or (model.layers % pp and framework != "megatron"):
            continue
        vp = next(v for v in (4, 2, 1) if stage_layers(model, pp) % v == 0) if pp > 1 and framework == "megatron" else 1
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
                    for sharding in FRAMEWORK_SHARDINGS[framework]:
                        if pp > 1 and ZERO_LEVEL[sharding] >= 2 and framework == "deepspeed":
                            continue              # DeepSpeed's pipeline engine takes ZeRO-1 only
                        out.append(Layout(tp, pp, cp, ep, vp, dp, sharding, "none", 1))
    return out


def plan_layout(model, params, cluster, gpus, framework, seq, target_seqs, precision):
    """(fastest fitting plan, leanest need): a plan is (Layout, grad_accum, StepParts, Memory);
    the leanest need is (Layout, bytes) of the layout that needs least memory."""
    active = count_params(model, active_only=True) if model.experts else params
    best, leanest = None, None
    for base in layouts(model, gpus, cluster.gpus_per_node, framework, seq):
        for mbs in (1, 2, 4):
            if mbs > 1 and mbs * base.dp > target_seqs:
                break
            ga = max(1, int(round(target_seqs / float(mbs * base.dp))))
            vp = base.vp if ga % base.pp == 0 else 1     # interleaving needs micro-batches in multiples of pp
            for recompute in FRAMEWORK_RECOMPUTE[framework]:
                L = base._replace(recompute=recompute, mbs=mbs, vp=vp)
                mem = memory_model(model, params, active, L, seq, framework, ga)
                if leanest is None or memory_total(mem) < leanest[1]:
                    leanest = (L, memory_total(mem))
                if fits(cluster.gpu, mem):
                    parts = step_parts(model, params, active, cluster, L, seq, ga, framework, precision)
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


def leanest_need(model, gpu, gpus, framework):
    """Bytes per GPU of the leanest layout `framework` can give `model` on `gpus` cards
    (full recompute, micro-batch 1, the shortest sequence), or None if it has none."""
    params = count_params(model)
    active = count_params(model, active_only=True) if model.experts else params
    seq = min(SHORTEST_SEQ, model.context)
    needs = [memory_total(memory_model(model, params, active, L._replace(recompute="full"), seq, framework))
             for L in layouts(model, gpus, min(GPUS_PER_NODE, gpus), framework, seq)]
    return min(needs) if needs else None


def fitting_gpus(catalog, gpu, pins):
    """The fewest GPUs of this card (a job size) that can hold the pinned model in the pinned
    framework's precision, or None if no job can: the pins and the card cannot go together."""
    framework, model = pins.get("framework"), catalog.models.get(pins.get("model"))
    if framework == "torchtitan" and gpu.precision != "bf16":
        return None
    if model is None:
        return 1
    sizes = [pins["gpus"]] if pins.get("gpus") else JOB_SIZES
    for gpus in sizes:
        for fw in [framework] if framework else FRAMEWORK_SHARDINGS:
            need = leanest_need(model, gpu, gpus, fw)
            if need is not None and need <= gpu.memory_mib * MIB * CARD_HEADROOM:
                return gpus
    return None


def make_cluster(catalog, seed, pins=None):
    """The session's cluster: the same for every run of this seed and these pins."""
    pins = pins or {}
    rng = random.Random("%d:config:%d" % (seed, CLUSTER_DRAW))
    if pins.get("gpu_type"):
        gpu = catalog.gpus[pins["gpu_type"]]
    else:
        gpu = weighted(rng, list(catalog.gpus.values()), lambda g: g.weight)
        if fitting_gpus(catalog, gpu, pins) is None:      # the pins narrow the draw to the cards that suit them
            suited = [g for g in catalog.gpus.values() if fitting_gpus(catalog, g, pins) is not None] or [gpu]
            some = any(g.weight for g in suited)
            gpu = weighted(random.Random("%d:card" % seed), suited, lambda g: g.weight if some else 1)
    nodes = rng.choice(CLUSTER_NODES)
    gpus_per_node = GPUS_PER_NODE
    if pins.get("gpus"):
        gpus_per_node = min(GPUS_PER_NODE, pins["gpus"])
        nodes = pins["gpus"] // gpus_per_node
    else:                                  # big enough for the pinned model (twice its leanest need) and rank
        need = fitting_gpus(catalog, gpu, pins) or max(JOB_SIZES)
        if nodes * gpus_per_node < need:
            nodes = 2 * need // gpus_per_node
        nodes = max(nodes, -(-pins.get("min_gpus", 1) // gpus_per_node))
    fabric = weighted(rng, [f for f in catalog.fabrics if node_type_of(catalog, gpu, f)], lambda f: f.weight)
    node_type = node_type_of(catalog, gpu, fabric)
    stacks = [st for st in catalog.stacks if gpu.arch in st.archs.split(",")]
    stack = weighted(rng, stacks, lambda st: st.weight)
    fs = weighted(rng, catalog.filesystems, lambda f: f.weight)
    pattern, first = rng.choice([(p, n) for p, n, types in catalog.clusters if node_type.key in types])
    return Cluster(gpu, nodes, gpus_per_node, fabric, fabric.gbits_per_gpu / 8.0, fs, stack, pattern, first,
                   node_type)


########################################################################
# Run configuration (pure: from the seed and the user's pins)
########################################################################

KINDS = ("pretrain", "resume", "continue", "finetune")
FRAMEWORKS = ("megatron", "deepspeed", "hf", "torchtitan", "lightning")
PRETRAIN_FRAMEWORKS = ("megatron", "torchtitan", "deepspeed")
FINETUNE_FRAMEWORKS = ("hf", "lightning", "deepspeed")


class ConfigError(Exception):
    """The user's pins describe a run that cannot exist (exit status 2)."""


RunConfig = collections.namedtuple("RunConfig", [
    "seed", "run", "kind", "framework", "name", "model", "shape", "params", "active_params",
    "tokenizer", "architecture", "dataset", "gpu", "nodes", "gpus_per_node", "gpus", "tp", "pp", "dp",
    "sharding", "recompute", "precision", "seq_len", "micro_batch", "grad_accum",
    "global_batch", "tokens_per_step", "start_step", "total_steps", "warmup_steps",
    "peak_lr", "min_lr", "decay", "betas", "weight_decay", "grad_clip", "epochs",
    "steps_per_epoch", "train_samples", "flops_per_token", "mfu", "tokens_per_s",
    "step_time_s", "mem_need_bytes", "mem_states_bytes", "mem_used_mib", "log_interval", "val_interval",
    "val_iters", "val_seconds", "eval_samples", "eval_batch", "ckpt_interval", "ckpt_bytes", "ckpt_seconds",
    "launch_seconds", "build_seconds", "load_seconds", "export_seconds", "export_files",
    "hostname", "first_node", "master_port", "loss_start", "loss_floor", "grad_floor",
    "grad_start", "noise", "spike_rate", "attach_fraction",
    "ambient_c", "loss_scale_exp", "loss_phase", "run_seed",
    # fp16 only: the steps whose gradients overflow, and the scale's exponent after each
    # (loss_scale_exp above: the highest exponent the run's gradients rarely overflow at)
    "overflow_steps", "overflow_exps",
    # the cluster and performance model: context/expert/virtual-pipeline degrees, the whole
    # Layout, the step's parts (sum = step_time_s), memory as nvidia-smi counts it, the
    # cluster it runs on, its software stack, and the queue wait after a failure
    "cp", "ep", "vp", "layout", "warmup_ratio", "decay_fraction", "step_parts", "mem_reserved_mib",
    "context_mib", "nccl_mib", "cluster", "stack", "fabric", "requeue_seconds",
    # the corpus (its Dataset line: size, loss level and validation gap)
    "corpus",
    # the scheduler the run's code steps (LR_SCHEDULERS) and its floor as a ratio of the peak
    # (HF's min_lr_rate, torchtitan's min_lr_factor)
    "lr_scheduler", "min_lr_ratio",
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


# The families of our catalog that torchtitan implements (torchtitan/models/__init__.py at v0.2.2:
# deepseek_v3, flux, gpt_oss, llama3, llama3_ft, llama4, qwen3): Llama 3 only.
TORCHTITAN_FAMILIES = ("llama3",)
# Families whose activations or gradients overflow fp16, so teams train them in bf16 only
# (and never on a card without it): Gemma (google/gemma_pytorch#24, fp16 fine-tunes turn
# NaN; Gemma 3 the same, huggingface/transformers#36822) and Qwen2/2.5 (QwenLM/Qwen3#670:
# fp16 SFT gives NaN tokens, the maintainers answer bf16 or fp32).
FP16_OVERFLOW_FAMILIES = ("gemma2", "qwen2")


def drawn_in_fp16(model, gpu, pins):
    """A draw that would train an fp16-overflowing family on a card without bf16 (a
    pinned model stays the user's wish)."""
    return gpu.precision == "fp16" and model.family in FP16_OVERFLOW_FAMILIES and not pins.get("model")


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


def chinchilla_loss(params, tokens=None):
    """Hoffmann et al.'s fit E + A/N^a + B/D^b (nats per token on web text); no D: unlimited data."""
    return 1.69 + 406.4 / params ** 0.34 + (410.7 / tokens ** 0.28 if tokens else 0.0)


CONTINUE_SHIFT = (0.01, 0.06)   # a released model on a corpus it has not seen starts a few percent above its
                                # own loss level there (our estimate: the corpora overlap in kind, web with web)


def initial_losses(rng, kind, model, params, dataset, pretrained=None, tokens=None):
    """Where the loss starts and the floor it heads for (nats per token): the
    data's loss level scales the floor (code far below web text) and, for
    fine-tunes and continued pretraining, the start; from scratch every
    corpus starts at ln(vocab), where an untrained model is.  A released base
    model (`pretrained` tokens behind it) continued on `tokens` more starts near
    its own pretraining loss on this data and heads for what the extra tokens buy."""
    level = dataset.loss_level
    if kind == "finetune":
        start = rng.uniform(1.2, 2.2) * level               # chat SFT 1.2-2.2 (facts.md section 3)
        return start, start * rng.uniform(0.45, 0.7)
    if kind == "continue":
        start = chinchilla_loss(params, pretrained) * level * (1 + rng.uniform(*CONTINUE_SHIFT))
        return start, chinchilla_loss(params, pretrained + tokens) * level
    return math.log(model.vocab), chinchilla_loss(params) * level


def run_name(rng, kind, model, dataset, lr, seed):
    short = model.name.lower().replace(".", "p")
    data = dataset.name.split("/")[-1].lower().replace("_", "-")
    what = {"pretrain": "pt", "resume": "pt", "continue": "cpt", "finetune": "sft"}[kind]
    return "%s-%s-%s-lr%s-%s" % (short, what, data[:18].strip("-"), ("%.0e" % lr).replace("e-0", "e-"),
                                 rng.choice(("v1", "v2", "v3", "v4", "ablate", "rerun", "final")))


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
LONG_CONTEXT_SEQS = (32768, 65536, 131072)   # context-extension stages (Llama 3.1: 8k -> 128k in six steps,
LONG_CONTEXT_SHARE = 0.3              # Qwen2.5: 4k -> 32k; ProLong: 64k, 512k); a share of Megatron's continued runs
SLOW_STEP_S = 600.0                   # an unusual run's step may take minutes (405B under ZeRO-3 on V100s: ~2)
UNUSUAL_KINDS = ("continue", "resume", "finetune", "pretrain")   # the order unusual_run tries kinds in
LONG_RUN_S = 400 * 86400.0            # a run resubmitted for months (Llama 3 405B: 54 days on 16k GPUs; OPT-175B
                                      # 2 months on 992): a session may join one mid-way, not one of years
PERF_RUN_STEPS = (100, 200, 300, 500, 1000)   # performance runs before the real one ("iteration 1/ 1000")
REQUEUE_S = (120.0, 900.0)            # drained node, requeued job: minutes in the queue before it starts again


def choose_kind_framework(rng, kind, framework):
    if framework is None:
        kind = kind or rng.choice(("pretrain", "resume", "resume", "continue", "finetune", "finetune"))
        pool = FINETUNE_FRAMEWORKS if kind == "finetune" else PRETRAIN_FRAMEWORKS
        framework = rng.choice(pool + pool[:1])               # the first of each pool is the usual one
    elif kind is None:
        kind = rng.choice(("finetune", "finetune", "continue") if framework in ("hf", "lightning")
                          else ("pretrain", "resume", "resume", "continue") if framework in ("megatron", "torchtitan")
                          else KINDS)
    return kind, framework


def model_pool(catalog, kind, pinned, framework):
    """Models a team would run for this kind of job in this framework."""
    if pinned:
        return [catalog.models[pinned]]
    models = [model for model in catalog.models.values() if framework != "torchtitan" or model.family in TORCHTITAN_FAMILIES]
    size = {model.name: count_params(model) for model in models}
    if kind == "pretrain":      # from scratch: ablation-sized models a queue runs in hours
        return [model for model in models if size[model.name] < 2.0e9]
    if kind == "finetune":
        return [model for model in models if 0.4e9 < size[model.name] < 80e9]
    if kind == "continue":
        return [model for model in models if 1e9 < size[model.name] < 80e9]
    return [model for model in models if size[model.name] > 1e9]


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


# The scheduler each run's code steps (RunConfig.lr_scheduler; LR_SCHEDULERS in the metric
# model): Megatron-DeepSpeed hands Megatron's own to DeepSpeed as its client scheduler;
# Lightning modules return transformers' schedules from configure_optimizers (interval
# "step"); a plain DeepSpeed script configures DeepSpeed's WarmupDecayLR ("deepspeed").
def ceil_div(a, b):
    """The integer ceiling of a / b (the framework code's math.ceil of an int ratio)."""
    return -(-a // b)


FRAMEWORK_LR_SCHEDULER = {"megatron": "megatron", "deepspeed": "megatron", "hf": "hf", "lightning": "hf",
                          "torchtitan": "torchtitan"}


def epoch_update_steps(framework, examples, micro_batch, dp, grad_accum):
    """Optimizer steps in one epoch over `examples`, as each framework counts them.  HF
    Trainer (set_initial_training_values): its accelerate-prepared loader has
    ceil(ceil(N / micro) / dp) batches per rank (BatchSamplerShard, even_batches), and a
    last partial accumulation counts as a step.  Lightning's DistributedSampler gives
    each rank ceil(N / dp) examples, ceil(that / micro) batches, and steps at the
    epoch's last batch too.  Megatron-style loaders take whole global batches."""
    if framework == "hf":
        batches = ceil_div(ceil_div(examples, micro_batch), dp)
        return max(batches // grad_accum + int(batches % grad_accum > 0), 1)
    if framework == "lightning":
        return max(ceil_div(ceil_div(ceil_div(examples, dp), micro_batch), grad_accum), 1)
    return max(ceil_div(examples, micro_batch * dp * grad_accum), 1)


def draw_lr_schedule(rng, kind, params, total, framework, stack):
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
    if FRAMEWORK_LR_SCHEDULER[framework] == "hf":     # transformers' linear and cosine end at 0 ...
        if decay == "cosine" and stack.prints["hf.min_lr_cosine"] == "yes":
            decay = "cosine_with_min_lr"               # ... a floor needs cosine_with_min_lr's min_lr_rate
        else:
            ratio = 0.0
    if rng.random() < (0.7 if kind == "finetune" else 0.25):            # warmup_ratio (HF: ceil(ratio x total))
        warmup_ratio = rng.choice((0.01, 0.03, 0.05, 0.1))
        warmup = int(math.ceil(warmup_ratio * total))
    else:                                                               # warmup as a step count
        warmup_ratio = None
        warmup = min(rng.choice((100, 200, 500, 1000, 2000, 2500)) if kind != "finetune"
                     else rng.choice((10, 20, 50, 100)), max(1, total // 10))
    return dict(peak_lr=peak, min_lr=(peak * ratio if decay != "constant" else 0.0), min_lr_ratio=ratio, decay=decay,
                decay_fraction=rng.choice((0.1, 0.15, 0.2)) if decay == "wsd" else 0.0,
                warmup=max(1, warmup), warmup_ratio=warmup_ratio)


def draw_schedule(rng, catalog, kind, params, tokens_per_step, batch, step_time, framework, stack, unusual=False):
    """Dataset, length, resume position and learning-rate schedule; None if no real run is this long.
    `batch`: (micro-batch, data-parallel ranks, gradient accumulation).
    `unusual` (see unusual_run): a resumed run may last months, a pretraining is a performance run."""
    max_steps = int((LONG_RUN_S if unusual and kind == "resume" else MAX_RUN_SECONDS) / step_time)
    if kind == "finetune":
        dataset = rng.choice([d for d in catalog.datasets if d.kind == "finetune"])
        epochs = rng.choice((1, 2, 2, 3, 3, 4))
        steps_per_epoch = epoch_update_steps(framework, dataset.examples, *batch)
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
        if unusual and kind == "pretrain":
            total = rng.choice(PERF_RUN_STEPS)
        elif kind != "continue" and total * tokens_per_step < 20 * params or total < 50:
            return None                       # under Chinchilla's 20 tokens per parameter: not a pretrain
        start = 0
        if kind == "resume" and unusual:      # joined mid-way: weeks or months still to go
            start = int(total * rng.uniform(0.1, 0.8))
        elif kind == "resume":
            left = int(math.exp(rng.uniform(*[math.log(x) for x in RESUME_LEFT_S])) / step_time)
            start = max(total // 20, total - max(20, left))
        epochs, steps_per_epoch, train_samples = 1, total, 0
    out = dict(dataset=dataset, total_steps=total, start_step=start, epochs=epochs,
               steps_per_epoch=steps_per_epoch, train_samples=train_samples)
    out.update(draw_lr_schedule(rng, kind, params, total, framework, stack))
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


def draw_cadence(rng, framework, step_time, sched):
    """Log, validation and checkpoint intervals in round numbers, scaled with the run's length."""
    total = sched["total_steps"]
    log_interval = nice_at_most(max(1.0, LOG_EVERY_S / step_time))
    if framework == "hf":
        log_interval = min(log_interval, 50)
    run_s = (total - sched["start_step"]) * step_time
    val_s = min(VAL_EVERY_S[1], max(VAL_EVERY_S[0], run_s / VAL_EVERY_RUN))
    val_interval = nice_at_least(val_s / step_time)
    if val_interval * step_time > VAL_EVERY_S[1]:           # rounding up overshot the band: round down
        val_interval = nice_at_most(val_s / step_time)
    val_interval = max(log_interval, val_interval)
    val_iters = max(5, min(100, int(0.08 * val_interval)))
    return dict(log_interval=log_interval, val_interval=val_interval, val_iters=val_iters)


EVAL_SPLIT = 0.02           # a fine-tune holds out ~2% of its examples (train_test_split(test_size=0.02))
EVAL_BUDGET = 0.04          # an evaluation costs at most ~4% of the training between two of them


def draw_eval(framework, kind, dataset, L, grad_accum, parts, cadence):
    """The evaluation as each framework runs it: samples, per-device batch (the training
    micro-batch, no accumulation) and its step count (val_iters): Megatron's eval_iters
    global batches; HF's ceil(N / (batch x world)) steps (speed_metrics); Lightning's
    ceil(ceil(N / dp) / batch) batches per rank (DistributedSampler); torchtitan's
    validation steps per rank.  Forward only, so it runs at forward_seconds' pace."""
    global_batch = L.mbs * L.dp * grad_accum
    per_sample = forward_seconds(parts, L.recompute) / global_batch        # the cluster's forward, per sample
    budget = EVAL_BUDGET * cadence["val_interval"] * sum(parts) / per_sample
    iters = cadence["val_iters"]
    if framework in ("megatron", "deepspeed"):
        samples, processed = iters * global_batch, iters * global_batch
    elif framework == "torchtitan":
        samples = processed = iters * L.mbs * L.dp
    else:
        held_out = int(EVAL_SPLIT * dataset.examples) if kind == "finetune" else iters * global_batch
        samples = max(L.mbs * L.dp, min(held_out, nice_at_most(budget)))   # max_eval_samples past the budget
        if framework == "hf":
            iters = ceil_div(samples, L.mbs * L.dp)
        else:
            iters = ceil_div(ceil_div(samples, L.dp), L.mbs)
        processed = iters * L.mbs * L.dp
    return dict(val_iters=iters, eval_samples=samples, eval_batch=L.mbs, val_seconds=processed * per_sample + 0.5)


def draw_timings(rng, kind, model, params, cluster, gpus, L, framework, step_time, cadence):
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
             + (rng.uniform(25, 70) if framework == "torchtitan" else 0.0)) * rng.uniform(0.95, 1.1)  # torch.compile
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


def attach_fraction(rng, sched, step_time, unusual=False):
    """Where a session joins this run if it is the first: near the end of a long run
    (so the job ends within the hour), part-way through a short one or one of months."""
    train_s = (sched["total_steps"] - sched["start_step"]) * step_time
    left = rng.uniform(8 * 60, 45 * 60)
    if train_s > 2 * left and not unusual:
        return 1 - left / train_s
    return rng.uniform(0.2, 0.7)


def _complete_config(catalog, rng, seed, run, kind, framework, model, params, cluster, gpus, seq, plan,
                     unusual=False):
    """A run around a plan that fits: schedule, cadence and timings; None if no real job looks like it."""
    L, grad_accum, parts, mem = plan
    active = count_params(model, active_only=True) if model.experts else params
    global_batch = L.mbs * L.dp * grad_accum
    tokens_per_step = global_batch * seq
    step_time = sum(parts)
    if not MIN_STEP_S <= step_time <= (SLOW_STEP_S if unusual else MAX_STEP_S):
        return None
    sched = draw_schedule(rng, catalog, kind, params, tokens_per_step, (L.mbs, L.dp, grad_accum), step_time,
                          framework, cluster.stack, unusual)
    if sched is None:
        return None
    cadence = draw_cadence(rng, framework, step_time, sched)
    cadence.update(draw_eval(framework, kind, sched["dataset"], L, grad_accum, parts, cadence))
    timing = draw_timings(rng, kind, model, params, cluster, gpus, L, framework, step_time, cadence)
    if kind == "resume":                    # it resumes from the last checkpoint the earlier job saved
        sched["start_step"] -= sched["start_step"] % timing["ckpt_interval"]
        if sched["start_step"] <= 0:
            return None
    fpt = flops_per_token(model, seq, active)
    tokens_per_s = tokens_per_step / step_time
    name = run_name(rng, kind, model, sched["dataset"], sched["peak_lr"], seed)
    loss_start, loss_floor = initial_losses(rng, kind, model, params, sched["dataset"],
                                            catalog.tokenizers[model.family][2], sched["total_steps"] * tokens_per_step)
    nodes = gpus // cluster.gpus_per_node
    first_node = cluster.first_node + rng.randrange(cluster.nodes // nodes) * nodes   # the partition it got
    return RunConfig(
        seed=seed, run=run, kind=kind, framework=framework, name=name, model=model.name, shape=model,
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
        lr_scheduler=FRAMEWORK_LR_SCHEDULER[framework], min_lr_ratio=sched["min_lr_ratio"],
        betas=(0.9, 0.95), weight_decay=0.1 if kind != "finetune" else rng.choice((0.0, 0.01, 0.1)),
        grad_clip=1.0, epochs=sched["epochs"], steps_per_epoch=sched["steps_per_epoch"],
        train_samples=sched["train_samples"], flops_per_token=fpt,
        mfu=mfu_of(fpt, tokens_per_s, gpus, cluster.gpu.tflops), tokens_per_s=tokens_per_s,
        step_time_s=step_time, step_parts=parts, mem_need_bytes=mem.allocated, mem_states_bytes=mem.states,
        mem_used_mib=int(memory_total(mem) / MIB), mem_reserved_mib=int(mem.reserved / MIB),
        context_mib=int(mem.context / MIB), nccl_mib=int(mem.nccl / MIB),
        cluster=cluster, stack=cluster.stack, fabric=cluster.fabric.name, hostname=cluster.hostname,
        first_node=first_node, master_port=rng.choice((29500, 29500, 6000, 12355, 29400)),
        loss_start=loss_start, loss_floor=loss_floor,
        grad_floor=(rng.uniform(0.18, 0.32) if kind != "finetune" else rng.uniform(0.5, 1.4)),
        grad_start=(rng.uniform(8, 16) if kind == "pretrain" else rng.uniform(2, 12)),
        noise=0.006 + 0.02 / math.sqrt(tokens_per_step / 2.5e5),
        spike_rate=1.0,
        attach_fraction=attach_fraction(rng, sched, step_time, unusual),
        ambient_c=rng.uniform(24, 31), loss_scale_exp=rng.choice((14, 15, 16, 17)),
        loss_phase=rng.uniform(0, 2 * math.pi), overflow_steps=(), overflow_exps=(),
        run_seed=seed * RUN_SEED_STRIDE + run, corpus=sched["dataset"], **cadence_and_timing(cadence, timing))


def pin_flags(pins, names):
    """The options the user gave among `names` ('--model X --gpus 8'), to name in a refusal."""
    flags = {"model": "--model", "gpu_type": "--gpu-type", "gpus": "--gpus", "kind": "--kind",
             "framework": "--style", "min_gpus": "--rank"}
    shown = {"min_gpus": lambda n: n - 1}
    return " ".join("%s %s" % (flags[k], shown.get(k, str)(pins[k])) for k in names if pins.get(k))


def refusal(pins, cluster, leanest):
    """Why no run can exist with these pins, naming the pins that make it impossible:
    the true shortfall when memory is the reason."""
    gpu = cluster.gpu
    card = gpu.memory_mib * MIB * CARD_HEADROOM
    if pins.get("model") and leanest is not None and leanest[1] > card:
        L, need = leanest
        return ("%s: %s does not fit on %dx %s: its leanest layout (%s) needs %.1f GiB per GPU "
                "(weights, gradients, optimizer shards, activations, CUDA context and NCCL buffers), "
                "the card has %.1f GiB usable: %.1f GiB short"
                % (pin_flags(pins, ("model", "gpu_type", "gpus", "framework")), pins["model"],
                   L.tp * L.pp * L.cp * L.dp, gpu.name, describe_layout(L), need / GIB, card / GIB,
                   (need - card) / GIB))
    given = pin_flags(pins, ("model", "gpu_type", "gpus", "kind", "framework", "min_gpus"))
    return ("no run can exist with %s on %s: no layout of this job fits the card's memory"
            % (given or "this seed", gpu.name))


# fp16 dynamic loss scaling as each framework's scaler does it: (initial exponent,
# clean steps before the scale doubles, overflows before it halves).  Megatron-LM's
# DynamicGradScaler: --initial-loss-scale 2**32, --loss-scale-window 1000,
# --hysteresis 2.  DeepSpeed's DynamicLossScaler with the fp16 block configs carry
# (initial_scale_power 16, loss_scale_window 1000, hysteresis 2; HF's DeepSpeed
# template too).  torch.amp.GradScaler under HF Trainer and Lightning: init_scale
# 2**16, growth_interval 2000, halving on every overflow.
FP16_SCALERS = {"megatron": (32, 1000, 2), "deepspeed": (16, 1000, 2), "torch": (16, 2000, 1)}
# Chance that one step's fp16 gradients overflow, by how many doublings the scale
# sits above the run's ceiling (loss_scale_exp): below it never, at it rarely (an
# outlier batch), one doubling above within tens of steps, two or more every step.
OVERFLOW_CHANCE = {0: 1 / 5000.0, 1: 1 / 40.0}


def loss_scaler(cfg):
    """The fp16 scaler of the run's framework (see FP16_SCALERS)."""
    if cfg.framework == "megatron":
        return FP16_SCALERS["megatron"]
    if cfg.framework == "deepspeed" or cfg.sharding == "zero3":
        return FP16_SCALERS["deepspeed"]
    return FP16_SCALERS["torch"]


def scale_exp_after(exp, since, step, window):
    """The scale's exponent after step `step`, when it was `exp` after step `since`
    and no step in between overflowed: it doubles every `window` clean steps."""
    return exp + (step - since) // window


def draw_overflows(cfg):
    """(steps at which this fp16 run's gradients overflow, the scale's exponent after
    each): the scaler's rules over the whole run, one geometric draw for the first
    overflow in each stretch of `window` steps at one scale."""
    if cfg.precision != "fp16":
        return (), ()
    exp, window, hysteresis = loss_scaler(cfg)
    since, left, k, draws, steps, exps = 0, hysteresis, 0, 0, [], []
    while since + 1 + k * window <= cfg.total_steps:
        above = exp + k - cfg.loss_scale_exp
        chance = 1.0 if above >= 2 else OVERFLOW_CHANCE.get(above, 0.0)
        gap = 0 if chance >= 1 else window
        if 0 < chance < 1:
            draws += 1
            gap = int(math.log(1.0 - unit(cfg.run_seed, S_OVERFLOW, draws)) / math.log(1.0 - chance))
        if gap >= window:                   # a clean stretch: the scale doubles (hysteresis refilled)
            k += 1
            continue
        at = since + 1 + k * window + gap
        if at > cfg.total_steps:
            break
        left = (left if k == 0 else hysteresis) - 1
        exp = exp + k if left > 0 else max(0, exp + k - 1)
        steps.append(at)
        exps.append(exp)
        since, k = at, 0
    return tuple(steps), tuple(exps)


def with_overflows(cfg):
    steps, exps = draw_overflows(cfg)
    return cfg._replace(overflow_steps=steps, overflow_exps=exps)


def long_context(seed, run, attempt, kind, framework, model, seq):
    """The sequence of a drawn job: a long-context continued pretraining (LONG_CONTEXT_SHARE
    of Megatron's, on models whose context reaches it) trains at 32k-128k with context
    parallelism; every other job keeps `seq`.  Its own draw, so the rest of the run's is kept."""
    longer = [n for n in LONG_CONTEXT_SEQS if n <= model.context]
    rng = random.Random("%d:long-context:%d:%d" % (seed, run, attempt))
    if kind != "continue" or framework != "megatron" or not longer or rng.random() >= LONG_CONTEXT_SHARE:
        return seq
    return rng.choice(longer)


def job_sizes(cluster, pins, params, kind):
    """GPU counts to try for a run the usual draw found none for: the pins', else the
    sizes teams use for this model and kind, then every other size the cluster holds."""
    if pins.get("gpus"):
        return [pins["gpus"]]
    total = cluster.nodes * cluster.gpus_per_node
    usual = cluster_sizes(params, kind, total)
    rest = [n for n in JOB_SIZES if n <= total and total % n == 0 and n not in usual]
    return [n for n in usual + rest if n >= pins.get("min_gpus", 1)]


def batched_plan(model, params, cluster, gpus, framework, seq, target):
    """The fastest plan that fits and whose step keeps within MAX_STEP_S, halving the batch
    until one does (a big model on few GPUs trains on fewer sequences a step); else the
    smallest batch that fits if its step is within SLOW_STEP_S (old cards), or None."""
    slow = None
    while target >= 1:
        plan, _ = plan_layout(model, params, cluster, gpus, framework, seq, target, cluster.gpu.precision)
        if plan is not None and sum(plan[2]) <= MAX_STEP_S:
            return plan
        slow = plan or slow
        target //= 2                      # fewer micro-batches in flight also need less memory
    return slow if slow is not None and sum(slow[2]) <= SLOW_STEP_S else None


def _unusual_config(catalog, rng, seed, run, pins, cluster, kind, framework, model):
    """unusual_run's job of this kind, framework and model on the smallest size that takes it."""
    params = count_params(model)
    for gpus in job_sizes(cluster, pins, params, kind):
        for seq in sorted(set(min(s, model.context) for s in (4096, SHORTEST_SEQ)), reverse=True):
            plan = batched_plan(model, params, cluster, gpus, framework, seq, target_batch(rng, kind, params, seq))
            if plan is None or sum(plan[2]) < MIN_STEP_S:
                continue
            cfg = _complete_config(catalog, rng, seed, run, kind, framework, model, params, cluster,
                                   gpus, seq, plan, unusual=True)
            if cfg is not None:
                return cfg
    return None


def unusual_run(catalog, seed, run, pins, cluster):
    """The run teams start with pins the usual draw cannot meet (a big model on a small
    partition): one joined mid-way through a run of months, a continued pretraining, a
    fine-tune, or a performance run of a few hundred iterations; None if none fits."""
    rng = random.Random("%d:unusual:%d" % (seed, run))
    for kind in [pins["kind"]] if pins.get("kind") else UNUSUAL_KINDS:
        pool = FINETUNE_FRAMEWORKS if kind == "finetune" else PRETRAIN_FRAMEWORKS
        for framework in [pins["framework"]] if pins.get("framework") else pool:
            if framework == "torchtitan" and cluster.gpu.precision != "bf16":
                continue
            models = model_pool(catalog, kind, pins.get("model"), framework)
            for model in rng.sample(models, min(3, len(models))):
                if framework == "torchtitan" and model.family not in TORCHTITAN_FAMILIES or \
                        drawn_in_fp16(model, cluster.gpu, pins):
                    continue
                cfg = _unusual_config(catalog, rng, seed, run, pins, cluster, kind, framework, model)
                if cfg is not None:
                    return cfg
    return None


def make_run_config(catalog, seed, run, pins=None, cluster=None):
    """The whole configuration of run number `run` (1, 2, ...) of this seed.

    The run is a job on the session's cluster (the same for every run of the
    seed).  `pins` may fix model, gpu_type, gpus, kind and framework; everything
    else is drawn around them so that every figure stays consistent.  Raises
    ConfigError when the pins cannot fit together."""
    pins = pins or {}
    cluster = cluster or make_cluster(catalog, seed, pins)
    rng = random.Random("%d:config:%d" % (seed, run))
    leanest, fallback = None, None
    for attempt in range(200):
        kind, framework = choose_kind_framework(rng, pins.get("kind"), pins.get("framework"))
        model = rng.choice(model_pool(catalog, kind, pins.get("model"), framework))
        if framework == "torchtitan" and cluster.gpu.precision != "bf16":
            if pins.get("framework"):           # its mixed precision is bf16 (or fp32), with no loss scaler
                raise ConfigError("torchtitan trains in bf16, which the %s lacks" % cluster.gpu.key)
            continue
        if drawn_in_fp16(model, cluster.gpu, pins):
            continue
        if framework == "torchtitan" and model.family not in TORCHTITAN_FAMILIES:
            if pins.get("framework") and pins.get("model"):
                raise ConfigError("torchtitan implements only the Llama 3 family here, not %s" % model.name)
            continue
        params = count_params(model)
        sizes = [pins["gpus"]] if pins.get("gpus") else cluster_sizes(params, kind, cluster.nodes * cluster.gpus_per_node)
        sizes = [n for n in sizes if n >= pins.get("min_gpus", 1)]
        if not sizes:
            continue
        gpus = rng.choice(sizes)
        seq = min(rng.choice((2048, 4096, 4096, 8192)), model.context)
        seq = long_context(seed, run, attempt, kind, framework, model, seq)
        target = target_batch(rng, kind, params, seq)
        plan, lean = plan_layout(model, params, cluster, gpus, framework, seq, target, cluster.gpu.precision)
        if lean and (leanest is None or lean[1] < leanest[1]):
            leanest = lean
        if plan is None:
            continue
        cfg = _complete_config(catalog, rng, seed, run, kind, framework, model, params, cluster, gpus, seq, plan)
        share = plan[2].compute / sum(plan[2])
        if cfg is not None and share >= MIN_COMPUTE_SHARE:
            return with_overflows(cfg)
        if cfg is not None and pins.get("gpus") and (fallback is None or share > fallback[0]):
            fallback = (share, cfg)           # a pinned size may be network-bound: the best of them
    if fallback:
        return with_overflows(fallback[1])
    cfg = unusual_run(catalog, seed, run, pins, cluster)
    if cfg is not None:
        return with_overflows(cfg)
    raise ConfigError(refusal(pins, cluster, leanest))


def epoch_steps(cfg):
    """Optimizer steps per epoch (a pretraining stream counts as one epoch)."""
    return max(1, cfg.steps_per_epoch or cfg.total_steps)


def epoch_of(cfg, step):
    """The 0-based epoch an optimizer step belongs to."""
    return (step - 1) // epoch_steps(cfg)


# Hot spares: a cluster keeps a few nodes out of its partitions so that a node
# drained after a hardware fault is swapped for an identical one without
# waiting for the repair (the reserve pools of managed GPU clouds, e.g. Crusoe's
# AutoClusters, work so).  The size is our choice: 3% of the nodes, at least two.
SPARE_SHARE = 0.03
SPARES_MIN = 2


def hostname_of(cfg, node, hosts=None):
    """The host name of node `node` of the run: its nodes are a slice of the cluster's,
    unless `hosts` (the node numbers of a relaunch, Timeline.hosts) says otherwise."""
    return cfg.hostname.format(n=hosts[node] if hosts else cfg.first_node + node)


def spare_hosts(cluster):
    """Node numbers of the cluster's spare pool: the hosts after its last partition node
    (the same card, board and naming as the rest of the machine room)."""
    first = cluster.first_node + cluster.nodes
    return list(range(first, first + max(SPARES_MIN, int(math.ceil(cluster.nodes * SPARE_SHARE)))))


########################################################################
# Metric model (pure: the value at a step or a moment is f(config, step/t))
########################################################################

def loss_scale_at(cfg, step):
    """fp16 dynamic loss scale after step `step` (what Megatron prints) and whether
    the step overflowed (and was skipped); (None, False) for bf16 runs."""
    if cfg.precision != "fp16":
        return None, False
    initial, window, _ = loss_scaler(cfg)
    i = bisect.bisect_right(cfg.overflow_steps, step) - 1
    if i < 0:
        exp = scale_exp_after(initial, 0, step, window)
    else:
        exp = scale_exp_after(cfg.overflow_exps[i], cfg.overflow_steps[i], step, window)
    return 2.0 ** exp, i >= 0 and cfg.overflow_steps[i] == step


def skipped_total(cfg, step):
    """fp16 steps skipped for overflow in steps 1..step."""
    return bisect.bisect_right(cfg.overflow_steps, step)


def megatron_lr(cfg, n):
    """Megatron's OptimizerParamScheduler.get_lr after `n` scheduler steps (Megatron-LM
    megatron/core/optimizer_param_scheduler.py; Megatron-DeepSpeed hands the same object
    to DeepSpeed as its client scheduler): linear warm-up from 0, then cosine, linear,
    WSD (stable, then a linear anneal) or constant, ending at min_lr."""
    w, peak = cfg.warmup_steps, cfg.peak_lr
    if 0 < w and n <= w:        # counted in samples (global batch per step), from --lr-warmup-init 0
        return (peak - 0.0) * float(n * cfg.global_batch) / float(w * cfg.global_batch)
    total = cfg.total_steps
    lo = cfg.min_lr
    p = min(1.0, (n - w) / float(max(1, total - w)))
    if cfg.decay == "constant":
        return peak
    if cfg.decay == "linear":
        coeff = 1.0 - p
    elif cfg.decay == "wsd":
        anneal = max(1, int(cfg.decay_fraction * total))
        coeff = 1.0 - min(1.0, max(0, n - (total - anneal)) / float(anneal))
    else:
        coeff = 0.5 * (1 + math.cos(math.pi * p))
    return lo + (peak - lo) * coeff


def hf_lr(cfg, n):
    """transformers' schedules under torch's LambdaLR (base lr x lambda(n)), optimization.py
    (the same lambdas from v4.36.2 to v4.55.2): get_linear_schedule_with_warmup and
    get_cosine_schedule_with_warmup reach 0 at the Trainer's max_steps; cosine_with_min_lr
    (lr_scheduler_kwargs min_lr_rate) scales the cosine onto [min_lr_rate, 1]."""
    w, total = cfg.warmup_steps, cfg.total_steps
    if n < w:
        factor = float(n) / float(max(1, w))
    elif cfg.decay == "constant":
        factor = 1.0
    elif cfg.decay == "linear":
        factor = max(0.0, float(total - n) / float(max(1, total - w)))
    else:
        progress = float(n - w) / float(max(1, total - w))
        factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))      # num_cycles 0.5
        factor = max(0, factor * (1 - cfg.min_lr_ratio) + cfg.min_lr_ratio)
    return cfg.peak_lr * factor


def titan_lr(cfg, n):
    """torchtitan's linear_warmup_stable_decay under LambdaLR (components/lr_scheduler.py
    at v0.2.2): warm-up (n+1)/W, one stable step (stable_steps = total + 1 - W - decay
    with decay_ratio unset), then linear, sqrt or cosine decay onto [min_lr_factor, 1]."""
    w, total = cfg.warmup_steps, cfg.total_steps
    decay_steps = total - w
    warmup_stable = w + (total + 1 - w - decay_steps)
    if n < w:
        adjustment = float(n + 1) / w
    elif n < warmup_stable:
        adjustment = 1.0
    else:
        progress = float(n + 1 - warmup_stable) / decay_steps
        if cfg.decay == "linear":
            adjustment = 1 - progress
        elif cfg.decay == "sqrt":
            adjustment = 1 - math.sqrt(progress)
        else:
            adjustment = 0.5 * (1.0 + math.cos(math.pi * progress))
        adjustment = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * adjustment
    return cfg.peak_lr * adjustment


def deepspeed_lr(cfg, n):
    """DeepSpeed's WarmupDecayLR (deepspeed/runtime/lr_schedules.py at v0.16.4) after `n`
    scheduler steps: built at last_batch_iteration -1 (warmup_min_lr, 0), so step n sets
    iteration n - 1; the default 'log' warm-up log(i + 1) / log(W), then a linear decay
    to 0 at total_num_steps."""
    w, total = cfg.warmup_steps, cfg.total_steps
    if n == 0:
        return 0.0
    i = n - 1
    if i < w:
        gamma = 1.0 / math.log(w) * math.log(i + 1)
    else:
        gamma = max(0.0, float(total - i) / float(max(1.0, total - w)))
    return 0.0 + cfg.peak_lr * gamma


LR_SCHEDULERS = {"megatron": megatron_lr, "hf": hf_lr, "torchtitan": titan_lr, "deepspeed": deepspeed_lr}


def lr_at(cfg, n):
    """Learning rate after `n` scheduler steps, as the run's scheduler computes it."""
    return LR_SCHEDULERS[cfg.lr_scheduler](cfg, n)


def scheduler_steps(cfg, step):
    """Scheduler steps taken after optimizer step `step`: an fp16 step that
    overflowed is skipped and does not move the learning rate.  (Overflows in the
    warm-up are left out, so that it ends on its configured step and the learning
    rate is never 0 after a step: the jsonl referee checks both.)  Lightning steps its
    schedulers after every optimizer step, skipped or not (_update_learning_rates in
    loops/training_epoch_loop.py checks only the accumulation boundary)."""
    if cfg.framework == "lightning":
        return step
    return step - skipped_total(cfg, step) + skipped_total(cfg, min(step, cfg.warmup_steps))


def lr_after(cfg, step):
    """The learning rate read after step `step` (Megatron's and DeepSpeed's print)."""
    return lr_at(cfg, scheduler_steps(cfg, step))


def lr_used(cfg, step):
    """The learning rate step `step` ran with (what HF Trainer logs since v4.51)."""
    return lr_at(cfg, scheduler_steps(cfg, step - 1)) if step > 0 else lr_at(cfg, 0)


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


# Repeated data (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", NeurIPS):
# U unique tokens seen 1 + R times are worth U + U R* (1 - exp(-R / R*)) new tokens, with
# R* = 15.4 from their fit: up to ~4 epochs almost as good as new data, past ~16 little gain.
REPEAT_HALF_LIFE = 15.4
# A batch seen before scores better than a new one: the training loss drops below the
# held-out loss, more with every repeat.  The paper fits the held-out loss, not this gap:
# the figures are our estimate, ~1% after one repeat, ~6% after three.
MEMORISE_PER_REPEAT = (0.008, 0.004)          # linear and quadratic terms in R


def repeats(cfg, step):
    """Passes over the corpus beyond the first after step `step` (0 on a single pass).
    Fine-tunes count their epochs elsewhere (val_loss_at)."""
    if cfg.kind == "finetune":
        return 0.0
    return max(0.0, step * float(cfg.tokens_per_step) / cfg.corpus.tokens - 1)


def effective_tokens(cfg, tokens):
    """What `tokens` tokens of this corpus are worth in new data (Muennighoff et al.'s D')."""
    unique = float(cfg.corpus.tokens)
    if cfg.kind == "finetune" or tokens <= unique:
        return tokens
    r = tokens / unique - 1
    return unique + unique * REPEAT_HALF_LIFE * (1 - math.exp(-r / REPEAT_HALF_LIFE))


def memorised(cfg, step):
    """How far (relative) the training loss sits below the held-out loss from batches seen before."""
    r = repeats(cfg, step)
    return MEMORISE_PER_REPEAT[0] * r + MEMORISE_PER_REPEAT[1] * r * r


def _expected_loss(cfg, step):
    if cfg.kind == "finetune":
        x = step / float(epoch_steps(cfg))
        decay = (1 + 4 * x) ** -0.8 * 0.9 ** int(min(x, cfg.epochs - 1e-9))
        return cfg.loss_floor + (cfg.loss_start - cfg.loss_floor) * decay
    if cfg.kind == "continue":      # the re-warmed learning rate lifts the loss a little, then it settles
        gap = cfg.loss_start - cfg.loss_floor
        warm = 0.3 * gap * math.sin(math.pi * min(1.0, step / float(cfg.warmup_steps)))
        return cfg.loss_floor + gap * (1 + step / 40.0) ** -0.25 + warm
    # From scratch (or resumed from it): a Chinchilla-style fit in tokens seen
    # (repeats worth less), scaled by the data's loss level, softly capped at
    # ln(vocab), where an untrained model starts whatever the data.
    tokens = max(1.0, effective_tokens(cfg, effective_steps(cfg, step) * cfg.tokens_per_step))
    fit = cfg.loss_floor + cfg.corpus.loss_level * 534.0 / tokens ** 0.28
    ln_v = cfg.loss_start
    loss = (ln_v ** -8 + fit ** -8) ** -0.125
    return loss + 0.25 * math.exp(-step / 3.0)


def expected_loss(cfg, step):
    """Training loss without step-to-step noise."""
    if cfg.kind == "finetune":
        return _expected_loss(cfg, step)
    # As the learning rate anneals the loss drops a little more than the
    # power law alone: the familiar steepening at the end of a cosine schedule.
    annealed = 0.0
    if step >= cfg.warmup_steps:
        annealed = min(1.0, max(0.0, 1 - (lr_at(cfg, step) - cfg.min_lr) / (cfg.peak_lr - cfg.min_lr)))
    return _expected_loss(cfg, step) * (1 - 0.035 * annealed) * (1 - memorised(cfg, step))


# A loss averaged over T tokens scatters from step to step by about
# LOSS_NOISE_K * loss / sqrt(T): public logs give sd 0.0056 at 4.2M tokens
# (MLPerf GPT-3 175B, loss ~2.1: K 5.5), 0.036 at 0.5M (llm.c GPT-2 124M, loss
# ~3.3: K 7.7) and 0.15 at 12k (nanoGPT's rank-0 micro-batch, loss ~3: K 5.5).
LOSS_NOISE_K = 6.0


def loss_sd(cfg, base, tokens):
    """Standard deviation of a loss of level `base` averaged over `tokens` tokens."""
    return LOSS_NOISE_K * base / math.sqrt(max(1.0, tokens))


def loss_at(cfg, step, forced_spikes=(), spike=None):
    """Training loss of optimizer step `step` (the token mean over its global
    batch): the expected loss, spikes, and the scatter its batch implies."""
    base = expected_loss(cfg, step)
    mean = base * (1 + (spike_at(cfg, step, forced_spikes) if spike is None else spike))
    return mean + loss_sd(cfg, base, cfg.tokens_per_step) * normal(cfg.run_seed, S_LOSS, step)


def micro_losses(cfg, step, loss):
    """Rank 0's micro-batch losses of step `step` (what a per-batch logger such as
    Lightning's sees): each averages micro_batch x seq_len tokens around the step's loss."""
    sd = loss_sd(cfg, loss, cfg.micro_batch * cfg.seq_len)
    n = cfg.grad_accum
    return [loss + sd * normal(cfg.run_seed, S_MICRO, step * n + i) for i in range(n)]


def grad_norm_at(cfg, step, forced_spikes=(), spike=None):
    """Gradient norm: large early, settling, with spikes alongside loss spikes."""
    s = cfg.run_seed
    scale = 5.0 if cfg.kind == "pretrain" else 10.0
    g = cfg.grad_floor + cfg.grad_start / (1 + step / scale) ** 0.8
    g *= math.exp(0.12 * normal(s, S_GRAD, step))
    return g * (1 + 25 * (spike_at(cfg, step, forced_spikes) if spike is None else spike))


GENERALISE_EPOCHS = 1.3        # after about an epoch more passes only memorise: held-out loss bottoms out
OVERFIT_PER_EPOCH = 0.06       # ... then rises (~6% per further epoch, as multi-epoch SFT curves show)
VAL_SPIKE_SHARE = 0.5          # a spike is a change in the weights: evaluations during its recovery see it
VAL_NOISE = 0.004              # a validation pass averages many batches: little noise


def pretrain_val_gap(cfg, step):
    """Held-out over training loss, less 1, after step `step` of a (continued) pretrain:
    the corpus's own gap on a single pass, widening with every repeat of the corpus."""
    return (1 + cfg.corpus.val_gap) / (1 - memorised(cfg, step)) - 1


def val_loss_at(cfg, step, forced_spikes=()):
    """Validation loss after step `step`: the expected training loss plus a gap that follows
    the data and the epoch (a repeated corpus, a fine-tune that bottoms out, then overfits)."""
    if cfg.kind == "finetune":
        per_epoch = epoch_steps(cfg)
        best = expected_loss(cfg, min(step, int(GENERALISE_EPOCHS * per_epoch)))
        overfit = OVERFIT_PER_EPOCH * max(0.0, step / float(per_epoch) - GENERALISE_EPOCHS)
        base = best * (1 + cfg.corpus.val_gap + overfit)
    else:
        base = expected_loss(cfg, step) * (1 + pretrain_val_gap(cfg, step))
    base *= 1 + VAL_SPIKE_SHARE * spike_at(cfg, step, forced_spikes)
    return base * (1 + VAL_NOISE * normal(cfg.run_seed, S_VAL, step))


def keeps_best_only(cfg):
    """Lightning's ModelCheckpoint(monitor='val_loss', save_top_k=1) writes a checkpoint
    only when the validation loss is the best so far; the other frameworks save at every
    save interval (and at the last step)."""
    return cfg.framework == "lightning"


def is_saved(cfg, step, spikes=()):
    """Whether a checkpoint of step `step` is written at its save."""
    if step % cfg.ckpt_interval and step != cfg.total_steps or step <= 0:
        return False
    if not keeps_best_only(cfg):
        return True
    current = val_loss_at(cfg, step, spikes)
    return all(val_loss_at(cfg, k, spikes) > current for k in range(cfg.ckpt_interval, step, cfg.ckpt_interval))


def last_checkpoint_step(cfg, step, spikes=()):
    """The newest checkpoint at or before `step` that exists, the step a relaunch resumes
    from: the run's start step (it was loaded from one) if none was written since."""
    k = (step // cfg.ckpt_interval) * cfg.ckpt_interval
    if step >= cfg.total_steps and is_saved(cfg, cfg.total_steps, spikes):
        return cfg.total_steps
    while k > cfg.start_step and not is_saved(cfg, k, spikes):
        k -= cfg.ckpt_interval
    return max(k, cfg.start_step)


########################################################################
# Timeline (the phases of one run, and where the run is at time t)
########################################################################
# A run: launch -> build -> (load) -> train [-> crash -> launch -> build ->
# load -> train ...] -> export -> summary.  Within training, optimizer step k
# ends at T(k); validation and checkpoint pauses follow their steps.  Every
# time is computed in O(1) from the step, and the step from a time by
# bisection, so any moment of any run can be shown without replaying it.

Segment = collections.namedtuple("Segment", "phase t0 t1 first last attempt info")
Moment = collections.namedtuple("Moment", "phase step progress segment")
Incidents = collections.namedtuple("Incidents", "spikes stragglers crashes")

INCIDENT_RATES = {"off": 0.0, "rare": 1.0, "normal": 25.0, "often": 400.0}
TEARDOWN_S = 6.0            # a launcher notices a dead child within its poll (torchrun's monitor_interval,
                            # DeepSpeed's 1 s loop), stops the others and exits
SUMMARY_SECONDS = 20.0


# Where a step's time goes when the performance model gives only the total:
# compute dominates, with exposed communication, the optimizer's update and
# the data loader's fetch (the split in Megatron's --timing-log-level 2 output
# on well-tuned runs: forward-backward ~80-85%, optimizer ~5%, data ~1-4%).
STEP_PART_FRACTIONS = (0.83, 0.08, 0.06, 0.03)     # compute, comm, optimizer, data
STEP_JITTER = 0.01          # sd of a step's compute time (1%: kernels, clocks, collectives)
# Hiccups: each occurs once in a block of steps at a drawn step of the block.
GC_EVERY_TITAN = 50         # torchtitan's training.gc_freq: a gen-2 collection every 50 steps
GC_BLOCK = 300              # elsewhere Python's automatic gen-2 collection, every few hundred steps
GC_SECONDS = 0.06           # a gen-2 collection of a training process's heap: tens of ms
DATA_STALL_BLOCK = 700      # a slow data-loader batch (a shard opened on the shared filesystem)
DATA_STALL_SECONDS = 1.2
DATA_STALL_MAX_STEPS = 1.5  # prefetching workers hide all but this many steps' worth of a stall
WARMUP_EXTRA = (0.6, 0.2, 0.05)   # extra step times of the first three steps of a launch: NCCL's lazy
                                  # communicator set-up, the caching allocator growing, cuDNN/Triton autotune
WARMUP_FIXED_S = 0.0              # plus seconds of the first step that do not scale with the step
STEP_END_MEMO = 4096        # step end times kept for reuse (bisections ask for the same steps)
EVAL_VARIATION = 0.06       # evaluation and checkpoint durations vary by a few percent from call to call
CKPT_VARIATION = 0.15       # (filesystem load from other jobs varies more)


def step_parts_of(cfg):
    """(compute, comm, optimizer, data) seconds of a typical step, summing to cfg.step_time_s."""
    parts = getattr(cfg, "step_parts", None)
    if parts is not None:
        return tuple(parts)
    return tuple(cfg.step_time_s * f for f in STEP_PART_FRACTIONS)


def _telescoped(seed, stream, n, size, variation):
    """Sum of the sizes of events 0..n-1 that vary from call to call: event i
    lasts size * (1 + variation * (u(i) - u(i-1))), so any sum is O(1)."""
    if n <= 0:
        return 0.0
    return size * (n + variation * (unit(seed, stream, n - 1) - unit(seed, stream, -1)))


def _one_event(seed, stream, i, size, variation):
    return size * (1 + variation * (unit(seed, stream, i) - unit(seed, stream, i - 1)))


def _hiccup_step(seed, stream, block, every):
    """The step of block `block` at which the block's hiccup falls."""
    if stream == S_GC and every == GC_EVERY_TITAN:
        return block * every                     # torchtitan collects on the multiples of gc_freq
    # positions draw counters -2, -3, ...: the sizes above use -1, 0, 1, ...
    return block * every + int(unit(seed, stream, -2 - block) * every)


def _hiccup_at(seed, stream, every, size, step):
    """Seconds of the hiccup at step `step` (0 if its block's hiccup falls elsewhere)."""
    block = step // every
    if step > 0 and _hiccup_step(seed, stream, block, every) == step:
        return _one_event(seed, stream, block, size, 0.5)
    return 0.0


def _hiccups_upto(seed, stream, every, size, step):
    """Seconds of hiccups at steps 1..step (one per block of `every` steps)."""
    if step <= 0:
        return 0.0
    block = step // every
    total = _telescoped(seed, stream, block, size, 0.5)
    if _hiccup_step(seed, stream, block, every) <= step:
        total += _one_event(seed, stream, block, size, 0.5)
    if _hiccup_step(seed, stream, 0, every) <= 0:
        total -= _one_event(seed, stream, 0, size, 0.5)      # no hiccup at step 0
    return total


ATTEMPT_SEED_STRIDE = 1 << 48   # above every run_seed (seed x 7919 + run for 32-bit seeds): launches never share noise


def attempt_seed(cfg, attempt):
    """The seed of launch `attempt`'s timing noise (step jitter, GC, data stalls): a relaunch runs
    on other processes, other nodes, another moment of the filesystem, so its timings are new; its
    data order, and so its losses, replay exactly (they stay keyed by the run's seed)."""
    return cfg.run_seed + attempt * ATTEMPT_SEED_STRIDE


def relaunch_hosts(cfg, hosts, node, drained, attempt):
    """The job's node numbers at relaunch `attempt`, after node `node` was drained: its
    place goes to a spare drawn from the cluster's pool, never a host the job holds or
    one drained before; with every spare taken, to a free node of the cluster (or, at
    the last, to a node that came back from repair)."""
    cluster = cfg.cluster
    taken = set(hosts) | set(drained)
    pool = [n for n in spare_hosts(cluster) if n not in taken]
    pool = pool or [n for n in range(cluster.first_node, cluster.first_node + cluster.nodes) if n not in taken]
    pool = pool or [n for n in drained if n not in hosts]
    spare = pool[int(unit(cfg.run_seed, S_SPARE, attempt) * len(pool))]
    return hosts[:node] + (spare,) + hosts[node + 1:]


class Timeline(object):
    """The phases of one run in simulated seconds since its launch.  `hosts[a]`: the
    node numbers of launch a (a node that failed is drained and a spare takes its place)."""

    def __init__(self, cfg, incidents=None):
        self.cfg = cfg
        self.incidents = incidents or Incidents((), (), ())
        self.parts = step_parts_of(cfg)
        self._ends = {}
        self.gc_every = GC_EVERY_TITAN if cfg.framework == "torchtitan" else GC_BLOCK
        self.stall_s = min(DATA_STALL_SECONDS, DATA_STALL_MAX_STEPS * cfg.step_time_s)
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
        self.hosts, drained = [tuple(cfg.first_node + i for i in range(cfg.nodes))], []
        while True:
            if attempt:         # after a failure the node is drained and the job waits in the queue
                self._add("queue", cfg.requeue_seconds, step, step, attempt)
            self._add("launch", cfg.launch_seconds, step, step, attempt)
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
            step = last_checkpoint_step(cfg, last - 1, self.incidents.spikes)   # the crashed step never finished
            attempt += 1
            node = crash[1] // cfg.gpus_per_node
            drained.append(self.hosts[-1][node])
            self.hosts.append(relaunch_hosts(cfg, self.hosts[-1], node, drained, attempt))
        self._add("export", cfg.export_seconds, cfg.total_steps, cfg.total_steps, attempt)
        self._add("summary", SUMMARY_SECONDS, cfg.total_steps, cfg.total_steps, attempt)

    # -- steps and times --------------------------------------------------
    def val_seconds(self, step):
        """Duration of the evaluation after `step`: val_iters batches, varying per call."""
        cfg = self.cfg
        return _one_event(cfg.run_seed, S_EVAL_TIME, -(-step // cfg.val_interval), cfg.val_seconds, EVAL_VARIATION)

    def ckpt_seconds(self, step):
        """Duration of the checkpoint save after `step`: bytes over a bandwidth that varies."""
        cfg = self.cfg
        return _one_event(cfg.run_seed, S_CKPT_TIME, -(-step // cfg.ckpt_interval), cfg.ckpt_seconds,
                          CKPT_VARIATION)

    def pauses(self, step):
        """(validation, checkpoint) seconds that follow step `step`; the last step has both."""
        cfg = self.cfg
        final = step == cfg.total_steps
        val = self.val_seconds(step) if (step % cfg.val_interval == 0 or final) else 0.0
        ckpt = self.ckpt_seconds(step) if (step % cfg.ckpt_interval == 0 or final) else 0.0
        return val, ckpt

    def pause_after(self, step):
        return sum(self.pauses(step))

    def _pauses_between(self, first, step):
        """Pause seconds after steps first+1 .. step-1."""
        cfg, s = self.cfg, self.cfg.run_seed
        if step - 1 <= first:
            return 0.0
        v0, v1 = first // cfg.val_interval + 1, (step - 1) // cfg.val_interval
        c0, c1 = first // cfg.ckpt_interval + 1, (step - 1) // cfg.ckpt_interval
        total = 0.0
        if v1 >= v0:
            total += (_telescoped(s, S_EVAL_TIME, v1 + 1, cfg.val_seconds, EVAL_VARIATION)
                      - _telescoped(s, S_EVAL_TIME, v0, cfg.val_seconds, EVAL_VARIATION))
        if c1 >= c0:
            total += (_telescoped(s, S_CKPT_TIME, c1 + 1, cfg.ckpt_seconds, CKPT_VARIATION)
                      - _telescoped(s, S_CKPT_TIME, c0, cfg.ckpt_seconds, CKPT_VARIATION))
        return total

    def _jitter(self, seg, step):
        return STEP_JITTER * self.parts[0] * normal(attempt_seed(self.cfg, seg.attempt), S_STEP, step)

    def _gc(self, seg, step):
        return _hiccups_upto(attempt_seed(self.cfg, seg.attempt), S_GC, self.gc_every, GC_SECONDS, step)

    def _stalls(self, seg, step):
        return _hiccups_upto(attempt_seed(self.cfg, seg.attempt), S_DATA_STALL, DATA_STALL_BLOCK, self.stall_s, step)

    def _warmup(self, seg, step):
        """Extra seconds of a launch's first steps, up to step `step`."""
        n = min(len(WARMUP_EXTRA), step - seg.first)
        return (sum(WARMUP_EXTRA[:n]) * self.cfg.step_time_s + WARMUP_FIXED_S) if n > 0 else 0.0

    def _straggle(self, seg, step):
        """Extra seconds up to step `step` lost to slow nodes in this segment."""
        extra = 0.0
        for first, last, factor, _node in self.incidents.stragglers:
            lo, hi = max(first, seg.first), min(last, step)
            if hi > lo:
                extra += (hi - lo) * self.cfg.step_time_s * (factor - 1)
        return extra

    def step_end(self, seg, step):
        """Simulated time at which optimizer step `step` of segment `seg` ends (memoised:
        bisections for the GPU readings ask for the same steps again and again)."""
        key = (seg.t0, step)
        end = self._ends.get(key)
        if end is None:
            if len(self._ends) > STEP_END_MEMO:
                self._ends.clear()
            end = self._ends[key] = self._step_end(seg, step)
        return end

    def _step_end(self, seg, step):
        if step <= seg.first:
            return seg.t0
        return (seg.t0 + (step - seg.first) * self.cfg.step_time_s + self._jitter(seg, step)
                + self._gc(seg, step) - self._gc(seg, seg.first) + self._stalls(seg, step) - self._stalls(seg, seg.first)
                + self._warmup(seg, step) + self._pauses_between(seg.first, step) + self._straggle(seg, step))

    def busy(self, seg, a, b):
        """Seconds spent in steps a+1..b of `seg`, without the pauses between them."""
        if b <= a:
            return 0.0
        between = self._pauses_between(a, b) + (self.pause_after(a) if a > seg.first else 0.0)
        return self.step_end(seg, b) - self.step_end(seg, a) - between

    def data_seconds(self, seg, a, b):
        """Seconds steps a+1..b of `seg` waited for the data loader."""
        return (b - a) * self.parts[3] + self._stalls(seg, b) - self._stalls(seg, a)

    def straggle_of(self, seg, step):
        """Seconds step `step` waits for a slow node (part of its comm)."""
        return self._straggle(seg, step) - self._straggle(seg, step - 1)

    def step_parts(self, seg, step):
        """Where step `step`'s wall time went: named parts that sum to it."""
        base = self.parts
        seed = attempt_seed(self.cfg, seg.attempt)
        prev = self._jitter(seg, step - 1) if step - 1 > seg.first else 0.0
        return collections.OrderedDict([
            ("compute", base[0] + self._jitter(seg, step) - prev),
            ("comm", base[1] + self.straggle_of(seg, step)),
            ("optimizer", base[2]),
            ("data", base[3] + _hiccup_at(seed, S_DATA_STALL, DATA_STALL_BLOCK, self.stall_s, step)),
            ("gc", _hiccup_at(seed, S_GC, self.gc_every, GC_SECONDS, step)),
            ("warmup", self._warmup(seg, step) - self._warmup(seg, step - 1))])

    def step_time(self, seg, step):
        """Duration of the compute of step `step` alone (no pauses)."""
        return self.busy(seg, step - 1, step)

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

    def hostname(self, node, attempt):
        """The host name of node `node` in launch `attempt`."""
        return hostname_of(self.cfg, node, self.hosts[min(attempt, len(self.hosts) - 1)])

    def drained(self, attempt):
        """The host name of the node drained before launch `attempt` (>= 1)."""
        old, new = self.hosts[attempt - 1], self.hosts[attempt]
        node = [i for i in range(len(old)) if old[i] != new[i]][0]
        return hostname_of(self.cfg, node, old)

    def shown_attempt(self, seg):
        """The launch whose hosts a moment in `seg` shows: while a requeued job waits in
        the queue it holds no nodes, and the last allocation is what was seen."""
        return seg.attempt - 1 if seg.phase == "queue" else seg.attempt


# The timeout of ProcessGroupNCCL's watchdog, as each framework's launch code sets it (a
# hang lasts this long): Megatron-LM --distributed-timeout-minutes, default 10; Megatron-
# DeepSpeed calls deepspeed.init_distributed() without one, whose default is 30 minutes;
# HF TrainingArguments.ddp_timeout=1800; Lightning's strategies use torch's
# default_pg_timeout (30 min); torchtitan's CommConfig: train_timeout_seconds=100 once the
# first step is done (init_timeout_seconds=300 before).
WATCHDOG_TIMEOUT_S = {"megatron": 600.0, "deepspeed": 1800.0, "hf": 1800.0, "lightning": 1800.0,
                      "torchtitan": 100.0}
WATCHDOG_POLL_S = 0.3      # the watchdog notices within its poll (100 ms) and aborts the communicators


def watchdog_timeout_s(cfg):
    """Seconds a collective may wait, in this run's training loop, before the watchdog aborts."""
    return WATCHDOG_TIMEOUT_S[cfg.framework]


def crash_incident(cfg, step, u):
    """(step, failing GPU, seconds until the job is down): on one node its launcher
    stops the job at once; across nodes the ranks elsewhere wait in their collective
    until the watchdog's timeout fires."""
    if step % cfg.ckpt_interval == 0:
        step += 1                      # die during the step after a save, not inside it
    down = TEARDOWN_S if cfg.nodes == 1 else watchdog_timeout_s(cfg) + WATCHDOG_POLL_S
    return (step, int(u * cfg.gpus) % cfg.gpus, down)


def straggler_incident(cfg, step, u):
    """(first step, last step, slowdown factor, slow node)."""
    length = max(10, int(90.0 / cfg.step_time_s))
    return (step, step + length, 1.25 + 0.2 * u, int(u * 1000) % cfg.nodes)


def plan_incidents(cfg, incident_rate, forced=()):
    """The incidents of a run, drawn at real-world rates scaled by `incident_rate`.

    Rates: about 2e-5 hardware failures per GPU-hour (Llama 3's 54-day run saw
    419 interruptions on 16k GPUs), a slow node every ~1000 node-hours, and a
    loss spike every few thousand steps.  `forced` adds incidents triggered by
    the user as (kind, step)."""
    scale = INCIDENT_RATES[incident_rate]
    s = cfg.run_seed
    steps = cfg.total_steps - cfg.start_step
    hours = steps * cfg.step_time_s / 3600.0
    crashes, stragglers, spikes = [], [], []
    # With the rate "often" a demo sees something every run or two.
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
        u = unit(s, S_FORCED, 3 * step + ("spike", "straggler", "crash").index(kind))
        if kind == "crash":
            crashes.append(crash_incident(cfg, step, u))
        elif kind == "straggler":
            stragglers.append(straggler_incident(cfg, step, u))
        else:
            spikes.append((step, 0.3 + 0.5 * u))
    return cfg_spikes, Incidents(tuple(spikes), tuple(stragglers), tuple(sorted(crashes)))


########################################################################
# GPU telemetry (pure: reading of GPU g at time t)
########################################################################
# Utilisation and power follow the phase; temperature follows power with a
# thermal lag of THERMAL_TAU seconds; every card keeps its own offsets (a hot
# card stays hot).  Readings change once a simulated second, as nvidia-smi's.

GpuReading = collections.namedtuple("GpuReading", "util mem_used_mib temp_c power_w failed")
THERMAL_TAU = 45.0
# nvidia-smi's utilization.gpu is NVML's nvmlUtilization_t.gpu: "percent of time over the past
# sample period during which one or more kernels was executing" (sample period 1/6 s to 1 s),
# whatever the kernels did.  NCCL collectives and pipeline receives are kernels: a GPU spinning
# in an all-reduce, or through the pipeline bubble in a receive posted early (Megatron-Core's
# p2p_communication posts batch_isend_irecv, waits on it, and with batch_p2p_sync on, its
# default, synchronizes the device), reads busy while drawing little power.  Time the GPU waits
# on the host reads idle: the data loader, Python's garbage collector, the first steps' set-up,
# launch gaps between short kernels.  Power fractions are of the range between idle and the cap.
NCCL_SPIN_POWER = 0.09   # busy at little power: V100s at 99-100% util drawing 67-71 W of 300 W, idle 46-49 W
                         # (facts.md section 7: peft#194, bigscience meg_gpt2_perf_n16)
OPTIMIZER_POWER = 0.45   # a fused Adam streams HBM: memory-bound kernels draw about half the GEMMs' power (estimate)
GAP_POWER = 0.05         # no kernel in flight, clocks up: 8x H100 at 0% util draw 69-119 W of 700 (facts.md section 7)
KERNELS_PER_LAYER = 60   # eager PyTorch launches ~20 kernels per layer forward (norms, GEMMs, RoPE, attention,
                         # activation, residual adds) and about twice as many backward
NVML_SAMPLE_S = 1.0      # NVML's sample period: 1/6 s to 1 s by product; nvidia-smi -l 1 reads once a second
LAUNCH_S = 8e-6          # host time per kernel: PyTorch's eager dispatch plus cudaLaunchKernel, ~5-10 us (estimate)


def kernel_power(cfg):
    """Power fraction while the step's compute kernels run: heavier kernels draw more.
    Their MFU is the run's MFU over the share of the step the compute takes."""
    compute = step_parts_of(cfg)[0]
    return min(1.0, 0.55 + 0.6 * cfg.mfu * cfg.step_time_s / compute)


def kernel_share(shape, layout, grad_accum, compute):
    """Share of the forward-backward time in which a kernel runs.  The host launches a
    micro-batch's kernels while the GPU runs earlier ones; when each micro-batch's kernels
    take little longer than their launches (tiny models, micro-batch 1), the queue runs
    dry between them (a smooth minimum of kernel time over launch time)."""
    host = KERNELS_PER_LAYER * stage_layers(shape, layout.pp) * LAUNCH_S
    kernels = compute / float(grad_accum)
    return kernels / (kernels ** 4 + host ** 4) ** 0.25


def step_anatomy(tl, seg, step, node):
    """(wait, run, busy, power) of optimizer step `step` on node `node`, from its parts
    (Timeline.step_parts).  The step opens with `wait` seconds on the host: the data loader,
    the garbage collector, the first steps' set-up; then `run` seconds of kernels, in which
    `busy` is the share with a kernel in flight (launch gaps are not) and `power` the mean
    power fraction: compute kernels, NCCL time (exposed collectives, the pipeline bubble,
    waiting for a straggler) at little power, the optimizer's memory-bound kernels.
    A straggling node is slow on the host side (a data-loader worker, a noisy neighbour, a
    slow local disk): its GPUs wait outside any kernel while every other rank spins in the
    collective that waits for them."""
    cfg = tl.cfg
    parts = tl.step_parts(seg, step)
    compute = parts["compute"] * kernel_share(cfg.shape, cfg.layout, cfg.grad_accum, tl.parts[0])
    gaps = parts["compute"] - compute
    wait = parts["data"] + parts["gc"] + parts["warmup"]
    spin = parts["comm"]
    if any(s[3] == node for s in tl.incidents.stragglers):
        slow = min(spin, tl.straggle_of(seg, step))
        spin, wait = spin - slow, wait + slow
    run = compute + gaps + spin + parts["optimizer"]
    power = (compute * kernel_power(cfg) + spin * NCCL_SPIN_POWER + parts["optimizer"] * OPTIMIZER_POWER
             + gaps * GAP_POWER) / run
    return wait, run, (run - gaps) / run, power


def step_load(tl, seg, step, node):
    """(busy share, power fraction) of step `step` on node `node`, averaged over the whole step."""
    wait, run, busy, power = step_anatomy(tl, seg, step, node)
    return run * busy / (wait + run), (wait * GAP_POWER + run * power) / (wait + run)


def window_load(tl, seg, t, node):
    """(busy share, power fraction) over the sample period ending at t, as NVML averages them:
    the steps that overlap it, each weighted by its overlap, its host wait first.  Pauses
    for evaluation and checkpoints inside the window are left out (they have their own phase)."""
    lo = max(seg.t0, t - NVML_SAMPLE_S)
    step = tl.last_step_before(seg, lo) + 1
    busy = power = covered = 0.0
    while step <= seg.last:
        start = tl.step_end(seg, step - 1) + (tl.pause_after(step - 1) if step - 1 > seg.first else 0.0)
        if start >= t:
            break
        wait, run, b, p = step_anatomy(tl, seg, step, node)
        scale = (tl.step_end(seg, step) - start) / (wait + run)       # the step as the timeline times it
        waiting = max(0.0, min(t, start + wait * scale) - max(lo, start))
        running = max(0.0, min(t, start + (wait + run) * scale) - max(lo, start + wait * scale))
        busy += running * b
        power += waiting * GAP_POWER + running * p
        covered += waiting + running
        step += 1
    if covered <= 0:
        return step_load(tl, seg, min(step, seg.last), node)
    return busy / covered, power / covered


def power_level(tl, t, node, gpu, moment=None):
    """(utilisation %, fraction of the power cap, memory state) at t for one GPU."""
    cfg = tl.cfg
    if t < 0:
        return 0.0, 0.0, "empty"
    moment = moment or tl.moment(t)
    if moment.phase == "train":
        busy, power = window_load(tl, moment.segment, t, node)
        return 100.0 * busy, power, "full"
    if moment.phase == "val":
        return 95.0, kernel_power(cfg) * 0.8, "full"
    if moment.phase == "checkpoint":
        return 4.0, 0.12, "full"
    if moment.phase == "crash":
        failed = moment.segment.info[1]
        if gpu == failed:
            return 0.0, 0.0, "full"
        return 100.0, NCCL_SPIN_POWER, "full"           # ranks spin in NCCL waiting for it
    if moment.phase == "build":
        return 2.0, 0.05, "weights"
    if moment.phase == "load":
        return 3.0, 0.06, "loading"
    if moment.phase == "launch":
        return 0.0, 0.0, "context" if moment.progress > 0.5 else "empty"
    if moment.phase == "export":
        return 1.0, 0.04, "full"
    return 0.0, 0.0, "empty"


THERMAL_MEMO = 512          # power samples kept per class of GPU (the 150 s window is 50 of them)


def _thermal_state(tl, t, node, gpu, memo=None):
    """Power fraction smoothed with the card's thermal time constant.  The samples lie
    on a 3 s grid, so successive seconds share them: `memo` (bounded) keeps them."""
    memo = {} if memo is None else memo

    def sample(x):
        if x not in memo:
            if len(memo) > THERMAL_MEMO:
                memo.clear()
            memo[x] = power_level(tl, x, node, gpu)[1]
        return memo[x]
    step = 3.0
    start = math.floor(t / step) * step - 150.0
    power = sample(start)
    x = start
    k = math.exp(-step / THERMAL_TAU)
    while x + step <= t:
        x += step
        power = sample(x) * (1 - k) + power * k
    return power


def stage_memory_mib(cfg, stage):
    """MiB nvidia-smi shows on a GPU of pipeline stage `stage` while it trains."""
    mem = memory_model(cfg.shape, cfg.params, cfg.active_params, cfg.layout, cfg.seq_len, cfg.framework,
                       cfg.grad_accum, stage)
    return int(memory_total(mem) / MIB)


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
        self.stage_gpus = cfg.gpus // cfg.pp        # pipeline stages are the outermost rank dimension
        self.stage_mib = [stage_memory_mib(cfg, stage) for stage in range(cfg.pp)]
        shards = cfg.dp if cfg.sharding in ("zero3", "fsdp") else 1
        self.weights_mib = [int(rank_params(cfg.shape, cfg.layout, stage) * 2 / MIB) // shards
                            for stage in range(cfg.pp)]
        self._levels, self._cluster, self._samples = {}, {}, {}
        self._second, self._readings = None, {}

    def _cached(self, cache, key, compute):
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[key] = compute()
        return cache[key]

    def _class_state(self, second, node, gpu):
        """(util, power fraction, memory state, failed, smoothed heat) of one class of GPU."""
        tl = self.tl
        moment = tl.moment(second) if second >= 0 else None
        util, power, mem_state = power_level(tl, second, node, gpu, moment)
        failed = moment is not None and moment.phase == "crash" and moment.segment.info[1] == gpu
        memo = self._cached(self._samples, (node if node in self.slow_nodes else -1,
                                            gpu if gpu in self.failing_gpus else -1), dict)
        return util, power, mem_state, failed, _thermal_state(tl, second, node, gpu, memo)

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
        util, power, mem_state, failed, heat = self._cached(self._levels, key,
                                                            lambda: self._class_state(second, node, gpu))
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
        power = card.idle_w + (card.power_cap_w - card.idle_w) * power
        power = min(card.power_cap_w, power * (1 + 0.03 * (offset - 0.5) + 0.015 * jitter_power))
        temp = cfg.ambient_c + 8 + 48 * heat + 8 * (offset - 0.5) + 0.4 * jitter_temp
        return GpuReading(int(round(util)), self.memory(gpu, mem_state), int(round(temp)), int(round(power)), failed)

    def memory(self, gpu, state):
        """MiB in use: the CUDA context, then the weights, then what training holds
        (the framework's reserved pool + CUDA context + NCCL buffers, as nvidia-smi counts it)."""
        cfg = self.cfg
        stage = gpu // self.stage_gpus
        used, weights = self.stage_mib[stage], self.weights_mib[stage]
        if state == "empty":
            return 0
        if state == "context":
            return cfg.context_mib
        if state == "weights":
            return min(used, cfg.context_mib + cfg.nccl_mib + weights + self.spreads[gpu])
        if state == "loading":
            return min(used, cfg.context_mib + cfg.nccl_mib + weights * 4 + self.spreads[gpu])
        return min(cfg.gpu.memory_mib - 64, used + self.spreads[gpu])

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
# Events and the per-step record (what happens between two moments)
########################################################################

Event = collections.namedtuple("Event", "t kind data")
StepMetrics = collections.namedtuple(
    "StepMetrics", "step loss lr grad_norm step_time_s tokens_per_s tokens_seen mfu eta_s "
                   "epoch skipped loss_scale attempt lr_used parts micro_losses samples_seen")
TITAN_LOG_FREQ = 10         # torchtitan's metrics.log_freq default


def is_logged(cfg, step):
    """Whether the framework prints a training line for this step."""
    if cfg.framework == "torchtitan":
        return step == 1 or step % TITAN_LOG_FREQ == 0        # torchtitan's should_log
    return step % cfg.log_interval == 0


def run_mfu(cfg, tokens_per_s):
    """The run's MFU at this token rate."""
    return mfu_of(cfg.flops_per_token, tokens_per_s, cfg.gpus, cfg.gpu.tflops)


def step_metrics(tl, seg, step, record=False):
    """The per-step record: with `record`, also where the time went and rank 0's micro-batch losses."""
    cfg = tl.cfg
    spikes = tl.incidents.spikes
    step_time = tl.step_time(seg, step)
    tokens_per_s = cfg.tokens_per_step / step_time
    scale, skipped = loss_scale_at(cfg, step)
    spike = spike_at(cfg, step, spikes)
    loss = loss_at(cfg, step, spikes, spike)
    return StepMetrics(          # positional: this is the hottest constructor of a fast-forward
        step, loss, lr_after(cfg, step), grad_norm_at(cfg, step, spikes, spike),
        step_time, tokens_per_s, step * cfg.tokens_per_step, run_mfu(cfg, tokens_per_s),
        tl.eta(seg, step), step / float(epoch_steps(cfg)),
        skipped, scale, seg.attempt, lr_used(cfg, step), tl.step_parts(seg, step) if record else None,
        micro_losses(cfg, step, loss) if record else None, step * cfg.global_batch)


def train_segment(tl, attempt):
    """The training segment of a launch (a step's own, even at a crash's last step)."""
    return [s for s in tl.train_segments() if s.attempt == attempt][0]


def is_redone(tl, attempt, step):
    """Whether launch `attempt` runs `step` again: an earlier launch got that far before it failed."""
    return attempt > 0 and any(s.last >= step for s in tl.train_segments() if s.attempt < attempt)


def _phase_data(tl, seg):
    """A phase's start: a launch names the hosts it got, a requeued job's wait the node drained."""
    data = {"phase": seg.phase, "attempt": seg.attempt, "step": seg.first, "info": seg.info}
    if seg.phase == "launch":
        data["hostnames"] = [tl.hostname(node, seg.attempt) for node in range(tl.cfg.nodes)]
    if seg.phase == "queue":
        data["drained"] = tl.drained(seg.attempt)
    return data


def _failed_host(tl, crash):
    """Where the GPU of a crash segment failed: its rank, node and host, and the launch."""
    gpu = crash.info[1]
    node = gpu // tl.cfg.gpus_per_node
    return collections.OrderedDict([("gpu", gpu), ("node", node), ("host", tl.hostname(node, crash.attempt)),
                                    ("attempt", crash.attempt)])


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
    val = val_loss_at(cfg, cfg.total_steps, tl.incidents.spikes)
    return collections.OrderedDict([
        ("model", cfg.model), ("params", cfg.params), ("kind", cfg.kind), ("steps", steps),
        ("steps_redone", steps_run - steps), ("tokens", steps * cfg.tokens_per_step),
        ("wall_s", wall), ("train_loss", final_loss), ("train_ppl", math.exp(final_loss)),
        ("val_loss", val), ("val_ppl", math.exp(val)), ("tokens_per_s", mean_tps),
        ("mfu", run_mfu(cfg, mean_tps)),
        ("gpu_hours", cfg.gpus * wall / 3600.0), ("checkpoints", checkpoints),
        ("restarts", len([s for s in tl.segments if s.phase == "crash"])),
        ("export_files", len(cfg.export_files)),
        ("export_bytes", sum(b for _, b in cfg.export_files)),
    ])


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
            if end > t0 and (every_step or is_logged(cfg, step) or step == seg.first + 1):
                out.append(Event(end, "step", step_metrics(tl, seg, step, every_step)))
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
                    v = val_loss_at(cfg, step, tl.incidents.spikes)
                    out.append(Event(t, "val", {"step": step, "val_loss": v, "val_ppl": math.exp(v),
                                                "seconds": val}))
            if ckpt:
                if t0 < t <= t1:
                    out.append(Event(t + 2e-6, "ckpt_start", {"step": step, "seconds": ckpt}))
                t += ckpt
                if t0 < t <= t1:
                    out.append(Event(t, "checkpoint", {"step": step, "bytes": cfg.ckpt_bytes, "seconds": ckpt}))
        step += 1
    return out


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
            out.append(Event(seg.t0, "phase", _phase_data(tl, seg)))
        if seg.phase == "crash":
            where = _failed_host(tl, seg)
            if t0 < seg.t0 + 0.5 <= t1:
                out.append(Event(seg.t0 + 0.5, "xid", collections.OrderedDict(where, step=seg.last)))
            if t0 < seg.t1 - 0.001 <= t1:
                out.append(Event(seg.t1 - 0.001, "job_failed", collections.OrderedDict(
                    where, step=seg.last, timeout_s=watchdog_timeout_s(cfg))))
        if seg.phase == "export" and t0 < seg.t1 <= t1:
            files = [{"name": n, "bytes": b} for n, b in cfg.export_files]
            out.append(Event(seg.t1, "export", {"files": files, "total_bytes": sum(b for _, b in cfg.export_files)}))
        if seg.phase == "summary" and t0 < seg.t0 + 0.001 <= t1:
            out.append(Event(seg.t0 + 0.001, "summary", run_summary(tl)))
        if seg.phase == "train" and seg.t1 > t0:
            out.extend(_train_events(tl, seg, t0, t1, every_step))
    out.sort(key=lambda e: e.t)
    return out


########################################################################
# Session (an endless sequence of runs on one cluster and one clock)
########################################################################

class RunState(object):
    """One run of a session: its config, timeline and telemetry."""

    def __init__(self, cfg, incident_rate, start_tau, offset, forced=()):
        self.base_cfg = cfg
        self.incident_rate = incident_rate
        self.forced = list(forced)        # (kind, step) incidents the viewer asked for with `!`
        self.start_tau = start_tau        # session time at which this run's t == offset
        self.offset = offset              # run time at which the session met this run
        self.until = 0.0                  # session time to which the finished run stays shown (the next is queued)
        self._rebuild()

    def _rebuild(self):
        self.cfg, incidents = plan_incidents(self.base_cfg, self.incident_rate, self.forced)
        self.timeline = Timeline(self.cfg, incidents)
        self.telemetry = Telemetry(self.timeline)
        self.end_tau = max(self.until, self.start_tau + self.timeline.duration - self.offset)

    def local(self, tau):
        return tau - self.start_tau + self.offset

    def trigger(self, t):
        """Force the next incident now (the `!` key): a spike, a slow node, a crash."""
        moment = self.timeline.moment(t)
        if moment.phase != "train" or moment.step + 3 >= self.cfg.total_steps:
            return None
        kinds = ("spike", "straggler", "crash")
        kind = kinds[len(self.forced) % 3]
        self.forced.append((kind, moment.step + 2))
        self._rebuild()
        return kind


# Later runs are laid out in windows of session time, each filled from its start with runs
# that end inside it (a draw that would not is left out; the last finished job stays shown
# while the next waits in the queue), so the run at any time is found by building one
# window, never by walking from the session's start: the cost is flat in the clock.
WINDOW_S = 3 * 86400.0       # a window: three days of jobs, or twice the first run when pins make every run long
WINDOW_RUNS = 1000           # run numbers each window may use (window k's first is 2 + (k - 1) * WINDOW_RUNS)
WINDOW_SKIPS = 3             # draws left out in a row before the rest of the window stays queued (an empty window: 9)
WINDOW_KEEP = 2              # windows whose runs are kept built (a frame and the log writer may differ by one)


def attach_time(tl):
    """Where a session joins its first run: part-way through a short job, near the end of a long one."""
    train = tl.train_segments()[0]
    return train.t0 + tl.cfg.attach_fraction * (train.t1 - train.t0)


class Session(object):
    """Runs one after another: the first (met mid-way unless from_start), then windows of
    WINDOW_S, each filled with runs back to back."""

    def __init__(self, catalog, seed, pins=None, incidents="rare", from_start=False):
        self.catalog, self.seed, self.pins, self.incident_rate = catalog, seed, pins or {}, incidents
        self.cluster = make_cluster(catalog, seed, self.pins)     # one cluster for every job of the session
        first = self._new_run(1, 0.0, 0.0)
        long_runs = self.pins and first.timeline.duration > WINDOW_S
        self.window_s = 2 * first.timeline.duration if long_runs else WINDOW_S
        if not from_start:
            first = RunState(first.base_cfg, incidents, 0.0, attach_time(first.timeline))
        self.first = self.current = first
        self.previous = None
        self.windows_from = first.end_tau
        self._windows = collections.OrderedDict()

    def _new_run(self, run, start_tau, offset):
        cfg = make_run_config(self.catalog, self.seed, run, self.pins, self.cluster)
        return RunState(cfg, self.incident_rate, start_tau, offset)

    def _window(self, k, tau=None):
        """The runs of window k (k >= 1) in order, built as far as the run under way at
        tau (all of them if tau is None); each is shown until the next begins, the last
        until the window ends.  Draws that would end past the window are left out (the
        window is empty if the first 3 * WINDOW_SKIPS all would)."""
        end = self.windows_from + k * self.window_s
        if k not in self._windows:
            self._windows[k] = [end - self.window_s, 2 + (k - 1) * WINDOW_RUNS, 0, []]
            while len(self._windows) > WINDOW_KEEP:
                self._windows.popitem(last=False)
        state = self._windows[k]
        t, run, skipped, runs = state
        while (tau is None or not runs or runs[-1].end_tau <= tau) and run < 2 + k * WINDOW_RUNS \
                and skipped < (WINDOW_SKIPS if runs else 3 * WINDOW_SKIPS):
            rs = self._new_run(run, t, 0.0)
            run += 1
            if rs.end_tau > end:
                skipped += 1
                continue
            runs.append(rs)
            t, skipped = rs.end_tau, 0
        state[:3] = [t, run, skipped]
        done = run >= 2 + k * WINDOW_RUNS or skipped >= (WINDOW_SKIPS if runs else 3 * WINDOW_SKIPS)
        if done and runs:                 # the window's last job stays shown while the next is queued
            runs[-1].until = end
            runs[-1].end_tau = max(runs[-1].end_tau, end)
        return runs

    def _last_before(self, k):
        """The run shown at the start of window k: the last of an earlier window (up to
        three back), else the first run; it stays shown through window k."""
        for j in range(k - 1, max(0, k - 4), -1):
            runs = self._window(j)
            if runs:
                return runs[-1]
        return self.first

    def run_at(self, tau):
        """The run under way at session time tau (any tau >= 0): the one the viewer
        holds (an incident it forced may have stretched it), else the first run, else
        the run of tau's window (built in bounded time, whatever tau is)."""
        if tau < 0:
            raise ValueError("session time %r is before the session began" % tau)
        for rs in (self.current, self.previous):
            if rs is not None and rs.start_tau <= tau < rs.end_tau:
                return rs
        if tau < self.first.end_tau:
            found, before = self.first, None
        else:
            k = max(1, int((tau - self.windows_from) // self.window_s) + 1)
            runs = self._window(k, tau)
            i = bisect.bisect_right([rs.start_tau for rs in runs], tau) - 1
            found, before = (runs[i], runs[i - 1] if i > 0 else None) if i >= 0 else (self._last_before(k), None)
            if i < 0:                             # the window's jobs are still queued: the last one stays shown
                found.until = max(found.until, self.windows_from + k * self.window_s)
                found.end_tau = max(found.end_tau, found.until)
        if found is not self.current:
            self.previous, self.current = before, found
        return found


########################################################################
# Number formats
########################################################################
# Figures as people write them, shared by the dialects and the frames.


def fmt_params(n):
    return "%.2fB" % (n / 1e9) if n >= 1e9 else "%.0fM" % (n / 1e6)


def fmt_tokens(n):
    for name, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return "%.2f%s" % (n / size, name) if n < 10 * size else "%.1f%s" % (n / size, name)
    return "%d" % n


def fmt_duration(seconds):
    """tqdm's elapsed format: MM:SS, or H:MM:SS past an hour."""
    seconds = int(max(0, seconds))
    minutes, s = divmod(seconds, 60)
    h, minutes = divmod(minutes, 60)
    return "%d:%02d:%02d" % (h, minutes, s) if h else "%02d:%02d" % (minutes, s)


def fmt_bytes(n):
    for name, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return "%.1f %s" % (n / size, name)
    return "%d B" % n


########################################################################
# Dialects (each framework's instruments and log lines)
########################################################################
# One formatter per framework turns the same events into that framework's
# lines; every number is the core's number after the framework's own
# rounding.  Formats were learned from the frameworks' source and from
# logs people posted; the tests hold a regular expression for each line.

# ZeRO's bucket defaults (runtime/zero/config.py: pp_int(5e8), pp_int(5e7)), which print with
# thousands separators (pp_int.__repr__) when ds_config leaves them unset
DS_REDUCE_BUCKET, DS_PREFETCH_BUCKET = "500,000,000", "50,000,000"
PDSH_MAX_FAN_OUT = 1024             # deepspeed/launcher/constants.py: pdsh -f, hosts reached at once


def nccl_version(stack):
    """NCCL's banner version: the wheel's release and the CUDA it was built with ("2.21.5+cuda12.4")."""
    return "%s+cuda%s" % (stack.nccl, stack.cuda)


def cuda_driver_version(stack):
    """The driver's CUDA version as NCCL prints it (cudaDriverVersion 12080 for 12.8)."""
    major, minor = stack.driver_cuda.split(".")
    return int(major) * 1000 + int(minor) * 10


# Processes.  Each launch starts, on every node, a launcher (torchrun's agent, DeepSpeed's
# launch.py) and then its 8 workers.  Linux hands out pids and thread ids from one counter,
# so the workers' pids follow the agent's with gaps where the agent's own threads took
# numbers, and the NCCL thread each worker starts lands tens of ids after its pid,
# interleaved with its neighbours'.  All drawn per run, launch and node (stream S_PID).
PID_SLOTS = 64              # per node and launch: 0 the agent, 1-8 worker gaps, 9-16 thread offsets, 17 start-up
NCCL_TID_OFFSETS = (55, 115)   # real logs: NCCL's init thread at pid +92 ... +103 (research/versions.md), +72 (nccl-tests#185)
LAUNCH_DELAY_S = (1.5, 4.5)    # srun/pdsh reach a node and Python imports torch: 1.5-4.5 s, per node (estimate)


def _pid_draw(cfg, node, attempt, slot):
    return unit(cfg.run_seed, S_PID, (attempt * 4096 + node) * PID_SLOTS + slot)


def agent_pid(cfg, node, attempt):
    """The pid of node `node`'s launcher in launch `attempt`."""
    return 1000 + int(_pid_draw(cfg, node, attempt, 0) * 3900000)


def worker_pid(cfg, node, attempt, local_rank):
    """The pid of a worker: after the agent's, each a little after the one before (mostly
    the next number, sometimes a few later: the agent's threads took the ones between)."""
    pid = agent_pid(cfg, node, attempt)
    for local in range(local_rank + 1):
        pid += 1 + int(-math.log(1.0 - 0.95 * _pid_draw(cfg, node, attempt, 1 + local)) * 2.0)
    return pid


def nccl_tid(cfg, node, attempt, local_rank):
    """The system-wide id of the thread NCCL initialises its communicator on in that worker."""
    lo, hi = NCCL_TID_OFFSETS
    return worker_pid(cfg, node, attempt, local_rank) + lo + int(_pid_draw(cfg, node, attempt, 9 + local_rank) * (hi - lo))


def launch_offset(cfg, node, attempt):
    """Seconds from a launch until node `node`'s launcher speaks: srun or pdsh reaching the
    node, then Python starting and importing torch; each node its own."""
    lo, hi = LAUNCH_DELAY_S
    return lo + (hi - lo) * _pid_draw(cfg, node, attempt, 17)


def python_thread_ident(cfg, node, attempt):
    """threading.get_ident() of a launcher's main thread: glibc's pthread_t, an address near
    0x7f.. whose last digits are the main thread's fixed offset (...740)."""
    return 0x7f0000000000 + int(_pid_draw(cfg, node, attempt, 18) * 2 ** 40) // 4096 * 4096 + 0x740


class LogContext(object):
    """What every dialect needs besides the event: the run, names and clocks."""

    def __init__(self, run_state, epoch0, rank=None):
        self.cfg = run_state.cfg
        self.tl = run_state.timeline
        self.epoch0 = epoch0          # wall-clock seconds at run time 0
        self.rank = rank

    def hostname(self, node, attempt):
        return self.tl.hostname(node, attempt)

    def pid(self, node, attempt, local_rank=0):
        return worker_pid(self.cfg, node, attempt, local_rank)

    def glog_stamp(self, t, digits, precise=None):
        """glog's 'MMDD HH:MM:SS.fraction' at run time t: `digits` shown, of which
        `precise` are measured (Python's logging in torchrun keeps milliseconds)."""
        when = self.epoch0 + t
        fraction = int((when % 1) * 10 ** (precise or digits)) * 10 ** (digits - (precise or digits))
        return time.strftime("%m%d %H:%M:%S", time.gmtime(when)) + ".%0*d" % (digits, fraction)

    def clock(self, t, fmt="%Y-%m-%d %H:%M:%S", millis=False):
        when = self.epoch0 + t
        text = time.strftime(fmt, time.gmtime(when))
        if millis:
            text += ",%03d" % int((when % 1) * 1000)
        return text


def log_site(cfg, field, offset=0):
    """'file.py:LINE' of the logger call printers.txt's `field` names for the run's stack
    (Python's logging prints where the call starts); `offset`: a later call of the same
    block, whose lines sit at fixed distances from the first in every release read."""
    name, line = cfg.stack.prints[field].rsplit(":", 1)
    return "%s:%d" % (name, int(line) + offset)


def titan_prefix(ctx, t):
    """torchtitan's logger under torchrun --tee: '[rank0]:[titan] <asctime> - root - INFO - '."""
    return "[rank0]:[titan] %s - root - INFO - " % ctx.clock(t, millis=True)


def tqdm_line(n, total, elapsed, rate, prefix="", postfix="", always_its=False):
    """A tqdm progress line with ASCII fill, as tqdm's format_meter writes it:
    remaining = (total - n) / rate, and s/it when the rate is below 1 it/s
    (Lightning 2.1+ always shows it/s)."""
    frac = n / float(max(1, total))
    filled = int(frac * 10)
    partial = int(frac * 100) % 10                     # tqdm's ASCII charset: " 123456789#"
    bar = "#" * filled + ((str(partial) if partial else " ") if filled < 10 else "")
    bar = (bar + " " * 10)[:10]
    remaining = fmt_duration((total - n) / rate) if rate else "?"
    if not rate:
        rate_text = "?it/s"
    elif rate >= 1 or always_its:
        rate_text = "%5.2fit/s" % rate
    else:
        rate_text = "%5.2fs/it" % (1.0 / rate)
    return "%s%3.0f%%|%s| %d/%d [%s<%s, %s%s]" % (prefix, frac * 100, bar, n, total, fmt_duration(elapsed),
                                                 remaining, rate_text, postfix)


# -- instruments: each framework's accumulators, computed from the step record ----------
def padded_vocab(cfg):
    """Megatron pads the vocabulary to a multiple of 128 x TP (--make-vocab-size-divisible-by)."""
    multiple = 128 * cfg.tp
    return int(math.ceil(cfg.shape.vocab / float(multiple)) * multiple)


def release(version):
    """'0.12.2' -> (0, 12, 2), to compare framework versions."""
    return tuple(int(part) for part in version.split("."))


# Each framework counts the FLOPs behind its printed TFLOP/s its own way; the
# performance model's flops_per_token (6N + 12Lhs) is ours, for MFU.
def megatron_flops_per_token(cfg):
    """Megatron-LM's num_floating_point_operations per token (training.py): 12 L h^2 x
    (attention with GQA, MLP, the padded logits once), no embedding lookup and no
    recompute; from core 0.12 the causal mask halves the s/h term."""
    shape, seq = cfg.shape, cfg.seq_len
    h, heads = float(shape.hidden), shape.heads
    causal = 2.0 if release(cfg.stack.megatron) >= (0, 12) else 1.0
    attention = (1 + shape.kv_heads / float(heads) + seq / (causal * h)) * (head_dim(shape) * heads / h)
    mlp = shape.ffn_hidden / h * (shape.active or 1) * (1.0 if shape.mlp == "gelu" else 1.5)
    logits = padded_vocab(cfg) / (2.0 * shape.layers * h)
    return 12.0 * shape.layers * h * h * (attention + mlp + logits)


def mds_flops_per_token(cfg):
    """Megatron-DeepSpeed's throughput_calculator (megatron/utils.py) per token:
    multiply-accumulates of the attention GEMMs (GQA through the integer
    2 // (heads // kv_heads)), attention's two bmms, the MLP and the logits; x3 for
    forward and backward, a forward more under full recompute (the bmms under
    selective), x2 FLOPs per multiply-accumulate."""
    shape, seq, h = cfg.shape, cfg.seq_len, cfg.shape.hidden
    gemms = shape.layers * (2 + 2 // (shape.heads // shape.kv_heads)) * h * h
    bmms = shape.layers * 2 * head_dim(shape) * shape.heads * seq
    mlp = shape.layers * (2 if shape.mlp == "gelu" else 3) * shape.ffn_hidden * h * (shape.active or 1)
    forward = gemms + bmms + mlp + padded_vocab(cfg) * h
    again = {"full": forward, "selective": bmms}.get(cfg.recompute, 0)
    return 2.0 * (3 * forward + again)


def titan_flops_per_token(cfg):
    """torchtitan's num_flops_per_token (get_dense_model_nparams_and_flops): 6 x the
    parameters less the input embedding, plus 12 L H hd s for attention (no causal half)."""
    shape = cfg.shape
    return (6.0 * (cfg.params - shape.vocab * shape.hidden)
            + 12.0 * shape.layers * shape.heads * head_dim(shape) * cfg.seq_len)


TQDM_SMOOTHING = 0.3        # tqdm's default EMA weight
TQDM_EMA_TERMS = 64         # 0.7**64 ~ 1e-10: older display intervals no longer show in 4 digits
DS_TIMER_START = 2          # DeepSpeed's ThroughputTimer does not time the first 2 steps


def tqdm_rate(tl, seg, step):
    """tqdm's EMA rate (it/s) after step `step`: one display per step (steps take
    more than mininterval), dn steps in dt seconds; the first update after a
    resume jumps by the resumed global step, as HF's ProgressCallback does."""
    a = TQDM_SMOOTHING
    dn = dt = 0.0
    w = a
    end = tl.step_end(seg, step)
    for k in range(step, max(seg.first, step - TQDM_EMA_TERMS), -1):
        before = tl.step_end(seg, k - 1)
        dn += w * (k if k == seg.first + 1 else 1)
        dt += w * (end - before)
        end, w = before, w * (1 - a)
    return dn / dt


def window_losses(tl, k0, k1):
    """(losses of the steps k0+1..k1 that were not skipped, number skipped)."""
    cfg, spikes = tl.cfg, tl.incidents.spikes
    losses, skipped = [], 0
    for k in range(k0 + 1, k1 + 1):
        if cfg.precision == "fp16" and loss_scale_at(cfg, k)[1]:
            skipped += 1
        else:
            losses.append(loss_at(cfg, k, spikes))
    return losses, skipped


def megatron_window(tl, seg, step):
    """Megatron's training_log over the steps since its last line: (ms per
    iteration without evaluation and checkpoint time, mean loss of the
    non-skipped iterations or None, skipped iterations)."""
    k0 = max(seg.first, step - tl.cfg.log_interval)
    losses, skipped = window_losses(tl, k0, step)
    ms = 1000.0 * tl.busy(seg, k0, step) / (step - k0)
    return ms, (sum(losses) / len(losses) if losses else None), skipped


def ds_throughput(tl, seg, step):
    """DeepSpeed ThroughputTimer: (running average samples/s over the timed steps
    of this launch, current samples/s of this step).  The timer runs from the
    forward to the optimizer step, so the data loader's wait is outside it."""
    cfg = tl.cfg
    timed = lambda a, b: tl.busy(seg, a, b) - tl.data_seconds(seg, a, b)
    count = step - seg.first
    avg = cfg.global_batch / (timed(seg.first + DS_TIMER_START, step) / (count - DS_TIMER_START))
    return avg, cfg.global_batch / (timed(step - 1, step) + 1e-6)


def titan_window(tl, seg, step):
    """torchtitan's MetricsProcessor window: (tokens per device, seconds) since
    its last log, or since it was built during start-up for the first line."""
    cfg = tl.cfg
    prev = 1 if step == TITAN_LOG_FREQ else step - TITAN_LOG_FREQ
    if step == 1 or prev <= seg.first:
        build = [s for s in tl.segments if s.phase == "build" and s.attempt == seg.attempt][0]
        t_prev, prev = build.t1 - min(1.0, 0.1 * (build.t1 - build.t0)), seg.first
    else:
        t_prev = tl.step_end(seg, prev)
    return (step - prev) * cfg.tokens_per_step / float(cfg.gpus), tl.step_end(seg, step) - t_prev


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


NCCL_LINE_MAX = 127         # NCCL's dumpLine: a 128-byte buffer, "..." replaces the end when it overflows


def node_ip(cfg, n):
    """The one eth0 address of the cluster's node number n (bootstrap and OOB use the same interface)."""
    return "10.%d.%d.%d" % (10 + cfg.seed % 200, n // 250, 11 + n % 250)


def channel_shift(cfg, channel):
    """Where a channel's path through a node starts: across nodes each channel leaves by
    another GPU's NIC, so the order rotates; inside one node every channel is 0 1 ... 7."""
    return channel % cfg.gpus_per_node if cfg.nodes > 1 else 0


def ring_order(cfg, channel):
    """The ranks in channel `channel`'s ring: through each node in turn."""
    g = cfg.gpus_per_node
    return [node * g + (local + channel_shift(cfg, channel)) % g for node in range(cfg.nodes) for local in range(g)]


def nccl_ring_line(cfg, channel, channels):
    """Rank 0's 'Channel cc/nn :' line: the ring, each rank as wide as the largest, cut as NCCL cuts it
    (src/graph/rings.cc ncclBuildRings: only rank 0 dumps the rings)."""
    width = len(str(cfg.gpus - 1))
    text = "Channel %02d/%02d :" % (channel, channels)
    for r in ring_order(cfg, channel):
        if len(text) >= NCCL_LINE_MAX:
            break
        text += " %*d" % (width, r)
    return text if len(text) <= NCCL_LINE_MAX else text[:NCCL_LINE_MAX - 3] + "..."


def btree(n, rank):
    """NCCL's binary tree over n nodes (src/graph/trees.cc ncclGetBtree): (up, down0, down1)."""
    bit = 1
    while bit < n and not bit & rank:
        bit <<= 1
    if rank == 0:
        return -1, -1, (bit >> 1 if n > 1 else -1)
    up = (rank ^ bit) | (bit << 1)
    if up >= n:
        up = rank ^ bit
    low = bit >> 1
    down0, down1 = (-1, -1) if low == 0 else (rank - low, rank + low)
    while down1 >= n:
        low >>= 1
        down1 = -1 if low == 0 else rank + low
    return up, down0, down1


def dtree(n, rank):
    """The second tree of NCCL's double binary tree (ncclGetDtree): shifted for an odd node
    count, mirrored for an even one."""
    if n % 2:
        u, d0, d1 = btree(n, (rank - 1 + n) % n)
        return tuple(-1 if x == -1 else (x + 1) % n for x in (u, d0, d1))
    u, d0, d1 = btree(n, n - 1 - rank)
    return tuple(-1 if x == -1 else n - 1 - x for x in (u, d0, d1))


def tree_entry(cfg, rank, channel, channels):
    """' [c] d0/d1/d2->rank->up' of one rank (src/init.cc 'Trees%s'): a chain through each node
    in the channel's ring order, whose head links to the heads of the parent and child nodes
    of the channel's tree (the first half of the channels the tree, the second its twin)."""
    g = cfg.gpus_per_node
    node, local = divmod(rank, g)
    chain = [node * g + (i + channel_shift(cfg, channel)) % g for i in range(g)]
    at = chain.index(rank)
    up = chain[at - 1] if at else -1
    down = [chain[at + 1]] if at + 1 < g else []
    if at == 0:
        u, d0, d1 = (btree if channel < channels // 2 else dtree)(cfg.nodes, node)
        head = lambda n: n * g + channel_shift(cfg, channel)
        up = head(u) if u >= 0 else -1
        down += [head(d) for d in (d0, d1) if d >= 0]
    down = (down + [-1, -1, -1])[:3]
    return " [%d] %d/%d/%d->%d->%d" % (channel, down[0], down[1], down[2], rank, up)


def nic_of(cfg, local):
    """The index of the NIC nearest to a GPU slot (rail-optimised boards: one per GPU)."""
    nics = cfg.cluster.node_type.nics
    count = int(nics[0]) if nics[0].isdigit() else len(nics)
    return local * count // cfg.gpus_per_node


def port_ip(ip, port):
    """The address of a node's interface eth<port>: each port on its own subnet (second octet)."""
    if not ip or not port:
        return ip
    parts = ip.split(".")
    return ".".join([parts[0], str((int(parts[1]) + 10 * port) % 256)] + parts[2:])


def net_lines(cfg, ip):
    """What NCCL prints about its network: the devices it found, then the net it uses."""
    fabric, nics = cfg.cluster.fabric, cfg.cluster.node_type.nics
    if cfg.nodes == 1 or fabric.nccl_net is None:
        return [], "Socket"
    if fabric.nccl_net in ("IB", "RoCE"):       # net_ib.cc: one port each, /IB or /RoCE by its link layer
        devices = " ".join("[%d]%s:1/%s" % (i, n, fabric.nccl_net) for i, n in enumerate(nics))
        return ["NET/IB : Using %s [RO]; OOB eth0:%s<0>" % (devices, ip)], "IB"
    if fabric.nccl_net == "Libfabric":          # aws-ofi-nccl: the provider and the EFA devices it found
        return ["NET/OFI Selected Provider is efa (found %s nics)" % nics[0]], "Libfabric"
    if fabric.nccl_net == "Socket":             # plain Ethernet: the node's ports as interfaces, not HCAs
        nics = ["eth%d" % i for i in range(len(nics))]
    devices = " ".join("[%d]%s:%s<0>" % (i, n, port_ip(ip, int(re.sub(r"\D", "", n) or 0))) for i, n in enumerate(nics))
    return ["NET/%s : Using %s" % (fabric.nccl_net, devices)], fabric.nccl_net


NO_P2P_ARCHS = ("ada",)     # Ada cards (L40S) have no peer-to-peer over PCIe: NCCL goes through host memory


def transport_line(cfg, rank, channel, p2p):
    """The line rank `rank` prints when it connects to the next rank of a channel's ring:
    over NVLink/PCIe inside a node (/read between Ampere GPUs: src/graph/paths.cc), over
    the network to another node ([send], and the peer's [receive] is the peer's line)."""
    ring = ring_order(cfg, channel)
    nxt = ring[(ring.index(rank) + 1) % len(ring)]
    g = cfg.gpus_per_node
    by_bus = cfg.stack.prints["nccl.peer"] == "bus"
    bus = cfg.cluster.node_type.bus_ids

    def peer(r):
        return "%d[%x]" % (r, int(bus[r % g], 16) << 12) if by_bus else "%d[%d]" % (r, r % g)
    if nxt // g == rank // g:
        read = "/read" if cfg.gpu.arch == "ampere" and not cfg.gpu.intra.startswith("PCIe") else ""
        way = "SHM/direct/direct" if cfg.gpu.arch in NO_P2P_ARCHS else p2p + read
        return "Channel %02d/0 : %s -> %s via %s" % (channel, peer(rank), peer(nxt), way)
    net = net_lines(cfg, "")[1]
    gdr = "/GDRDMA" if cfg.cluster.fabric.nccl_net in ("IB", "RoCE", "Libfabric") else ""
    return "Channel %02d/0 : %s -> %s [send] via NET/%s/%d%s" % (channel, peer(rank), peer(nxt), net,
                                                                 nic_of(cfg, rank % g), gdr)


def nccl_lines(ctx, ev):
    """NCCL_DEBUG=INFO start-up of a handful of ranks (or of the one rank whose log
    this is), as the session's NCCL release prints it on the session's machines: each
    process has its own comm pointer and init thread, all share the commId."""
    cfg = ctx.cfg
    attempt = ev.data["attempt"]
    g, prints = cfg.gpus_per_node, cfg.stack.prints
    ranks = sorted(set([0, 1, g - 1] + ([g] if cfg.nodes > 1 else [])))
    ranks = [r for r in ([ctx.rank] if ctx.rank is not None else ranks) if r < cfg.gpus]
    channels = 32 if cfg.gpu.link_gbs >= 300 else 8
    comm_id = "0x%016x" % int(unit(cfg.seed, S_NCCL, cfg.run * 10 + attempt) * 2 ** 63)

    def who(rank, thread=True):
        node, local = divmod(rank, g)
        pid = worker_pid(cfg, node, attempt, local)
        tid = nccl_tid(cfg, node, attempt, local) if thread else pid
        return "%s:%d:%d [%d] NCCL INFO " % (ctx.hostname(node, attempt), pid, tid, local)

    def fields(rank):
        local = rank % g
        return dict(comm="0x%x" % (0x55d000000000 + int(unit(cfg.seed, S_NCCL, (cfg.run * 10 + attempt) * 4096 + rank + 1)
                                                         * 2 ** 36) // 16 * 16),
                    rank=rank, nranks=cfg.gpus, dev=local, local=local, commid=comm_id, nnodes=cfg.nodes,
                    local_ranks=g, bus="%x" % (int(cfg.cluster.node_type.bus_ids[local], 16) << 12))

    def each(field, thread=True):
        return [("INFO", who(r, thread) + prints[field].format(**fields(r))) for r in ranks
                if prints[field] != "-"]
    head = ranks[0]
    ip = node_ip(cfg, ctx.tl.hosts[attempt][head // g])      # of this launch's host
    found, net = net_lines(cfg, ip)
    out = [("INFO", who(head, False) + "%s eth0:%s<0>" % (prints["nccl.bootstrap"], ip)),
           ("INFO", who(head, False) + "NCCL version " + nccl_version(cfg.stack))]
    out += [("INFO", who(r, False) + "cudaDriverVersion %d" % cuda_driver_version(cfg.stack)) for r in ranks[1:]]
    out += [("INFO", who(head) + text) for text in found + ["Using network " + net]]
    out += each("nccl.init_start") + each("nccl.rank_layout")
    out += [("INFO", who(r) + "Trees" + "".join(tree_entry(cfg, r, c, channels) for c in range(channels)))
            for r in ranks]
    if 0 in ranks:
        out += [("INFO", who(0) + nccl_ring_line(cfg, c, channels)) for c in range(channels)]
    out += [("INFO", who(r) + transport_line(cfg, r, c, prints["nccl.p2p"])) for r in ranks for c in range(channels)]
    out += [("INFO", who(r) + text) for text in ("Connected all rings", "Connected all trees") for r in ranks]
    return out + each("nccl.init_complete", prints["nccl.complete_thread"] != "main")


# --tokenizer-type choices argparse accepts (Megatron-LM arguments.py; Megatron-DeepSpeed's older list)
MEGATRON_TOKENIZERS = ("BertWordPieceLowerCase", "BertWordPieceCase", "GPT2BPETokenizer", "SentencePieceTokenizer",
                       "GPTSentencePieceTokenizer", "HuggingFaceTokenizer", "Llama2Tokenizer", "TikTokenizer",
                       "MultimodalTokenizer", "NullTokenizer")
MDS_TOKENIZERS = ("BertWordPieceLowerCase", "BertWordPieceCase", "GPT2BPETokenizer", "SentencePieceTokenizer",
                  "GPTSentencePieceTokenizer", "HFTokenizer", "NullTokenizer")


def megatron_tokenizer(cfg):
    """The --tokenizer-type a Megatron user picks for this model's tokenizer."""
    name = cfg.tokenizer.split(" ")[0]
    if cfg.framework == "deepspeed":
        if name in MDS_TOKENIZERS:
            return name
        return "GPTSentencePieceTokenizer" if "SentencePiece" in cfg.tokenizer else "HFTokenizer"
    return name if name in MEGATRON_TOKENIZERS else "HuggingFaceTokenizer"


def arguments_dump(values):
    """_print_args: every argument, sorted case-insensitively, between the two rules."""
    out = [("INFO", "------------------------ arguments ------------------------")]
    for name in sorted(values, key=lambda x: x.lower()):
        out.append(("INFO", "  %s %s %s" % (name, "." * (48 - len(name)), values[name])))
    out.append(("INFO", "-------------------- end of arguments ---------------------"))
    return out


def run_args(cfg):
    """The arguments a GPT run sets from its own shape and schedule (both Megatrons)."""
    shape = cfg.shape
    return [("adam_beta1", cfg.betas[0]), ("adam_beta2", cfg.betas[1]), ("bf16", cfg.precision == "bf16"),
            ("clip_grad", cfg.grad_clip), ("context_parallel_size", cfg.cp), ("data_parallel_size", cfg.dp),
            ("eval_interval", cfg.val_interval),
            ("eval_iters", cfg.val_iters), ("ffn_hidden_size", shape.ffn_hidden), ("fp16", cfg.precision == "fp16"),
            ("global_batch_size", cfg.global_batch), ("hidden_size", shape.hidden), ("log_interval", cfg.log_interval),
            ("lr", cfg.peak_lr), ("lr_decay_style", cfg.decay), ("lr_warmup_iters", cfg.warmup_steps),
            ("max_position_embeddings", shape.context), ("micro_batch_size", cfg.micro_batch), ("min_lr", cfg.min_lr),
            ("num_attention_heads", shape.heads), ("num_layers", shape.layers),
            ("pipeline_model_parallel_size", cfg.pp), ("recompute_granularity", None if cfg.recompute == "none"
                                                       else cfg.recompute),
            ("save", "/checkpoints/%s" % cfg.name), ("save_interval", cfg.ckpt_interval),
            ("seq_length", cfg.seq_len), ("swiglu", shape.mlp != "gelu"),
            ("tensor_model_parallel_size", cfg.tp), ("tokenizer_type", megatron_tokenizer(cfg)),
            ("train_iters", cfg.total_steps), ("untie_embeddings_and_output_weights", not shape.tied),
            ("weight_decay", cfg.weight_decay), ("world_size", cfg.gpus),
            ("params_dtype", "torch.bfloat16" if cfg.precision == "bf16" else "torch.float16"),
            ("encoder_num_layers", shape.layers), ("encoder_seq_length", cfg.seq_len),
            ("kv_channels", shape.head_dim or shape.hidden // shape.heads), ("lr_decay_iters", cfg.total_steps),
            ("start_weight_decay", cfg.weight_decay), ("end_weight_decay", cfg.weight_decay),
            ("load", "/checkpoints/%s" % cfg.name), ("tensorboard_dir", "/checkpoints/%s/tensorboard" % cfg.name),
            ("transformer_pipeline_model_parallel_size", cfg.pp)]


def mds_args(ctx):
    """Megatron-DeepSpeed's dump for a GPT run launched with --deepspeed and its ds_config.json
    (the Llama recipes' flags: RMSNorm, SwiGLU, rotary, no biases or dropout, packed data)."""
    cfg, shape = ctx.cfg, ctx.cfg.shape
    values = dict(cfg.stack.arguments["megatron-deepspeed"])
    values.update(run_args(cfg))
    flash = cfg.gpu.arch != "volta"               # FlashAttention-2 needs Ampere or newer
    values.update([
        ("deepspeed", True), ("deepspeed_config", "ds_config.json"), ("zero_stage", ZERO_LEVEL[cfg.sharding]),
        ("num_key_value_heads", shape.kv_heads), ("normalization", "rmsnorm" if shape.mlp != "gelu" else "layernorm"),
        ("use_rotary_position_embeddings", shape.mlp != "gelu"), ("add_position_embedding", shape.mlp == "gelu"),
        ("add_bias_linear", False), ("attention_dropout", 0.0), ("hidden_dropout", 0.0),
        ("use_flash_attn_v2", flash), ("use_flash_attn", flash), ("no_pipeline_parallel", cfg.pp == 1),
        ("deepspeed_activation_checkpointing", cfg.recompute != "none"),
        ("checkpoint_activations", cfg.recompute == "full"), ("consumed_train_tokens", 0),
        ("reset_position_ids", cfg.kind == "finetune"), ("reset_attention_mask", cfg.kind == "finetune"),
        ("tokenizer_model", "/models/%s/tokenizer.model" % cfg.model)])
    return arguments_dump(values)


def megatron_args(ctx):
    """Megatron-LM's dump: its defaults, the run's own settings, and Megatron-Core's."""
    cfg, shape = ctx.cfg, ctx.cfg.shape
    values = dict(cfg.stack.arguments["megatron"])
    values.update(run_args(cfg))
    values.update([("group_query_attention", shape.kv_heads != shape.heads), ("num_query_groups", shape.kv_heads),
                   ("use_distributed_optimizer", cfg.sharding != "none")])
    return arguments_dump(values)


def launcher_prefix(ctx, t, node, attempt, level, module, line):
    """The head torchrun's Python logging puts before a message of its module `module`
    (a dotted name) at line `line`, as the stack's torch release formats it (run.prefix)."""
    cfg = ctx.cfg
    ident = {"thread": python_thread_ident(cfg, node, attempt),
             "pid": agent_pid(cfg, node, attempt)}.get(cfg.stack.prints["run.ident"], "")
    return cfg.stack.prints["run.prefix"].format(
        asctime=ctx.clock(t, millis=True), glog=ctx.glog_stamp(t, 6, 3), level=level, L=level[0], ident=ident,
        logger=module, path=module.replace(".", "/") + ".py", line=line) + " "


def torchrun_lines(ctx, ev):
    """torchrun's agent starting on every node, each when srun has reached it and Python has
    started, with its OMP_NUM_THREADS notice (one logger.warning, a prefix on each line).
    Our launch is `torchrun --rdzv-backend c10d --rdzv-endpoint <head>:<port>`, so the
    master_addr notice (only for a non-static backend without an endpoint) is not printed."""
    cfg = ctx.cfg
    attempt = ev.data["attempt"]
    out = []
    for node in range(min(cfg.nodes, 4)):
        prefix = launcher_prefix(ctx, ev.t + launch_offset(cfg, node, attempt), node, attempt, "WARNING",
                                 "torch.distributed.run", cfg.stack.prints["run.omp_line"])
        for text in ("", "*" * 41,
                     "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, "
                     "to avoid your system being overloaded, please further tune the variable for optimal "
                     "performance in your application as needed. ", "*" * 41):
            out.append(("WARNING", ("%d: " % node if cfg.nodes > 1 else "") + prefix + text))
    return sorted(out, key=lambda line: launch_offset(cfg, int(line[1].split(":")[0]), attempt)
                  if cfg.nodes > 1 else 0)      # (the other nodes' agents print the same: the log keeps four)


class Dialect(object):
    """One framework's console: each method turns one kind of event into its
    (level, text) lines.  What all frameworks share lives here; a framework
    overrides what it prints its own way.  A new framework is one subclass
    and one entry in DIALECTS here; how it shards, logs and collects garbage
    is set where the run configuration and the timeline name it."""

    prints_on_last_rank = False     # Megatron prints iterations on the last rank (print_rank_last)

    def checkpoint_dir(self, cfg, step):
        """Where the framework writes the checkpoint of step `step`, in its own layout."""
        raise NotImplementedError

    def load_path(self, cfg, step):
        """Where a launch loads from: the released model, or the run's own checkpoint."""
        return "/models/%s" % cfg.model if cfg.kind == "continue" and step == 0 else self.checkpoint_dir(cfg, step)

    def launch(self, ctx, ev):
        return torchrun_lines(ctx, ev)

    def prints_nothing(self, ctx, ev):
        return []

    def export_start(self, ctx, ev):
        """The conversion of the last checkpoint to a Hugging Face model."""
        cfg = ctx.cfg
        shards = sum(1 for n, _ in cfg.export_files if n.endswith(".safetensors"))
        return [("INFO", "Converting checkpoint %s to Hugging Face safetensors (%d shards) -> /outputs/%s/hf"
                 % (self.checkpoint_dir(cfg, last_checkpoint_step(cfg, cfg.total_steps, ctx.tl.incidents.spikes)),
                    shards, cfg.name))]

    def export_done(self, ctx, ev):
        files = ev.data["files"]
        return [("INFO", "Saved %d files (%s) to /outputs/%s/hf: %s" % (
            len(files), fmt_bytes(ev.data["total_bytes"]), ctx.cfg.name,
            ", ".join(f["name"] for f in files[:3]) + (", ..." if len(files) > 3 else "")))]

    build = load = train_start = step = val_start = val = ckpt_start = ckpt = end = prints_nothing


class Megatron(Dialect):
    """Megatron-LM (2024+): timestamped iteration lines, 6-digit learning rate."""

    prints_on_last_rank = True

    def world_line(self, cfg):
        return cfg.stack.prints["megatron.world_size"].format(world=cfg.gpus, dp=cfg.dp, cp=cfg.cp, tp=cfg.tp, pp=cfg.pp)

    def arguments(self, ctx):
        return megatron_args(ctx)

    def checkpoint_dir(self, cfg, step):
        return "/checkpoints/%s/iter_%07d" % (cfg.name, step)      # --save, and get_checkpoint_name's iter_%07d

    def iteration_line(self, ctx, ev):
        """training_log's line: averages over the window, values of the logging iteration."""
        cfg, metrics, tl = ctx.cfg, ev.data, ctx.tl
        seg = train_segment(tl, metrics.attempt)
        ms, loss, skipped = megatron_window(tl, seg, metrics.step)
        tflops = megatron_flops_per_token(cfg) * cfg.tokens_per_step / (ms / 1000.0) / cfg.gpus / 1e12
        grad = "" if metrics.skipped else " grad norm: %.3f |" % metrics.grad_norm       # None on a skipped iteration
        return (" [%s] iteration %8d/%8d | consumed samples: %12d | elapsed time per iteration (ms): %.1f | "
                "throughput per GPU (TFLOP/s/GPU): %.1f | learning rate: %.6E | global batch size: %5d | "
                "lm loss: %.6E | loss scale: %.1f |%s number of skipped iterations: %3d | "
                "number of nan iterations: %3d |" % (ctx.clock(ev.t), metrics.step, cfg.total_steps,
                                                      metrics.step * cfg.global_batch, ms, tflops, metrics.lr, cfg.global_batch,
                                                      loss or 0.0, metrics.loss_scale or 1.0, grad, skipped, 0))

    def build(self, ctx, ev):
        cfg = ctx.cfg
        out = [("INFO", self.world_line(cfg)),
               ("INFO", "using torch.%s for parameters ..." % ("bfloat16" if cfg.precision == "bf16" else "float16"))]
        if ev.data["attempt"] == 0:
            out.extend(self.arguments(ctx))
        out += [("INFO", "setting number of micro-batches to constant %d" % cfg.grad_accum),
                ("INFO", "> building %s tokenizer ..." % megatron_tokenizer(cfg)),
                ("INFO", " > padded vocab (size: %d) with %d dummy tokens (new size: %d)" % (
                    cfg.shape.vocab, padded_vocab(cfg) - cfg.shape.vocab, padded_vocab(cfg))),
                ("INFO", "> initialized tensor model parallel with size %d" % cfg.tp),
                ("INFO", "> initialized pipeline model parallel with size %d" % cfg.pp),
                ("INFO", "building GPT model ...")]
        for pp in range(cfg.pp):                      # every rank of data-parallel rank 0 prints its own
            count = rank_params(cfg.shape, cfg.layout, pp, padded_vocab(cfg))
            for tp in range(cfg.tp):
                out.append(("INFO", " > number of parameters on (tensor, pipeline) model parallel rank (%d, %d): %d"
                            % (tp, pp, count)))
        return out

    def load(self, ctx, ev):
        """load_checkpoint names its --load directory (checkpointing.py); a released model
        converted for Megatron is a release checkpoint, loaded as iteration 0."""
        cfg, step = ctx.cfg, ev.data["step"]
        if cfg.kind == "continue" and step == 0:
            load, head = "/models/%s" % cfg.model, " %s %s" % (cfg.stack.prints["megatron.load_release"],
                                                                "/models/%s" % cfg.model)
        else:
            load = "/checkpoints/%s" % cfg.name
            head = " %s %s at iteration %d" % (cfg.stack.prints["megatron.load"], load, step)
        return [("INFO", head), ("INFO", "  successfully loaded checkpoint from %s [ t 1/%d, p 1/%d ] at iteration %d"
                                 % (load, cfg.tp, cfg.pp, step))]

    def train_start(self, ctx, ev):
        return [("INFO", "[before the start of training step] datetime: %s " % ctx.clock(ev.t))]

    def step(self, ctx, ev):
        if ctx.rank not in (None, ctx.cfg.gpus - 1):
            return []                                 # print_rank_last: only the last rank prints it
        return [("INFO", self.iteration_line(ctx, ev))]

    def val(self, ctx, ev):
        """evaluate_and_print_results on the last rank; the timer's min over ranks
        trails its max by a little that differs at every call."""
        cfg, d = ctx.cfg, ev.data
        if ctx.rank not in (None, cfg.gpus - 1):
            return []
        text = " validation loss at iteration %d | lm loss value: %.6E | lm loss PPL: %.6E | " % (
            d["step"], d["val_loss"], math.exp(min(20, d["val_loss"])))
        spread = 1 - 0.001 - 0.006 * unit(cfg.run_seed, S_STAMP, 8 * d["step"] + 5)
        return [("INFO", "(min, max) time across ranks (ms):"),
                ("INFO", "    %s: (%.2f, %.2f)" % ("evaluate ".ljust(48, "."), d["seconds"] * 1000 * spread,
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
                ("INFO", "    %s: (%.2f, %.2f)" % ("save-checkpoint ".ljust(48, "."), d["seconds"] * 1000 * (
                    1 - 0.002 - 0.01 * unit(cfg.run_seed, S_STAMP, 8 * d["step"] + 6)), d["seconds"] * 1000))]

    def end(self, ctx, ev):
        return [("INFO", "[after training is done] datetime: %s " % ctx.clock(ev.t))]


MEGATRON_PARAM_GROUPS = 2     # get_param_groups: weight-decay and no-weight-decay (biases, norms) groups


def ds_groups(value):
    """A per-parameter-group list as the engine's _report_progress prints it."""
    return "[%s]" % ", ".join([repr(value)] * MEGATRON_PARAM_GROUPS)


class MegatronDeepSpeed(Megatron):
    """Megatron-DeepSpeed: the deepspeed launcher, Megatron's pre-2024 iteration
    line, and DeepSpeed's own step, timer and checkpoint lines beside it."""

    def world_line(self, cfg):
        """validate_args' line (megatron/arguments.py at f4157bea: data-parallel-size with a
        hyphen, the DeepSpeed sequence-parallel size, a trailing space)."""
        return ("using world size: %d, data-parallel-size: %d, sequence-parallel size: 1, tensor-model-parallel "
                "size: %d, pipeline-model-parallel size: %d " % (cfg.gpus, cfg.dp, cfg.tp, cfg.pp))

    def arguments(self, ctx):
        return mds_args(ctx)

    def ds(self, ctx, t, field, function, offset=0):
        """DeepSpeed's logger prefix for the call at printers.txt's `field` in `function`."""
        return "[%s] [INFO] [%s:%s] " % (ctx.clock(t, millis=True), log_site(ctx.cfg, field, offset), function)

    def checkpoint_dir(self, cfg, step):
        return "/checkpoints/%s/global_step%d" % (cfg.name, step)    # the engine's default tag

    def engine_message(self, ctx, t, field, **values):
        """A checkpoint-engine message as the stack's release prints it (printers.txt:
        its site or log_dist, then the text), or nothing where that release is silent."""
        value = ctx.cfg.stack.prints[field]
        if value == "-":
            return []
        site, text = value.split(" ", 1)
        if site == "log_dist":
            return [("INFO", self.ds(ctx, t, "deepspeed.log_dist", "log_dist") + "[Rank 0] " + text.format(**values))]
        return [("INFO", "[%s] [INFO] [%s] " % (ctx.clock(t, millis=True), site) + text.format(**values))]

    def load(self, ctx, ev):
        """engine.load_checkpoint reads rank 0's model states and its optimizer partition
        through the checkpoint engine (its messages by release: printers.txt), then Megatron-DeepSpeed's load_checkpoint reports its --load directory."""
        cfg, step = ctx.cfg, ev.data["step"]
        path, span = self.load_path(cfg, step), cfg.load_seconds or 4.0
        zero3 = cfg.sharding == "zero3"
        files = ["zero_pp_rank_0_mp_rank_00_model_states.pt" if zero3 else "mp_rank_00_model_states.pt",
                 "%szero_pp_rank_0_mp_rank_00_optim_states.pt"
                 % ("bf16_" if cfg.precision == "bf16" and cfg.sharding == "none" else "")]
        if cfg.kind == "continue" and step == 0:
            files = files[:1]               # a released model: its weights only (--finetune: no optimizer states)
        out = []
        for i, name in enumerate(files):
            t0, t1 = ev.t + span * (0.05 + 0.45 * i), ev.t + span * (0.45 + 0.45 * i)
            where = "%s/%s" % (path, name)
            out += (self.engine_message(ctx, t0, "deepspeed.ckpt_load_begin", path=where) +
                    self.engine_message(ctx, t1, "deepspeed.ckpt_load_end", path=where))
        load = "/models/%s" % cfg.model if cfg.kind == "continue" and step == 0 else "/checkpoints/%s" % cfg.name
        return out + [("INFO", "  successfully loaded checkpoint from %s at iteration %d" % (load, step))]

    def launch(self, ctx, ev):
        """The deepspeed runner and each node's launch.py (DeepSpeed 0.16: runner.py,
        multinode_runner.py, launch.py): one node runs locally on 127.0.0.1; several
        run over pdsh, which prefixes every line with its host.  world_info is the
        base64 of the JSON {host: [GPU ids]} the runner hands to every node."""
        cfg, attempt = ctx.cfg, ev.data["attempt"]
        gpus = list(range(cfg.gpus_per_node))
        hosts = [ctx.hostname(node, attempt) for node in range(cfg.nodes)] if cfg.nodes > 1 else ["localhost"]
        world = collections.OrderedDict((h, gpus) for h in hosts)
        info = base64.urlsafe_b64encode(json.dumps(world).encode("utf-8")).decode("ascii")
        tail = ("--master_port=%d --enable_each_rank_log=None train.py --deepspeed_config=ds_config.json"
                % cfg.master_port)
        ds = lambda field, text, f="main": ("INFO", self.ds(ctx, ev.t, field, f) + text)
        if cfg.nodes == 1:
            out = [ds("deepspeed.runner_cmd", "cmd = /usr/bin/python -u -m deepspeed.launcher.launch "
                      "--world_info=%s --master_addr=127.0.0.1 %s" % (info, tail))]
        else:
            addr = node_ip(cfg, ctx.tl.hosts[attempt][0])
            out = [ds("deepspeed.runner_ip", "Using IP address of %s for node %s" % (addr, hosts[0])),
                   ds("deepspeed.workers", "Running on the following workers: %s" % ",".join(hosts), "get_cmd"),
                   ds("deepspeed.runner_cmd", "cmd = pdsh -S -f %d -w %s export PYTHONPATH=/workspace; cd /workspace; "
                      "/usr/bin/python -u -m deepspeed.launcher.launch --world_info=%s --node_rank=%%n "
                      "--master_addr=%s %s" % (PDSH_MAX_FAN_OUT, ",".join(hosts), info, addr, tail))]
        mapping = ", ".join("'%s': %s" % (h, [i + n * cfg.gpus_per_node for i in gpus]) for n, h in enumerate(hosts))
        # each node's launch.py once pdsh and Python got there; pdsh passes lines on as they come
        for t, node in sorted((ev.t + launch_offset(cfg, node, attempt), node) for node in range(min(cfg.nodes, 4))):
            host = hosts[node] + ": " if cfg.nodes > 1 else ""
            out += [("INFO", host + self.ds(ctx, t, field, "main") + text) for field, text in (
                ("deepspeed.launch_world", "WORLD INFO DICT: {%s}" % ", ".join("'%s': %s" % (h, gpus) for h in hosts)),
                ("deepspeed.launch_nnodes", "nnodes=%d, num_local_procs=%d, node_rank=%d" % (
                    cfg.nodes, cfg.gpus_per_node, node)),
                ("deepspeed.launch_mapping", "global_rank_mapping=defaultdict(<class 'list'>, {%s})" % mapping),
                ("deepspeed.launch_size", "dist_world_size=%d" % cfg.gpus),
                ("deepspeed.launch_devices", "Setting CUDA_VISIBLE_DEVICES=%s" % ",".join(str(i) for i in gpus)))]
        return out

    def build(self, ctx, ev):
        """Megatron's start-up, then deepspeed.initialize: version banner, optimizer
        lines, the engine's configuration dump (DeepSpeedConfig.print) and its JSON."""
        cfg = ctx.cfg
        t = ev.t + 0.7 * cfg.build_seconds
        zero = {"zero1": 1, "zero2": 2, "zero3": 3}.get(cfg.sharding, 0)
        dtype = "torch.bfloat16" if cfg.precision == "bf16" else "torch.float16"
        rank0 = lambda text, dt=0.0: ("INFO", self.ds(ctx, t + dt, "deepspeed.log_dist", "log_dist") + "[Rank 0] " + text)
        out = Megatron.build(self, ctx, ev) + [
            rank0("DeepSpeed info: version=%s, git-hash=unknown, git-branch=unknown" % cfg.stack.deepspeed),
            rank0("DeepSpeed Flops Profiler Enabled: False", 0.4),
            rank0("Using client Optimizer as basic optimizer", 0.41),
            rank0("Removing param_group that has no 'params' in the basic Optimizer", 0.41),
            rank0("DeepSpeed Basic Optimizer = FusedAdam", 0.41),
            rank0("Creating %s ZeRO stage %d optimizer" % (dtype, zero), 0.42)]
        if zero == 3:           # stage3.py: DeepSpeedZeroOptimizer_Stage3.__init__
            field, texts = "deepspeed.zero3_buckets", ("Reduce bucket size " + DS_REDUCE_BUCKET,
                                                       "Prefetch bucket size " + DS_PREFETCH_BUCKET)
        else:                   # stage_1_and_2.py: DeepSpeedZeroOptimizer.__init__
            field, texts = "deepspeed.zero12_buckets", (
                "Reduce bucket size " + DS_REDUCE_BUCKET, "Allgather bucket size " + DS_REDUCE_BUCKET,
                "CPU Offload: False", "Round robin gradient partitioning: False")
        out += [("INFO", self.ds(ctx, t + 0.43, field, "__init__", i) + text) for i, text in enumerate(texts)]
        out += [rank0("DeepSpeed Final Optimizer = DeepSpeedZeroOptimizer%s" % ("_Stage3" if zero == 3 else ""), 1.9),
                rank0("DeepSpeed using client LR scheduler", 1.9),
                rank0("DeepSpeed LR Scheduler = <megatron.optimizer_param_scheduler.OptimizerParamScheduler object "
                      "at 0x7f%010x>" % (int(unit(cfg.run_seed, S_NCCL, -3) * 2 ** 36) // 16 * 16), 1.9),
                rank0("step=0, skipped=0, lr=%s, mom=%s" % (ds_groups(0.0), ds_groups(cfg.betas)), 1.9)]
        return out + self.ds_config(ctx, t + 1.91, zero)

    def ds_config(self, ctx, t, zero):
        cfg = ctx.cfg
        fp16 = cfg.precision == "fp16"
        init, window, hysteresis = loss_scaler(cfg)
        scaler = ("{'init_scale': %d, 'scale_window': %d, 'delayed_shift': %d, 'consecutive_hysteresis': False, "
                  "'min_scale': 1}" % (2 ** init, window, hysteresis)) if fp16 else None
        values = [("bfloat16_enabled", not fp16), ("dynamic_loss_scale_args", scaler), ("fp16_enabled", fp16),
                  ("gradient_accumulation_steps", cfg.grad_accum), ("gradient_clipping", cfg.grad_clip),
                  ("initial_dynamic_scale", 2 ** init if fp16 else 1), ("loss_scale", 0 if fp16 else 1.0),
                  ("steps_per_print", cfg.log_interval), ("train_batch_size", cfg.global_batch),
                  ("train_micro_batch_size_per_gpu", cfg.micro_batch), ("wall_clock_breakdown", False),
                  ("world_size", cfg.dp), ("zero_allow_untested_optimizer", False), ("zero_enabled", zero > 0),
                  ("zero_optimization_stage", zero)]
        out = [("INFO", self.ds(ctx, t, "deepspeed.config_name", "print") + "DeepSpeedEngine configuration:")]
        where = self.ds(ctx, t, "deepspeed.config_arg", "print")
        out += [("INFO", where + "  %s %s %s" % (k, "." * (29 - len(k)), v)) for k, v in values]
        conf = collections.OrderedDict([
            ("bf16", {"enabled": not fp16}),
            ("fp16", {"enabled": True, "loss_scale": 0, "initial_scale_power": init, "loss_scale_window": window,
                      "hysteresis": hysteresis, "min_loss_scale": 1} if fp16 else {"enabled": False}),
            ("gradient_accumulation_steps", cfg.grad_accum), ("gradient_clipping", cfg.grad_clip),
            ("steps_per_print", cfg.log_interval), ("train_batch_size", cfg.global_batch),
            ("train_micro_batch_size_per_gpu", cfg.micro_batch), ("wall_clock_breakdown", False),
            ("zero_optimization", {"stage": zero})])
        text = json.dumps(conf, sort_keys=True, indent=4, separators=(",", ":")).split("\n")
        where = self.ds(ctx, t, "deepspeed.config_json", "print_user_config")
        return out + [("INFO", where + "  json = " + text[0])] + [("INFO", line) for line in text[1:]]

    def mds_line(self, ctx, ev):
        """Megatron-DeepSpeed's training_log: its own fields (consumed tokens, samples per
        second, tgs, TFLOPs), .3E learning rate, grad norm only on the pipeline engine."""
        cfg, metrics, tl = ctx.cfg, ev.data, ctx.tl
        ms, loss, skipped = megatron_window(tl, train_segment(tl, metrics.attempt), metrics.step)
        sps = cfg.global_batch / (ms / 1000.0)
        tflops = mds_flops_per_token(cfg) * cfg.tokens_per_step / (ms / 1000.0) / cfg.gpus / 1e12
        grad = " grad norm: %.3f |" % metrics.grad_norm if cfg.pp > 1 and not metrics.skipped else ""
        text = (" iteration %8d/%8d | consumed samples: %12d | consumed tokens: %12d | elapsed time per iteration "
                "(ms): %.1f | learning rate: %.3E | global batch size: %5d |" % (
                    metrics.step, cfg.total_steps, metrics.step * cfg.global_batch, metrics.step * cfg.tokens_per_step, ms, metrics.lr,
                    cfg.global_batch))
        if loss is not None:
            text += " lm loss: %.6E |" % loss
        return text + (" loss scale: %.1f |%s actual seqlen: %5d | number of skipped iterations: %3d | number of nan "
                       "iterations: %3d | samples per second: %.3f | tokens per gpu per second (tgs): %.3f | "
                       "TFLOPs: %.2f |" % (metrics.loss_scale or 1.0, grad, cfg.seq_len, skipped, 0, sps,
                                           sps * cfg.seq_len / cfg.gpus, tflops))

    def step(self, ctx, ev):
        """DeepSpeed prints inside engine.step() (step line, then its timer), Megatron's
        training_log after train_step returns, on the last rank."""
        cfg, metrics, tl = ctx.cfg, ev.data, ctx.tl
        seg = train_segment(tl, metrics.attempt)
        out = []
        if ctx.rank in (None, 0):
            out += self.overflow_lines(ctx, seg, metrics.step)
            out += self.timer_lines(ctx, seg, metrics.step, before=True)
            out.append(("INFO", self.ds(ctx, self.engine_t(ctx, seg, metrics.step), "deepspeed.log_dist", "log_dist") +
                        "[Rank 0] step=%d, skipped=%d, lr=%s, mom=%s" % (
                            metrics.step, skipped_total(cfg, metrics.step), ds_groups(metrics.lr), ds_groups(cfg.betas))))
            out += self.timer_lines(ctx, seg, metrics.step)
        if ctx.rank in (None, cfg.gpus - 1):
            out.append(("INFO", self.mds_line(ctx, ev)))
        return out

    def engine_t(self, ctx, seg, step):
        """When engine.step() logs for `step`: just before the loss all-reduce that ends it."""
        return ctx.tl.step_end(seg, step) - 0.004 - 0.01 * unit(ctx.cfg.run_seed, S_STAMP, 4 * step)

    def timer_lines(self, ctx, seg, step, before=False):
        """ThroughputTimer.stop: it counts this launch's steps itself and prints when its
        count is a multiple of steps_per_print (and it has timed a step: the first
        DS_TIMER_START go untimed), while the engine's step= line follows the global step;
        after a resume off the multiple they print at different steps.  `before`: the
        timer's line of an unlogged step since the last log line, else this step's."""
        cfg, tl = ctx.cfg, ctx.tl
        steps = range(max(seg.first + 1, step - cfg.log_interval + 1), step) if before else [step]
        out = []
        for k in steps:
            count = k - seg.first
            if count % cfg.log_interval or count <= DS_TIMER_START:
                continue
            avg, cur = ds_throughput(tl, seg, k)
            out.append(("INFO", self.ds(ctx, self.engine_t(ctx, seg, k) + 0.0004, "deepspeed.timer", "stop") +
                        "epoch=0/micro_step=%d/global_step=%d, RunningAvgSamplesPerSec=%r, CurrSamplesPerSec=%r, "
                        "MemAllocated=%.2fGB, MaxMemAllocated=%.2fGB" % (
                            count * cfg.grad_accum, count, avg, cur,
                            round(cfg.mem_states_bytes / GIB, 2), round(cfg.mem_need_bytes / GIB, 2))))
        return out

    def overflow_lines(self, ctx, seg, step):
        """DynamicLossScaler.update_scale on each fp16 overflow since the last line."""
        cfg, tl = ctx.cfg, ctx.tl
        out = []
        for k in range(max(seg.first, step - cfg.log_interval) + 1, step + 1):
            scale, skipped = loss_scale_at(cfg, k)
            if not skipped:
                continue
            before, hysteresis = loss_scale_at(cfg, k - 1)[0], loss_scaler(cfg)[2]
            where = self.ds(ctx, tl.step_end(seg, k) - 0.016, "deepspeed.scale_reduced" if scale < before
                            else "deepspeed.hysteresis", "update_scale")
            what = ("reducing to %d" % scale if scale < before else
                    "but hysteresis is %d. Reducing hysteresis to %d" % (hysteresis, hysteresis - 1))
            out.append(("INFO", where + "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: %d, %s"
                        % (before, what)))
        return out

    def ckpt_start(self, ctx, ev):
        d = ev.data
        where = self.ds(ctx, ev.t, "deepspeed.log_dist", "log_dist")
        states = "zero_pp_rank_0_mp_rank_00_model_states.pt" if ctx.cfg.sharding == "zero3" \
            else "mp_rank_00_model_states.pt"
        tag = "global_step%d" % d["step"]
        return self.engine_message(ctx, ev.t, "deepspeed.ckpt_saving", tag=tag) + [
            ("INFO", where + "[Rank 0] Saving model checkpoint: %s/%s" % (self.checkpoint_dir(ctx.cfg, d["step"]),
                                                                      states))]

    def ckpt(self, ctx, ev):
        """ZeRO stages 1-3 save zero_pp_rank_* optimizer shards; only the BF16_Optimizer
        without ZeRO writes bf16_zero_* files."""
        d = ev.data
        prefix = "bf16_" if ctx.cfg.precision == "bf16" and ctx.cfg.sharding == "none" else ""
        path = self.checkpoint_dir(ctx.cfg, d["step"])
        return [("INFO", self.ds(ctx, ev.t, "deepspeed.zero_saved", "_save_zero_checkpoint") +
                 "%szero checkpoint saved %s/%szero_pp_rank_0_mp_rank_00_optim_states.pt" % (prefix, path, prefix))] + \
            self.engine_message(ctx, ev.t, "deepspeed.ckpt_commit", tag="global_step%d" % d["step"])


def titan_capacity_gib(cfg):
    """What torch reports as the card's total memory (a little under nvidia-smi's
    total: the driver's reservation), in GiB: the capacity line and the % use it."""
    return cfg.gpu.memory_mib * TORCH_VISIBLE_MEMORY / 1024.0


TORCH_VISIBLE_MEMORY = 0.993    # torch.cuda.get_device_properties().total_memory / nvidia-smi total (H100: 79.1/79.6 GiB)


class Torchtitan(Dialect):
    """torchtitan: '[rank0]:[titan]' logger lines, two spaces between fields."""

    def checkpoint_dir(self, cfg, step):
        return "/outputs/%s/checkpoint/step-%d" % (cfg.name, step)  # dump_folder / checkpoint.folder / step-N

    def build(self, ctx, ev):
        """Start-up lines, each stamped when its work is done over the build phase."""
        cfg = ctx.cfg
        mesh = ("1-D device mesh with ['dp_shard'], [%d]" % cfg.dp if cfg.tp == 1
                else "2-D device mesh with ['dp_shard', 'tp'], [%d, %d]" % (cfg.dp * cfg.pp, cfg.tp))
        weights_gib = cfg.params * 2.0 / cfg.gpus / GIB
        cap = titan_capacity_gib(cfg)
        lines = [(0.0, "Starting job: %s training" % cfg.model), (0.01, "Building %s" % mesh),
                 (0.03, "[GC] Initial GC collection took 0.%02d seconds"
                         % (1 + int(9 * unit(attempt_seed(cfg, ev.data["attempt"]), S_GC, -5)))),
                 (0.05, "Preparing %s dataset" % cfg.dataset),
                 (0.12, "CUDA capacity: %s with %.2fGiB memory" % (cfg.gpu.name, cap)),
                 (0.2, "Model {} size: {:,} total parameters".format(cfg.model, cfg.params))]
        if cfg.recompute != "none":
            lines.append((0.35, "Applied %s activation checkpointing to the model" % cfg.recompute))
        lines += [(0.55, "Applied FSDP to the model"),
                  (0.6, "Peak FLOPS used for computing MFU: %.3e" % (cfg.gpu.tflops * 1e12)),
                  (0.8, "CUDA memory usage for model: %.2fGiB(%.2f%%)" % (weights_gib, 100 * weights_gib / cap)),
                  (0.9, "Trainer is initialized with local batch size %d, global batch size %d, gradient accumulation "
                   "steps %d, sequence length %d, total steps %d (warmup %d)" % (
                       cfg.micro_batch, cfg.global_batch, cfg.grad_accum, cfg.seq_len, cfg.total_steps,
                       cfg.warmup_steps))]
        span = cfg.build_seconds
        return [("INFO", titan_prefix(ctx, ev.t + f * span + 0.003 * unit(cfg.run_seed, S_STAMP, 7 * i)) + text)
                for i, (f, text) in enumerate(lines)]

    def load(self, ctx, ev):
        """The load is timed, and its 'Finished' line stamped when it is done."""
        cfg = ctx.cfg
        seconds = 0.95 * (cfg.load_seconds or 4.0)
        return [("INFO", titan_prefix(ctx, ev.t + 0.002) + "Loading the checkpoint from %s."
                 % self.load_path(cfg, ev.data["step"])),
                ("INFO", titan_prefix(ctx, ev.t + 0.002 + seconds) + "Finished loading the checkpoint in %.2f seconds."
                 % seconds)]

    def train_start(self, ctx, ev):
        return [("INFO", titan_prefix(ctx, ev.t) + "Training starts at step %d" % (ev.data["step"] + 1))]

    def step(self, ctx, ev):
        """MetricsProcessor.log: tps, tflops and mfu over the window since the last
        line; the periodic GC (run at the start of a step) logs before it."""
        cfg, metrics, tl = ctx.cfg, ev.data, ctx.tl
        seg = train_segment(tl, metrics.attempt)
        out = []
        for k in range(metrics.step, metrics.step - TITAN_LOG_FREQ, -1):
            if k > max(1, seg.first + 1) and k % GC_EVERY_TITAN == 0:
                gc = tl.step_parts(seg, k)["gc"]
                t = tl.step_end(seg, k - 1) + tl.pause_after(k - 1) + gc
                out.append(("INFO", titan_prefix(ctx, t) + "[GC] Performing periodic GC collection took %.2f seconds"
                            % gc))
        if not is_logged(cfg, metrics.step):
            return out
        tokens, seconds = titan_window(tl, seg, metrics.step)
        tps = tokens / seconds
        cap, reserved = titan_capacity_gib(cfg), cfg.mem_reserved_mib / 1024.0    # peak reserved since the last log
        flops = titan_flops_per_token(cfg) * tps
        line = ("step: %2d  loss: %8.5f  grad_norm: %7.4f  memory: %5.2fGiB(%.2f%%)  tps: {:,}  "
                "tflops: {:,.2f}  mfu: %.2f%%".format(int(round(tps)), flops / 1e12)
                % (metrics.step, metrics.loss, metrics.grad_norm, reserved, 100.0 * reserved / cap,
                   100 * flops / (cfg.gpu.tflops * 1e12)))
        return out + [("INFO", titan_prefix(ctx, ev.t) + line)]

    def val(self, ctx, ev):
        """Validator: tokens of its val_iters batches (local batch, no accumulation) per
        device over the time it took."""
        cfg, d = ctx.cfg, ev.data
        tps = cfg.val_iters * cfg.eval_batch * cfg.seq_len / float(cfg.tp * cfg.pp) / d["seconds"]
        cap, reserved = titan_capacity_gib(cfg), cfg.mem_reserved_mib / 1024.0
        return [("INFO", titan_prefix(ctx, ev.t) + "validate step: %2d  loss: %7.4f  memory: %5.2fGiB(%.2f%%)  "
                 "tps: {:,}".format(int(round(tps))) % (d["step"], d["val_loss"], reserved, 100.0 * reserved / cap))]

    def ckpt_start(self, ctx, ev):
        pre, step = titan_prefix(ctx, ev.t), ev.data["step"]
        if step == ctx.cfg.total_steps:
            return [("INFO", pre + "Saving a full checkpoint at last step, step %d." % step)]
        return [("INFO", pre + "Saving the checkpoint (or staging if async is enabled).")]

    def ckpt(self, ctx, ev):
        pre = titan_prefix(ctx, ev.t)
        return [("INFO", pre + "[GC] GC collection invoked by checkpointer. took 0.%02d seconds"
                 % (1 + int(4 * unit(ctx.cfg.run_seed, S_GC, -7 - ev.data["step"])))),
                ("INFO", pre + "Finished saving the checkpoint (or staging if async is enabled)in %.2f seconds."
                 % ev.data["seconds"])]

    def end(self, ctx, ev):
        return [("INFO", titan_prefix(ctx, ev.t) + "Sleeping 2 seconds for other ranks to complete"),
                ("INFO", titan_prefix(ctx, ev.t + 2.003) + "Training completed")]


HF_MAX_SHARD_BYTES = 5e9       # save_pretrained's default max_shard_size "5GB": the Hub's files


# trainer.py's start-up and evaluation blocks: one logger call a line, at these offsets from
# the first (4.36-4.55: the DataParallel notice at +5 and 'Num examples: Unknown' at +4
# are the branches a DDP run with a sized dataset skips)
HF_TRAINING_BLOCK = (0, 1, 2, 3, 6, 7, 8, 9)
HF_EVAL_BLOCK = (0, 2, 5)
HF_RESUME_BLOCK = (0, 1, 2, 4)      # 'Will skip the first ...' starts at +4, inside `if not args.ignore_data_skip`


class HFTrainer(Dialect):
    """Hugging Face Trainer: logger lines with explicit format, tqdm, Python dicts."""

    def hf(self, ctx, t, field, offset=0):
        """The Trainer's log prefix for the call at printers.txt's `field` (+ `offset` lines)."""
        return "[INFO|%s] %s >> " % (log_site(ctx.cfg, field, offset), ctx.clock(t, millis=True))

    def checkpoint_dir(self, cfg, step):
        return "/outputs/%s/checkpoint-%d" % (cfg.name, step)        # output_dir / PREFIX_CHECKPOINT_DIR-step

    def export_start(self, ctx, ev):
        """The end of training saves the model with save_pretrained (no conversion)."""
        cfg = ctx.cfg
        shards = sum(1 for n, _ in cfg.export_files if n.endswith(".safetensors"))
        return self.save_lines(ctx, ev.t + 0.05, "/outputs/%s/final" % cfg.name, shards, cfg.export_seconds)

    export_done = Dialect.prints_nothing     # save_pretrained said it all

    def build(self, ctx, ev):
        """from_pretrained (sharded past 5 GB: the index and the shards bar), then the
        'Running training' block once the model is wrapped, seconds later."""
        cfg = ctx.cfg
        shards = int(math.ceil(cfg.params * 2 / HF_MAX_SHARD_BYTES))
        load_s = 0.6 * cfg.build_seconds
        src = "/models/%s" % cfg.model
        out = [("INFO", self.hf(ctx, ev.t, "hf.loading_weights") + "loading weights file %s/%s" % (
            src, "model.safetensors.index.json" if shards > 1 else "model.safetensors"))]
        if shards > 1:
            out.append(("INFO", tqdm_line(shards, shards, load_s, shards / load_s, "Loading checkpoint shards: ")))
        t = ev.t + load_s + 0.05
        out += [("INFO", self.hf(ctx, t, "hf.weights_used") + "All model checkpoint weights were used when "
                 "initializing %s." % cfg.architecture), ("INFO", "")]
        t = ev.t + 0.97 * cfg.build_seconds
        examples = cfg.train_samples or cfg.steps_per_epoch * cfg.global_batch
        return out + [("INFO", self.hf(ctx, t, "hf.running_training", offset) + text)
                      for offset, text in zip(HF_TRAINING_BLOCK, (
            "***** Running training *****", "  Num examples = {:,}".format(examples),
            "  Num Epochs = {:,}".format(cfg.epochs),
            "  Instantaneous batch size per device = {:,}".format(cfg.micro_batch),
            "  Total train batch size (w. parallel, distributed & accumulation) = {:,}".format(cfg.global_batch),
            "  Gradient Accumulation steps = %d" % cfg.grad_accum,
            "  Total optimization steps = {:,}".format(cfg.total_steps),
            "  Number of trainable parameters = {:,}".format(cfg.params)))]

    def load(self, ctx, ev):
        """Resuming from a checkpoint of this run; a fresh fine-tune loads its base
        model in from_pretrained (build) and prints no resume lines."""
        step = ev.data["step"]
        if step == 0:
            return []
        t = ev.t + 0.9 * (ctx.cfg.load_seconds or 4.0)
        per_epoch = epoch_steps(ctx.cfg)
        return [("INFO", self.hf(ctx, t, "hf.continuing", offset) + text) for offset, text in zip(HF_RESUME_BLOCK, (
            "  Continuing training from checkpoint, will skip to saved global_step",
            "  Continuing training from epoch %d" % (step // per_epoch),
            "  Continuing training from global step %d" % step,
            "  Will skip the first %d epochs then the first %d batches in the first epoch."
            % (step // per_epoch, step % per_epoch * ctx.cfg.grad_accum)))]

    def step(self, ctx, ev):
        """ProgressCallback's bar after this step (tqdm EMA), then the log dict: the mean
        loss since the last log, this step's grad norm and the learning rate it used."""
        cfg, metrics, tl = ctx.cfg, ev.data, ctx.tl
        seg = train_segment(tl, metrics.attempt)
        k0 = max(seg.first, metrics.step - cfg.log_interval)
        losses = [loss_at(cfg, k, tl.incidents.spikes) for k in range(k0 + 1, metrics.step + 1)]
        bar = tqdm_line(metrics.step, cfg.total_steps, ev.t - seg.t0, tqdm_rate(tl, seg, metrics.step))
        lr = metrics.lr_used if cfg.stack.prints["hf.logged_lr"] == "before" else metrics.lr
        return [("INFO", bar), ("INFO", "{'loss': %r, 'grad_norm': %r, 'learning_rate': %r, 'epoch': %r}" % (
            round(sum(losses) / len(losses), 4), metrics.grad_norm, lr, round(metrics.epoch, 2)))]

    def val_start(self, ctx, ev):
        cfg = ctx.cfg
        pre = lambda offset: self.hf(ctx, ev.t, "hf.running_eval", offset)
        return [("INFO", pre(0)), ("INFO", "***** Running Evaluation *****"),       # logged with a leading newline
                ("INFO", pre(HF_EVAL_BLOCK[1]) + "  Num examples = %d" % cfg.eval_samples),
                ("INFO", pre(HF_EVAL_BLOCK[2]) + "  Batch size = %d" % cfg.eval_batch)]    # args.eval_batch_size: per device

    def val(self, ctx, ev):
        """evaluate()'s speed_metrics: the eval set's N over the runtime, and its steps,
        ceil(N / (eval_batch_size x world_size)), over the same runtime."""
        cfg, d = ctx.cfg, ev.data
        return [("INFO", "{'eval_loss': %r, 'eval_runtime': %r, 'eval_samples_per_second': %r, "
                         "'eval_steps_per_second': %r, 'epoch': %r}" % (
                             d["val_loss"], round(d["seconds"], 4), round(cfg.eval_samples / d["seconds"], 3),
                             round(cfg.val_iters / d["seconds"], 3),
                             round(d["step"] / float(epoch_steps(cfg)), 2)))]

    def save_lines(self, ctx, t, path, shards, seconds):
        """save_pretrained: config, then the weights (sharded past 5 GB, with an index)."""
        out = [("INFO", self.hf(ctx, t, "hf.save_checkpoint") + "Saving model checkpoint to %s" % path),
               ("INFO", self.hf(ctx, t + 0.01, "hf.config_saved") + "Configuration saved in %s/config.json"
                % path),
               ("INFO", self.hf(ctx, t + 0.01, "hf.generation_config_saved") +
                "Configuration saved in %s/generation_config.json" % path)]
        done = lambda field: self.hf(ctx, t + 0.9 * seconds, field)
        if shards > 1:
            return out + [("INFO", done("hf.weights_sharded") + "The model is bigger than the maximum size per checkpoint (5GB) and is going "
                           "to be split in %d checkpoint shards. You can find where each parameters has been saved in "
                           "the index located at %s/model.safetensors.index.json." % (shards, path))]
        return out + [("INFO", done("hf.weights_saved") + "Model weights saved in %s/model.safetensors" % path)]

    def ckpt_start(self, ctx, ev):
        cfg = ctx.cfg
        shards = int(math.ceil(cfg.params * 2 / HF_MAX_SHARD_BYTES))
        return self.save_lines(ctx, ev.t, self.checkpoint_dir(cfg, ev.data["step"]), shards, ev.data["seconds"])

    def ckpt(self, ctx, ev):
        path = self.checkpoint_dir(ctx.cfg, ev.data["step"])
        return [("INFO", self.hf(ctx, ev.t, "hf.tokenizer_config_saved") +
                 "tokenizer config file saved in %s/tokenizer_config.json" % path),
                ("INFO", self.hf(ctx, ev.t, "hf.special_tokens_saved") +
                 "Special tokens file saved in %s/special_tokens_map.json" % path)]

    def end(self, ctx, ev):
        """train_loss: the summed step losses of this launch over global_step (4.57)."""
        cfg, tl = ctx.cfg, ctx.tl
        seg = tl.train_segments()[-1]
        runtime = tl.step_end(seg, seg.last) + tl.pause_after(seg.last) - seg.t0
        total = 0.0                     # tr_loss += tr_loss_step, one step after another (Python 3.12's
        for k in range(seg.first + 1, seg.last + 1):          # compensated sum() would print other digits)
            total += loss_at(cfg, k, tl.incidents.spikes)
        examples = cfg.train_samples or cfg.steps_per_epoch * cfg.global_batch   # len(train_dataset)
        pre = self.hf(ctx, ev.t, "hf.completed")          # logger.info("\n\nTraining completed. ...\n\n")
        return [("INFO", pre), ("INFO", ""), ("INFO", "Training completed. Do not forget to share your model on "
                                                      "huggingface.co/models =)"), ("INFO", ""), ("INFO", ""),
                ("INFO", "{'train_runtime': %r, 'train_samples_per_second': %r, 'train_steps_per_second': %r, "
                         "'train_loss': %r, 'epoch': %r}" % (
                             round(runtime, 4), round(examples * cfg.epochs / runtime, 3),
                             round(cfg.total_steps / runtime, 3), total / cfg.total_steps, float(cfg.epochs)))]


def lightning_summary_table(cfg, count):
    """ModelSummary's table as _format_summary_table lays it out: each column as wide as its
    widest cell, joined by ' | ', under a rule 3 characters per column (and 3 more) wider than
    the sum of the widths; the Mode column from Lightning 2.3 (printers.txt)."""
    cols = [(" ", "0"), ("Name", "model"), ("Type", cfg.architecture), ("Params", count)]
    mode = cfg.stack.prints["lightning.mode_column"]
    cols += [(mode, "train")] if mode != "-" else []
    widths = [max(len(head), len(cell)) for head, cell in cols]
    rule = "-" * (sum(widths) + 3 * (1 + len(cols)))
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths))
    return [("INFO", line([h for h, _ in cols])), ("INFO", rule), ("INFO", line([c for _, c in cols])), ("INFO", rule)]


class Lightning(Dialect):
    """PyTorch Lightning: start-up banner, model summary table, epoch progress bars."""

    def checkpoint_dir(self, cfg, step):
        return "/outputs/%s/checkpoints/epoch=%d-step=%d.ckpt" % (cfg.name, epoch_of(cfg, step), step)  # "{epoch}-{step}"

    def build(self, ctx, ev):
        cfg = ctx.cfg
        ipu = cfg.stack.prints["lightning.ipu_line"]          # 2.1 still reports IPUs (printers.txt)
        out = [("INFO", "GPU available: True (cuda), used: True"), ("INFO", "TPU available: False, using: 0 TPU cores")]
        out += [("INFO", ipu)] if ipu != "-" else []
        out.append(("INFO", "HPU available: False, using: 0 HPUs"))
        for rank in (0, 3, 1, 2)[:min(4, cfg.gpus)]:          # ranks report in no particular order
            out.append(("INFO", "Initializing distributed: GLOBAL_RANK: %d, MEMBER: %d/%d" % (rank, rank + 1, cfg.gpus)))
        out += [("INFO", "-" * 100), ("INFO", "distributed_backend=nccl"),
                ("INFO", "All distributed processes registered. Starting with %d processes" % cfg.gpus),
                ("INFO", "-" * 100), ("INFO", "")]
        visible = ",".join(str(i) for i in range(cfg.gpus_per_node))
        for local in (1, 0, 2)[:min(3, cfg.gpus_per_node)]:
            out.append(("INFO", "LOCAL_RANK: %d - CUDA_VISIBLE_DEVICES: [%s]" % (local, visible)))
        count = human_count(cfg.params)
        out += [("INFO", "")] + lightning_summary_table(cfg, count) + [
                ("INFO", "%-10s%s" % (count, "Trainable params")), ("INFO", "%-10s%s" % ("0", "Non-trainable params")),
                ("INFO", "%-10s%s" % (count, "Total params")),
                ("INFO", "%-10.3f%s" % (cfg.params * 4 / 1e6, "Total estimated model params size (MB)"))]
        return out

    def load(self, ctx, ev):
        """Only a resume restores Lightning states (a .ckpt); a base model is loaded by user code."""
        if ev.data["step"] == 0:
            return []
        path = self.load_path(ctx.cfg, ev.data["step"])     # _CheckpointConnector.resume_start, resume_end
        return [("INFO", "Restoring states from the checkpoint path at %s" % path),
                ("INFO", "Restored all states from the checkpoint at %s" % path)]

    def step(self, ctx, ev):
        """TQDMProgressBar: counts batches (micro-batches), rate n/elapsed since the
        epoch's reset (smoothing 0, it/s always), rank 0's last batch loss."""
        cfg, metrics, tl = ctx.cfg, ev.data, ctx.tl
        seg = train_segment(tl, metrics.attempt)
        per_epoch = epoch_steps(cfg)
        epoch = epoch_of(cfg, metrics.step)
        first = epoch * per_epoch
        start = tl.step_end(seg, first) + tl.pause_after(first) if first > seg.first else seg.t0
        # num_training_batches: this rank's batches, ceil(ceil(N / dp) / micro) under the
        # DistributedSampler (the epoch's last optimizer step may take fewer than grad_accum)
        total = (ceil_div(ceil_div(cfg.train_samples, cfg.dp), cfg.micro_batch) if cfg.train_samples
                 else per_epoch * cfg.grad_accum)
        n = min(total, (metrics.step - first) * cfg.grad_accum)
        elapsed = ev.t - start
        loss = micro_losses(cfg, metrics.step, metrics.loss)[-1]
        post = ", v_num=%d, train_loss=%s" % (cfg.run % 7, lightning_num(loss))
        return [("INFO", tqdm_line(n, total, elapsed, n / elapsed, "Epoch %d: " % epoch, post, always_its=True))]

    def val(self, ctx, ev):
        """The validation bar counts this rank's batches: ceil(ceil(N / dp) / batch)."""
        cfg, d = ctx.cfg, ev.data
        return [("INFO", "Validation DataLoader 0: 100%%|##########| %d/%d [%s<00:00, %5.2fit/s]" % (
            cfg.val_iters, cfg.val_iters, fmt_duration(d["seconds"]), cfg.val_iters / d["seconds"]))]

    def ckpt_start(self, ctx, ev):
        """ModelCheckpoint(monitor='val_loss', save_top_k=1, verbose=True) at a save."""
        cfg, d = ctx.cfg, ev.data
        spikes = ctx.tl.incidents.spikes
        step, current = d["step"], val_loss_at(cfg, d["step"], spikes)
        head = "Epoch %d, global step %d: 'val_loss' " % (epoch_of(cfg, step), step)
        if not is_saved(cfg, step, spikes):
            return [("INFO", head + "was not in top 1")]
        return [("INFO", head + "reached %.5f (best %.5f), saving model to '%s' as top 1" % (
            current, current, self.checkpoint_dir(cfg, step)))]

    def ckpt(self, ctx, ev):
        return []

    def end(self, ctx, ev):
        return [("INFO", "`Trainer.fit` stopped: `max_epochs=%d` reached." % ctx.cfg.epochs)]


DIALECTS = {"megatron": Megatron(), "deepspeed": MegatronDeepSpeed(), "torchtitan": Torchtitan(),
            "hf": HFTrainer(), "lightning": Lightning()}


def checkpoint_path(cfg, step):
    """The checkpoint of step `step` as the run's framework names it."""
    return DIALECTS[cfg.framework].checkpoint_dir(cfg, step)


def phase_lines(ctx, ev):
    """Lines at the start of a phase: launch, build, load, train, export."""
    phase, dialect = ev.data["phase"], DIALECTS[ctx.cfg.framework]
    if phase == "launch":           # a requeued job starts as any job does; its load says where it resumes
        return dialect.launch(ctx, ev)
    if phase == "build":
        return nccl_lines(ctx, ev) + dialect.build(ctx, ev)
    if phase == "load":
        return dialect.load(ctx, ev)
    if phase == "train":
        return dialect.train_start(ctx, ev)
    if phase == "export":                   # the framework's closing lines, then the export
        return dialect.end(ctx, ev) + dialect.export_start(ctx, ev)
    return []


def hung_collective(cfg):
    """(OpType, NumelIn, NumelOut, group) of the collective a rank waits in when a peer dies
    mid-step: DDP all-reduces a gradient bucket (torch DDP: 25 MiB of fp32; Megatron's own
    DDP its whole buffer); the distributed optimizer and ZeRO-1/2 reduce-scatter a bucket
    (Megatron: max(40M, 1M x dp) elements); FSDP and ZeRO-3 all-gather the next layer's
    shards.  group: 0 when the data-parallel group is the whole job (the default group)."""
    per_rank = cfg.params // (cfg.tp * cfg.pp)
    dp = cfg.dp
    group = 0 if dp == cfg.gpus else 1
    if cfg.sharding == "none":
        numel = per_rank if cfg.framework == "megatron" else min(per_rank, 25 * 2 ** 20 // 4)
        return "ALLREDUCE", numel, numel, group
    if cfg.sharding in ("zero1", "zero2"):
        bucket = min(per_rank, max(40000000, 1000000 * dp))
        bucket = -(-bucket // (dp * 128)) * dp * 128            # padded so every rank's shard is equal
        return "_REDUCE_SCATTER_BASE", bucket, bucket // dp, group
    layer = -(-per_rank // cfg.shape.layers // dp) * dp
    return "_ALLGATHER_BASE", layer // dp, layer, group


def watchdog_lines(ctx, ev, rank):
    """One waiting rank's watchdog report: its collective entered when its own compute was
    done, found past the timeout at the watchdog's next poll, in its own nanosecond."""
    cfg, prints = ctx.cfg, ctx.cfg.stack.prints
    op, numel_in, numel_out, group = hung_collective(cfg)
    grank = rank if group == 0 else (rank // (cfg.tp * cfg.cp)) % cfg.dp
    timeout_ms = int(ev.data["timeout_s"] * 1000)
    u = unit(cfg.run_seed, S_STAMP, (ev.data["step"] * 4096 + rank) * 8 + 7)
    t = ev.t - WATCHDOG_POLL_S + 0.25 * u
    seq = 1000 + ev.data["step"] * 3
    def head(line, after=0.0):
        stamp = ctx.glog_stamp(t + after, 9)
        stamp = stamp[:2].lstrip("0") + stamp[2:]        # c10's 'MDD': the month without its leading zero
        return prints["pg.prefix"].format(rank=rank, stamp=stamp, line=line) + " "
    out = [("ERROR", head(prints["pg.timeout_line"]) + "[Rank %d] Watchdog caught collective operation timeout: "
            "WorkNCCL(SeqNum=%d, OpType=%s, NumelIn=%d, NumelOut=%d, Timeout(ms)=%d) ran for %d milliseconds "
            "before timing out." % (grank, seq, op, numel_in, numel_out, timeout_ms, timeout_ms + int(100 * u)))]
    if prints["pg.detected"] != "-":
        desc = "(default_pg)" if group == 0 else ""
        out.append(("ERROR", head(prints["pg.detected_line"], 0.0003) + prints["pg.detected"].format(
            pg=group, desc=desc, sdesc=" " + desc if desc else "", grank=grank, seq=seq, last=seq + 2, done=seq - 1)))
    if prints["pg.abort_lines"] != "-":
        some, avoid = prints["pg.abort_lines"].split(",")
        who = "[Rank %d] " % grank if prints["pg.abort_who"] == "rank" else ""
        out += [("ERROR", head(some, 0.0004) + who + "Some NCCL operations have failed or timed out. Due to the "
                 "asynchronous nature of CUDA kernels, subsequent GPU operations might run on corrupted/incomplete "
                 "data."),
                ("ERROR", head(avoid, 0.0005) + who + "To avoid data inconsistency, we are taking the entire process down.")]
    return t, out


def _torchrun_teardown(ctx, t, host, rank, attempt, code):
    """torchrun's agent: the child that failed first, and its report."""
    node, local = divmod(rank, ctx.cfg.gpus_per_node)
    pid = worker_pid(ctx.cfg, node, attempt, local)
    why = ("Signal 6 (SIGABRT) received by PID %d" % pid if code == -6
           else "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html")
    prefix = launcher_prefix(ctx, t, node, attempt, "ERROR", "torch.distributed.elastic.multiprocessing.api",
                             ctx.cfg.stack.prints["run.failed_line"])
    return [
        ("ERROR", prefix + "failed (exitcode: %d) local_rank: %d (pid: %d) of binary: /usr/bin/python" % (
            code, local, pid)),
        ("ERROR", "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: "),
        ("ERROR", "=" * 60), ("ERROR", "train.py FAILED"), ("ERROR", "-" * 60),
        ("ERROR", "Failures:"), ("ERROR", "  <NO_OTHER_FAILURES>"), ("ERROR", "-" * 60),
        ("ERROR", "Root Cause (first observed failure):"), ("ERROR", "[0]:"),
        ("ERROR", "  time      : %s" % ctx.clock(t, "%Y-%m-%d_%H:%M:%S")),
        ("ERROR", "  host      : %s" % host),
        ("ERROR", "  rank      : %d (local_rank: %d)" % (rank, local)),
        ("ERROR", "  exitcode  : %d (pid: %d)" % (code, pid)),
        ("ERROR", "  error_file: <N/A>"),
        ("ERROR", "  traceback : %s" % why),
        ("ERROR", "=" * 60)]


def _deepspeed_teardown(ctx, t, host, node, attempt, code):
    """DeepSpeed's launch.py (0.16, sigkill_handler): it kills its children and exits with
    the child's code (the command it prints is the last one it built, the last local
    rank's); under pdsh the runner's host reports the exit status (-6 leaves 250)."""
    cfg = ctx.cfg
    prefix = host + ": " if cfg.nodes > 1 else ""
    clock = ctx.clock(t, millis=True)
    out = [("INFO", "%s[%s] [INFO] [launch.py:319:sigkill_handler] Killing subprocess %d" % (
        prefix, clock, ctx.pid(node, attempt, local))) for local in range(cfg.gpus_per_node)]
    out.append(("ERROR", "%s[%s] [ERROR] [launch.py:325:sigkill_handler] ['/usr/bin/python', '-u', 'train.py', "
                "'--local_rank=%d', '--deepspeed_config=ds_config.json'] exits with return code = %d" % (
                    prefix, clock, cfg.gpus_per_node - 1, code)))
    if cfg.nodes > 1:
        out.append(("ERROR", "pdsh@%s: %s: ssh exited with exit code %d" % (
            ctx.hostname(0, attempt), host, code % 256)))
    return out


def _teardown(ctx, t, rank, attempt, code):
    """The launcher of `rank`'s node after that rank exited with `code` (-6: SIGABRT), and
    the launcher's own exit as srun or pdsh report it."""
    cfg = ctx.cfg
    node, local = divmod(rank, cfg.gpus_per_node)
    host = ctx.hostname(node, attempt)
    if cfg.framework == "deepspeed":
        return _deepspeed_teardown(ctx, t, host, node, attempt, code)
    out = _torchrun_teardown(ctx, t, host, rank, attempt, code)
    if cfg.nodes > 1:                   # srun --label: "<task>: " before each line of torchrun on that node;
        out = [(level, "%d: %s" % (node, text)) for level, text in out]     # torchrun exits 1 on the error
        out.append(("ERROR", "srun: error: %s: task %d: Exited with exit code 1" % (host, node)))
    return out


def _incident_lines(ctx, ev):
    """A dying GPU's lines: the CUDA error its rank raises, and its node's launcher (torchrun,
    or DeepSpeed's launch.py) stopping the node, then srun or pdsh reporting it.  Across
    nodes the ranks elsewhere wait in their collective until the watchdog's timeout, each
    reporting in its own time.  (A slow node or a loss spike prints nothing: no framework
    announces them; they show in the step times and the loss.)"""
    cfg, d = ctx.cfg, ev.data
    rank = d["gpu"]
    node, local = divmod(rank, cfg.gpus_per_node)
    if ev.kind == "xid":
        warn = [("ERROR", "%s:%d:%d [%d] NCCL WARN Cuda failure 'uncorrectable ECC error encountered'" % (
            d["host"], worker_pid(cfg, node, d["attempt"], local), nccl_tid(cfg, node, d["attempt"], local),
            local))] if ctx.rank in (None, rank) else []      # that rank's own NCCL
        error = [("ERROR", "[rank%d]: %s" % (rank, text)) for text in (      # c10's CUDA error, torch >= 2.1
            "RuntimeError: CUDA error: uncorrectable ECC error encountered",
            "CUDA kernel errors might be asynchronously reported at some other API call, "
            "so the stacktrace below might be incorrect.",
            "For debugging consider passing CUDA_LAUNCH_BLOCKING=1",
            "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.")]
        return warn + error + _teardown(ctx, ev.t + 1.0, rank, d["attempt"], 1)
    if cfg.nodes == 1:
        return []                              # the launcher already stopped the job
    other = (node + 1) % cfg.nodes             # the first node left waiting: every rank on it reports
    waiting = [other * cfg.gpus_per_node + i for i in range(cfg.gpus_per_node)]
    if ctx.rank is not None and ctx.rank // cfg.gpus_per_node != node:
        waiting = [ctx.rank]
    reports = sorted((watchdog_lines(ctx, ev, r) for r in waiting), key=lambda report: report[0])
    return [line for _, lines in reports for line in lines] + _teardown(ctx, ev.t, waiting[0], d["attempt"], -6)


def dialect_lines(ctx, ev):
    """The log lines (level, text) an event produces in the run's dialect."""
    cfg, dialect, kind = ctx.cfg, DIALECTS[ctx.cfg.framework], ev.kind
    if kind == "phase":
        return phase_lines(ctx, ev)
    if kind == "step":
        return dialect.step(ctx, ev) if is_logged(cfg, ev.data.step) else []
    if kind in ("xid", "job_failed"):
        return _incident_lines(ctx, ev)
    method = {"val_start": dialect.val_start, "val": dialect.val, "ckpt_start": dialect.ckpt_start,
              "checkpoint": dialect.ckpt, "export": dialect.export_done}.get(kind)
    return method(ctx, ev) if method else []


def event_lines(ctx, ev):
    """The log lines (level, text) an event produces, as the chosen rank sees them."""
    lines = dialect_lines(ctx, ev)
    if not ctx.rank:
        return lines            # rank 0, or the job's combined log
    if ev.kind in ("step", "val") and DIALECTS[ctx.cfg.framework].prints_on_last_rank:
        return lines            # print_rank_last: the dialect already chose what this rank prints
    own = "[rank%d]" % ctx.rank
    agent = "%d: " % (ctx.rank // ctx.cfg.gpus_per_node)    # torchrun's agent on this rank's node
    return [(level, text) for level, text in lines
            if re.match(r"^\S+:\d+:\d+ \[\d+\] NCCL", text) or text.startswith(own) or text.startswith(agent)
            or (level in ("WARNING", "ERROR") and not re.match(r"^(\[rank|\d+: )", text))]


########################################################################
# Plain and JSON-lines output
########################################################################

ANSI = {"WARNING": "\033[33m", "ERROR": "\033[31m"}


def software_record(stack, framework):
    """The versions the run's log shows: driver, CUDA, PyTorch, NCCL and its framework's release."""
    rec = collections.OrderedDict([("driver", stack.driver), ("cuda", stack.cuda), ("torch", stack.torch),
                                   ("nccl", stack.nccl)])
    column = {"hf": "transformers"}.get(framework, framework)
    if column in stack._fields:
        rec[column] = getattr(stack, column)
    return rec


def config_record(cfg):
    """The jsonl `config` object: the run's shape, cluster and schedule."""
    shape = cfg.shape
    rec = collections.OrderedDict([
        ("kind", cfg.kind), ("framework", cfg.framework), ("name", cfg.name), ("model", cfg.model),
        ("params", cfg.params), ("layers", shape.layers), ("hidden", shape.hidden), ("heads", shape.heads),
        ("kv_heads", shape.kv_heads), ("ffn_hidden", shape.ffn_hidden), ("vocab", shape.vocab),
        ("tied_embeddings", shape.tied), ("mlp", shape.mlp), ("seq_len", cfg.seq_len), ("tokenizer", cfg.tokenizer),
        ("dataset", cfg.dataset), ("gpu_type", cfg.gpu.name),
        ("gpu_memory_gib", round(cfg.gpu.memory_mib / 1024.0, 1)), ("gpu_peak_tflops", cfg.gpu.tflops),
        ("gpu_tdp_w", cfg.gpu.power_cap_w), ("nodes", cfg.nodes), ("gpus_per_node", cfg.gpus_per_node),
        ("gpus", cfg.gpus), ("tp", cfg.tp), ("pp", cfg.pp), ("cp", cfg.cp), ("dp", cfg.dp), ("sharding", cfg.sharding),
        ("recompute", cfg.recompute), ("precision", cfg.precision),
        ("global_batch_size", cfg.global_batch), ("micro_batch_size", cfg.micro_batch),
        ("grad_accum_steps", cfg.grad_accum), ("tokens_per_step", cfg.tokens_per_step),
        ("start_step", cfg.start_step), ("total_steps", cfg.total_steps),
        ("warmup_steps", cfg.warmup_steps), ("peak_lr", cfg.peak_lr), ("min_lr", cfg.min_lr),
        ("lr_decay", cfg.decay), ("lr_scheduler", cfg.lr_scheduler), ("min_lr_ratio", cfg.min_lr_ratio),
        ("eval_samples", cfg.eval_samples), ("eval_batch", cfg.eval_batch), ("eval_steps", cfg.val_iters),
        ("train_samples", cfg.train_samples),
        ("epochs", cfg.epochs), ("flops_per_token", cfg.flops_per_token),
        ("hostnames", [hostname_of(cfg, i) for i in range(min(cfg.nodes, 4))]),
        ("software", software_record(cfg.stack, cfg.framework)),
    ])
    if shape.head_dim and shape.head_dim != shape.hidden // shape.heads:
        rec["head_dim"] = shape.head_dim
    if shape.experts:
        rec["experts"] = shape.experts
        rec["active_experts"] = shape.active
        rec["active_params"] = cfg.active_params
    return rec


def event_record(ev):
    """The jsonl fields of an event (without event/run/t)."""
    if ev.kind == "step":
        metrics = ev.data
        rec = collections.OrderedDict([
            ("step", metrics.step), ("loss", metrics.loss), ("lr", metrics.lr), ("grad_norm", metrics.grad_norm),
            ("step_time_s", round(metrics.step_time_s, 6)), ("tokens_per_s", round(metrics.tokens_per_s, 2)),
            ("tokens_seen", metrics.tokens_seen), ("mfu", round(metrics.mfu, 5)), ("eta_s", round(metrics.eta_s, 2))])
        if metrics.loss_scale is not None:
            rec["loss_scale"] = metrics.loss_scale
            rec["skipped"] = metrics.skipped
        if metrics.parts is not None:          # the per-step record the dialects' instruments read
            rec["lr_used"] = metrics.lr_used
            rec["samples_seen"] = metrics.samples_seen
            rec["parts"] = collections.OrderedDict((k, round(v, 6)) for k, v in metrics.parts.items())
            rec["micro_losses"] = metrics.micro_losses
        if metrics.attempt:
            rec["attempt"] = metrics.attempt
        return rec
    if ev.kind == "phase":
        rec = collections.OrderedDict([("phase", ev.data["phase"]), ("attempt", ev.data["attempt"]),
                                       ("step", ev.data["step"])])
        for key in ("hostnames", "drained"):        # the hosts a launch got, the node a failure drained
            if key in ev.data:
                rec[key] = ev.data[key]
        return rec
    return collections.OrderedDict((k, v) for k, v in ev.data.items() if k != "info")


JSONL_EVENTS = ("phase", "step", "val", "checkpoint", "export", "summary", "straggler", "straggler_end",
                "spike", "xid", "job_failed")


def history_window(rs):
    """Run-time span of log history to pre-fill a screen joining mid-run: about
    150 logged steps, more than the tallest log region shows."""
    cfg = rs.cfg
    return max(60.0, 150 * cfg.step_time_s * max(1, cfg.log_interval))


GPU_BACKLOG_S = 60.0     # simulated seconds of GPU readings in a jsonl backlog: every GPU's last few
                         # samples, not the thousands of lines a whole window would take on a large cluster


class LogWriter(object):
    """Writes one session's log in simulated time: as plain lines or JSON lines
    to a stream, or ("screen") into the LogSink of the screen's log region."""

    def __init__(self, session, out, fmt, epoch0, color=False, rank=None):
        self.session, self.out, self.fmt = session, out, fmt
        self.epoch0, self.color, self.rank = epoch0, color, rank
        self.run, self.done_t = None, 0.0     # the run being written and how far, in its own time
        self.gpu_t = 0.0                      # how far GPU readings are written (jsonl)
        self.runs_done = 0
        self.saved = {}                       # run -> path of the newest checkpoint its log reported

    def _emit(self, obj):
        self.out.write(json.dumps(obj, separators=(", ", ": ")) + "\n")

    def _log(self, ctx, rs, ev):
        lines = event_lines(ctx, ev)
        if ev.kind == "checkpoint":
            self.saved[rs.cfg.run] = checkpoint_path(rs.cfg, ev.data["step"])
        if self.fmt == "screen":
            for level, text in lines:
                self.out.add(level, text)
            return
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

    def _start_run(self, rs, t):
        """The writer meets run `rs` at its time t: jsonl announces its config."""
        cfg = rs.cfg
        self.run, self.done_t = cfg.run, t
        if self.fmt == "jsonl":
            rec = collections.OrderedDict([("event", "config"), ("run", cfg.run), ("t", round(t, 3))])
            rec.update(config_record(cfg))
            self._emit(rec)
        self.done_t = self.done_t - 1e-9 if self.done_t > 0 else -1.0
        self.gpu_t = self.done_t

    def _write_run(self, rs, t1, max_steps=None):
        """Write run `rs` from where the writer is up to its time t1 (or `max_steps` optimizer
        steps' worth); return (the run ended, run time reached)."""
        cfg = rs.cfg
        if max_steps:
            t1 = min(t1, max(0.0, self.done_t) + max_steps * cfg.step_time_s)
        ctx = LogContext(rs, self.epoch0 + rs.start_tau - rs.offset, self.rank)
        for ev in run_events(rs.timeline, self.done_t, t1, every_step=self.fmt == "jsonl"):
            if self.fmt == "jsonl":
                self._gpu_samples(rs, ev.t)
            if self.fmt == "jsonl" and ev.kind in JSONL_EVENTS:
                kind = ev.kind                  # a step run again after a restart: "step" moves only forward
                if kind == "step" and is_redone(rs.timeline, ev.data.attempt, ev.data.step):
                    kind = "step_redone"
                rec = collections.OrderedDict([("event", kind), ("run", cfg.run), ("t", round(ev.t, 6))])
                rec.update(event_record(ev))
                if ev.kind == "checkpoint":      # where the framework wrote it
                    rec["path"] = checkpoint_path(cfg, ev.data["step"])
                self._emit(rec)
            self._log(ctx, rs, ev)
            if ev.kind == "summary":
                self.done_t = ev.t
                self.runs_done += 1
                return True, ev.t
        if self.fmt == "jsonl":
            self._gpu_samples(rs, t1)
        self.done_t = t1
        return False, t1

    def advance(self, tau0, tau1, max_steps=None):
        """Write everything up to session time tau1, or `max_steps` optimizer
        steps' worth of a run if that comes first; return (a run ended,
        session time reached)."""
        tau = tau0
        while tau < tau1:
            rs = self.session.run_at(tau)
            if rs.cfg.run != self.run:
                self._start_run(rs, rs.local(tau))
            ended, t = self._write_run(rs, min(rs.local(tau1), rs.timeline.duration), max_steps)
            if ended or t < rs.timeline.duration:
                return ended, rs.start_tau + t - rs.offset      # a run ended, or reached tau1 (or max_steps)
            tau = rs.end_tau
        return False, max(tau, tau1)

    def recent_past(self, tau):
        """Write the recent past of the run under way at session time tau (history_window), as
        `tail` of its log shows them to someone who arrives (stamped before they came),
        with the start-up banner kept at the top; writing then goes on from tau."""
        rs = self.session.run_at(tau)
        now = rs.local(tau)
        if now <= 0:
            return
        start = max(-1.0, now - history_window(rs))
        self._start_run(rs, start)
        self.gpu_t = max(self.gpu_t, now - GPU_BACKLOG_S)     # GPU lines: the last minute's only
        if start > 0 and self.fmt != "jsonl":      # the start-up banner stays at the top of a log
            ctx = LogContext(rs, self.epoch0 + rs.start_tau - rs.offset, self.rank)
            for seg in rs.timeline.segments[:2]:
                self._log(ctx, rs, Event(seg.t0, "phase", {"phase": seg.phase, "attempt": 0,
                                                           "step": seg.first, "info": None}))
        self._write_run(rs, now)


TQDM_BAR = re.compile(r"^(.*?)\s*\d{1,3}%\|[^|]*\| \d+/\d+ \[")    # tqdm's meter (see tqdm_line)
TQDM_WRITTEN = "{'"       # the Trainer's metrics dicts go through tqdm.write (transformers v4,
                         # src/transformers/trainer_callback.py, ProgressCallback.on_log: training_bar.write)
BAR_LOOKBACK = 3         # lines a bar's redraw looks back for its last state: the bar, the metrics line
                         # HF writes above it with tqdm.write, and a second bar (Lightning's validation)


def bar_key(text):
    """Which tqdm bar a line draws ('Epoch 3: 40%|...' and 'Epoch 4: ...' are one bar, reset per
    epoch), or None for a line that is not a bar."""
    m = TQDM_BAR.match(text)
    return re.sub(r"\d+", "#", m.group(1)) if m else None


class LogSink(object):
    """The log region's memory: the newest LOG_KEEP (level, text) lines, no more, as a terminal
    shows them: tqdm redraws its bar in place with a carriage return, so a bar's new state
    replaces its last one when that is still among the last lines (lines written through
    tqdm.write land above the bar)."""

    def __init__(self, keep=LOG_KEEP):
        self.lines = collections.deque(maxlen=keep)

    def add(self, level, text):
        key = bar_key(text) if "%|" in text else None
        if key is not None:
            for back in range(1, min(BAR_LOOKBACK, len(self.lines)) + 1):
                if bar_key(self.lines[-back][1]) == key:
                    del self.lines[-back]
                    break
        elif text.startswith(TQDM_WRITTEN) and self.lines and bar_key(self.lines[-1][1]) is not None:
            live_bar = self.lines.pop()             # tqdm.write: the line above, the bar drawn again below
            self.lines.append((level, text))
            self.lines.append(live_bar)
            return
        self.lines.append((level, text))


def session_now(args, start):
    """Session time now: from our own start, or from --start-at on the wall clock."""
    if args.start_at is None:
        return (time.monotonic() - start) * args.speed
    return max(0.0, (time.time() - args.start_at) * args.speed)


def windows_console_colours(out):
    """Whether a Windows console shows ANSI colours: it does once virtual-terminal
    processing is on, so switch it on (SetConsoleMode with
    ENABLE_VIRTUAL_TERMINAL_PROCESSING, 0x0004); where that fails (an old console)
    the plain log goes without colour rather than as raw escape codes."""
    try:
        import ctypes
        import msvcrt
        kernel32 = ctypes.windll.kernel32
        handle = msvcrt.get_osfhandle(out.fileno())
        mode = ctypes.c_uint32()
        if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
            return False
        return bool(mode.value & 0x0004 or kernel32.SetConsoleMode(handle, mode.value | 0x0004))
    except (ImportError, AttributeError, OSError, ValueError):
        return False


def colour_output(args, out):
    """Colour in plain log lines: on a terminal that shows it, unless asked not to."""
    if args.no_color or os.environ.get("NO_COLOR") or not out.isatty():
        return False
    return sys.platform != "win32" or windows_console_colours(out)


STREAM_TICK = 0.2          # wall seconds between writes of plain and JSON-lines output
STREAM_CHUNK_STEPS = 200   # optimizer steps written per slice in fast-forward (bounds memory)


def run_stream(session, args, out):
    """Plain or JSON-lines output paced by the simulated clock; returns the exit status.

    At speed 1 it wakes five times a second and writes what became due; in
    fast-forward it writes the backlog in slices of a few hundred steps, so
    memory stays flat and --exit-after is checked between slices."""
    fmt = "jsonl" if args.format == "jsonl" else "plain"      # plain also when the screen fell back
    color = fmt == "plain" and colour_output(args, out)
    writer = LogWriter(session, out, fmt, args.epoch0, color, args.rank)
    start = time.monotonic()
    tau = session_now(args, start) if args.start_at is not None else 0.0
    stop = tau + args.exit_after_sim if args.exit_after_sim else None
    writer.recent_past(tau)            # as `tail -f` of a running job's log: its recent lines at once
    out.flush()
    while True:
        if args.exit_after is not None and time.monotonic() - start >= args.exit_after:
            return 0
        if stop is not None and tau >= stop:
            return 0
        now = min(session_now(args, start), stop if stop is not None else float("inf"))
        if now > tau:
            ended, tau = writer.advance(tau, now, STREAM_CHUNK_STEPS)
            out.flush()
            if ended and args.exit_after_runs and writer.runs_done >= args.exit_after_runs:
                return 0
        if tau >= now:
            time.sleep(STREAM_TICK)


########################################################################
# Viewer's choices (what the keys change)
########################################################################
# The only mutable screen state: what the viewer chose with the keys and
# flags.  Frames read it; handle_key changes it (and `!` forces an incident).


GLYPHS_ASCII = {"full": "#", "empty": ".", "val": "o",
                "raw": ".", "smooth": "-", "spark": ".:-=+*#%@", "area": "_-=#", "big": "#", "braille": False}
GLYPHS_UNICODE = {"full": "\u2588", "empty": "\u2591", "val": "\u25cb", "raw": "\u00b7", "smooth": "\u2500",
                  "spark": "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588",
                  "area": "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588", "big": "\u2588", "braille": True}
VIEWS = ("all", "log", "gpus", "chart", "wall")   # --view: every region, one of them, or the wall


NOTICE_FRAMES = 8                # frames a notice such as "incident: crash" stays in the footer


class Ui(object):
    """What the viewer chose: pause, speed, panels (the only mutable screen state)."""

    def __init__(self, speed=1.0, view="all", unicode=False, seed=0):
        self.paused = False
        self.speed = speed
        self.gpu_mode = "gpus"        # gpus, nodes, hidden
        self.chart = True
        self.help = False
        self.view = view
        self.glyphs = GLYPHS_UNICODE if unicode else GLYPHS_ASCII
        self.log_scale = False        # the loss chart's y axis (the L key)
        self.x_tokens = False         # the loss chart's x axis in tokens instead of steps (the t key)
        self.seed = seed
        self.notice, self.notice_frames = "", 0
        self.touched = False          # a key was pressed: the footer then shows the help hint
        self.shared = False           # other panes show this session (--start-at): `!` leaves it

    def set_notice(self, text):
        self.notice, self.notice_frames = text, NOTICE_FRAMES if text else 0

    def next_frame(self):
        """A frame was drawn: notices fade after a few."""
        self.notice_frames = max(0, self.notice_frames - 1)
        if not self.notice_frames:
            self.notice = ""


# Keys that change only some views (the others do nothing there, so --view's help leaves them out).
KEY_VIEWS = {"g": ("all", "gpus"), "l": ("all",), "L": ("all", "chart", "wall"), "t": ("all", "chart", "wall")}
KEY_SPEEDS = (1.0 / 8, 4096.0)   # + and - stop here: slower is a still frame, faster a blur
KEY_ESCAPE, KEY_ENTERS = 27, (10, 13, 343)    # 343 is curses.KEY_ENTER (the keypad's Enter)
def handle_key(key, ui, rs, t):
    """Apply one key press to the viewer's choices (and `!` to the run)."""
    if key < 0:
        return
    ch = chr(key) if key < 256 else ""
    ui.touched = True
    ui.set_notice("")
    if ui.help and (key == KEY_ESCAPE or key in KEY_ENTERS):
        ui.help = False
    elif ch in ("p", " "):
        ui.paused = not ui.paused
    elif ch in ("+", "-"):
        wanted = ui.speed * 2 if ch == "+" else ui.speed / 2
        if KEY_SPEEDS[0] <= wanted <= KEY_SPEEDS[1]:
            ui.speed = wanted
        else:
            ui.set_notice("speed x%g is the %s the keys go" % (ui.speed, "fastest" if ch == "+" else "slowest"))
    elif ch == "g":
        ui.gpu_mode = {"gpus": "nodes", "nodes": "hidden", "hidden": "gpus"}[ui.gpu_mode]
    elif ch == "l":
        ui.chart = not ui.chart
    elif ch == "L":
        ui.log_scale = not ui.log_scale
    elif ch == "t":
        ui.x_tokens = not ui.x_tokens
    elif ch == "?":
        ui.help = not ui.help
    elif ch == "!":
        kind = rs.trigger(t)
        # In a shared session (--start-at, --tmux) the other panes do not see it: say so, short
        # enough for a side pane's footer.
        said = ("%s: this pane left the session" if ui.shared else "incident: %s") % kind if kind else ""
        ui.set_notice(said or "no incident outside training")


########################################################################
# Frames (pure: the screen as exactly `height` lines of `width` cells)
########################################################################
# A frame is a list of Line(text, spans); spans are (start, length, style)
# with semantic style names that the terminal section maps to curses
# attributes.  Nothing here touches the terminal or draws anything random.

Line = collections.namedtuple("Line", "text spans")
MIN_WIDTH, MIN_HEIGHT = 20, 3
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
    """The footer's clock: tqdm's format, and days once it passes a day ('3d07h')."""
    hours = int(max(0, seconds)) // 3600
    return "%dd%02dh" % divmod(hours, 24) if hours >= 24 else fmt_duration(seconds)


MEMO_KEEP = 20000        # values a frame memo keeps before it starts afresh (bounds memory): a GPU panel
                         # memoises (group, second) readings for its ~130 seconds of history, the chart
                         # about CHART_POINTS * width losses


class FrameCache(object):
    """Memos of pure values that frames share from one frame to the next: owned by
    whoever draws frames one after another (the screen loop), never by the model.
    A timeline other than the last one seen (a new run, or one rebuilt by `!`) empties them."""

    def __init__(self):
        self.timeline, self.memos = None, {}

    def memo(self, timeline, name):
        if timeline is not self.timeline:
            self.timeline, self.memos = timeline, {}
        memo = self.memos.setdefault(name, {})
        if len(memo) > MEMO_KEEP:
            memo.clear()
        return memo


class ScreenState(object):
    """Everything a frame shows at one moment, computed from the session."""

    def __init__(self, rs, t, epoch0, log, ui, cache=None):
        self.rs, self.cfg, self.tl, self.t = rs, rs.cfg, rs.timeline, t
        self.epoch0, self.log, self.ui = epoch0, log, ui
        self.cache = cache if cache is not None else FrameCache()     # memos shared between frames
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

    def hostname(self, node):
        return self.tl.hostname(node, self.tl.shown_attempt(self.moment.segment))


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


LEVEL_STYLE = {"WARNING": "warn", "ERROR": "error"}


def log_lines(state, width, height):
    """The newest log lines, wrapped at the width as a terminal wraps them,
    newest at the bottom (the oldest visible line may show only its tail)."""
    if height <= 0:
        return []
    rows = []
    for level, text in reversed(list(state.log)[-height:] if state.log and width > 0 else []):
        style = LEVEL_STYLE.get(level)
        pieces = [text[i:i + width] for i in range(0, len(text), width)] or [""]
        rows[:0] = [plain_line(piece, width, style) for piece in pieces]
        if len(rows) >= height:
            break
    rows = rows[-height:]
    return [Line(" " * width, [])] * (height - len(rows)) + rows


def gpu_style(r):
    if r.failed:
        return "bad"
    if r.temp_c >= 85:
        return "hot"
    if r.util >= 60:
        return "good"
    return "idle"


def frame_memo(state, name):
    """The memo `name` of this state's run, in the cache its caller passed (or the state's own)."""
    return state.cache.memo(state.tl, name)


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
    head = "%4d " % gpu
    bar_w = max(4, min(22, width - len(head) - len(tail) - 1))      # a failed GPU's bar as wide as the rest
    if r.failed:
        tail = error.ljust(len(tail))
    return fit(head + bar(r.util / 100.0, bar_w, glyphs) + tail, width)


GPU_CELL_W = 58          # a GPU's cell with full readings (index, bar, MiB, C, W)
SPARK_MIN = 12           # the narrowest history worth drawing
SPARK_FIELDS = (("util", 0), ("pwr", 1), ("mem", 2))
HISTORY_SECONDS = 120    # GPU histories span the last two simulated minutes (nvtop's graph spans about as much)
GRAPH_MAX = 8            # rows of a node's history graph at most
HISTORY_PANEL_W = 100    # narrower panels keep their cells for the readings (and the first frame fast:
                         # a past second costs the telemetry about 1 ms, and a history needs 130 of them)


def gpu_columns(width):
    """How many GPU cells side by side (two from 76 columns), and how wide each is."""
    columns = 2 if width >= 76 else 1
    return columns, width // columns


def group_reading(state, gpus, second):
    """Mean (util, power, memory) of some GPUs at one second, as fractions of the card's maximum."""
    tel, card = state.rs.telemetry, state.cfg.gpu
    rs = [tel.reading(g, second) for g in gpus]
    return (sum(r.util for r in rs) / (100.0 * len(rs)),
            sum(r.power_w for r in rs) / float(card.power_cap_w * len(rs)),
            sum(r.mem_used_mib for r in rs) / float(card.memory_mib * len(rs)))


def gpu_history(state, gpus, columns):
    """Mean (util, power, memory) of `gpus` as fractions of the card's maximum, one per column over the
    last HISTORY_SECONDS, oldest first.  Telemetry is a function of t, so history is computed, not
    recorded; each simulated second is read once per group of GPUs (memoised, see prefetch_history),
    and each finished column is summed once."""
    seconds, columns_memo = frame_memo(state, "history"), frame_memo(state, "columns")
    dt = max(1, int(math.ceil(HISTORY_SECONDS / float(columns))))
    now = int(math.floor(state.t))
    out = []
    for c in range(columns):
        first = now - now % dt - (columns - 1 - c) * dt
        key = (gpus[0], len(gpus), dt, first)
        if key in columns_memo:
            out.append(columns_memo[key])
            continue
        total, n = [0.0, 0.0, 0.0], 0
        for second in range(max(0, first), min(first + dt, now + 1)):     # nothing ran before launch
            value = seconds.get((gpus[0], len(gpus), second)) or group_reading(state, gpus, second)
            total = [a + b for a, b in zip(total, value)]
            n += 1
        out.append(tuple(a / max(1, n) for a in total))
        if first + dt <= now:                 # a finished column no longer changes
            columns_memo[key] = out[-1]
    return out


def sparkline(values, ramp):
    """Fractions 0..1 as one character each, from the lowest of the ramp to the highest."""
    top = len(ramp) - 1
    return "".join(ramp[int(round(max(0.0, min(1.0, v)) * top))] for v in values)


def spark_text(state, gpus, width, glyphs):
    """' util ... pwr ... mem ...' in exactly `width` cells: as many histories as fit ('' if none)."""
    n = min(len(SPARK_FIELDS), width // (SPARK_MIN + 6))
    if n == 0:
        return " " * max(0, width)
    each = width // n - 6
    hist = gpu_history(state, list(gpus), each)
    return fit("".join(" %-4s %s" % (name, sparkline([h[i] for h in hist], glyphs["spark"]))
                       for name, i in SPARK_FIELDS[:n]), width)


def area_rows(values, height, ramp):
    """Fractions 0..1 as a filled graph `height` rows tall; the ramp draws the partly filled top cell."""
    rows = []
    for r in range(height):
        below = height - 1 - r
        row = []
        for v in values:
            fill = max(0.0, min(1.0, v)) * height - below
            row.append(ramp[-1] if fill >= 1 else (" " if fill <= 0 else
                                                   ramp[max(0, int(math.ceil(fill * len(ramp))) - 1)]))
        rows.append("".join(row))
    return rows


def node_graph(state, gpus, width, height, glyphs):
    """A node's utilisation and power over the last minutes: two filled graphs side by side."""
    half = (width - 1) // 2
    graph_w = half - 6
    if graph_w < SPARK_MIN or height < 2:
        return []
    hist = gpu_history(state, gpus, graph_w)
    util = area_rows([h[0] for h in hist], height, glyphs["area"])
    power = area_rows([h[1] for h in hist], height, glyphs["area"])
    names = {0: ("util", "power"), 1: ("100%", "%dW" % (state.cfg.gpu.power_cap_w * len(gpus))),
             height - 1: ("-%ds" % HISTORY_SECONDS, "")}
    out = []
    for r in range(height):
        left, right = names.get(r, ("", ""))
        text = "%-5s|%s %-5s|%s" % (left, util[r], right[:5], power[r])
        out.append(Line(fit(text, width), [(6, graph_w, "chart"), (half + 6, graph_w, "chart")]))
    return out


def gpu_row(state, gpu, width, glyphs):
    """One GPU's readings, and its history beside them when there is room."""
    r = state.rs.telemetry.reading(gpu, state.t)
    cell_w = min(width, GPU_CELL_W)
    text = gpu_cell(gpu, r, state.cfg, cell_w, glyphs)
    spans = [(0, cell_w, gpu_style(r))]
    if width - cell_w >= SPARK_MIN + 6:
        text += spark_text(state, [gpu], width - cell_w, glyphs)
        spans.append((cell_w, width - cell_w, "chart"))
    return fit(text, width), spans


def node_head_width(state):
    """Cells of a node's header line before its history (the same for every node, so histories align)."""
    cfg = state.cfg
    return len(state.hostname(cfg.nodes - 1)) + len("%d%d%d" % (cfg.nodes - 1, cfg.gpus, cfg.gpus)) + 20


def header_history(state, width):
    """Whether a node's header line carries its history: on panels of HISTORY_PANEL_W cells or more."""
    return width >= HISTORY_PANEL_W and width - node_head_width(state) >= SPARK_MIN + 6


def node_block(state, node, width, columns, graph_h):
    """A node's header (with its history when it fits), its graph, and one cell per GPU."""
    cfg, glyphs = state.cfg, state.ui.glyphs
    gpn = cfg.gpus_per_node
    gpus = list(range(node * gpn, (node + 1) * gpn))
    head = fit("%s  node %d  ranks %d-%d" % (state.hostname(node), node, gpus[0], gpus[-1]),
               node_head_width(state))
    sparks = spark_text(state, gpus, width - len(head), glyphs) if header_history(state, width) else ""
    spans = [(0, len(head), "dim")] + [(len(head), len(sparks), "chart")] * bool(sparks)
    out = [Line(fit(head + sparks, width), [(a, min(n, width - a), st) for a, n, st in spans if a < width])]
    out += node_graph(state, gpus, width, graph_h, glyphs) if graph_h else []
    rows, cell_w = int(math.ceil(gpn / float(columns))), width // columns
    for row in range(rows):
        text, spans = "", []
        for col in range(columns):
            i = row + col * rows
            if i < gpn:
                cell, cell_spans = gpu_row(state, gpus[i], cell_w, glyphs)
                spans += [(s + len(text), n, st) for s, n, st in cell_spans]
                text += cell
        out.append(Line(fit(text, width), [s for s in spans if s[0] + s[1] <= width]))
    return out


def gpu_layout(cfg, width, room):
    """(columns, graph rows per node) for whole nodes: one column when every node fits so, and a
    history graph per node in the rows left over."""
    gpn, nodes = cfg.gpus_per_node, cfg.nodes
    columns = 1 if nodes * (1 + gpn) <= room else gpu_columns(width)[0]
    spare = (room - nodes * (1 + int(math.ceil(gpn / float(columns))))) // nodes
    return columns, (min(GRAPH_MAX, spare) if spare >= 3 and width >= 2 * (SPARK_MIN + 6) + 1 else 0)


def node_summary(state, node, readings, width, glyphs):
    cfg = state.cfg
    n = float(len(readings))
    util = sum(r.util for r in readings) / n
    mem = sum(r.mem_used_mib for r in readings) / n / 1024.0
    temp = sum(r.temp_c for r in readings) / n
    kw = sum(r.power_w for r in readings) / 1000.0
    failed = any(r.failed for r in readings)
    name_w = max(16, len(state.hostname(cfg.nodes - 1)))
    head = "%-*s " % (name_w, state.hostname(node))
    tail = " %3.0f%% %5.1f/%.1fG %3.0fC %5.1fkW%s" % (util, mem, cfg.gpu.memory_mib / 1024.0, temp, kw,
                                                     "  GPU ERROR" if failed else "")
    bar_w = max(4, min(22, width - len(head) - len(tail)))
    text = head + bar(util / 100.0, bar_w, glyphs) + tail
    style = "bad" if failed else ("good" if util >= 60 else "idle")
    spans = [(0, min(width, len(text)), style)]
    if width >= HISTORY_PANEL_W and width - len(text) >= SPARK_MIN + 6:
        gpus = range(node * cfg.gpus_per_node, (node + 1) * cfg.gpus_per_node)
        spans.append((len(text), width - len(text), "chart"))
        text += spark_text(state, gpus, width - len(text), glyphs)
    return Line(fit(text, width), spans)


def cluster_line(state, width):
    """The whole cluster in one line: GPUs, nodes, and their aggregate readings (the node count
    stays while a fault notice lengthens the line; the figures shorten first)."""
    cfg, agg = state.cfg, state.rs.telemetry.cluster(state.t)
    fault = " | %d GPU FAULT" % agg["failed"] if agg["failed"] else ""
    figures = "util %.1f%% | mem %.1f/%.1f GiB | %.0f+-%.1fC | %.1f kW%s" % (
        agg["util"], agg["mem_mib"] / 1024.0, cfg.gpu.memory_mib / 1024.0, agg["temp"], agg["temp_sd"],
        agg["kw"], fault)
    compact = "%.1f%% | %.1f/%.0fG | %.0f+-%.0fC | %.1fkW%s" % (
        agg["util"], agg["mem_mib"] / 1024.0, cfg.gpu.memory_mib / 1024.0, agg["temp"], agg["temp_sd"],
        agg["kw"], fault)
    nodes = plural(cfg.nodes, "node")
    return plain_line(first_fitting([
        "CLUSTER %dx %s | %s | %s" % (cfg.gpus, cfg.gpu.name, nodes, figures),
        "CLUSTER %dx %s | %s | %s" % (cfg.gpus, cfg.gpu.key, nodes, figures),
        "CLUSTER %dx %s | %s | %s" % (cfg.gpus, cfg.gpu.key, nodes, compact),
        "CLUSTER %dx %s | %s | %.1f%% | %.1f/%.0fG | %.0fC | %.1fkW%s" % (
            cfg.gpus, cfg.gpu.key, nodes, agg["util"], agg["mem_mib"] / 1024.0, cfg.gpu.memory_mib / 1024.0,
            agg["temp"], agg["kw"], fault),
        "CLUSTER %dx %s | %s | %.1f%% | %.0fC | %.1fkW%s" % (cfg.gpus, cfg.gpu.key, nodes, agg["util"],
                                                            agg["temp"], agg["kw"], fault),
        "CLUSTER %dx %s | %s" % (cfg.gpus, cfg.gpu.key, compact),
        "%dx %s | %s | %.0f%% %.0fC %.1fkW%s" % (cfg.gpus, cfg.gpu.key, nodes, agg["util"], agg["temp"],
                                                 agg["kw"], fault),
        "%dx %s %.0f%% %.0fC %.1fkW%s" % (cfg.gpus, cfg.gpu.key, agg["util"], agg["temp"], agg["kw"], fault)],
        width), width, "title")


def panel_plan(state, width, height):
    """What the GPU panel shows below its cluster line: ("block", node), ("summary", node), ("more", n)."""
    cfg = state.cfg
    columns, graph_h = gpu_layout(cfg, width, height - 1)
    block_h = 1 + graph_h + int(math.ceil(cfg.gpus_per_node / float(columns)))
    plan, used = [], 1
    for node in range(cfg.nodes):
        room, remaining = height - used, cfg.nodes - node
        if room <= 0:
            break
        # a whole node if it fits and leaves a line for the rest
        if state.ui.gpu_mode != "nodes" and block_h <= room - (1 if remaining > 1 else 0):
            plan.append(("block", node))
            used += block_h
        elif room == 1 and remaining > 1:
            plan.append(("more", remaining))
            break
        else:
            plan.append(("summary", node))
            used += 1
    return plan, columns, graph_h


def panel_height(state, width, height):
    """Rows the GPU panel fills of `height`: node summaries leave the rest to the log."""
    plan, columns, graph_h = panel_plan(state, width, height)
    block_h = 1 + graph_h + int(math.ceil(state.cfg.gpus_per_node / float(columns)))
    return 1 + sum(block_h if kind == "block" else 1 for kind, _ in plan)


def prefetch_history(state, groups):
    """Read the history of these groups of GPUs second by second, all groups at each second: the
    telemetry then computes each past second's phase once, not once per group."""
    memo = frame_memo(state, "history")
    now = int(math.floor(state.t))
    first = now - HISTORY_SECONDS - int(math.ceil(HISTORY_SECONDS / float(SPARK_MIN)))
    if len(memo) > len(groups) * (now + 1 - first):          # forget the seconds that scrolled out
        for key in [k for k in memo if k[2] < first]:
            del memo[key]
    for second in range(first, now + 1):
        for gpus in groups:
            key = (gpus[0], len(gpus), second)
            if key not in memo:
                memo[key] = group_reading(state, gpus, second)


def history_groups(state, plan, width, columns, graph_h):
    """The groups of GPUs whose history this panel draws: nodes (header, graph or summary), single GPUs."""
    cfg, room = state.cfg, SPARK_MIN + 6
    gpn = cfg.gpus_per_node
    summary_w = max(16, len(state.hostname(cfg.nodes - 1))) + 1 + 22 + 38      # see node_summary
    groups = []
    for kind, n in plan:
        gpus = list(range(n * gpn, (n + 1) * gpn))
        if kind == "block" and (graph_h or header_history(state, width)):
            groups.append(gpus)
        if kind == "block" and width // columns >= GPU_CELL_W + room:
            groups += [[g] for g in gpus]
        if kind == "summary" and width >= HISTORY_PANEL_W and width - summary_w >= room:
            groups.append(gpus)
    return groups


def gpu_panel(state, width, height):
    """Cluster line, then whole nodes (GPU rows, histories when they fit), then node summaries, then '+N more'."""
    if height <= 0:
        return []
    cfg, tel, t = state.cfg, state.rs.telemetry, state.t
    plan, columns, graph_h = panel_plan(state, width, height)
    gpn = cfg.gpus_per_node
    prefetch_history(state, history_groups(state, plan, width, columns, graph_h))
    out = [cluster_line(state, width)]
    for kind, node in plan:
        if kind == "block":
            out += node_block(state, node, width, columns, graph_h)
        elif kind == "more":
            out.append(plain_line("+%d more nodes" % node, width, "dim"))
        else:
            readings = [tel.reading(node * gpn + i, t) for i in range(gpn)]
            out.append(node_summary(state, node, readings, width, state.ui.glyphs))
    while len(out) < height:
        out.append(Line(" " * width, []))
    return out[:height]


SMOOTHING = 0.6          # TensorBoard's default smoothing weight (the scalar dashboard's slider)
CHART_SKIP = 0.1         # the linear y range ignores the first tenth of the steps: the drop from ln(vocab)
CHART_POINTS = 5         # loss points per chart column, at least 2 after rounding the stride to 1-2-5:
                         # about TensorBoard's 1000 stored points on a wide chart, two per braille column
CHART_MIN_SPAN = 0.02    # the narrowest y range (loss units): ticks of 0.005 at the finest
MARKER_GAP = 5           # cells at least between two validation markers
BRAILLE_BASE = 0x2800    # Unicode braille patterns: U+2800 plus one bit per dot
BRAILLE_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))   # bit of the dot at [row][column]
CHART_LAYERS = ("raw", "val", "smooth")          # drawn in this order: later layers cover earlier ones
CHART_STYLE = {"raw": "dim", "val": "title", "smooth": "chart", "marker": "title"}


def nice_tick(x):
    """The smallest 1, 2 or 5 times a power of ten that is >= x > 0."""
    power = 10.0 ** math.floor(math.log10(x))
    for mult in (1, 2, 5):
        if mult * power >= x * (1 - 1e-9):
            return mult * power
    return 10 * power


def fmt_count(n):
    """A count as an axis label: 0, 500, 20k, 1.5M, 2B."""
    for suffix, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return ("%.1f" % (n / size)).rstrip("0").rstrip(".") + suffix
    return "%d" % n


def y_axis(lo, hi, rows, positive):
    """(bottom, top, ticks, decimals): 1-2-5 ticks around lo..hi, four to six (fewer only on fewer rows);
    `positive` for a log axis, which has no zero."""
    most = max(2, min(6, rows))
    least = min(4, most)
    tick = nice_tick(max(hi - lo, 1e-9) / (most - 1))
    while True:
        a, b = int(math.floor(lo / tick + 1e-9)), int(math.ceil(hi / tick - 1e-9))
        if b - a + 1 <= most:
            break
        tick = nice_tick(tick * 1.001)
    while b - a + 1 < least:
        if (b - a) % 2 == 0 and a > (1 if positive else 0):
            a -= 1
        else:
            b += 1
    decimals = max(0, -int(math.floor(math.log10(tick) + 1e-9)))
    bottom = a * tick
    if positive and a <= 0:              # a log axis never reaches zero: it starts at the data
        bottom, a = lo * 0.98, 1
    return bottom, b * tick, [k * tick for k in range(a, b + 1)], decimals


def x_column(x, last, columns):
    """The column of x on an axis from 0 (the first column) to `last` (the last one)."""
    return min(columns - 1, int(0.5 + x / float(last) * (columns - 1)))


def x_ticks(last, columns):
    """(column, label) of 1-2-5 step ticks from 0 to `last`, labels at least two cells apart."""
    if last <= 0 or columns < 4:
        return [(0, "0")]
    tick = max(1.0, nice_tick(last / 8.0))
    while True:
        labels = [fmt_count(k * tick) for k in range(int(last // tick) + 1)]
        gap = tick / last * columns
        if gap >= max(len(t) for t in labels) + 2:
            break
        tick = nice_tick(tick * 1.001)
    return [(x_column(k * tick, last, columns), t) for k, t in enumerate(labels)]


def smooth(values, weight):
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    out, last = [], 0.0
    for i, v in enumerate(values):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** (i + 1)))
    return out


def last_val_step(state):
    """The last step whose validation has finished by now (0 if none has)."""
    cfg, moment = state.cfg, state.moment
    step = (state.step // cfg.val_interval) * cfg.val_interval
    if state.step == cfg.total_steps and moment.phase not in ("train", "val"):
        step = cfg.total_steps                       # the last step is validated too
    if moment.phase == "val" and moment.step == step:
        step -= cfg.val_interval                     # this one is still running
    return max(0, step)


def loss_series(state, points):
    """Training loss at about `points` evenly spaced steps up to now: (steps, raw, smoothed)."""
    cfg, last = state.cfg, max(1, state.step)
    stride = max(1, int(nice_tick(last / float(points))))
    steps = sorted(set([1, last] + list(range(stride, last + 1, stride))))
    memo, spikes = frame_memo(state, "loss"), state.tl.incidents.spikes
    raw = []
    for s in steps:
        if s not in memo:
            memo[s] = loss_at(cfg, s, spikes)
        raw.append(memo[s])
    return steps, raw, smooth(raw, SMOOTHING)


def val_series(state, columns):
    """Validation loss at finished validations, markers at least MARKER_GAP cells apart: (steps, values)."""
    cfg, last = state.cfg, last_val_step(state)
    if last <= 0:
        return [], []
    per_cell = max(1, state.step) / float(max(1, columns))
    gap = int(math.ceil(MARKER_GAP * per_cell / cfg.val_interval)) * cfg.val_interval
    steps = list(range(last, 0, -max(cfg.val_interval, gap)))[::-1]
    return steps, [val_loss_at(cfg, s, state.tl.incidents.spikes) for s in steps]


def at_least_min_span(lo, hi):
    """lo..hi widened about its middle to CHART_MIN_SPAN: a few flat points never zoom the axis to
    ticks finer than the legend's four decimals."""
    mid, half = (lo + hi) / 2.0, max(hi - lo, CHART_MIN_SPAN) / 2.0
    return mid - half, mid + half


def chart_range(steps, raw, smoothed, vals):
    """(lo, hi) of what matters now: past the first tenth of the steps (the drop from ln(vocab))."""
    skip = steps[-1] * CHART_SKIP
    later = [i for i, s in enumerate(steps) if s >= skip] or [len(steps) - 1]
    lo = min([raw[i] for i in later] + [v for s, v in vals if s >= skip])
    hi = max([smoothed[i] for i in later] + [v for s, v in vals if s >= skip])
    return at_least_min_span(lo, hi)


def trace(xs, ys, ncols):
    """Where a polyline runs in each of `ncols` columns: [y in, y out, y min, y max], or None."""
    cols = [None] * ncols
    pairs = list(zip(xs, ys))
    for (x0, y0), (x1, y1) in zip(pairs, pairs[1:] or pairs):
        for c in range(int(x0), min(ncols - 1, int(x1)) + 1):
            xa, xb = max(x0, c), min(x1, c + 1)
            k = (y1 - y0) / (x1 - x0) if x1 > x0 else 0.0
            ya, yb = y0 + k * (xa - x0), y0 + k * (xb - x0)
            cell = cols[c]
            if cell is None:
                cols[c] = [ya, yb, min(ya, yb), max(ya, yb)]
            else:
                cell[1], cell[2], cell[3] = yb, min(cell[2], ya, yb), max(cell[3], ya, yb)
    return cols


def column_means(xs, ys, ncols):
    """A polyline through the mean of the points in each column (the smoothed line, one point a column)."""
    sums = {}
    for x, y in zip(xs, ys):
        c = min(ncols - 1, int(x))
        total = sums.setdefault(c, [0.0, 0])
        total[0] += y
        total[1] += 1
    cols = sorted(sums)
    return [c + 0.5 for c in cols], [sums[c][0] / sums[c][1] for c in cols]


def ascii_column(cell, layer, rows):
    """(row, character) drawing one column of a layer: the raw curve as dots, lines with - / \\ |."""
    ya, yb, lo, hi = cell
    if hi < 0:                          # above the top: the early drop, off the scale
        return [] if layer == "raw" else [(0, "^")]
    r0, r1 = max(0, min(rows - 1, int(lo))), max(0, min(rows - 1, int(hi)))
    if layer == "raw":
        return [(r, ".") for r in range(r0, r1 + 1)]
    flat, slope = ("~", ":") if layer == "val" else ("-", "|")
    lean = "/" if yb < ya else "\\"
    if r0 == r1:
        return [(r0, flat if abs(yb - ya) < 0.5 else lean)]
    ends = (max(0, min(rows - 1, int(ya))), max(0, min(rows - 1, int(yb))))
    return [(r, lean if r in ends else slope) for r in range(r0, r1 + 1)]


def plot_cells(series, markers, pw, ph, glyphs):
    """The plot as rows of (character, style): series are {layer: (xs, ys)} in cell units."""
    braille = glyphs["braille"]
    sx, sy = (2, 4) if braille else (1, 1)
    chars = [[" "] * pw for _ in range(ph)]
    styles = [[None] * pw for _ in range(ph)]
    bits = [[0] * pw for _ in range(ph)]
    for layer in CHART_LAYERS:
        if layer not in series:
            continue
        xs, ys = [x * sx for x in series[layer][0]], [y * sy for y in series[layer][1]]
        if layer == "smooth":
            xs, ys = column_means(xs, ys, pw * sx)
        for c, cell in enumerate(trace(xs, ys, pw * sx)):
            if cell is None or (layer == "raw" and cell[3] < 0):
                continue
            if braille:
                for r in range(max(0, int(cell[2])), max(0, min(ph * sy - 1, int(cell[3]))) + 1):
                    bits[r // sy][c // sx] |= BRAILLE_DOTS[r % sy][c % sx]
                    styles[r // sy][c // sx] = CHART_STYLE[layer]
            else:
                for r, ch in ascii_column(cell, layer, ph):
                    chars[r][c], styles[r][c] = ch, CHART_STYLE[layer]
    if braille:
        chars = [[chr(BRAILLE_BASE + b) if b else " " for b in row] for row in bits]
    for x, y in markers:
        if y >= 0:                      # markers off the scale are left out
            c, r = min(pw - 1, int(x)), min(ph - 1, int(y))
            chars[r][c], styles[r][c] = glyphs["val"], CHART_STYLE["marker"]
    return chars, styles


def styled_row(prefix, chars, styles):
    """A Line from a plain prefix and styled cells (one span per run of one style)."""
    spans, start = [], 0
    for i in range(1, len(styles) + 1):
        if i == len(styles) or styles[i] != styles[start]:
            if styles[start]:
                spans.append((len(prefix) + start, i - start, styles[start]))
            start = i
    return Line(prefix + "".join(chars), spans)


def y_mapper(bottom, top, rows, log, intervals=1):
    """Value -> rows from the plot's top edge (continuous; above 0 when off the scale).  A linear
    axis puts its `intervals` tick intervals the same whole number of rows apart, bottom tick in
    the last row, and leaves the rows that do not divide evenly above the top tick."""
    if log:
        pb, pt = math.log(bottom), math.log(top)
        return lambda v: min(rows - 1e-6, (pt - math.log(max(v, 1e-9))) / (pt - pb) * rows)
    span = (rows - 1) // intervals * intervals          # rows from the top tick to the bottom tick
    first = rows - 1 - span + 0.5                       # the middle of the top tick's row
    return lambda v: min(rows - 1e-6, first + (top - v) / float(top - bottom) * span)


def axis_labels(ticks, columns):
    """The x labels, each centred on its tick, none over another."""
    row, end = [" "] * columns, -1
    for col, label in ticks:
        start = min(max(0, col - len(label) // 2), columns - len(label))
        if start > end:
            row[start:start + len(label)] = list(label)
            end = start + len(label)
    return "".join(row)


def chart_title(state, width):
    """'loss (run name) step 0-N': the run, and what the x axis counts and how far (steps or tokens)."""
    if state.ui.x_tokens:
        span = "tokens 0-%s" % fmt_count(state.step * state.cfg.tokens_per_step)
    else:
        span = "step 0-%d" % state.step
    tail = "%s %s" % (" log scale" if state.ui.log_scale else "", span)
    name, room = state.cfg.name, max(4, width - len("loss ()" + tail))
    return "loss (%s)%s" % (name if len(name) <= room else name[:room - 3] + "...", tail)


def chart_head(state, width, height, raw, smoothed, vals, glyphs):
    """Title (the run's name) and legend (the latest values, each in its line's style): one line if
    they fit, else two if there is room."""
    title = chart_title(state, width)
    parts = [("%s train %.4f" % (glyphs["raw"], raw), "raw"),
             ("%s smoothed(%.1f) %.4f" % (glyphs["smooth"], SMOOTHING, smoothed), "smooth")]
    if vals:
        parts.append(("%s val %.4f" % (glyphs["val"], vals[-1][1]), "val"))
    legend = "  ".join(text for text, _ in parts)
    one_line = len(title) + 2 + len(legend) <= width
    start = len(title) + 2 if one_line else 0
    spans = []
    for text, layer in parts:
        spans.append((start, len(text), CHART_STYLE[layer]))
        start += len(text) + 2
    spans = [(a, min(n, width - a), st) for a, n, st in spans if a < width]
    if one_line:
        return [Line(fit(title + "  " + legend, width), [(0, len(title), "title")] + spans)]
    if height >= 8:
        return [plain_line(title, width, "title"), Line(fit(legend, width), spans)]
    return [plain_line(title, width, "title")]


def _chart_lines(state, width, height, g):
    log = state.ui.log_scale
    steps, raw, smoothed = loss_series(state, CHART_POINTS * width)
    vals = list(zip(*val_series(state, width)))
    out = chart_head(state, width, height, raw[-1], smoothed[-1], vals, g)
    axis = 1 if height >= 14 else 0
    ph = height - len(out) - 1 - axis
    vvals = [v for _, v in vals]
    lo, hi = at_least_min_span(min(raw + vvals), max(smoothed + vvals)) if log else \
        chart_range(steps, raw, smoothed, vals)
    bottom, top, ticks, decimals = y_axis(lo, hi, ph, log)
    labels = ["%.*f" % (decimals, t) for t in ticks]
    lw = max(len(t) for t in labels) + 1
    pw, ymap, last = width - lw - 1, y_mapper(bottom, top, ph, log, len(ticks) - 1), float(steps[-1])

    def xs(points):                     # the middle of each step's column (see x_column)
        return [0.5 + s / last * (pw - 1) for s in points]
    series = {"raw": (xs(steps), [ymap(v) for v in raw]), "smooth": (xs(steps), [ymap(v) for v in smoothed])}
    if vals:
        series["val"] = (xs([s for s, _ in vals]), [ymap(v) for v in vvals])
    chars, styles = plot_cells(series, list(zip(*series["val"])) if vals else [], pw, ph, g)
    at_row = dict((max(0, int(ymap(t))), label) for t, label in zip(ticks, labels))
    for r in range(ph):
        label = at_row.get(r)
        out.append(styled_row(label.rjust(lw - 1) + " +" if label else " " * lw + "|", chars[r], styles[r]))
    ticks_x = x_ticks(int(last) * (state.cfg.tokens_per_step if state.ui.x_tokens else 1), pw)
    if axis:
        cols = set(c for c, _ in ticks_x if c > 0)
        out.append(plain_line(" " * lw + "+" + "".join("+" if c in cols else "-" for c in range(pw)), width, "dim"))
    out.append(plain_line(" " * (lw + 1) + axis_labels(ticks_x, pw), width, "dim"))
    return out


CHART_FIRST_POINTS = 2   # steps a job must have run before its chart has a curve (one point has no scale)


def waiting_chart(state, width, height):
    """The chart of a job with fewer than CHART_FIRST_POINTS steps (rendezvous, model build, the first
    step): its title, empty axes and what it waits for, never a scale made from one point."""
    out = [plain_line(chart_title(state, width), width, "title")]
    axis = 1 if height >= 14 else 0
    ph = height - len(out) - 1 - axis
    note = "waiting for the %s step" % ("first" if state.step == 0 else "second")
    for r in range(ph):
        text = note.center(width - 2) if r == ph // 2 else ""
        out.append(Line(fit(" |" + text, width), [(2, min(width - 2, len(text)), "dim")] if text.strip() else []))
    if axis:
        out.append(plain_line(" +" + "-" * (width - 2), width, "dim"))
    out.append(plain_line("  0", width, "dim"))
    return out


def chart_lines(state, width, height):
    """The loss chart as TensorBoard draws it: the raw training loss faint, the smoothed loss over it,
    validation as its own line with markers, 1-2-5 ticks.  Drawn again only when a step ends."""
    if height < 4 or width < 16:
        return [Line(" " * width, [])] * max(0, height)
    if state.step < CHART_FIRST_POINTS:
        return waiting_chart(state, width, height)
    g = state.ui.glyphs
    key = (width, height, state.step, last_val_step(state), state.ui.log_scale, state.ui.x_tokens, g["braille"])
    memo = frame_memo(state, "chart")
    if key not in memo:
        memo.clear()
        memo[key] = _chart_lines(state, width, height, g)
    return memo[key]


# Big figures for the wall view: 5 rows per character, '#' where ink goes (figlet-style block letters).
BIG_FONT = {
    "0": ("###", "# #", "# #", "# #", "###"), "1": (" # ", "## ", " # ", " # ", "###"),
    "2": ("###", "  #", "###", "#  ", "###"), "3": ("###", "  #", "###", "  #", "###"),
    "4": ("# #", "# #", "###", "  #", "  #"), "5": ("###", "#  ", "###", "  #", "###"),
    "6": ("###", "#  ", "###", "# #", "###"), "7": ("###", "  #", "  #", "  #", "  #"),
    "8": ("###", "# #", "###", "# #", "###"), "9": ("###", "# #", "###", "  #", "###"),
    ".": (" ", " ", " ", " ", "#"), ":": (" ", "#", " ", "#", " "), "-": ("   ", "   ", "###", "   ", "   "),
    "k": ("#  ", "# #", "## ", "# #", "# #"), "M": ("#   #", "## ##", "# # #", "#   #", "#   #"),
    "d": ("  #", "  #", "###", "# #", "###"), "h": ("#  ", "#  ", "###", "# #", "# #"),
    " ": ("  ", "  ", "  ", "  ", "  "),
}
BIG_ROWS = 5


def big_text(text, ink, scale=1):
    """`text` in block letters, BIG_ROWS * scale rows tall ('#' or the terminal's full block as ink)."""
    rows = [""] * BIG_ROWS
    for ch in text:
        for i, pattern in enumerate(BIG_FONT.get(ch, BIG_FONT[" "])):
            rows[i] += pattern.replace("#", ink) + " "
    return [("".join(c * scale for c in row)) for row in rows for _ in range(scale)]


def wall_figures(state):
    """(label, value) of the wall view's big figures: the footer's own loss, tokens/s and ETA."""
    metrics, cfg, moment = state.metrics, state.cfg, state.moment
    eta = metrics.eta_s if metrics else state.tl.eta(moment.segment, cfg.start_step)
    return [("train loss", "%.4f" % metrics.loss if metrics else "-"),
            ("tokens/s", fmt_rate(metrics.tokens_per_s).split()[0] if metrics else "-"),
            ("ETA", fmt_clock(eta if moment.phase in ("train", "val", "checkpoint") else 0))]


def big_figures(state, width, height):
    """The figures side by side in block letters: as many as fit, at double size when they still fit."""
    figures, ink = wall_figures(state), state.ui.glyphs["big"]
    for n in (3, 2, 1):
        for scale in (2, 1):
            blocks = [(label, big_text(value, ink, scale)) for label, value in figures[:n]]
            widths = [max(len(label), len(rows[0])) for label, rows in blocks]
            if sum(widths) + 4 * (n - 1) <= width and BIG_ROWS * scale + 1 <= height:
                gap = (width - sum(widths)) // (n + 1)
                lines = []
                for r in range(BIG_ROWS * scale + 1):
                    text = ""
                    for (label, rows), w in zip(blocks, widths):
                        text += " " * gap + (label if r == 0 else rows[r - 1]).ljust(w)
                    lines.append(plain_line(text, width, "dim" if r == 0 else "title"))
                return lines
    return [plain_line("  ".join("%s %s" % f for f in figures), width, "title")]


def health_line(state, width):
    """The cluster's health in one line: OK, DEGRADED (a slow node) or FAULT (a GPU lost)."""
    cfg, agg, moment = state.cfg, state.rs.telemetry.cluster(state.t), state.moment
    slow = [n for first, last, _, n in state.tl.incidents.stragglers if first < state.step + 1 <= last]
    status, style = ("FAULT", "bad") if agg["failed"] else (("DEGRADED", "warn") if slow else ("OK", "good"))
    text = "cluster %s | %d/%d GPUs up | %d node%s%s | util %.0f%% | %.0f+-%.0fC | %.1f kW | %s" % (
        status, cfg.gpus - agg["failed"], cfg.gpus, cfg.nodes, "s" * (cfg.nodes > 1),
        " (%s slow)" % state.hostname(slow[0]) if slow else "", agg["util"], agg["temp"], agg["temp_sd"],
        agg["kw"], moment.phase)
    return plain_line(text, width, style)


def wall_lines(state, width, height):
    """For a screen far away: big figures, the cluster's health, and the loss chart large."""
    if height <= 0:
        return []
    big = big_figures(state, width, max(1, min(height - 1, (height - 1) // 2)))
    out = big + [health_line(state, width)]
    if height - len(out) >= 5:
        out += chart_lines(state, width, height - len(out))
    while len(out) < height:
        out.append(Line(" " * width, []))
    return out[:height]


def run_progress(state, clock):
    """(label, fraction, right-hand text) of the whole run: epochs or tokens, and steps."""
    cfg, done = state.cfg, state.step
    if cfg.kind == "finetune":
        label = "Epoch %d/%d" % (min(cfg.epochs, done // epoch_steps(cfg) + 1), cfg.epochs)
        frac = (done - cfg.start_step) / float(max(1, cfg.total_steps - cfg.start_step))
    else:
        label = "%s/%s tok" % (fmt_tokens(done * cfg.tokens_per_step), fmt_tokens(cfg.total_steps * cfg.tokens_per_step))
        frac = done / float(cfg.total_steps)
    return label, frac, " %3d%% step %d/%d %s" % (int(frac * 100), done, cfg.total_steps, clock)


def phase_progress(state, clock):
    """(label, fraction, right-hand text) of what runs now: a pause, a phase, or the run."""
    cfg, moment = state.cfg, state.moment
    phase, frac, info = moment.phase, moment.progress, moment.segment.info
    pct = " %3d%%" % int(frac * 100)
    if phase == "val":
        return "validation", frac, "%s %d/%d batches %s" % (pct, int(frac * cfg.val_iters), cfg.val_iters, clock)
    if phase == "checkpoint":
        return ("saving " + checkpoint_path(cfg, moment.step).split("/")[-1], frac,
                "%s %s/%s %s" % (pct, fmt_bytes(frac * cfg.ckpt_bytes), fmt_bytes(cfg.ckpt_bytes), clock))
    if phase == "export":
        shards = sum(1 for n, _ in cfg.export_files if n.endswith(".safetensors"))
        return "export safetensors", frac, "%s %d/%d shards %s" % (pct, int(frac * shards), shards, clock)
    if phase == "queue":
        return ("requeued, %s drained: waiting for nodes" % state.tl.drained(moment.segment.attempt), frac,
                "%s %s" % (pct, clock))
    if phase in ("launch", "build", "load"):
        label = {"launch": "rendezvous %d ranks" % cfg.gpus, "build": "building model",
                 "load": "loading checkpoint"}[phase]
        return label, frac, "%s %s" % (pct, clock)
    if phase == "crash":
        if cfg.nodes == 1:          # the launcher stops the job at once: no one waits for a timeout
            return "job failed", frac, " rank %d lost  %s" % (info[1], clock)
        return "NCCL watchdog", frac, " hung %ds/%ds  rank %d lost" % (int(frac * info[2]), info[2], info[1])
    if phase == "summary" and state.t < moment.segment.t1:
        return "run finished; writing summary", frac, pct
    if phase == "summary":          # the next job waits in the scheduler's queue for its nodes
        return "next job pending in the queue", 0.0, " waiting %s" % fmt_clock(state.t - moment.segment.t1)
    return run_progress(state, clock)


def whole_fields(fields, width):
    """Fields joined with ' | ', as many as fit whole from the left (the first one cut if even it
    does not): a narrow footer loses its last figures, never half of one."""
    for n in range(len(fields), 1, -1):
        text = " | ".join(fields[:n])
        if len(text) <= width:
            return text
    return fields[0] if fields else ""


def footer_lines(state, width):
    """Two lines: the progress bar of what runs now, then the run's figures."""
    cfg, metrics, ui, t, moment = state.cfg, state.metrics, state.ui, state.t, state.moment
    eta = metrics.eta_s if metrics else state.tl.eta(moment.segment, cfg.start_step)
    training = moment.phase in ("train", "val", "checkpoint")
    # elapsed as the framework's progress bar counts it: since this launch began training
    since = train_segment(state.tl, moment.segment.attempt).t0 if training else moment.segment.t0
    # remaining: the run's ETA in training, else what is left of this phase's known duration
    clock = "%s<%s" % (fmt_clock(t - since), fmt_clock(eta if training else moment.segment.t1 - t))
    label, frac, right = phase_progress(state, clock)
    if len(label) + len(right) + 8 > width:          # narrow: the bar and its percentage come first
        label, right = "", " %3d%%" % int(frac * 100) + (right if len(right) + 13 <= width else "")
    bar_w = max(5, width - len(label) - len(right) - (2 if label else 0))
    line1 = fit(("%s %s%s" % (label, bar(frac, bar_w, ui.glyphs), right)).lstrip(), width)
    if metrics and moment.phase != "summary":
        figures = ["loss %.4f" % metrics.loss, "lr %.2e" % metrics.lr, "gnorm %.2f" % metrics.grad_norm,
                   fmt_rate(metrics.tokens_per_s), "%.2f s/it" % metrics.step_time_s, "MFU %.1f%%" % (100 * metrics.mfu)]
    else:
        figures = [cfg.model, "%dx %s" % (cfg.gpus, cfg.gpu.key)]
    # what the viewer changed comes first, so a narrow pane still shows it
    flags = ["PAUSED"] * ui.paused + ["x%g" % ui.speed] * (ui.speed != 1) + [ui.notice] * bool(ui.notice)
    hint = ["? help"] if ui.touched or ui.speed != 1 else []     # at speed 1 untouched, a plain console
    line2 = fit(whole_fields(flags + figures + hint, width), width)
    style2 = "paused" if ui.paused else "footer"
    return [Line(line1, [(0, width, "bar" if moment.phase != "crash" else "bad")]), Line(line2, [(0, width, style2)])]


HELP_KEYS = ("q Q    quit", "p spc  pause / resume", "+ -    double / halve speed",
             "g      GPU panel: per GPU / per node / hidden", "l      loss chart on / off",
             "L      loss chart: log / linear scale",
             "t      loss chart: x axis in steps / tokens",
             "!      trigger an incident now", "?      this help")


def overlay_box(lines, width, height, text):
    """`text` in a ruled box over the middle of the frame (cut to fit)."""
    box_w = min(width, max(len(t) for t in text) + 4)
    box_h = min(height, len(text) + 2)
    top, left = max(0, (height - box_h) // 2), max(0, (width - box_w) // 2)
    rule = "+" + "-" * (box_w - 2) + "+"
    rows = ([rule] + ["| " + fit(t, box_w - 4) + " |" for t in text])[:box_h - 1] + [rule]
    for i, row in enumerate(rows[:box_h]):
        old = lines[top + i].text
        new = old[:left] + fit(row, box_w) + old[left + box_w:]
        lines[top + i] = Line(fit(new, width), [(left, box_w, "title")])
    return lines


def overlay_help(lines, width, height, seed, view="all"):
    """The keys that do something in this view, with the session's seed."""
    keys = tuple(k for k in HELP_KEYS if view in KEY_VIEWS.get(k.split()[0], VIEWS))
    text = ("keys   (session --seed %d)" % seed,) + keys + ("", "Esc, Enter or ? closes this box")
    return overlay_box(lines, width, height, text)


BESIDE_ROWS = 18         # rows the chart beside the GPU panel wants, when the screen has them


def all_regions(state, width, height):
    """Log above, GPU panel (with the chart beside it when wide) below."""
    ui, cfg = state.ui, state.cfg
    chart_w = min(70, width - 63) if ui.chart and width >= 110 else 0
    panel_w = width - chart_w - 1 if chart_w else width
    if height < 8 or ui.gpu_mode == "hidden":
        gpu_h = 0
    elif ui.gpu_mode == "nodes":
        gpu_h = min(1 + cfg.nodes, max(3, height // 3))
    else:        # as many rows as the nodes need at the panel's own width, up to about half the height
        columns = gpu_columns(panel_w)[0]
        want = 1 + cfg.nodes * (1 + int(math.ceil(cfg.gpus_per_node / float(columns))))
        gpu_h = min(want, max(3, (height * 9) // 20))
        if chart_w:          # rows for the chart beside; the panel fills them with history
            gpu_h = max(gpu_h, min(BESIDE_ROWS, (height * 9) // 20))
    chart_beside = chart_w > 0 and gpu_h >= 6
    if gpu_h and not chart_beside:            # rows the panel would leave empty go to the log
        gpu_h = min(gpu_h, panel_height(state, width, gpu_h))
    chart_below = ui.chart and not chart_beside and height - gpu_h >= 26
    chart_h = 9 if chart_below else 0
    log_h = height - gpu_h - chart_h
    out = log_lines(state, width, log_h)
    if chart_h:
        out += chart_lines(state, width, chart_h)
    if gpu_h:
        if chart_beside:
            left = gpu_panel(state, panel_w, gpu_h)
            right = chart_lines(state, chart_w, gpu_h)
            for a, b in zip(left, right):
                spans = list(a.spans) + [(s + panel_w + 1, n, st) for s, n, st in b.spans]
                out.append(Line(a.text + " " + b.text, spans))
        else:
            out += gpu_panel(state, width, gpu_h)
    return out


def summary_rows(cfg, s):
    """Our end-of-run table, (name, value) rows from run_summary's figures."""
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
    return rows


def overlay_summary(lines, width, height, cfg, summary):
    """The run's summary table in a box over the middle of the frame, while
    the next run is queued (no framework prints it: it is this program's own)."""
    rows = summary_rows(cfg, summary)
    key_w = max(len(k) for k, _ in rows)
    text = ["run %d summary" % cfg.run, ""] + ["%s  %s" % (k.ljust(key_w), v) for k, v in rows]
    return overlay_box(lines, width, height, text)


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
    elif view == "wall":
        body = wall_lines(state, width, body_h)
    else:
        body = all_regions(state, width, body_h)
    lines = header + body + footer
    if state.moment.phase == "summary":
        lines = overlay_summary(lines, width, height, state.cfg, run_summary(state.tl))
    if ui.help:
        lines = overlay_help(lines, width, height, ui.seed, ui.view)
    return lines


########################################################################
# nvidia-smi look-alike
########################################################################
# The table as the stack's driver branch draws it (89 columns on 535, 91 from 550; the
# wide PID field from 570), three rows per GPU, the node type's bus ids.  Readings are the
# session's own at this moment, so a screen and this command with one seed and --start-at agree.


def smi_date(when):
    """C asctime(): 'Tue Aug  5 15:49:52 2025' (day padded with a space)."""
    tm = time.gmtime(when)
    return time.strftime("%a %b ", tm) + "%2d" % tm.tm_mday + time.strftime(" %H:%M:%S %Y", tm)


IDLE_P8_ARCHS = ("ada",)   # at rest an L40S drops to P8 (33 W); data-center HBM parts stay in P0 (H100 ~69 W)


def nvidia_smi_table(cfg, readings, pids, when):
    """The text nvidia-smi prints for one node: readings are GpuReadings of its 8 GPUs,
    laid out as the stack's driver branch lays it out (printers.txt smi.*)."""
    prints = cfg.stack.prints
    mid, pid_w = int(prints["smi.bus_width"]), int(prints["smi.pid_width"])
    width = 65 + mid                   # inside the outer bars: 89 - 2 on 535, 91 - 2 from 550
    cap = "%*s" % (int(prints["smi.cap_width"]), "%dW" % cfg.gpu.power_cap_w)
    sep = "+" + "-" * 41 + "+" + "-" * mid + "+" + "-" * 22 + "+"
    out = [smi_date(when) + "       ",
           "+" + "-" * width + "+",
           "| NVIDIA-SMI %-23sDriver Version: %-*sCUDA Version: %-9s|" % (
               cfg.stack.driver, mid - 9, cfg.stack.driver, cfg.stack.driver_cuda),
           "|" + "-" * 41 + "+" + "-" * mid + "+" + "-" * 22 + "+",
           "| GPU  Name                 Persistence-M | Bus-Id%sDisp.A | Volatile Uncorr. ECC |" % (" " * (mid - 14)),
           "| Fan  Temp   Perf          Pwr:Usage/Cap |%*s | GPU-Util  Compute M. |" % (mid - 1, "Memory-Usage"),
           "|                                         |%s|               MIG M. |" % (" " * mid),
           "|" + "=" * 41 + "+" + "=" * mid + "+" + "=" * 22 + "|"]
    name = cfg.gpu.name if len(cfg.gpu.name) <= 27 else cfg.gpu.name[:24] + "..."
    mig = "Disabled" if any(k in cfg.gpu.key for k in ("A100", "H100", "H200", "B200")) else "N/A"
    bus_ids = cfg.cluster.node_type.bus_ids
    for i, r in enumerate(readings):
        perf = "P8" if not r.mem_used_mib and cfg.gpu.arch in IDLE_P8_ARCHS else "P0"
        out.append("| %3d  %-31s%-3s |%*s Off | %20s |" % (
            i, name, "On", mid - 5, "00000000:%s:00.0" % bus_ids[i % 8].upper(), "1" if r.failed else "0"))
        out.append("| N/A%6s    %-2s%24s |%*s / %*s |%8s%13s |" % (
            "%dC" % r.temp_c, perf, "%dW / %s" % (r.power_w, cap), mid // 2 - 1, "%dMiB" % r.mem_used_mib,
            mid // 2 - 3, "%dMiB" % cfg.gpu.memory_mib, "%d%%" % r.util, "Default"))
        out.append("|%41s|%*s|%21s |" % ("", mid, "", mig))
        out.append(sep)
    name_w = width + 2 - 37 - pid_w     # the row: index, GI, CI, pid, type, name, memory
    out += [" " * width, "+" + "-" * width + "+", "| Processes:" + " " * (width - 11) + "|",
            "|  GPU   GI   CI%*s   Type   %-*sGPU Memory |" % (pid_w + 1, "PID", name_w - 2, "Process name"),
            "|        ID   ID%sUsage      |" % (" " * (width - 26)),
            "|" + "=" * width + "|"]
    rows = 0
    for i, (r, pid) in enumerate(zip(readings, pids)):
        if r.mem_used_mib <= 0 or pid is None:
            continue
        memory = "%dMiB" % max(0, r.mem_used_mib - 9)
        if len(memory) > 8:
            memory = memory[:5] + "..."
        out.append("|%5d   N/A  N/A%*d%7s   %-*s%8s |" % (i, pid_w, pid, "C", name_w, "/usr/bin/python3", memory))
        rows += 1
    if not rows:
        out.append("|  No running processes found" + " " * (width - 28) + "|")
    out.append("+" + "-" * width + "+")
    return "\n".join(out) + "\n"


def node_readings(rs, node, t):
    """Readings and process ids of one node's GPUs at run time t."""
    cfg = rs.cfg
    attempt = rs.timeline.moment(t).segment.attempt
    readings, pids = [], []
    for local in range(cfg.gpus_per_node):
        r = rs.telemetry.reading(node * cfg.gpus_per_node + local, t)
        readings.append(r)
        pids.append(worker_pid(cfg, node, attempt, local) if r.mem_used_mib else None)
    return readings, pids


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
    """curses window + palette; draws frames, reads keys.  `curses_module`
    is the curses module (a test passes a stand-in with the same names)."""

    def __init__(self, stdscr, color, curses_module=None):
        if curses_module is None:
            import curses as curses_module
        curses = curses_module
        self.curses, self.scr = curses, stdscr
        stdscr.keypad(True)
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        self.attrs = self._palette(color)

    def _palette(self, color):
        """Style -> curses attribute.  Both modes keep the terminal's own
        foreground and background (use_default_colors): curses.wrapper has
        already called start_color, which would otherwise paint every cell
        white on black, a black block on a light terminal."""
        curses = self.curses
        names = {"bold": curses.A_BOLD, "dim": curses.A_DIM, "reverse": curses.A_REVERSE,
                 "standout": curses.A_STANDOUT, None: 0}
        background = -1
        if curses.has_colors():
            try:
                curses.use_default_colors()
            except curses.error:
                background = curses.COLOR_BLACK
        use_color = color and curses.has_colors()
        pairs = {}

        def pair(colour):
            if colour not in pairs:
                pairs[colour] = len(pairs) + 1
                curses.init_pair(pairs[colour], getattr(curses, "COLOR_" + colour.upper()), background)
            return curses.color_pair(pairs[colour])
        if not names["dim"] and use_color:
            # PDCurses (windows-curses) has no dim: A_DIM is A_NORMAL (PDCurses curses.h, at the
            # commit windows-curses v2.4.1 builds, line 458).  Its bold black is the console's grey.
            names["dim"] = pair("black") | curses.A_BOLD
        attrs = {}
        for style, (colour, with_color, mono) in PALETTE.items():
            if use_color and colour:
                attrs[style] = pair(colour) | names[with_color]
            else:
                attrs[style] = names[with_color if use_color else mono]
        return attrs

    def key(self):
        """The next key press (-1: none within the frame's time); the keypad's
        +, - and Enter as the main keys (PDCurses reports them as PADPLUS,
        PADMINUS and PADENTER, which ncurses does not have)."""
        key = self.scr.getch()
        for name, same in (("PADPLUS", "+"), ("PADMINUS", "-"), ("PADENTER", "\n")):
            if key == getattr(self.curses, name, None):
                return ord(same)
        return key

    def leave(self):
        """Blank the bottom row, where the cursor rests after endwin: on terminals
        without an alternate screen (vt100, linux) the exit lines go there, and
        would otherwise be written over the last footer."""
        height = self.scr.getmaxyx()[0]
        try:
            self.scr.move(height - 1, 0)
            self.scr.clrtoeol()
            self.scr.refresh()
        except self.curses.error:
            pass

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


def curses_imports():
    """Whether curses is here (on Windows: whether windows-curses is installed)."""
    try:
        import curses  # noqa: F401
        return True
    except ImportError:
        return False


def known_terminal(term, fd):
    """`term`, or the entry an xterm-like terminal falls back to, if this
    machine's terminfo knows it; else None."""
    try:
        import curses
    except ImportError:
        return None
    candidates = [term] + (["xterm-256color", "xterm"] if term.startswith("xterm-") else [])
    for name in candidates:
        try:
            curses.setupterm(name, fd)
            return name
        except curses.error:
            continue
    return None


def unicode_screen(stdscr):
    """Whether curses itself encodes what block glyphs need: UTF-8 (under LC_ALL=C
    they draw blank), or a Windows console on code page 65001, which is UTF-8 there
    (windows-curses names a window's encoding "cp" + the console's output code page:
    py313/_cursesmodule.c, PyCursesWindow_New, at windows-curses v2.4.1)."""
    encoding = (getattr(stdscr, "encoding", "") or "").lower().replace("-", "")
    return encoding in ("utf8", "cp65001")


def say_session(prog, args, status):
    """The exit lines: after Ctrl-C the step and the newest checkpoint the log
    reported, then always the session, so another pane or nvidia-smi can rejoin it."""
    lines = []
    if status["code"] == 130 and status["last"] is not None:
        rs, step, saved = status["last"]
        cfg = rs.cfg
        if saved is None:        # saved before the log's window began: the run's own schedule says which
            kept = last_checkpoint_step(cfg, step, rs.timeline.incidents.spikes)
            saved = checkpoint_path(cfg, kept) if kept > cfg.start_step else None
        lines.append("KeyboardInterrupt: training interrupted at step %d/%d; last checkpoint kept: %s"
                     % (step, cfg.total_steps, saved or "(none saved this run)"))
    lines.append("%s: session --seed %d --start-at %s"
                 % (prog, args.seed, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(args.epoch0))))
    try:
        sys.stderr.write("".join(line + "\n" for line in lines))
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass                     # SIGHUP: the terminal is gone, and stderr with it


def _frames(term, session, args, ui, status):
    """Draw a frame a second (at once after a key) until a way out."""
    import curses
    stdscr = term.scr
    sink, cache = LogSink(), FrameCache()        # the log region's lines; memos the frames share
    writer = LogWriter(session, sink, "screen", args.epoch0, rank=args.rank)
    wall_start = last = time.monotonic()
    tau = session_now(args, wall_start) if args.start_at is not None else 0.0
    writer.recent_past(tau)
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
        if args.exit_after_sim and tau >= args.exit_after_sim:
            return
        ended = False
        rs = session.run_at(tau)
        floor = max((session.previous or rs).start_tau, tau - history_window(rs))
        if fed < floor:                               # runs behind at absurd speeds: skip to the recent past
            fed = floor                               # (what the log region can show, as prefill writes)
            if writer.run == rs.cfg.run:
                writer.done_t = max(writer.done_t, rs.local(floor))
        if tau > fed:
            ended, fed = writer.advance(fed, tau)
        if ended and args.exit_after_runs and writer.runs_done >= args.exit_after_runs:
            return
        rs = session.run_at(tau)
        state = ScreenState(rs, rs.local(tau), args.epoch0 + rs.start_tau - rs.offset, sink.lines, ui, cache)
        status["last"] = (rs, state.step, writer.saved.get(rs.cfg.run))
        height, width = stdscr.getmaxyx()
        term.draw(render_frame(state, width, height))
        stdscr.timeout(int(FRAME_SECONDS * 1000))
        key = term.key()
        if key == curses.KEY_RESIZE:
            if sys.platform == "win32":
                curses.resize_term(0, 0)
            stdscr.erase()
            continue
        if key in (ord("q"), ord("Q")):
            return
        ui.next_frame()
        handle_key(key, ui, rs, rs.local(tau))


def _screen_loop(stdscr, session, args, color, status):
    term = Terminal(stdscr, color)
    ui = Ui(args.speed, args.view, args.unicode and unicode_screen(stdscr), args.seed)
    ui.shared = args.start_at is not None        # other panes or nvidia-smi may show this session
    try:
        _frames(term, session, args, ui, status)
    finally:
        term.leave()


def run_screen(session, args, prog, out=None):
    """The full-screen curses program; returns the exit status.  Every way out
    (q, Ctrl-C, --exit-after, SIGTERM, SIGHUP, Ctrl+Break) names the session."""
    try:
        import curses
    except ImportError:
        sys.stderr.write("%s: curses is not available here (on Windows: pip install "
                         "windows-curses); writing plain log lines\n" % prog)
        return run_stream(session, args, out or sys.stdout)
    for name in ("LINES", "COLUMNS"):      # exported sizes would freeze the screen size
        os.environ.pop(name, None)
    color = not args.no_color and not os.environ.get("NO_COLOR")
    status = {"code": 0, "last": None}
    try:
        curses.wrapper(lambda scr: _screen_loop(scr, session, args, color, status))
    except KeyboardInterrupt:
        status["code"] = 130
    except SystemExit as exc:          # a signal (install_signal_handlers): 128 + its number
        status["code"] = exc.code
    say_session(prog, args, status)
    return status["code"]


########################################################################
# Command line
########################################################################

class UsageError(Exception):
    """A bad command-line value: one line, the usage, exit status 2."""


def program_name():
    """The name the user ran us as: the console script, else the module."""
    base = os.path.basename(sys.argv[0] or "")
    return "fake-llm-training" if base.startswith("fake-llm-training") else "fake_llm_training"


class Parser(argparse.ArgumentParser):
    """argparse, except that a mistake raises UsageError: the caller prints the
    short usage and the one line that matters, not the whole option list."""

    def error(self, message):
        raise UsageError(message)


def one_line(text):
    """`text` with its line breaks and other control characters escaped (an argument or
    a path holding a newline still makes one line of error)."""
    return CONTROL_CHARACTER.sub(lambda m: repr(m.group())[1:-1].lstrip("u"), "%s" % (text,))


def fail_usage(prog, message):
    """The short usage, one error line and where to find more; exit status 2."""
    sys.stderr.write("usage: %s [options]   (%s --help lists them)\n%s: error: %s\n"
                     % (prog, prog, prog, one_line(message)))
    return 2


def parse_duration(text):
    """'90s', '5m', '2h10m', '1.5h' or plain seconds -> seconds."""
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


START_AT_SKEW_S = 60.0     # --start-at may lie this far in the future: the clocks of panes and hosts differ a little


def parse_start_at(text):
    """ISO 8601 (UTC unless it says otherwise) or Unix seconds -> Unix seconds.
    A date must exist (2026-02-30 does not) and lie in the past."""
    import calendar
    import datetime
    text = text.strip()
    if re.match(r"^\d{1,12}(\.\d+)?$", text):
        value = float(text)
    else:
        match = re.match(r"^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?)?"
                         r"(Z|[+-]\d\d:?\d\d)?$", text)
        if not match:
            raise UsageError("bad --start-at %r (use ISO 8601 like 2026-11-29T09:00:00Z, or Unix seconds)" % text)
        y, mo, d, h, mi, s, zone = match.groups()
        try:
            when = datetime.datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
        except ValueError as exc:
            raise UsageError("bad --start-at %r: %s" % (text, exc))
        value = calendar.timegm(when.timetuple())
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            value -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    if value > time.time() + START_AT_SKEW_S:
        raise UsageError("--start-at %r is in the future: a session can only have started already" % text)
    return float(value)


def add_session_options(p):
    """Options that choose the session: the same for the screen and nvidia-smi."""
    p.add_argument("--seed", help="seed of the session (default: random; shown in the help box and on exit)")
    p.add_argument("--speed", default="1", help="simulated seconds per wall second (default 1)")
    p.add_argument("--start-at", metavar="TIME",
                   help="the session started at TIME (ISO 8601 or Unix seconds): panes with one seed agree")
    p.add_argument("--from-start", action="store_true", help="begin at launch instead of mid-run")
    p.add_argument("--model", help="pin the model (see --list-models)")
    p.add_argument("--gpu-type", help="pin the accelerator (see --list-gpus)")
    p.add_argument("--gpus", help="pin the number of GPUs (1-8, or a multiple of 8 up to 4096)")
    p.add_argument("--kind", choices=KINDS, help="pin the kind of run")
    p.add_argument("--framework", "--style", choices=("auto",) + FRAMEWORKS, default="auto",
                   help="the training framework whose log it writes (auto: one that fits the run)")
    p.add_argument("--incidents", choices=tuple(INCIDENT_RATES), default="rare",
                   help="how often things go wrong (default rare: real-world rates)")
    p.add_argument("--exit-after", metavar="DURATION", help="quit after this wall time (90s, 5m, 2h10m)")
    p.add_argument("--data-dir", help="read models, GPUs and datasets from this directory")
    p.add_argument("--fun", action="store_true", help="also draw the joke model and dataset names (nicknames.txt)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser(prog):
    p = Parser(prog=prog,
               description="Make this terminal look as if it trains a large language model on a GPU cluster.",
               epilog="Keys: q/Q quit, p/space pause, +/- speed, g GPU panel, l loss chart, L log scale, "
                      "t chart x axis, ! incident, ? help. "
                      "Subcommand: '%s nvidia-smi --help'." % prog)
    add_session_options(p)
    p.add_argument("--exit-after-runs", metavar="N", help="quit after N runs have finished")
    p.add_argument("--exit-after-sim", metavar="DURATION",
                   help="quit when the simulated clock has run this long (reproducible excerpts)")
    p.add_argument("--format", choices=("screen", "plain", "jsonl"),
                   help="screen (default on a terminal), plain log lines, or JSON lines")
    p.add_argument("--view", choices=VIEWS, default="all",
                   help="draw one region full-screen (wall: big figures and the chart, for a far screen)")
    p.add_argument("--rank", help="show the log as this rank writes it")
    p.add_argument("--tmux", action="store_true", help="split this tmux window into log, GPU and chart panes")
    p.add_argument("--tmux-leader", metavar="PID", help=argparse.SUPPRESS)   # a side pane of --tmux: its leader
    p.add_argument("--no-color", action="store_true", help="no colour (also: NO_COLOR=1)")
    p.add_argument("--unicode", action="store_true", help="block-character bars (UTF-8 terminals)")
    p.add_argument("--list-models", action="store_true", help="list the models and exit")
    p.add_argument("--list-gpus", action="store_true", help="list the accelerators and exit")
    p.add_argument("--version", action="version", version="fake_llm_training " + __version__)
    return p


def build_smi_parser(prog):
    p = Parser(prog=prog + " nvidia-smi",
               description="Print the GPUs of one node of the session's run, as nvidia-smi does.")
    add_session_options(p)
    p.add_argument("-l", "--loop", metavar="SECONDS", help="print again every SECONDS")
    p.add_argument("--node", default="0", help="which node of the run (default 0)")
    return p


def _positive_int(text, name, lo, hi):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UsageError("%s must be a whole number, got %r" % (name, text))
    if not lo <= value <= hi:
        raise UsageError("%s must be between %d and %d, got %d" % (name, lo, hi, value))
    return value


def closest_names(name, names, n=3):
    """Names most like `name`, for 'did you mean' hints."""
    import difflib
    lowered = {x.lower(): x for x in names}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.3)
    return [lowered[x] for x in found]


def resolve_name(text, names, flag, listing):
    """The catalog key `text` names (any case), or a UsageError with a hint."""
    if text.lower() in names:
        return names[text.lower()]
    hint = closest_names(text, sorted(set(names.values())))
    raise UsageError("unknown %s %r%s" % (flag, text, "; did you mean %s?" % ", ".join(hint) if hint
                                          else "; see " + listing))


def resolve_pins(args, catalog):
    """The run pins the options ask for: model, GPU type and count, kind, framework."""
    pins = {}
    names = model_names(catalog)
    if args.model and args.model.lower() in set(n.lower() for n in catalog.fun) - set(n.lower() for n in names):
        raise UsageError("--model %r is a joke name: add --fun to use it" % args.model)
    if args.model is not None:
        pins["model"] = resolve_name(args.model, {n.lower(): n for n in names}, "--model",
                                     "--list-models")
    if args.gpu_type is not None:
        keys = {}
        for key, g in catalog.gpus.items():
            keys[key.lower()] = keys[g.name.lower()] = key
        pins["gpu_type"] = resolve_name(args.gpu_type, keys, "--gpu-type", "--list-gpus")
    if args.gpus is not None:
        gpus = _positive_int(args.gpus, "--gpus", 1, 4096)
        if gpus > 8 and gpus % 8:
            raise UsageError("--gpus must be 1 to 8, or a multiple of 8 (nodes of 8 GPUs), got %d" % gpus)
        pins["gpus"] = gpus
    if args.kind:
        pins["kind"] = args.kind
    if args.framework != "auto":
        pins["framework"] = args.framework
    return pins


# Options whose value may not be empty (an empty --model is a mistake, not "no pin")
NON_EMPTY_OPTIONS = ("--seed", "--model", "--gpu-type", "--gpus", "--exit-after", "--exit-after-sim",
                     "--exit-after-runs", "--start-at", "--data-dir", "--rank", "--speed")
SPEED_RANGE = (1e-3, 1e9)    # from a simulated second every 17 minutes to 30 simulated years a second


def check_non_empty(args):
    for flag in NON_EMPTY_OPTIONS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None and not value.strip():
            raise UsageError("%s needs a value, got %r" % (flag, value))


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
    if not SPEED_RANGE[0] <= args.speed <= SPEED_RANGE[1]:
        raise UsageError("--speed must be from %g to %g, got %r" % (SPEED_RANGE + (args.speed,)))
    args.exit_after = parse_duration(args.exit_after) if args.exit_after is not None else None
    sim = getattr(args, "exit_after_sim", None)
    args.exit_after_sim = parse_duration(sim) if sim is not None else None
    runs = getattr(args, "exit_after_runs", None)
    args.exit_after_runs = _positive_int(runs, "--exit-after-runs", 1, 10 ** 6) if runs is not None else None
    rank = getattr(args, "rank", None)
    args.rank = _positive_int(rank, "--rank", 0, 4095) if rank is not None else None
    args.start_at = parse_start_at(args.start_at) if args.start_at is not None else None
    if args.start_at is not None and (time.time() - args.start_at) * args.speed > MAX_SESSION_SECONDS:
        raise UsageError("--start-at is too far in the past at this speed: the session would be over "
                         "%d simulated days old" % (MAX_SESSION_SECONDS // 86400))
    args.pins = resolve_pins(args, catalog)
    if args.rank is not None and "gpus" in args.pins and args.rank >= args.pins["gpus"]:
        raise UsageError("--rank %d is not below --gpus %d" % (args.rank, args.pins["gpus"]))
    if args.rank is not None:
        args.pins["min_gpus"] = args.rank + 1       # every run of the session has that rank
    args.epoch0 = args.start_at if args.start_at is not None else time.time()
    return args


def list_models(catalog, out):
    out.write("%-26s %-16s %9s %6s %6s %7s %8s\n" % ("name", "shape", "params", "layers", "hidden", "vocab", "experts"))
    for name in model_names(catalog):
        model = catalog.models[name]
        shape = model.shape if model.shape != name else ""
        out.write("%-26s %-16s %9s %6d %6d %7d %8s\n" % (name, shape, fmt_params(count_params(model)), model.layers,
                                                         model.hidden, model.vocab, "%dx top%d" % (model.experts, model.active)
                                                         if model.experts else "-"))


def list_gpus(catalog, out):
    out.write("%-10s %-24s %10s %8s %6s\n" % ("key", "name", "memory", "TFLOP/s", "cap"))
    for key, g in catalog.gpus.items():
        out.write("%-10s %-24s %7dMiB %8.0f %5dW\n" % (key, g.name, g.memory_mib, g.tflops, g.power_cap_w))


END_SIGNALS = ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGBREAK")   # SIGBREAK: Ctrl+Break in a Windows console


def install_signal_handlers():
    """SIGTERM, SIGHUP, SIGQUIT and Ctrl+Break end through the same clean exit
    path as q (the terminal restored, the session named), with status 128 + N."""
    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    for name in END_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)


NOT_A_TERMINAL = "needs a terminal on stdin and stdout"


def screen_terminal(out):
    """(terminal type to use, None) where the screen can be drawn ("" on Windows),
    else (None, why not).

    A terminal type this machine has no entry for (a new emulator's name over
    ssh) falls back to its family's common entry first, as users expect.  On
    Windows curses (windows-curses) draws on the console without terminfo, so
    TERM, which consoles do not set, says nothing there."""
    if not (out.isatty() and sys.stdin.isatty()):
        return None, NOT_A_TERMINAL
    if sys.platform == "win32":
        return ("", None) if curses_imports() else (None, "the screen needs windows-curses (pip install "
                                                          "windows-curses)")
    term = os.environ.get("TERM", "")
    usable = known_terminal(term, out.fileno()) if term not in ("", "dumb", "unknown") else None
    return (usable, None) if usable else (None, "TERM=%s cannot draw a screen here" % (term or "(unset)"))


def choose_format(args, out, prog):
    """(format, terminal type to use or None): screen on a capable terminal, else
    plain, with a note when the user expected the screen."""
    if args.format in ("plain", "jsonl"):
        return args.format, None
    terminal, why_not = screen_terminal(out)
    if terminal is not None:
        return "screen", terminal or None
    if why_not != NOT_A_TERMINAL or args.format == "screen":
        sys.stderr.write("%s: %s%s; writing plain log lines\n"
                         % (prog, "--format screen " if why_not == NOT_A_TERMINAL else "", why_not))
    return "plain", None


class OutputError(Exception):
    """stdout failed: the reader went away (quiet, exit 0) or the disk is full (one line, exit 1)."""

    def __init__(self, error):
        Exception.__init__(self, error.strerror or str(error))
        self.errno = error.errno


class CheckedOutput(object):
    """stdout, whose failures are told apart from every other OSError."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        try:
            return self.stream.write(text)
        except OSError as exc:
            raise OutputError(exc)

    def flush(self):
        try:
            self.stream.flush()
        except OSError as exc:
            raise OutputError(exc)

    def isatty(self):
        return self.stream.isatty()

    def fileno(self):
        return self.stream.fileno()


def check_start_at_bound(args):
    """--start-at within 1970-3000: Windows' C library refuses times outside it
    (time.gmtime raises OSError there), so every platform refuses them up front."""
    if args.start_at is not None and not 0 <= args.start_at < START_AT_END:
        raise UsageError("--start-at must be from 1970-01-01 to 3000-12-31 (UTC), got Unix time %.0f"
                         % args.start_at)


def open_session(args, prog, out, smi=False):
    """(session, None) from parsed options, or (None, exit status) after saying why."""
    try:
        check_non_empty(args)
    except UsageError as exc:
        return None, fail_usage(prog, exc)
    try:
        catalog = load_catalog(args.data_dir or DATA_DIR)
    except DataError as exc:
        sys.stderr.write("%s: %s\n" % (prog, one_line(exc)))
        return None, 1
    if not args.fun:
        catalog = serious_catalog(catalog)
    if not smi and (args.list_models or args.list_gpus):
        (list_models if args.list_models else list_gpus)(catalog, out)
        out.flush()
        return None, 0
    try:
        resolve_args(args, catalog)
        check_start_at_bound(args)
        return Session(catalog, args.seed, args.pins, args.incidents, args.from_start), None
    except (UsageError, ConfigError) as exc:
        return None, fail_usage(prog, exc)


def nvidia_smi_main(argv, prog, out):
    """`PROG nvidia-smi [-l SECONDS] [--node K]`: the GPUs of one node, now."""
    try:
        args = build_smi_parser(prog).parse_args(argv)
        every = None
        if args.loop is not None:
            try:
                every = float(args.loop)
            except ValueError:
                raise UsageError("-l must be a number of seconds, got %r" % args.loop)
            if not 0.1 <= every <= 86400:
                raise UsageError("-l must be from 0.1 to 86400 seconds, got %r" % args.loop)
        node = _positive_int(args.node, "--node", 0, 511)
    except UsageError as exc:
        return fail_usage(prog + " nvidia-smi", exc)
    install_signal_handlers()
    session, status = open_session(args, prog + " nvidia-smi", out, smi=True)
    if session is None:
        return status
    start = time.monotonic()
    while True:
        tau = session_now(args, start)
        rs = session.run_at(tau)
        if node >= rs.cfg.nodes:
            sys.stderr.write("%s nvidia-smi: error: the run has %s; --node %d does not exist\n"
                             % (prog, plural(rs.cfg.nodes, "node"), node))
            return 2
        readings, pids = node_readings(rs, node, rs.local(tau))
        out.write(nvidia_smi_table(rs.cfg, readings, pids, args.epoch0 + tau / args.speed))
        out.flush()
        if every is None:
            return 0
        wake = time.monotonic() + every
        if args.exit_after is not None:
            wake = min(wake, start + args.exit_after)
        time.sleep(max(0.0, wake - time.monotonic()))
        if args.exit_after is not None and time.monotonic() - start >= args.exit_after:
            return 0


# Options a --tmux layout sets for each pane itself, and whether they take a value.
LAYOUT_OWN_OPTIONS = {"--tmux": False, "--view": True, "--start-at": True, "--seed": True, "--tmux-leader": True}
# How a side pane's way out reaches the layout's leader (the log pane, the launching
# shell's program): q ends it as q does, Ctrl-C as Ctrl-C does.
LAYOUT_ENDINGS = {0: "SIGUSR1", 130: "SIGINT"}


def pane_arguments(argv):
    """The user's arguments without those the layout sets for each pane."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in LAYOUT_OWN_OPTIONS:
            skip = LAYOUT_OWN_OPTIONS[name] and "=" not in a
            continue
        out.append(a)
    return out


class TmuxError(Exception):
    """tmux refused (or could not be run): its own message, one line."""


def tmux(*words):
    """Run one tmux command; its output, or TmuxError with tmux's message."""
    import subprocess
    try:
        proc = subprocess.Popen(("tmux",) + words, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise TmuxError("cannot run tmux: %s" % (exc.strerror or exc))
    output, error = proc.communicate()
    if proc.returncode:
        lines = error.decode("utf-8", "replace").strip().splitlines()
        raise TmuxError("tmux: %s" % (lines[-1] if lines else "exit status %d" % proc.returncode))
    return output.decode("utf-8", "replace").strip()


def layout_refusal(args, out):
    """Why a --tmux layout cannot start here, or None (setting TERM to the entry it draws with)."""
    if sys.platform == "win32":
        return "--tmux is not available on Windows (open panes in your terminal and give each --seed and --start-at)"
    if args.format in ("plain", "jsonl"):
        return ("--tmux draws full-screen panes; --format %s writes log lines (run it without --tmux)"
                % args.format)
    if not os.environ.get("TMUX"):
        return "--tmux works only inside a tmux session"
    terminal, why_not = screen_terminal(out)
    if terminal is None:
        return "--tmux " + why_not if why_not == NOT_A_TERMINAL else "--tmux: " + why_not
    os.environ["TERM"] = terminal
    return None


def end_layout(panes):
    """Close the layout's own side panes (never the launching shell's pane)."""
    for pane in panes:
        try:
            tmux("kill-pane", "-t", pane)
        except TmuxError:
            pass                 # already closed, or tmux is gone


def split_layout(args, argv):
    """Split the launching pane ($TMUX_PANE, not whichever pane is active) into
    the layout's GPU and chart panes; their pane ids."""
    import shlex
    side = [sys.executable, os.path.abspath(__file__), "--seed", str(args.seed), "--start-at",
            "%.3f" % args.start_at, "--tmux-leader", str(os.getpid())] + pane_arguments(argv)

    def split(target, flags, view):
        command = " ".join(shlex.quote(x) for x in side + ["--view", view])
        where = ["-t", target] if target else []
        return tmux(*(["split-window", "-d"] + where + flags + ["-P", "-F", "#{pane_id}", command]))
    panes = [split(os.environ.get("TMUX_PANE"), ["-v", "-p", "45"], "gpus")]
    try:
        panes.append(split(panes[0], ["-h", "-p", "40"], "chart"))
    except TmuxError:
        end_layout(panes)
        raise
    return panes


def tmux_layout(session, args, argv, prog, out):
    """This pane shows the log; two new panes beside it the GPUs and the chart,
    of one session (one seed and start).  q or Ctrl-C in any of them ends the
    three, and this program returns to the launching shell with its status."""
    refusal = layout_refusal(args, out)
    if refusal:
        sys.stderr.write("%s: error: %s\n" % (prog, refusal))
        return 2
    args.start_at = args.epoch0 = float("%.3f" % args.epoch0)     # what the side panes are told
    on_q = getattr(signal, LAYOUT_ENDINGS[0])
    signal.signal(on_q, lambda signum, frame: sys.exit(0))        # a side pane's q: end as q does
    try:
        panes = split_layout(args, argv)
    except TmuxError as exc:
        sys.stderr.write("%s: error: %s\n" % (prog, exc))
        return 2
    args.view = "log"
    try:
        return run_screen(session, args, prog)
    finally:
        signal.signal(on_q, signal.SIG_IGN)           # the side panes may report while they close
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        end_layout(panes)


def tell_leader(args, status):
    """A side pane's q or Ctrl-C ends the layout: tell its leader, which closes the panes."""
    name = LAYOUT_ENDINGS.get(status)
    if args.tmux_leader is not None and name and hasattr(signal, name):
        try:
            os.kill(int(args.tmux_leader), getattr(signal, name))
        except (OSError, ValueError):
            pass                 # the leader has gone already


def run_main(args, argv, prog, out):
    """Everything after the options are read; the exit status."""
    if out.stream is None:
        return 0                 # stdout closed (>&-): nothing can be read, end quietly
    install_signal_handlers()
    session, status = open_session(args, prog, out)
    if session is None:
        return status
    if args.tmux:
        return tmux_layout(session, args, argv, prog, out)
    fmt, terminal = choose_format(args, out, prog)
    if fmt != "screen":
        try:
            return run_stream(session, args, out)
        except KeyboardInterrupt:
            return 130
    if terminal and terminal != os.environ.get("TERM"):
        os.environ["TERM"] = terminal        # the family's entry that this machine has
    status = run_screen(session, args, prog, out)
    tell_leader(args, status)
    return status


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = program_name()
    out = CheckedOutput(sys.stdout)
    if argv[:1] == ["nvidia-smi"]:
        return nvidia_smi_main(argv[1:], prog, out) if sys.stdout is not None else 0
    try:
        args = build_parser(prog).parse_args(argv)
    except UsageError as exc:
        return fail_usage(prog, exc)
    return run_main(args, argv, prog, out)


def quiet_stdout():
    """Point stdout at the null device, so the interpreter's last flush of what
    could not be written stays quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def entry_point():
    """Console-script entry: turn unexpected errors into one line unless --debug."""
    import errno
    debug = "--debug" in sys.argv[1:]
    try:
        status = main()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        status = 130
    except (OutputError, BrokenPipeError) as exc:
        # The reader went away (| head; on Windows a closed pipe is EINVAL): stop
        # quietly.  A full disk is worth one line.
        quiet_stdout()
        status = 0
        if getattr(exc, "errno", None) not in (errno.EPIPE, errno.EINVAL):
            sys.stderr.write("%s: cannot write the output: %s\n" % (program_name(), exc))
            status = 1
    except Exception as exc:  # a last resort, after the terminal is restored
        if debug:
            raise
        sys.stderr.write("%s: internal error: %s: %s (run with --debug for details)\n"
                         % (program_name(), type(exc).__name__, one_line(exc)))
        status = 70
    sys.exit(status)


if __name__ == "__main__":
    entry_point()
