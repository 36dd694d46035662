"""The machine room behind the strings: node types, NCCL's start-up by release and
platform, torchrun by release, processes, hangs that last the configured timeout,
and nvidia-smi by driver branch."""
import re

import pytest

import fake_llm_training as flt
from conftest import run_program

CATALOG = flt.load_catalog()
STYLES = ("megatron", "deepspeed", "torchtitan", "hf", "lightning")
NCCL_WHO = re.compile(r"^(\S+):(\d+):(\d+) \[(\d+)\] NCCL INFO (.*)$")


def start_lines(seed, style=None, rank=None, forced_crash=False):
    """The log lines of a session's first run, from its launch through its first steps
    (with a crash forced 20 steps in, through the relaunch), as printed by public functions."""
    pins = {"framework": style} if style else {}
    session = flt.Session(CATALOG, seed, pins, "off", from_start=True)
    rs = session.current
    if forced_crash:
        rs = flt.RunState(rs.base_cfg, rs.incident_rate, rs.start_tau, rs.offset, [("crash", rs.cfg.start_step + 20)])
    ctx = flt.LogContext(rs, 1.7e9, rank)
    end = rs.timeline.duration if forced_crash else 120.0
    events = flt.run_events(rs.timeline, -1, end)
    return rs, events, [text for ev in events for _, text in flt.event_lines(ctx, ev)]


def launch_block(lines):
    return [l for l in lines if "OMP_NUM_THREADS" in l or "torch.distributed.run" in l or "run.py:" in l]


@pytest.mark.parametrize("style", ("megatron", "torchtitan", "hf", "lightning"))
def test_torchrun_lines_follow_the_stacks_torch(style):
    formats = set()
    for seed in range(1, 25):
        rs, _, lines = start_lines(seed, style)
        torch, prints = rs.cfg.stack.torch, rs.cfg.stack.prints
        banner = [l for l in launch_block(lines) if "Setting OMP_NUM_THREADS" in l]
        assert banner, (seed, style)
        for line in banner:
            text = re.sub(r"^\d+: ", "", line)
            if torch.startswith("2.1."):
                assert re.match(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\] torch\.distributed\.run: \[WARNING\] "
                                r"Setting", text), text
                formats.add("logging")
                continue
            m = re.match(r"^W\d{4} \d\d:\d\d:\d\d\.\d{3}000 (\d+) torch/distributed/run\.py:(\d+)\] Setting", text)
            assert m, text
            assert m.group(2) == prints["run.omp_line"]
            ident = int(m.group(1))
            if prints["run.ident"] == "thread":          # 2.3, 2.4: the main thread's pthread_t
                assert ident > 2 ** 40 and ident % 4096 == 0x740
            else:                                        # 2.5 and later: the agent's pid
                assert ident < 2 ** 22
            formats.add((prints["run.ident"], m.group(2)))
        assert not any("master_addr is only used" in l for l in lines)   # c10d with an endpoint
    assert len(formats) >= 2, formats


def test_per_node_launcher_stamps_differ():
    checked = 0
    for seed in range(1, 40):
        rs, _, lines = start_lines(seed, "megatron")
        if rs.cfg.nodes < 3:
            continue
        stamps = {}
        for line in launch_block(lines):
            m = re.match(r"^(\d+): \S+ (\d\d:\d\d:\d\d[.,]\d+)", line) or \
                re.match(r"^(\d+): \[\S+ (\d\d:\d\d:\d\d,\d+)\]", line)
            stamps.setdefault(m.group(1), set()).add(m.group(2))
        assert all(len(s) == 1 for s in stamps.values())               # one logger call per node
        assert len(set.union(*stamps.values())) == len(stamps) >= 3, stamps     # each node its own moment
        checked += 1
    assert checked >= 3


def test_deepspeed_launchers_speak_when_pdsh_reaches_their_node():
    checked = 0
    for seed in range(1, 60):
        rs, _, lines = start_lines(seed, "deepspeed")
        if rs.cfg.nodes < 3:
            continue
        runner = [l for l in lines if "[runner.py:" in l and "Using IP address" in l][0]
        launch = [re.match(r"^(\S+): \[([^]]+)\] .*nnodes=", l) for l in lines if "nnodes=" in l]
        stamps = [m.group(2) for m in launch]
        assert len(set(m.group(1) for m in launch)) == len(launch) >= 3
        assert len(set(stamps)) == len(stamps) and stamps == sorted(stamps)     # each its own moment, as they come
        assert runner[1:24] < stamps[0]                                       # after the runner's pdsh
        checked += 1
    assert checked >= 3


def nccl_records(lines):
    return [NCCL_WHO.match(l).groups() for l in lines if NCCL_WHO.match(l)]


