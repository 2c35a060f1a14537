"""The converter's presets as reference points: measured once per study, logged as baseline runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from search import pareto
from search.tracking import Tracker


def measure_presets(bench: Any, tracker: Tracker, study_name: str) -> dict[str, dict[str, float]]:
    """Metrics of every preset; presets already logged for this study are read back, not redone."""
    from objectives.presets import PRESETS

    found: dict[str, dict[str, float]] = {}
    for r in sorted(tracker.baseline_runs(), key=lambda r: r.info.start_time):
        found.setdefault(r.data.tags.get("litesweep.preset"), dict(r.data.metrics))
    for preset in PRESETS:
        if preset in found:
            continue
        tflite, measurement = bench.preset(preset)
        metrics = measurement.metrics.as_dict()
        tracker.log_baseline(study_name, preset, metrics, {"litesweep.delegate": measurement.delegate},
                             {"model.tflite": tflite})
        found[preset] = metrics
    return {p: found[p] for p in PRESETS if p in found}


def dominance(
    presets: Mapping[str, Mapping[str, float]],
    front: Sequence[optuna.trial.FrozenTrial],
    directions: Mapping[str, str],
) -> dict[str, int | None]:
    """For each preset, a front trial that dominates it on the study's objectives (``None`` if none does).

    Dominates: no worse on every objective and better on at least one.
    """
    result: dict[str, int | None] = {}
    for preset, metrics in presets.items():
        result[preset] = None
        for trial in front:
            if pareto.dominates(trial.user_attrs[pareto.METRICS_ATTR], metrics, directions):
                result[preset] = trial.number
                break
    return result
