"""Measure a ``.tflite`` with the LiteRT interpreter: accuracy, sizes, latency.

The latency protocol lives here and only here (``LatencyProtocol``), so every trial, preset and
re-measurement is timed the same way. The interpreter first tries LiteRT's default delegate
(XNNPACK on CPU); if the runtime refuses the model, it falls back to the built-in kernels and the
fallback is recorded.
"""

from __future__ import annotations

import dataclasses
import gzip
import time

import numpy as np

from objectives.compat import litert
from objectives.metrics import METRIC_NAMES, Metrics

__all__ = ["METRIC_NAMES", "LatencyProtocol", "Measurement", "Metrics", "measure"]

DELEGATE_DEFAULT = "xnnpack"
DELEGATE_BUILTIN = "builtin"
_RESOLVERS = {
    DELEGATE_DEFAULT: litert.OpResolverType.AUTO,
    DELEGATE_BUILTIN: litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}
EVAL_BATCH = 256


@dataclasses.dataclass(frozen=True)
class LatencyProtocol:
    """How latency is measured: single-sample invocations on one thread, median after warm-up.

    ``min_runs`` invocations are always made; more are made until ``max_runs`` or ``max_seconds``.
    """

    threads: int = 1
    warmup: int = 10
    min_runs: int = 50
    max_runs: int = 500
    max_seconds: float = 1.0


@dataclasses.dataclass(frozen=True)
class Measurement:
    """``Metrics`` plus how they were obtained."""

    metrics: Metrics
    delegate: str
    latency_runs: int


def _interpreter(tflite: bytes, delegate: str, threads: int, batch: int | None) -> litert.Interpreter:
    interpreter = litert.Interpreter(model_content=tflite, num_threads=threads,
                                     experimental_op_resolver_type=_RESOLVERS[delegate])
    if batch is not None:
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    return interpreter


def open_interpreter(tflite: bytes, threads: int = 1, batch: int | None = None) -> tuple[litert.Interpreter, str]:
    """An allocated interpreter, with the default delegate when the runtime accepts the model.

    Returns:
        The interpreter and the delegate name (``xnnpack`` or ``builtin``).
    """
    try:
        return _interpreter(tflite, DELEGATE_DEFAULT, threads, batch), DELEGATE_DEFAULT
    except RuntimeError:
        return _interpreter(tflite, DELEGATE_BUILTIN, threads, batch), DELEGATE_BUILTIN


def _to_input(x: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] in (np.int8, np.uint8, np.int16):
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def _from_output(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] in (np.int8, np.uint8, np.int16):
        scale, zero = detail["quantization"]
        return (y.astype("float32") - zero) * scale
    return y.astype("float32")


def predict(tflite: bytes, x: np.ndarray, threads: int = 1) -> tuple[np.ndarray, str]:
    """Run the ``.tflite`` on ``x`` in fixed-size batches; returns float outputs and the delegate used."""
    batch = min(EVAL_BATCH, len(x))
    interpreter, delegate = open_interpreter(tflite, threads=threads, batch=batch)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        n = len(chunk)
        if n < batch:  # pad the last chunk: one fixed batch size keeps results independent of the split
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        interpreter.set_tensor(inp["index"], _to_input(chunk, inp))
        interpreter.invoke()
        outputs.append(_from_output(interpreter.get_tensor(out["index"]), out)[:n])
    return np.concatenate(outputs), delegate


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
    interpreter.set_tensor(inp["index"], _to_input(sample[None, ...], inp))
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
) -> Measurement:
    """Every metric of one ``.tflite`` against the float reference (accuracy drop in percentage points)."""
    acc, delegate = accuracy(tflite, x_test, y_test)
    latency, latency_delegate, runs = latency_ms(tflite, x_test[0], protocol)
    metrics = Metrics(
        accuracy=acc,
        accuracy_drop=round((reference_accuracy - acc) * 100.0, 6),
        size_bytes=len(tflite),
        size_gzip_bytes=gzip_size(tflite),
        latency_ms=latency,
        compression_ratio=reference_size_bytes / len(tflite),
    )
    used = delegate if delegate == latency_delegate else f"{delegate}/{latency_delegate}"
    return Measurement(metrics=metrics, delegate=used, latency_runs=runs)