def test_nccl_lines_follow_the_platform_and_the_release():
    seen_nets, seen_types = set(), set()
    for seed in range(1, 60):
        rs, _, lines = start_lines(seed)
        cfg = rs.cfg
        nt, fabric, prints = cfg.cluster.node_type, cfg.cluster.fabric, cfg.stack.prints
        assert nt is not None and cfg.gpu.key in nt.gpus and fabric.key in nt.fabrics
        seen_types.add(nt.key)
        pattern = cfg.hostname
        schemes = [p for p, _, types in CATALOG.clusters if nt.key in types]
        assert pattern in schemes
        if pattern.startswith("a3-"):
            assert nt.key == "gcp-a3-mega" and cfg.gpu.key == "H100"
        if pattern.startswith("dgx"):
            assert nt.board.startswith("DGX")
        recs = nccl_records(lines)
        texts = [r[4] for r in recs]
        assert any(t.startswith(prints["nccl.bootstrap"] + " ") for t in texts)
        net = [t for t in texts if t.startswith("Using network ")][0]
        if cfg.nodes == 1:
            assert net == "Using network Socket"
        elif fabric.nccl_net in ("IB", "RoCE"):
            using = [t for t in texts if t.startswith("NET/IB : Using ")][0]
            hcas = re.findall(r"\[\d+\](mlx5_\d+):1/(IB|RoCE)", using)
            assert [h for h, _ in hcas] == list(nt.nics) and set(k for _, k in hcas) == {fabric.nccl_net}
            assert net == "Using network IB"
        elif fabric.nccl_net == "Libfabric":
            assert any(t.startswith("NET/OFI Selected Provider is efa") for t in texts) and net.endswith("Libfabric")
        else:
            assert net == "Using network " + fabric.nccl_net
        seen_nets.add(net)
        for host, pid, tid, local, text in recs:
            m = re.search(r" busId ([0-9a-f]+) ", text)
            if m:
                assert int(m.group(1), 16) == int(nt.bus_ids[int(local)], 16) << 12
        complete = [r for r in recs if r[4].endswith("Init COMPLETE")]
        assert complete and all((r[1] == r[2]) == (prints["nccl.complete_thread"] == "main") for r in complete)
        assert any("Init START" in t for t in texts) == (prints["nccl.init_start"] != "-")
        assert any(" MNNVL 0" in t for t in texts) == (prints["nccl.rank_layout"] != "-")
        p2p = [t for t in texts if " via P2P/" in t or " via SHM/" in t]
        if cfg.gpu.arch == "ada":                  # no PCIe peer-to-peer on Ada: through host memory
            assert p2p and all(" via SHM/direct/direct" in t for t in p2p)
        else:
            assert p2p and all(" via %s" % prints["nccl.p2p"] in t for t in p2p)
    assert len(seen_nets) >= 3 and len(seen_types) >= 4, (seen_nets, seen_types)


def test_trees_and_rings_span_the_nodes():
    for seed in range(1, 40):
        rs, _, lines = start_lines(seed, "megatron")
        cfg = rs.cfg
        if cfg.nodes < 2:
            continue
        recs = nccl_records(lines)
        trees = [r for r in recs if r[4].startswith("Trees ")]
        channels = len([r for r in recs if re.match(r"Channel \d\d/\d\d :", r[4])])
        rank0 = [r[4] for r in trees if r[4] and r[0] == rs.timeline.hostname(0, 0) and r[3] == "0"][0]
        entries = re.findall(r" \[(\d+)\] (-?\d+)/(-?\d+)/(-?\d+)->(\d+)->(-?\d+)", rank0)
        assert len(entries) == channels                    # one entry per channel, as init.cc prints them
        linked = set(int(x) for e in entries for x in e[1:4] + e[5:] if int(x) >= 0)
        assert any(x >= cfg.gpus_per_node for x in linked)  # an edge to another node
        sends = [r[4] for r in recs if "[send] via NET/" in r[4]]
        assert sends                                       # the rank that leaves the node uses the network
        return
    pytest.fail("no multi-node seed")


def test_thread_ids_differ_between_launches_and_seeds():
    patterns = []
    for seed in (3, 4, 7):
        rs, _, lines = start_lines(seed)
        offsets = tuple(int(r[2]) - int(r[1]) for r in nccl_records(lines) if "Init START" in r[4] or
                        r[4].startswith("Trees"))
        assert offsets and all(o > 0 for o in offsets)
        patterns.append(offsets)
    assert len(set(patterns)) == 3
    cfg = flt.make_run_config(CATALOG, 5, 1)
    first = [flt.nccl_tid(cfg, 0, 0, l) - flt.worker_pid(cfg, 0, 0, l) for l in range(8)]
    again = [flt.nccl_tid(cfg, 0, 1, l) - flt.worker_pid(cfg, 0, 1, l) for l in range(8)]
    assert first != again and len(set(first)) > 4
    pids = [flt.worker_pid(cfg, 0, 0, l) for l in range(8)]
    gaps = [b - a for a, b in zip([flt.agent_pid(cfg, 0, 0)] + pids, pids)]
    assert all(g >= 1 for g in gaps)


