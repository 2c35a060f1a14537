"""A preset counts as dominated only when one front trial is no worse on every objective and better on one."""

from __future__ import annotations

import pytest

from litesweep.search import pareto
from litesweep.search.baselines import dominance

DIRECTIONS = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}
PRESET = {"accuracy": 0.95, "size_bytes": 100_000, "latency_ms": 0.50}


@pytest.mark.parametrize(("trial_metrics", "dominated"), [
    ({"accuracy": 0.95, "size_bytes": 50_000, "latency_ms": 0.50}, True),   # smaller, the rest equal
    ({"accuracy": 0.96, "size_bytes": 100_000, "latency_ms": 0.40}, True),  # better on two
    ({"accuracy": 0.95, "size_bytes": 100_000, "latency_ms": 0.50}, False),  # equal everywhere
    ({"accuracy": 0.97, "size_bytes": 30_000, "latency_ms": 0.51}, False),  # slower: a trade-off, not dominance
    ({"accuracy": 0.94, "size_bytes": 30_000, "latency_ms": 0.20}, False),  # less accurate
])
def test_dominance_needs_every_objective(trial_metrics: dict, dominated: bool) -> None:
    assert dominance({"full_int8": PRESET}, {7: trial_metrics}, DIRECTIONS) == {"full_int8": 7 if dominated else None}


def test_non_dominated_keeps_trade_offs_and_drops_the_dominated() -> None:
    rows = [
        {"accuracy": 0.95, "size_bytes": 100_000, "latency_ms": 0.50},  # dominated by the next row
        {"accuracy": 0.96, "size_bytes": 90_000, "latency_ms": 0.50},
        {"accuracy": 0.90, "size_bytes": 20_000, "latency_ms": 0.60},  # a trade-off: smaller, less accurate
        {"accuracy": 0.96, "size_bytes": 90_000, "latency_ms": 0.50},  # a tie with row 1: neither dominates
    ]
    assert pareto.non_dominated(rows, DIRECTIONS) == rows[1:]


@pytest.mark.parametrize(("trial_metrics", "covered"), [
    ({"accuracy": 0.95, "size_bytes": 100_000, "latency_ms": 0.90}, True),   # equal on both: counts
    ({"accuracy": 0.96, "size_bytes": 60_000, "latency_ms": 0.90}, True),    # slower does not matter here
    ({"accuracy": 0.99, "size_bytes": 100_001, "latency_ms": 0.10}, False),  # one byte larger
    ({"accuracy": 0.9499, "size_bytes": 10_000, "latency_ms": 0.10}, False),  # less accurate
])
def test_on_accuracy_and_size_equal_counts_and_latency_is_ignored(trial_metrics: dict, covered: bool) -> None:
    from litesweep.search.baselines import ACCURACY_AND_SIZE

    assert dominance({"int8": PRESET}, {3: trial_metrics}, ACCURACY_AND_SIZE, or_equal=True) == {"int8": 3 if covered else None}


CONFIRMED_PRESET = {**PRESET, "latency_ms_confirmed": 0.50, "latency_ms_low": 0.45, "latency_ms_high": 0.55}


@pytest.mark.parametrize(("latency", "dominated"), [
    ((0.40, 0.38, 0.46), False),  # a lower median inside the preset's range of round medians: a tie, equal elsewhere
    ((0.40, 0.38, 0.44), True),   # every round faster than every round of the preset
])
def test_confirmed_latency_is_faster_only_beyond_its_spread(latency: tuple[float, float, float], dominated: bool) -> None:
    median, low, high = latency
    trial = {"accuracy": 0.95, "size_bytes": 100_000, "latency_ms": median, "latency_ms_confirmed": median,
             "latency_ms_low": low, "latency_ms_high": high}
    assert dominance({"full_int8": CONFIRMED_PRESET}, {5: trial}, DIRECTIONS) == {"full_int8": 5 if dominated else None}
    assert pareto.compare(trial, CONFIRMED_PRESET, "latency_ms", "minimize") == (1 if dominated else 0)


def test_the_latency_line_compares_like_with_like_and_calls_overlap_a_tie() -> None:
    from litesweep.search.baselines import latency_line

    def timed(accuracy: float, median: float, low: float, high: float) -> dict[str, float]:
        return {"accuracy": accuracy, "size_bytes": 1.0, "latency_ms": median, "latency_ms_confirmed": median,
                "latency_ms_low": low, "latency_ms_high": high}

    presets = {"float32": timed(0.95, 0.50, 0.48, 0.55), "full_int8": timed(0.95, 0.90, 0.85, 0.95)}
    front = {3: timed(0.70, 0.10, 0.09, 0.11),   # much faster, but 25 points less accurate: not the one compared
             7: timed(0.945, 0.45, 0.40, 0.49)}  # within a point; its range overlaps float32's
    line = latency_line(front, presets)
    assert line is not None and "trial 7" in line and "ties (ranges overlap) with float32" in line
    front[7] = timed(0.945, 0.25, 0.24, 0.26)
    assert "trial 7 (0.2500 ms [0.2400, 0.2600]), 2.00x as fast as float32" in str(latency_line(front, presets))
    assert "no front trial within 1 point" in str(latency_line({3: front[3]}, presets))
