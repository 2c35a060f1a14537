"""The console of a real ``litesweep`` command: one start line, one progress bar, the front, and none of the
libraries' own noise unless ``verbose=true``; a broken setting still prints its one-line error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import QUICK_OVERRIDES

#: What a quiet console never shows (issue 16): Optuna's experimental and importance warnings, the CUDA probe,
#: TensorFlow's oneDNN notice, the converter's calibrated-quantizer print.
NOISE = re.compile(r"ExperimentalWarning|cuInit|oneDNN|fully_quantize:|PedAnova")
#: TensorFlow's own C++ log lines (absl format) and its start-up notices.
TF_LINES = re.compile(r"^[IWE]\d{4} |All log messages before absl::InitializeLog|cudart_stub|cuInit")


def _litesweep(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "LITESWEEP_VERBOSE")}
    return subprocess.run([sys.executable, "-m", "litesweep.search", *QUICK_OVERRIDES, f"paths.output_dir={out}", *overrides],
                          capture_output=True, text=True, timeout=600, env=env)


def _lines(proc: subprocess.CompletedProcess) -> list[str]:
    """Every line either stream shows, the bar's in-place updates (``\\r``) as lines of their own."""
    return [line for text in (proc.stdout, proc.stderr) for line in re.split(r"[\r\n]", text) if line.strip()]


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("console")
    proc = _litesweep(out, "study.n_trials=3", "progress=true")  # presets on: full_int8 is a calibrated conversion
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_a_sweep_prints_no_library_noise(quiet) -> None:
    _, proc = quiet
    noisy = [line for line in _lines(proc) if NOISE.search(line) or TF_LINES.search(line)]
    assert not noisy, noisy
    assert not proc.stderr.strip(), proc.stderr  # nothing went wrong, so nothing is on stderr


def test_a_sweep_prints_its_start_line_bar_and_front(quiet) -> None:
    out, proc = quiet
    lines = _lines(proc)
    start = [line for line in lines if line.startswith("litesweep: study ")]
    assert len(start) == 1, lines
    for part in ("created (0/3 trials finished)", f"storage {out}/mlruns/optuna.journal", f"tracking sqlite:///{out}/mlruns/mlflow.db",
                 "data digits (train ", ", val ", ", test ", "base model tiny_cnn ("):
        assert part in start[0], start[0]
    bars = [line for line in lines if line.startswith("trials:")]
    assert bars and re.search(r"3/3 \[.*front=\d+, last=(COMPLETE|PRUNED)\]", bars[-1]), bars
    text = proc.stdout
    assert "Pareto front of study 'digits-tiny_cnn-default' (3 finished trials" in text
    assert f"mlflow ui --backend-store-uri 'sqlite:///{out}/mlruns/mlflow.db'" in text
    # Between the start line and the table only the bar is printed: no log line breaks it.
    middle = lines[lines.index(start[0]) + 1: next(i for i, line in enumerate(lines) if line.startswith("Pareto front"))]
    assert all(line.startswith("trials:") for line in middle), middle


def test_verbose_brings_tensorflows_lines_back(quiet) -> None:
    out, _ = quiet
    proc = _litesweep(out, "study.n_trials=4", "verbose=true")  # the same study, one trial more
    assert proc.returncode == 0, proc.stderr
    assert any(TF_LINES.search(line) for line in _lines(proc)), proc.stderr[-3000:]
    assert "resumed (3/4 trials finished)" in proc.stdout


def test_a_missing_data_file_still_prints_its_one_line_error(tmp_path: Path) -> None:
    proc = _litesweep(tmp_path / "out", "data=npz", f"data.path={tmp_path / 'missing.npz'}")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("litesweep: error: ") and "missing.npz" in errors[0], proc.stderr
