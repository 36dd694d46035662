"""One real software stack behind every string: what each framework's release
prints (data/printers.txt), combinations that exist, and real names unless --fun.

Line numbers and strings are checked against data/printers.txt, whose rows cite
the release tags they were read at; the tests check that the program prints
what the session's stack resolves, and that stacks with different releases
print differently."""
import json
import re

import pytest

import fake_llm_training as flt
from conftest import run_program

CATALOG = flt.load_catalog()
SERIOUS = flt.serious_catalog(CATALOG)


def jsonl(args):
    out = run_program(["--format", "jsonl", "--speed", "1000000", "--from-start"] + list(args))
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    return events[0], [e["text"] for e in events if e["event"] == "log"]


def test_no_joke_name_is_drawn_by_default():
    assert CATALOG.fun and not set(CATALOG.fun) & set(flt.model_names(SERIOUS))
    jokes = 0
    for seed in range(300):
        full = flt.make_run_config(CATALOG, seed, 1)
        jokes += full.model in CATALOG.fun or full.dataset in CATALOG.fun
        cfg = flt.make_run_config(SERIOUS, seed, 1)
        assert cfg.model not in CATALOG.fun and cfg.dataset not in CATALOG.fun, seed
    assert jokes > 30          # the same seeds draw joke names when they are in the catalog


@pytest.mark.parametrize("seed", [2, 4, 10])
def test_fun_flag_brings_the_joke_names_back(seed):
    with_fun = flt.make_run_config(CATALOG, seed, 1)
    assert with_fun.model in CATALOG.fun or with_fun.dataset in CATALOG.fun      # the seed draws one
    config, _ = jsonl(["--seed", str(seed), "--exit-after-sim", "1s", "--fun"])
    assert config["model"] in CATALOG.fun or config["dataset"] in CATALOG.fun
    config, lines = jsonl(["--seed", str(seed), "--exit-after-sim", "1s"])
    text = "\n".join(lines) + json.dumps(config)
    assert not [name for name in CATALOG.fun if name in text]


def test_a_joke_model_needs_the_flag():
    out = run_program(["--model", "CoffeeLM-7B", "--format", "plain", "--exit-after", "1s"])
    assert out.returncode == 2 and "--fun" in out.stderr
    out = run_program(["--list-models"])
    assert "CoffeeLM-7B" not in out.stdout and "Mistral-7B-v0.1" in out.stdout
    out = run_program(["--list-models", "--fun"])
    assert "CoffeeLM-7B" in out.stdout
    assert "--fun" in run_program(["--help"]).stdout


def stack_of(config):
    """The catalog stack whose releases the run's jsonl `software` names."""
    sw = config["software"]
    return next(s for s in CATALOG.stacks if s.torch == sw["torch"] and s.driver == sw["driver"])


def sites(stack, prefix):
    """file:line of every printers.txt field of this package, as the stack resolves them (a
    message field gives its site, 'file:line:function', before its text)."""
    out = {}
    for field, value in stack.prints.items():
        where = value.split(" ")[0]
        if field.startswith(prefix) and where.count(":") in (1, 2):
            out[field] = ":".join(where.split(":")[:2])
    return out


DS_SITE = re.compile(r"^(?:\S+: )?\[[\d-]+ [\d:,]+\] \[(?:INFO|ERROR)\] \[(?P<file>[\w.]+):(?P<line>\d+):(?P<func>\w+)\] "
                     r"(?P<text>.*)$")
HF_SITE = re.compile(r"^\[INFO\|(?P<file>[\w.]+):(?P<line>\d+)\] [\d-]+ [\d:,]+ >> (?P<text>.*)$")


def template(text):
    return re.sub(r"\d+", "N", text)[:40]


