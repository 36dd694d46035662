"""The README's captures and seed examples are what the code draws now (bench/readme_captures.py)."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script():
    spec = importlib.util.spec_from_file_location("readme_captures", os.path.join(ROOT, "bench", "readme_captures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow       # about 3 s; and any change to the model moves the captures until they are made again
def test_every_readme_capture_is_what_the_script_prints_now():
    script = load_script()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        in_readme = script.readme_blocks(f.read())
    now = script.captures()
    assert sorted(in_readme) == sorted(now)                  # every capture has its block, and no more
    stale = [name for name in now if in_readme[name] != now[name]]
    assert not stale, "README captures out of date (run python3 bench/readme_captures.py --write): %s" % stale
    assert "\u252c" in now["tmux-panes"] and "CLUSTER" in now["first-frame"]     # three panes; a whole screen
