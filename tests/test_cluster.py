"""One cluster per session, and throughput, memory and lengths from physics."""
import re

import pytest

import fake_llm_training as flt
from conftest import run_program

CATALOG = flt.load_catalog()
DAY = 86400.0


def session_runs(seed, count=4, **pins):
    """The first `count` runs of a session, as it meets them."""
    session = flt.Session(CATALOG, seed, pins, "rare", from_start=True)
    runs = [session.current]
    while len(runs) < count:
        runs.append(session.run_at(runs[-1].end_tau + 1.0))
    return session, [rs.cfg for rs in runs]


@pytest.mark.parametrize("seed", range(1, 41))
def test_a_session_keeps_one_cluster(seed):
    session, cfgs = session_runs(seed)
    cluster = session.cluster
    total_nodes = cluster.nodes
    for cfg in cfgs:
        assert cfg.gpu == cluster.gpu and cfg.stack == cluster.stack and cfg.fabric == cluster.fabric.name
        assert cfg.hostname == cluster.hostname and cfg.gpus_per_node == cluster.gpus_per_node
        # a job uses all of the cluster or a partition of it: its nodes are the cluster's nodes
        assert cfg.gpus <= total_nodes * cluster.gpus_per_node
        first = cfg.first_node - cluster.first_node
        assert 0 <= first and first + cfg.nodes <= total_nodes
    assert len(set((c.gpu.key, c.hostname, c.stack, c.fabric) for c in cfgs)) == 1


def test_sessions_differ_in_their_clusters():
    clusters = set((flt.make_cluster(CATALOG, s).gpu.key, flt.make_cluster(CATALOG, s).hostname) for s in range(1, 60))
    assert len(clusters) >= 8


@pytest.mark.parametrize("seed", range(1, 61))
def test_every_drawn_configuration_fits_the_memory_model(seed):
    for run in (1, 2, 3):
        cfg = flt.make_run_config(CATALOG, seed, run)
        mem = flt.memory_model(cfg.shape, cfg.params, cfg.active_params, cfg.layout, cfg.seq_len, cfg.framework,
                               cfg.grad_accum)
        assert flt.fits(cfg.gpu, mem)
        assert cfg.mem_used_mib == int(flt.memory_total(mem) / flt.MIB) < cfg.gpu.memory_mib
        # what nvidia-smi shows: the framework's reserved pool plus the CUDA context and NCCL buffers
        assert cfg.mem_used_mib >= cfg.mem_reserved_mib + cfg.context_mib + cfg.nccl_mib - 2
        assert cfg.context_mib >= 500 and cfg.nccl_mib > 0
        assert cfg.mem_need_bytes <= cfg.mem_reserved_mib * flt.MIB * 1.0001


def test_megatron_fp32_main_grads_are_counted():
    model = CATALOG.models["Falcon-40B"]
    params = flt.count_params(model)
    lay = flt.Layout(2, 1, 1, 1, 1, 64, "zero1", "full", 1)
    mem = flt.memory_model(model, params, params, lay, 2048, "megatron")
    # bf16 weights and fp32 main gradients of half the model alone are 6 bytes x 20B = 120 GB
    assert mem.allocated > 6 * params / 2
    assert not flt.fits(CATALOG.gpus["H100"], mem)


@pytest.mark.parametrize("seed", [3, 8, 21])
def test_versions_agree_between_nccl_nvidia_smi_and_the_config(seed):
    cfg = flt.make_run_config(CATALOG, seed, 1)
    stack = cfg.stack
    log = run_program(["--format", "plain", "--seed", str(seed), "--from-start", "--speed", "1000000",
                       "--exit-after", "2s"])
    assert log.returncode == 0, log.stderr
    versions = set(re.findall(r"NCCL version (\S+)", log.stdout))
    drivers = set(re.findall(r"cudaDriverVersion (\d+)", log.stdout))
    assert versions == {"%s+cuda%s" % (stack.nccl, stack.cuda)}
    major, minor = stack.driver_cuda.split(".")
    assert drivers == {str(int(major) * 1000 + int(minor) * 10)}
    smi = run_program(["nvidia-smi", "--seed", str(seed), "--from-start"])
    assert smi.returncode == 0, smi.stderr
    found = re.search(r"Driver Version: (\S+)\s+CUDA Version: (\S+)", smi.stdout)
    assert found.groups() == (stack.driver, stack.driver_cuda)
    # the NCCL build's CUDA is no newer than what the driver supports
    assert tuple(map(int, stack.cuda.split("."))) <= tuple(map(int, stack.driver_cuda.split(".")))


def test_blackwell_gets_a_cuda_12_8_stack():
    for seed in range(1, 30):
        stack = flt.make_cluster(CATALOG, seed, {"gpu_type": "B200"}).stack
        assert tuple(map(int, stack.cuda.split("."))) >= (12, 8) and stack.driver.startswith("57")


def test_start_up_grows_with_world_size():
    def startup(gpus):
        times = []
        for seed in range(1, 6):
            cfg = flt.make_run_config(CATALOG, seed, 1, {"model": "Llama-3.1-8B", "gpu_type": "H100",
                                                         "gpus": gpus, "kind": "resume", "framework": "megatron"})
            times.append(cfg.launch_seconds + cfg.build_seconds)
        return sum(times) / len(times)
    small, mid, large = startup(16), startup(128), startup(1024)
    assert small < mid < large and large - small > 10


