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