def one_call_per_line(matches, shared=()):
    """Distinct logger calls never share a source line: each file:line prints one message
    template (DeepSpeed's log_dist is itself one call that every rank-0 message goes through,
    and DeepSpeedConfig.print one call in a loop over the settings)."""
    by_site = {}
    for m in matches:
        site = "%s:%s" % (m.group("file"), m.group("line"))
        if site not in shared:
            by_site.setdefault(site, set()).add(template(m.group("text")))
    assert by_site and all(len(texts) == 1 for texts in by_site.values()), by_site


@pytest.mark.parametrize("seed", [12, 23, 5, 3, 38])
def test_deepspeed_prints_its_own_release_and_the_sites_of_its_zero_stage(seed):
    config, lines = jsonl(["--framework", "deepspeed", "--seed", str(seed), "--exit-after-sim", "20m"])
    stack, version = stack_of(config), config["software"]["deepspeed"]
    assert stack.deepspeed == version
    assert "DeepSpeed info: version=%s, git-hash=unknown, git-branch=unknown" % version in "\n".join(lines)
    found = [m for m in (DS_SITE.match(l) for l in lines) if m]
    known = sites(stack, "deepspeed.")
    for m in found:
        site = "%s:%s" % (m.group("file"), m.group("line"))
        base = [v for v in known.values() if v.split(":")[0] == m.group("file")]
        assert any(site == v or (v.startswith("stage") and 0 < int(m.group("line")) - int(v.split(":")[1]) < 4)
                   for v in base), (site, sorted(known.values()))
    zero = int(re.search(r"ZeRO stage (\d) optimizer", "\n".join(lines)).group(1))
    assert zero == int(config["sharding"][-1])
    files = set(m.group("file") for m in found)
    assert ("stage3.py" in files) == (zero == 3) and ("stage_1_and_2.py" in files) == (zero < 3)
    if zero == 3:
        assert "DeepSpeed Final Optimizer = DeepSpeedZeroOptimizer_Stage3" in "\n".join(lines)
    one_call_per_line(found, shared=(known["deepspeed.log_dist"], known["deepspeed.config_arg"]))


def test_deepspeed_sites_differ_between_releases():
    seen = {}
    for seed in (12, 23, 3, 38):
        config, lines = jsonl(["--framework", "deepspeed", "--seed", str(seed), "--exit-after-sim", "10m"])
        step = next(l for l in lines if "] step=" in l)
        seen[config["software"]["deepspeed"]] = re.search(r"\[(logging\.py:\d+):log_dist\]", step).group(1)
    assert len(seen) == 4 and len(set(seen.values())) == 3, seen     # 96 to 0.15, 128 in 0.16, 107 in 0.17


@pytest.mark.parametrize("seed", [8, 7])
def test_deepspeed_timer_counts_its_own_steps_after_a_resume(seed):
    config, lines = jsonl(["--framework", "deepspeed", "--seed", str(seed), "--exit-after-sim", "30m"])
    first = config["start_step"]
    steps = [int(m.group(1)) for m in (re.search(r"\] step=(\d+), skipped", l) for l in lines) if m]
    assert steps[0] == 0            # deepspeed.initialize reports step 0 before the checkpoint loads
    steps = steps[1:]
    timer = [int(m.group(1)) for m in (re.search(r"/global_step=(\d+), Running", l) for l in lines) if m]
    every = steps[1] - steps[0]
    assert first > 0 and every > 1 and len(steps) > 5 and len(timer) > 5
    # the engine prints when the global step is a multiple of steps_per_print, the timer when
    # its own count of this launch's steps is; resumed at a saved step (a multiple), they agree
    assert all(s % every == 0 for s in steps) and all(c % every == 0 and c > 2 for c in timer)
    assert set(first + c for c in timer) <= set(steps) and timer[0] <= every + 2
    two = re.compile(r"lr=\[([\d.e-]+), \1\], mom=\[\(0\.9, 0\.95\), \(0\.9, 0\.95\)\]")
    assert all(two.search(l) for l in lines if "] step=" in l)     # Megatron's two parameter groups


