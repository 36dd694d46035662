"""Data that travels with the file: a copied file with its data/, a zipapp,
`pip install .` into a venv, `--user` and `--target DIR` all run; a missing
data directory names every place looked in; the sdist carries what its tests
need.  Everything is built in a temporary copy of the checkout, so no build/
or *.egg-info is left beside the program."""
import configparser
import os
import shutil
import subprocess
import sys
import tarfile
import zipapp

import pytest

import fake_llm_training as flt
from conftest import ROOT

RUN = ["--format", "plain", "--seed", "2", "--speed", "1000", "--exit-after", "1s"]
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".benchmarks", "*.pyc")


def run_in(cwd, command, env=None, timeout=60):
    """Run a command as a user would from `cwd`, with no PYTHONPATH leading back to the checkout."""
    full_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    full_env.pop("PYTHONPATH", None)
    full_env.update(env or {})
    return subprocess.run(command, cwd=str(cwd), env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def assert_runs(out):
    """It trained: exit 0 and log lines on stdout."""
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) > 5, out.stdout


def source_copy(tmp_path):
    """The checkout as a user downloads it, in a temporary directory (pip builds there)."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT, str(copy), ignore=NOT_SOURCE)
    return copy


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """One wheel built from a copy of the checkout, installed by each install test."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.check_call([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                           "-w", str(tmp / "dist"), str(source_copy(tmp))], cwd=str(tmp), stdout=subprocess.DEVNULL)
    built = [name for name in os.listdir(str(tmp / "dist")) if name.endswith(".whl")]
    assert len(built) == 1, built
    return str(tmp / "dist" / built[0])


def pip_install(tmp_path, wheel, *options, **env):
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
                          + list(options) + [wheel], cwd=str(tmp_path), stdout=subprocess.DEVNULL,
                          env=dict(os.environ, **env))


def test_a_copied_file_finds_the_data_beside_it(tmp_path):
    shutil.copy(os.path.join(ROOT, "fake_llm_training.py"), str(tmp_path))
    shutil.copytree(os.path.join(ROOT, "data"), str(tmp_path / "data"))
    assert_runs(run_in("/", [sys.executable, str(tmp_path / "fake_llm_training.py")] + RUN))
    models = run_in(tmp_path, [sys.executable, "-m", "fake_llm_training", "--list-models"])
    assert models.returncode == 0 and "Llama-3.1-405B" in models.stdout, models.stderr


def test_a_missing_data_directory_names_every_place_looked_in(tmp_path):
    shutil.copy(os.path.join(ROOT, "fake_llm_training.py"), str(tmp_path))
    out = run_in(tmp_path, [sys.executable, "-m", "fake_llm_training"] + RUN)
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "data directory not found; looked in %s, " % (tmp_path / "data") in out.stderr
    assert str(tmp_path / "share" / "fake_llm_training" / "data") in out.stderr      # --target's place
    assert os.path.join(sys.prefix, "share", "fake_llm_training", "data") in out.stderr
    assert "--data-dir" in out.stderr and "Traceback" not in out.stderr


def test_a_zipapp_reads_its_data_from_the_archive(tmp_path):
    tree = tmp_path / "app"
    tree.mkdir()
    shutil.copy(os.path.join(ROOT, "fake_llm_training.py"), str(tree))
    shutil.copytree(os.path.join(ROOT, "data"), str(tree / "data"))
    (tree / "__main__.py").write_text("import fake_llm_training\nfake_llm_training.entry_point()\n")
    zipapp.create_archive(str(tree), str(tmp_path / "fake_llm_training.pyz"))
    shutil.rmtree(str(tree))
    assert_runs(run_in(tmp_path, [sys.executable, "fake_llm_training.pyz"] + RUN))
    models = run_in("/", [sys.executable, str(tmp_path / "fake_llm_training.pyz"), "--list-models"])
    assert models.returncode == 0 and "Llama-3.1-405B" in models.stdout, models.stderr


def test_setup_cfg_installs_every_data_file_the_program_reads():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    listed = [p.strip() for p in cfg["options.data_files"]["share/fake_llm_training/data"].split(",")]
    assert sorted(listed) == sorted("data/" + name for name in flt.TABLES)
    assert sorted(os.listdir(os.path.join(ROOT, "data"))) == sorted(flt.TABLES)


@pytest.mark.slow
def test_pip_install_target_runs_with_pythonpath(tmp_path, wheel):
    target = tmp_path / "target"
    pip_install(tmp_path, wheel, "--target", str(target))
    assert (target / "share" / "fake_llm_training" / "data" / "models.txt").is_file()
    assert_runs(run_in("/", [sys.executable, "-m", "fake_llm_training"] + RUN, env={"PYTHONPATH": str(target)}))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX venv layout (venv/bin)")
def test_pip_install_in_a_venv_runs_from_anywhere(tmp_path, wheel):
    venv = tmp_path / "venv"
    subprocess.check_call([sys.executable, "-m", "venv", "--without-pip", str(venv)])   # this pip installs into it
    py = str(venv / "bin" / "python")
    subprocess.check_call([sys.executable, "-m", "pip", "--python", py, "install", "-q",
                           "--disable-pip-version-check", wheel], cwd=str(tmp_path), stdout=subprocess.DEVNULL)
    version = run_in("/", [str(venv / "bin" / "fake-llm-training"), "--version"])
    assert version.stdout.startswith("fake_llm_training "), version.stderr
    assert_runs(run_in("/", [py, "-m", "fake_llm_training"] + RUN))


@pytest.mark.slow
def test_pip_install_user_finds_its_data(tmp_path, wheel):
    """`pip install --user .` puts data/ under the user base, not sys.prefix."""
    userbase = str(tmp_path / "userbase")
    pip_install(tmp_path, wheel, "--user", "--no-warn-script-location", PYTHONUSERBASE=userbase)
    script = os.path.join(userbase, "bin", "fake-llm-training")
    assert_runs(run_in(tmp_path, [script] + RUN, env={"PYTHONUSERBASE": userbase}))


@pytest.mark.slow
def test_the_sdist_carries_what_its_tests_need(tmp_path):
    copy = source_copy(tmp_path)
    out = run_in(copy, [sys.executable, "-c", "from setuptools import build_meta; "
                        "print(build_meta.build_sdist(%r))" % str(tmp_path)], timeout=120)
    assert out.returncode == 0, out.stderr
    with tarfile.open(str(tmp_path / out.stdout.split()[-1])) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    wanted = {"fake_llm_training.py", "tests/conftest.py", "tests/tmuxutil.py", "tests/run.sh", "bench/bench.py"}
    wanted |= {"tests/" + n for n in os.listdir(os.path.join(ROOT, "tests")) if n.endswith(".py")}
    wanted |= {"tests/golden/" + n for n in os.listdir(os.path.join(ROOT, "tests", "golden"))}
    wanted |= {"data/" + n for n in flt.TABLES}
    assert not wanted - names, sorted(wanted - names)
