"""Measure a ``.tflite`` with the LiteRT interpreter: accuracy, sizes, latency.

The latency protocol (``LatencyProtocol``, defined with the other settings in ``objectives.settings``)
is applied here and only here, so every trial, preset and re-measurement is timed the same way.
``objectives.runtime`` runs the interpreter (default delegate, built-in fallback) and reports which
delegate ran.
"""

from __future__ import annotations

import dataclasses
import gzip
import random
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import numpy as np

from litesweep.objectives.metrics import (
    ACCURACY,
    CONFIRMED_LATENCY_NAMES,
    METRIC_NAMES,
    TEST_METRIC_NAMES,
    Metrics,
    Scorer,
    kl_divergence,
    wilson_interval,
)
from litesweep.objectives.runtime import open_interpreter, predict, to_input
from litesweep.objectives.settings import LatencyProtocol

__all__ = ["METRIC_NAMES", "ConfirmedLatency", "LatencyProtocol", "Measurement", "Metrics", "accuracy", "confirm_latency",
           "latency_ms", "measure", "measure_test", "predict"]
Key = TypeVar("Key", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """``Metrics`` plus how they were obtained."""

    metrics: Metrics
    delegate: str
    latency_runs: int


def accuracy(tflite: bytes, x: np.ndarray, y: np.ndarray) -> tuple[float, str]:
    """Top-1 accuracy of the ``.tflite`` on ``(x, y)`` and the delegate that ran it."""
    outputs, delegate = predict(tflite, x)
    return float(np.mean(np.argmax(outputs, axis=1) == y)), delegate


def latency_ms(tflite: bytes, sample: np.ndarray, protocol: LatencyProtocol = LatencyProtocol()) -> tuple[float, str, int]:
    """Median single-sample latency in milliseconds, by ``protocol``.

    Returns:
        The median, the delegate that ran it and the number of timed invocations.
    """
    interpreter, delegate = open_interpreter(tflite, threads=protocol.threads, batch=1)
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], to_input(sample[None, ...], inp))
    for _ in range(protocol.warmup):
        interpreter.invoke()
    times: list[float] = []
    deadline = time.perf_counter() + protocol.max_seconds
    while len(times) < protocol.min_runs or (len(times) < protocol.max_runs and time.perf_counter() < deadline):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3), delegate, len(times)


def gzip_size(tflite: bytes) -> int:
    """Size after gzip (level 9): what sparse or clustered weights cost once compressed for download."""
    return len(gzip.compress(tflite, compresslevel=9, mtime=0))


def measure(
    tflite: bytes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    reference_accuracy: float,
    reference_size_bytes: int,
    protocol: LatencyProtocol = LatencyProtocol(),
    scorer: Scorer = ACCURACY,
    reference_outputs: np.ndarray | None = None,
) -> Measurement:
    """Every metric of one ``.tflite`` against the float reference.

    Args:
        tflite: the file.
        x: the inputs of the split scored (validation, in a search).
        y: their labels (unused by scorers that compare with the reference).
        reference_accuracy: the float reference's score by the same ``scorer``.
        reference_size_bytes: the float reference's file size.
        protocol: the latency protocol.
        scorer: what ``accuracy`` measures (top-1 accuracy by default).
        reference_outputs: the float reference's outputs on ``x``; needed by ``agreement``, and
            for ``kl_divergence`` (0 without them).

    Returns:
        The metrics (``accuracy_drop`` in percentage points of the score) and how they were obtained.
    """
    outputs, delegate = predict(tflite, x)
    acc = scorer.score(y, outputs, reference_outputs)
    latency, latency_delegate, runs = latency_ms(tflite, x[0], protocol)
    metrics = Metrics(
        accuracy=acc,
        accuracy_drop=round((reference_accuracy - acc) * 100.0, 6),
        size_bytes=len(tflite),
        size_gzip_bytes=gzip_size(tflite),
        latency_ms=latency,
        compression_ratio=reference_size_bytes / len(tflite),
        kl_divergence=0.0 if reference_outputs is None else kl_divergence(reference_outputs, outputs),
    )
    used = delegate if delegate == latency_delegate else f"{delegate}/{latency_delegate}"
    return Measurement(metrics=metrics, delegate=used, latency_runs=runs)


def measure_test(tflite: bytes, x_test: np.ndarray, y_test: np.ndarray, *, reference_score: float, scorer: Scorer = ACCURACY,
                 reference_outputs: np.ndarray | None = None) -> dict[str, float]:
    """``TEST_METRIC_NAMES`` of one file: its score on the test split, the drop below the float reference's
    test score in points, and the score's Wilson 95% interval over the ``len(x_test)`` samples."""
    outputs, _ = predict(tflite, x_test)
    score = scorer.score(y_test, outputs, reference_outputs)
    low, high = wilson_interval(score, len(x_test))
    values = (score, round((reference_score - score) * 100.0, 6), low, high)
    return dict(zip(TEST_METRIC_NAMES, values, strict=True))


@dataclasses.dataclass(frozen=True)
class ConfirmedLatency:
    """A file's latency over interleaved rounds: the median of the round medians and their range (two files
    compare by their ranges: ``search.pareto.compare``)."""

    median: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        """``CONFIRMED_LATENCY_NAMES`` → value."""
        return dict(zip(CONFIRMED_LATENCY_NAMES, (self.median, self.low, self.high), strict=True))


def confirm_latency(files: Mapping[Key, bytes], time_once: Callable[[bytes], float], rounds: int,
                    seed: int = 0) -> dict[Key, ConfirmedLatency]:
    """Time every file ``rounds`` times, one round after another, each round in a fresh shuffled order.

    Files timed side by side share whatever else the machine is doing, so their figures compare; a
    file's spread over the rounds says how far apart two files must be before one is called faster.

    Args:
        files: key → ``.tflite`` bytes.
        time_once: one latency figure of a file by the fixed protocol (a median over many invocations).
        rounds: how many interleaved rounds.
        seed: seed of the shuffles.
    """
    order = list(files)
    shuffle = random.Random(seed).shuffle
    readings: dict[Key, list[float]] = {key: [] for key in order}
    for _ in range(rounds):
        shuffle(order)
        for key in order:
            readings[key].append(time_once(files[key]))
    return {key: ConfirmedLatency(statistics.median(v), min(v), max(v)) for key, v in readings.items()}