@pytest.mark.parametrize("seed", [3, 5, 38])
def test_hf_trainer_lines_follow_the_transformers_release(seed):
    config, lines = jsonl(["--framework", "hf", "--seed", str(seed), "--exit-after-sim", "2h"])
    stack = stack_of(config)
    assert stack.transformers == config["software"]["transformers"]
    found = [m for m in (HF_SITE.match(l) for l in lines) if m]
    known = set(sites(stack, "hf.").values())
    block = [m for m in found if m.group("file") == "trainer.py" and m.group("text").startswith(("*****", "  "))
             and "Continuing" not in m.group("text")][:8]
    base = int(stack.prints["hf.running_training"].split(":")[1])
    assert [int(m.group("line")) - base for m in block] == [0, 1, 2, 3, 6, 7, 8, 9]
    for m in found:
        site = "%s:%s" % (m.group("file"), m.group("line"))
        assert site in known or m.group("file") == "trainer.py", site
    one_call_per_line(found)


def test_hf_start_up_differs_between_transformers_releases():
    heads = {}
    for seed in (3, 5, 38):
        config, lines = jsonl(["--framework", "hf", "--seed", str(seed), "--exit-after-sim", "10m"])
        heads[config["software"]["transformers"]] = next(l.split("]")[0] for l in lines if "Running training" in l)
    assert len(set(heads.values())) == len(heads) == 3, heads


def test_no_fp16_run_of_a_family_that_overflows_in_it():
    volta = [s for s in range(400) if flt.make_cluster(SERIOUS, s).gpu.precision == "fp16"][:40]
    assert len(volta) >= 10
    families = set()
    for seed in volta:
        cfg = flt.make_run_config(SERIOUS, seed, 1)
        assert cfg.precision == "fp16" and cfg.shape.family not in flt.FP16_OVERFLOW_FAMILIES, (seed, cfg.model)
        families.add(cfg.shape.family)
    assert len(families) >= 3
    bf16 = [flt.make_run_config(SERIOUS, s, 1) for s in range(60)]      # the same families do run in bf16
    assert set(c.shape.family for c in bf16 if c.precision == "bf16") & set(flt.FP16_OVERFLOW_FAMILIES)


def test_megatron_deepspeed_turns_flash_attention_off_on_volta():
    seen = set()
    for seed in range(1, 200):
        cfg = flt.make_run_config(SERIOUS, seed, 1, {"framework": "deepspeed"})
        if cfg.gpu.arch == "volta" or (len(seen) == 1 and cfg.gpu.arch not in seen):
            config, lines = jsonl(["--framework", "deepspeed", "--seed", str(seed), "--exit-after-sim", "2m"])
            flash = [l for l in lines if re.match(r"^  use_flash_attn_v2 \.+ ", l)]
            assert flash == ["  use_flash_attn_v2 %s %s" % ("." * 31, cfg.gpu.arch != "volta")], (seed, flash)
            seen.add(cfg.gpu.arch)
        if len(seen) == 2:
            break
    assert "volta" in seen and len(seen) == 2


def test_lightning_banner_and_summary_follow_its_release():
    tables = {}
    for seed in (38, 1):                            # a Lightning 2.1.3 stack and a 2.5.2 one
        config, lines = jsonl(["--framework", "lightning", "--seed", str(seed), "--exit-after-sim", "2m"])
        release = config["software"]["lightning"]
        head = next(l for l in lines if l.startswith("  | Name  | "))
        rule = lines[lines.index(head) + 1]
        cells = [c.strip() for c in head.split("|")]
        assert len(rule) == sum(len(c) for c in head.split(" | ")) + 3 * (1 + len(cells))   # Lightning's rule
        tables[release] = (cells[-1], "IPU available: False, using: 0 IPUs" in lines)
    assert tables == {"2.1.3": ("Params", True), "2.5.2": ("Mode", False)}, tables
