"""The converter's presets as reference points: measured once per study, logged as baseline runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from litesweep.objectives.metrics import CONFIRMED_LATENCY_NAMES
from litesweep.search import pareto
from litesweep.search.ledger import TAG_DELEGATE, TFLITE_FILE, first_run_per_preset
from litesweep.search.tracking import Tracker

#: The test issue 3 sets for presets: a front trial at least as accurate and no larger.
ACCURACY_AND_SIZE = {"accuracy": "maximize", "size_bytes": "minimize"}


def preset_runs(tracker: Tracker) -> dict[str, Any]:
    """Each preset's baseline run of this study (``ledger.first_run_per_preset``)."""
    return first_run_per_preset(tracker.baseline_runs())


def measure_presets(bench: Any, tracker: Tracker, study_name: str) -> dict[str, dict[str, float]]:
    """Metrics of every preset (validation figures, and test figures beside them); presets already logged
    for this study are read back, not redone."""
    from litesweep.objectives.presets import PRESETS

    found = {name: dict(run.data.metrics) for name, run in preset_runs(tracker).items()}
    for preset in PRESETS:
        if preset in found:
            continue
        tflite, measurement = bench.preset(preset)
        metrics = measurement.metrics.as_dict() | bench.measure_test(tflite)
        tracker.log_baseline(study_name, preset, metrics, {TAG_DELEGATE: measurement.delegate},
                             {TFLITE_FILE: tflite})
        found[preset] = metrics
    return {p: found[p] for p in PRESETS if p in found}


def dominance(
    presets: Mapping[str, Mapping[str, float]],
    front: Mapping[int, Mapping[str, float]],
    directions: Mapping[str, str],
    on: Sequence[str] | None = None,
    or_equal: bool = False,
) -> dict[str, int | None]:
    """For each preset, a front trial that dominates it (``None`` if none does).

    Args:
        presets: metrics of each preset.
        front: figures of each trial of the study's (feasible) Pareto front, by trial number
            (``ledger.figures_of``: confirmed latency, when present, is compared by its range).
        directions: every objective's direction.
        on: the objectives compared (default: all of ``directions``).
        or_equal: a trial equal to the preset on every compared objective also counts.
    """
    compared = {k: directions[k] for k in (on or directions)}
    result: dict[str, int | None] = {}
    for preset, metrics in presets.items():
        result[preset] = None
        for number, figures in front.items():
            if (pareto.dominates_or_equals if or_equal else pareto.dominates)(figures, metrics, compared):
                result[preset] = number
                break
    return result


def dominance_line(result: Mapping[str, int | None], objectives: str, verb: str) -> str:
    """One console line: which front trial beats each preset on ``objectives``."""
    found = ", ".join(f"{p}: {'trial ' + str(t) if t is not None else 'no'}" for p, t in result.items())
    return f"Presets {verb} on ({objectives}) by a feasible front trial: {found}"


def latency_line(front: Mapping[int, Mapping[str, float]], presets: Mapping[str, Mapping[str, float]],
                 within_points: float = 1.0) -> str | None:
    """One console line: the fastest front trial no more than ``within_points`` below the fastest preset's
    validation accuracy, against that preset, both re-timed side by side.

    "Faster" only when the ranges of round medians do not overlap (``pareto.compare``); otherwise a tie.
    """
    key = CONFIRMED_LATENCY_NAMES[0]
    timed = {name: m for name, m in presets.items() if key in m}
    if not timed:
        return None
    preset = min(timed, key=lambda name: timed[name][key])
    b = timed[preset]
    trials = {n: m for n, m in front.items() if key in m and m["accuracy"] >= b["accuracy"] - within_points / 100}
    if not trials:
        return f"Latency, re-timed side by side: no front trial within {within_points:g} point of the fastest preset {preset}"
    number = min(trials, key=lambda n: trials[n][key])
    a = trials[number]
    order = pareto.compare(a, b, "latency_ms", "minimize")
    verdict = {1: f"{b[key] / a[key]:.2f}x as fast as", 0: "ties (ranges overlap) with", -1: f"{a[key] / b[key]:.2f}x as slow as"}[order]
    return (f"Latency, re-timed side by side: the fastest front trial within {within_points:g} point of the fastest preset "
            f"(validation), trial {number} ({a[key]:.4f} ms [{a['latency_ms_low']:.4f}, {a['latency_ms_high']:.4f}]), {verdict} "
            f"{preset} ({b[key]:.4f} ms [{b['latency_ms_low']:.4f}, {b['latency_ms_high']:.4f}])")