@pytest.mark.parametrize("style", STYLES)
def test_a_hang_lasts_the_configured_timeout(style):
    for seed in range(1, 60):
        session = flt.Session(CATALOG, seed, {"framework": style}, "off", from_start=True)
        if session.current.cfg.nodes >= 2:
            break
    rs, events, lines = start_lines(seed, style, forced_crash=True)
    cfg = rs.cfg
    timeout = flt.WATCHDOG_TIMEOUT_S[style]
    if style == "megatron":
        assert re.search(r"^  distributed_timeout_minutes \.+ %d$" % (timeout / 60), "\n".join(lines), re.M)
    crash = [ev for ev in events if ev.kind == "phase" and ev.data["phase"] == "crash"][0]
    failed = [ev for ev in events if ev.kind == "job_failed"][0]
    assert timeout <= failed.t - crash.t < timeout + 1.0
    reports = [re.search(r"\[E(\d+ \d\d:\d\d:\d\d\.\d{9}) ProcessGroupNCCL\.cpp:\d+\] \[Rank \d+\] Watchdog caught "
                         r"collective operation timeout: WorkNCCL\(SeqNum=\d+, OpType=(\w+), NumelIn=(\d+), "
                         r"NumelOut=(\d+), Timeout\(ms\)=(\d+)\) ran for (\d+) milliseconds", l) for l in lines]
    reports = [m.groups() for m in reports if m]
    if not reports:                    # torch 2.1-2.3 print no stamp
        reports = [(None,) + m.groups() for m in (re.search(
            r"Watchdog caught collective operation timeout: WorkNCCL\(SeqNum=\d+, OpType=(\w+), NumelIn=(\d+), "
            r"NumelOut=(\d+), Timeout\(ms\)=(\d+)\) ran for (\d+) milliseconds", l) for l in lines) if m]
    assert len(reports) == cfg.gpus_per_node                 # every rank of a waiting node
    assert all(int(r[4]) == timeout * 1000 <= int(r[5]) < timeout * 1000 + 200 for r in reports)
    if reports[0][0]:
        assert len(set(r[0] for r in reports)) == len(reports)    # each in its own nanosecond
    op, numel_in, numel_out = reports[0][1], int(reports[0][2]), int(reports[0][3])
    if cfg.sharding == "none":
        assert op == "ALLREDUCE" and numel_in == numel_out
    elif cfg.sharding in ("zero1", "zero2"):
        assert op == "_REDUCE_SCATTER_BASE" and numel_in == numel_out * cfg.dp
    else:
        assert op == "_ALLGATHER_BASE" and numel_out == numel_in * cfg.dp


@pytest.mark.slow          # five whole runs with a relaunch, every line formatted: the full suite only
def test_distinct_messages_never_share_a_source_line():
    for style in STYLES:
        rs, _, lines = start_lines(5, style, forced_crash=True)
        sites = {}
        for line in lines:
            m = re.search(r"(\w+\.(?:py|cpp)):(\d+)\](?: \[[^\]]*\])*\s*(\S+ \S+)", line)
            if m and "*****" not in line and m.group(3).strip():
                sites.setdefault((m.group(1), m.group(2)), set()).add(re.sub(r"\d+", "#", m.group(3)))
        assert sites and all(len(v) == 1 for v in sites.values()), sites


@pytest.mark.parametrize("seed", [3, 5, 8, 12, 21])
def test_nvidia_smi_layout_follows_the_driver(seed):
    out = run_program(["nvidia-smi", "--seed", str(seed)], timeout=60)
    assert out.returncode == 0, out.stderr
    table = [l for l in out.stdout.splitlines()[1:] if l.strip()]
    stack = flt.make_cluster(CATALOG, seed).stack
    narrow = stack.driver.startswith("535.")
    assert set(len(l) for l in table) == {89 if narrow else 91}
    assert ("| Bus-Id        Disp.A |" in out.stdout) == narrow
    nt = flt.make_cluster(CATALOG, seed).node_type
    buses = re.findall(r"\| +00000000:([0-9A-F]{2}):00\.0 Off \|", out.stdout)
    assert buses == [b.upper() for b in nt.bus_ids]
    wide_pid = int(stack.prints["smi.pid_width"]) == 16
    assert ("|  GPU   GI   CI              PID   Type" in out.stdout) == wide_pid
    if not narrow:
        gpu_rows = [l for l in table[6:] if l.startswith(("| ", "+-", "|=")) and "Processes" not in l][:9]
        from test_beyond import SMI_SEPARATORS
        assert all([i for i, c in enumerate(l) if c in "|+"] == SMI_SEPARATORS for l in gpu_rows)
