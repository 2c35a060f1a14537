"""The figures reported beside the search's own, measured only where a user reads them.

The search selects on the validation split and on one latency reading per file. A user picks by the
front, so every front trial (and every preset, and the float reference) also gets:

- its score on the untouched test split, with a Wilson 95% interval, measured once when it first
  reaches the front (non-front trials never touch test);
- its latency re-timed at the end of every run side by side with the presets, in shuffled interleaved
  rounds, with the spread over the rounds: a trial is only called faster when the spreads do not overlap.

Figures go to the trial's MLflow run (metrics) and to the study (``ledger.CONFIRMED_ATTR_PREFIX``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from litesweep.objectives.metrics import TEST_METRIC_NAMES
from litesweep.search.ledger import CONFIRMED_ATTR_PREFIX, TFLITE_FILE, confirmed_of, run_id_of
from litesweep.search.tracking import Tracker

log = logging.getLogger("litesweep")


def _record(study: optuna.Study, tracker: Tracker, trial: optuna.trial.FrozenTrial, figures: Mapping[str, float]) -> None:
    run_id = run_id_of(trial)
    assert run_id is not None  # a COMPLETE trial is always linked
    tracker.log_run_metrics(run_id, figures)  # MLflow first: the study's attribute says the run has them
    study.set_user_attr(f"{CONFIRMED_ATTR_PREFIX}{trial.number}", confirmed_of(study, trial.number) | dict(figures))


def measure_front_on_test(study: optuna.Study, tracker: Tracker, bench: Any, front: Sequence[optuna.trial.FrozenTrial]) -> list[int]:
    """Measure on the test split every front trial not measured there yet; returns their numbers."""
    done = []
    attrs = study.user_attrs  # one read of the storage, not one per front trial
    for trial in front:
        if TEST_METRIC_NAMES[0] in attrs.get(f"{CONFIRMED_ATTR_PREFIX}{trial.number}", {}):
            continue
        run_id = run_id_of(trial)
        assert run_id is not None
        _record(study, tracker, trial, bench.measure_test(tracker.read_file(run_id, TFLITE_FILE)))
        done.append(trial.number)
    return done


def retime(study: optuna.Study, tracker: Tracker, bench: Any, front: Sequence[optuna.trial.FrozenTrial],
           preset_runs: Mapping[str, str], seed: int = 0) -> dict[str, dict[str, float]]:
    """Re-time every front trial and every preset side by side (``Workbench.confirm_latency``).

    Args:
        preset_runs: preset name → its baseline run id (the file is read from there).

    Returns:
        The confirmed latency of each preset (``CONFIRMED_LATENCY_NAMES``); the trials' go to their runs.
    """
    files: dict[tuple[str, str], bytes] = {("preset", name): tracker.read_file(run_id, TFLITE_FILE)
                                           for name, run_id in preset_runs.items()}
    by_number = {str(t.number): t for t in front}
    for number, trial in by_number.items():
        run_id = run_id_of(trial)
        assert run_id is not None
        files[("trial", number)] = tracker.read_file(run_id, TFLITE_FILE)
    confirmed = bench.confirm_latency(files, seed=seed) if files else {}
    if not confirmed:
        return {}
    presets: dict[str, dict[str, float]] = {}
    for (kind, key), latency in confirmed.items():
        figures = latency.as_dict()
        if kind == "preset":
            tracker.log_run_metrics(preset_runs[key], figures)
            presets[key] = figures
        else:
            _record(study, tracker, by_number[key], figures)
    log.info("latency confirmed: %d files side by side in %d rounds", len(files), bench.protocol.confirm_rounds)
    return presets

