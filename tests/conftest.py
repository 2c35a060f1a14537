"""Shared fixtures: the real config, shrunk; a small trained model built once per test session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

#: One base-model cache for the whole session: each sweep under test reuses the tiny CNN the first one
#: trained, instead of training it again in its own output folder (tests of the cache use their own).
SHARED_CACHE = Path(tempfile.mkdtemp(prefix="litesweep-test-cache-"))
atexit.register(shutil.rmtree, SHARED_CACHE, ignore_errors=True)

#: The real config made small: digits data, a tiny CNN, one epoch per fine-tuning phase, short latency runs.
QUICK_OVERRIDES = [
    f"paths.cache_dir={SHARED_CACHE}",
    "data=digits",
    "model=tiny_cnn",
    "finetune.prune_epochs=1",
    "finetune.qat_epochs=1",
    "latency.max_seconds=0.05",
    "latency.max_runs=60",
    "progress=false",
    "finetune.min_relative_accuracy=0",  # no floor: a trial on the tiny model may fall below it after one epoch
]


def processes_holding(path: Path) -> list[int]:
    """Processes that hold ``path`` open (a trial's child process keeps its stderr file open for its whole life)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd")):
                found.append(int(pid))
        except OSError:
            continue
    return found


def compose_quick(tmp: Path, *overrides: str):
    """The project's config with quick-tier settings and every path under ``tmp``."""
    from litesweep.search.cli import compose_config
    from litesweep.search.config import register_configs

    register_configs()
    return compose_config([*QUICK_OVERRIDES, f"paths.output_dir={tmp}", *overrides], CONF_DIR)


@pytest.fixture(scope="session")
def digits_bench(tmp_path_factory: pytest.TempPathFactory):
    """A Workbench on the digits data with the tiny CNN (trained once per session)."""
    from litesweep.objectives.data import load_dataset
    from litesweep.objectives.measure import LatencyProtocol
    from litesweep.objectives.models import CnnSpec, train_or_load
    from litesweep.objectives.pipeline import FineTuneSettings, Workbench

    data = load_dataset("digits", val_fraction=0.15, test_fraction=0.25)
    spec = CnnSpec(conv_filters=(8,), dense_units=(32,), max_epochs=15, patience=2, learning_rate=0.003)
    model, _ = train_or_load(spec, data, tmp_path_factory.mktemp("cache"))
    return Workbench(model, data, FineTuneSettings(prune_epochs=2, qat_epochs=1),
                     LatencyProtocol(max_seconds=0.05, max_runs=60))
