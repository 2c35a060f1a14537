"""The metrics every trial reports; the same names in Optuna, MLflow, tables and pick constraints."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Metrics:
    """What was measured on one ``.tflite``.

    Attributes:
        accuracy: top-1 accuracy on the held-out test split.
        accuracy_drop: percentage points below the float32 reference (negative = better).
        size_bytes: raw file size.
        size_gzip_bytes: file size after gzip -9 (what sparsity and clustering save in transfer).
        latency_ms: median single-sample latency by the fixed protocol.
        compression_ratio: float32 reference bytes / ``size_bytes``.
        ideal_bytes: sum over weights of non-zero count x bit width / 8 (biases at 32 bits).
        macs: multiply-accumulates of one inference.
        bitops: sum over layers of MACs x weight bits x activation bits.
    """

    accuracy: float
    accuracy_drop: float
    size_bytes: int
    size_gzip_bytes: int
    latency_ms: float
    compression_ratio: float
    ideal_bytes: float = 0.0
    macs: int = 0
    bitops: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Metric name → value."""
        return dataclasses.asdict(self)


METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Metrics))
