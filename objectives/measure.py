"""Measure a ``.tflite`` with the LiteRT interpreter: accuracy, sizes, latency.

The latency protocol (``LatencyProtocol``, defined with the other settings in ``objectives.settings``)
is applied here and only here, so every trial, preset and re-measurement is timed the same way.
``objectives.runtime`` runs the interpreter (default delegate, built-in fallback) and reports which
delegate ran.
"""

from __future__ import annotations

import dataclasses
import gzip
import time

import numpy as np

from litesweep.objectives.metrics import ACCURACY, METRIC_NAMES, Metrics, Scorer, kl_divergence
from litesweep.objectives.runtime import open_interpreter, predict, to_input
from litesweep.objectives.settings import LatencyProtocol

__all__ = ["METRIC_NAMES", "LatencyProtocol", "Measurement", "Metrics", "accuracy", "latency_ms", "measure", "predict"]


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
    x_test: np.ndarray,
    y_test: np.ndarray,
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
        x_test: test inputs.
        y_test: test labels (unused by scorers that compare with the reference).
        reference_accuracy: the float reference's score by the same ``scorer``.
        reference_size_bytes: the float reference's file size.
        protocol: the latency protocol.
        scorer: what ``accuracy`` measures (top-1 accuracy by default).
        reference_outputs: the float reference's outputs on ``x_test``; needed by ``agreement``, and
            for ``kl_divergence`` (0 without them).

    Returns:
        The metrics (``accuracy_drop`` in percentage points of the score) and how they were obtained.
    """
    outputs, delegate = predict(tflite, x_test)
    acc = scorer.score(y_test, outputs, reference_outputs)
    latency, latency_delegate, runs = latency_ms(tflite, x_test[0], protocol)
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
