"""Shared helpers: where the program is and how to run it as a user would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_program(args, timeout=120, env=None, cwd=ROOT, python=None):
    """Run `python -m fake_llm_training ARGS`; return the CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.pop("NO_COLOR", None)
    if env:
        full_env.update(env)
    return subprocess.run([python or sys.executable, "-m", "fake_llm_training"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout, env=full_env, cwd=cwd)
