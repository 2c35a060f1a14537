"""A built wheel, installed without ``-e``, works from any folder: the configs ship inside the package.

The fresh virtual environment reuses this environment's dependencies instead of downloading them: it is made
with ``--system-site-packages`` (the base interpreter's packages) and, once the wheel is installed, a ``.pth``
file naming this environment's site-packages, a plain path line, so this environment's editable litesweep
(an import hook its own ``.pth`` installs) stays out: ``litesweep`` there is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import QUICK_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("search", "objectives", "conf", "pyproject.toml", "README.md")
#: One quick trial, no presets: what is checked is the install, not the search.
ONE_TRIAL = [*QUICK_OVERRIDES, "study.n_trials=1", "study.presets=false", "study.name=wheel"]


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh virtual environment holding litesweep from its wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: the build's build/ and *.egg-info stay out of the repository
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)], tmp)
    wheel = next((tmp / "dist").glob("litesweep-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp)
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-deps", str(wheel)], tmp)
    site = Path(_run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip())
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def test_the_wheel_holds_the_configs_and_they_are_read_from_it(installed: Path, tmp_path: Path) -> None:
    conf = _run([str(installed / "python"), "-c", "from litesweep.search.config import CONF_DIR; print(CONF_DIR)"], tmp_path).stdout.strip()
    assert conf.startswith(str(installed.parent)) and (Path(conf) / "config.yaml").is_file(), conf
    assert (Path(conf) / "hydra" / "help" / "litesweep-pick.yaml").is_file()
    assert "litesweep: search the best way to compress a Keras model" in _run([str(installed / "litesweep"), "--help"], tmp_path).stdout


def test_a_sweep_and_a_pick_run_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    sweep = _run([str(installed / "litesweep"), *ONE_TRIAL], work)
    assert "Pareto front of study 'wheel' (1 finished trials" in sweep.stdout, sweep.stdout
    assert (work / "mlruns" / "mlflow.db").is_file()
    _run([str(installed / "litesweep-pick"), *ONE_TRIAL], work)
    assert (work / "picked" / "wheel" / "model.tflite").is_file()


def test_a_users_config_folder_composes_over_the_packaged_configs(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "mine.yaml").write_text("defaults:\n  - tiny_cnn\n  - _self_\nname: mine\nconv_filters: [4]\n")
    proc = _run([str(installed / "litesweep"), "--config-dir", str(tmp_path / "mine"), "model=mine", "--cfg", "job"], tmp_path)
    assert "name: mine" in proc.stdout and "conv_filters:\n  - 4" in proc.stdout, proc.stdout
    # The one-line check before Hydra composes the same way: a bad value there is still one line.
    bad = subprocess.run([str(installed / "litesweep"), "--config-dir", str(tmp_path / "mine"), "model=mine", "study.n_trials=0",
                          f"paths.output_dir={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("litesweep: error: study.n_trials = 0"), bad.stderr
