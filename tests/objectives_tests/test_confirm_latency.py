"""Latency confirmed side by side: interleaved shuffled rounds, and a difference only beyond the spread."""

from __future__ import annotations

import pytest

from litesweep.objectives.measure import ConfirmedLatency, confirm_latency
from litesweep.search.pareto import compare


def _faster(a: ConfirmedLatency, b: ConfirmedLatency) -> int:
    """What the front table, the preset comparison and pick decide: 1 faster, -1 slower, 0 a tie."""
    return compare(a.as_dict() | {"latency_ms": a.median}, b.as_dict() | {"latency_ms": b.median}, "latency_ms", "minimize")


def test_two_byte_identical_files_timed_side_by_side_tie(digits_bench) -> None:
    """The same bytes twice, timed for real in 10 rounds: neither is called faster (with 10 rounds each,
    two equal files fail to overlap by chance with probability 2/C(20,10) ~ 1e-5)."""
    same = digits_bench.reference.tflite
    files = {"a": same, "b": bytes(same)}
    confirmed = confirm_latency(files, digits_bench.time_once, rounds=10)
    a, b = confirmed["a"], confirmed["b"]
    assert _faster(a, b) == 0 and _faster(b, a) == 0
    for c in (a, b):
        assert 0 < c.low <= c.median <= c.high
    assert set(a.as_dict()) == {"latency_ms_confirmed", "latency_ms_low", "latency_ms_high"}


def test_every_round_times_every_file_once_in_a_fresh_order() -> None:
    timed: list[bytes] = []

    def time_once(tflite: bytes) -> float:
        timed.append(tflite)
        return float(len(tflite))

    files = {k: k.encode() * (i + 1) for i, k in enumerate("abcdef")}
    confirmed = confirm_latency(files, time_once, rounds=6, seed=3)
    rounds = [timed[i:i + len(files)] for i in range(0, len(timed), len(files))]
    assert len(rounds) == 6 and all(sorted(r) == sorted(files.values()) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # shuffled, not one fixed order
    assert confirmed["c"] == ConfirmedLatency(3.0, 3.0, 3.0)


@pytest.mark.parametrize(("a", "b", "faster"), [
    (ConfirmedLatency(1.0, 0.9, 1.1), ConfirmedLatency(1.3, 1.2, 1.4), True),   # ranges apart
    (ConfirmedLatency(1.0, 0.9, 1.25), ConfirmedLatency(1.3, 1.2, 1.4), False),  # ranges overlap: a tie
])
def test_faster_only_beyond_the_spread(a: ConfirmedLatency, b: ConfirmedLatency, faster: bool) -> None:
    assert _faster(a, b) == (1 if faster else 0)
    assert _faster(b, a) == (-1 if faster else 0)