def _mfu(gpu_key, layout, gpus=8, seed=1, model_name="Llama-3.1-8B", style="torchtitan"):
    cluster = flt.make_cluster(CATALOG, seed, {"gpu_type": gpu_key, "gpus": gpus})
    model = CATALOG.models[model_name]
    params = flt.count_params(model)
    parts = flt.step_parts(model, params, params, cluster, layout, 4096, 4, style, "bf16")
    tokens = layout.mbs * layout.dp * 4 * 4096
    return flt.mfu_of(flt.flops_per_token(model, 4096, params), tokens / sum(parts), gpus, cluster.gpu.tflops)


def test_pcie_cards_lose_mfu_under_fsdp_and_tp():
    fsdp = flt.Layout(1, 1, 1, 1, 1, 8, "fsdp", "none", 1)          # one node: the link inside it decides
    tp8 = flt.Layout(8, 1, 1, 1, 1, 1, "zero1", "none", 1)
    zero1 = flt.Layout(1, 1, 1, 1, 1, 8, "zero1", "none", 1)
    for layout in (fsdp, tp8):
        nvlink, pcie, l40s = _mfu("H100", layout), _mfu("H100-PCIe", layout), _mfu("L40S", layout)
        assert pcie < 0.8 * nvlink and l40s < 0.8 * nvlink, layout
    assert _mfu("L40S", tp8) < 0.2                      # TP over PCIe lands in the low teens
    assert _mfu("L40S", tp8) < _mfu("L40S", zero1)      # and a PCIe team prefers plain data parallelism
    for seed in range(1, 6):                            # across nodes too: PCIe servers carry fewer NICs
        big = flt.Layout(1, 1, 1, 1, 1, 64, "fsdp", "none", 1)
        assert _mfu("H100-PCIe", big, 64, seed) < 0.8 * _mfu("H100", big, 64, seed)


@pytest.mark.parametrize("seed", range(1, 81))
def test_real_lengths(seed):
    for run in (1, 2):
        cfg = flt.make_run_config(CATALOG, seed, run)
        wall = cfg.total_steps * cfg.step_time_s
        assert wall <= 21 * DAY                                 # weeks at most, never years
        assert 0.08 <= cfg.step_time_s <= 60
        if cfg.kind in ("pretrain", "resume"):                  # from scratch: Chinchilla's 20 tokens a parameter
            assert cfg.total_steps * cfg.tokens_per_step >= 20 * cfg.params
        if cfg.kind == "finetune":
            assert 1 <= cfg.epochs <= 4
            assert cfg.steps_per_epoch * cfg.global_batch >= cfg.train_samples
        # evaluations and checkpoints scale with the run: never every few steps of a long run
        assert cfg.val_interval * cfg.step_time_s >= min(180, wall / 2) * 0.5
        assert cfg.ckpt_interval % cfg.val_interval == 0


def test_most_sessions_end_a_job_within_the_first_hour():
    ends = [flt.Session(CATALOG, seed, {}, "rare").current.end_tau for seed in range(1, 41)]
    assert sum(1 for t in ends if t < 3600) >= 0.75 * len(ends)


def test_refusal_states_the_true_shortfall():
    with pytest.raises(flt.ConfigError) as err:
        flt.make_run_config(CATALOG, 4, 1, {"model": "Llama-3.1-405B", "gpu_type": "L40S", "gpus": 8})
    text = str(err.value)
    need, has, short = [float(x) for x in re.search(
        r"needs ([\d.]+) GiB per GPU.*has ([\d.]+) GiB usable: ([\d.]+) GiB short", text).groups()]
    assert need > has and abs(need - has - short) < 0.2


@pytest.mark.parametrize("gpus", [576, 1024, 2048])
def test_405b_trains_on_hundreds_of_h100(gpus):
    cfg = flt.make_run_config(CATALOG, 1, 1, {"model": "Llama-3.1-405B", "gpu_type": "H100", "gpus": gpus})
    assert cfg.gpus == gpus and cfg.tp * cfg.pp * cfg.cp * cfg.dp == gpus
    assert cfg.mfu > 0.2


@pytest.mark.slow
def test_405b_on_1024_h100_from_the_command_line():
    out = run_program(["--model", "Llama-3.1-405B", "--gpu-type", "H100", "--gpus", "1024", "--format", "plain",
                       "--exit-after", "3s"])
    assert out.returncode == 0 and "error" not in out.stderr, out.stderr


def test_export_shards_as_save_pretrained_does():
    model = CATALOG.models["Llama-3.1-70B"]
    import random
    files = flt.safetensors_export(flt.count_params(model), model, random.Random(1))
    shards = [b for n, b in files if n.endswith(".safetensors")]
    assert len(shards) == 30 and all(b <= 5e9 + 1e6 for b in shards)   # 141 GB in 5 GB shards, as published
    assert len(set(shards)) > 5 and shards[-1] < min(shards[:-1])
    assert any(n == "model.safetensors.index.json" for n, _ in files)


def test_step_parts_add_up_and_communication_shows():
    cfg = flt.make_run_config(CATALOG, 1, 1, {"model": "Llama-3.1-70B", "gpu_type": "H100", "gpus": 256})
    assert abs(sum(cfg.step_parts) - cfg.step_time_s) < 1e-9
    assert cfg.step_parts.compute > cfg.step_parts.comm >= 0 and cfg.step_parts.optimizer > 0
