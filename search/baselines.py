"""The converter's presets as reference points: measured once per study, logged as baseline runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from litesweep.search import pareto
from litesweep.search.ledger import METRICS_ATTR, TAG_DELEGATE, TAG_PRESET, TFLITE_FILE
from litesweep.search.tracking import Tracker

#: The test issue 3 sets for presets: a front trial at least as accurate and no larger.
ACCURACY_AND_SIZE = {"accuracy": "maximize", "size_bytes": "minimize"}


def measure_presets(bench: Any, tracker: Tracker, study_name: str) -> dict[str, dict[str, float]]:
    """Metrics of every preset; presets already logged for this study are read back, not redone."""
    from litesweep.objectives.presets import PRESETS

    found: dict[str, dict[str, float]] = {}
    for r in sorted(tracker.baseline_runs(), key=lambda r: r.info.start_time):
        if TAG_PRESET in r.data.tags:
            found.setdefault(r.data.tags[TAG_PRESET], dict(r.data.metrics))
    for preset in PRESETS:
        if preset in found:
            continue
        tflite, measurement = bench.preset(preset)
        metrics = measurement.metrics.as_dict()
        tracker.log_baseline(study_name, preset, metrics, {TAG_DELEGATE: measurement.delegate},
                             {TFLITE_FILE: tflite})
        found[preset] = metrics
    return {p: found[p] for p in PRESETS if p in found}


def dominance(
    presets: Mapping[str, Mapping[str, float]],
    front: Sequence[optuna.trial.FrozenTrial],
    directions: Mapping[str, str],
    on: Sequence[str] | None = None,
    or_equal: bool = False,
) -> dict[str, int | None]:
    """For each preset, a front trial that dominates it (``None`` if none does).

    Args:
        presets: metrics of each preset.
        front: the study's (feasible) Pareto front.
        directions: every objective's direction.
        on: the objectives compared (default: all of ``directions``).
        or_equal: a trial equal to the preset on every compared objective also counts.
    """
    compared = {k: directions[k] for k in (on or directions)}
    result: dict[str, int | None] = {}
    for preset, metrics in presets.items():
        result[preset] = None
        for trial in front:
            m = trial.user_attrs[METRICS_ATTR]
            if (pareto.dominates_or_equals if or_equal else pareto.dominates)(m, metrics, compared):
                result[preset] = trial.number
                break
    return result


def dominance_line(result: Mapping[str, int | None], objectives: str, verb: str) -> str:
    """One console line: which front trial beats each preset on ``objectives``."""
    found = ", ".join(f"{p}: {'trial ' + str(t) if t is not None else 'no'}" for p, t in result.items())
    return f"Presets {verb} on ({objectives}) by a feasible front trial: {found}"
