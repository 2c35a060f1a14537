"""The metrics every trial reports (the same names in Optuna, MLflow, tables and pick constraints), and
the scorers the ``accuracy`` objective can use (``objective.metric``).

NumPy only: scoring runs on the outputs the LiteRT interpreter returned for a split.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from litesweep.objectives.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Metrics:
    """What was measured on one ``.tflite``.

    Attributes:
        accuracy: the objective metric on the validation split (``objective.metric``; top-1 accuracy
            by default), higher is better: what the search selects by (the test split is reported apart,
            ``TEST_METRIC_NAMES``).
        accuracy_drop: percentage points of that metric below the float32 reference (negative = better).
        size_bytes: raw file size.
        size_gzip_bytes: file size after gzip -9 (what sparsity and clustering save in transfer).
        latency_ms: median single-sample latency by the fixed protocol.
        compression_ratio: float32 reference bytes / ``size_bytes``.
        ideal_bytes: sum over weights of non-zero count x bit width / 8 (biases at 32 bits).
        macs: multiply-accumulates of one inference.
        bitops: sum over layers of MACs x weight bits x activation bits.
        kl_divergence: mean KL divergence from the float reference's softmax to this file's, on the validation inputs.
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
    kl_divergence: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Metric name → value."""
        return dataclasses.asdict(self)


METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Metrics))

#: Figures of a file on the untouched test split, measured only for the float reference, the presets and
#: front trials (never used to select): the score, its drop below the float reference in points, and a
#: Wilson 95% interval of the score.
TEST_METRIC_NAMES: tuple[str, ...] = ("test_accuracy", "test_accuracy_drop", "test_accuracy_low", "test_accuracy_high")
#: Latency re-timed at the end of a run, front trials and presets side by side in shuffled interleaved
#: rounds: the median over rounds of each round's median, and the lowest and highest round median.
CONFIRMED_LATENCY_NAMES: tuple[str, ...] = ("latency_ms_confirmed", "latency_ms_low", "latency_ms_high")

#: ``objective.metric`` names built in; a user function is given as ``{_target_: module.function}``.
BUILTIN_SCORERS: tuple[str, ...] = ("accuracy", "top_k", "agreement")

#: A score of a model's outputs: ``(labels, outputs) -> float``, higher is better.
ScoreFunction = Callable[[np.ndarray, np.ndarray], float]


def top_k_accuracy(labels: np.ndarray, outputs: np.ndarray, k: int = 1) -> float:
    """Share of samples whose label is among the ``k`` highest outputs.

    Args:
        labels: integer labels, shape ``(n,)``.
        outputs: scores per class (logits or probabilities), shape ``(n, classes)``.
        k: how many of the highest outputs count.

    Returns:
        A value in [0, 1]; ``k=1`` is top-1 accuracy (ties go to the lowest class index, as ``argmax``).
    """
    if k == 1:
        return float(np.mean(np.argmax(outputs, axis=1) == labels))
    top = np.argsort(-outputs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


def wilson_interval(score: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% with the default ``z``) of a share ``score`` measured on ``n`` samples.

    A score outside [0, 1] (a user metric that is not a share of samples) has no binomial interval: NaN, NaN.
    """
    if n <= 0 or not 0.0 <= score <= 1.0:
        return math.nan, math.nan
    z2 = z * z
    centre = (score + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(score * (1 - score) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def are_probabilities(outputs: np.ndarray) -> bool:
    """Whether a model's outputs are probabilities (it ends in softmax: rows >= 0 summing to 1) rather than logits."""
    return bool(outputs.min() >= 0.0 and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3))


def _distributions(reference: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # A model ending in softmax already gives probabilities (told by the float reference's rows);
    # applying softmax again would flatten both. Anything else is taken as logits.
    eps = 1e-12
    ref, out = reference.astype(np.float64), outputs.astype(np.float64)
    if are_probabilities(ref):
        p, q = np.clip(ref, eps, None), np.clip(out, eps, None)
        return p / p.sum(axis=1, keepdims=True), q / q.sum(axis=1, keepdims=True)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return np.clip(e / e.sum(axis=1, keepdims=True), eps, None)

    return softmax(ref), softmax(out)


def kl_divergence(reference_outputs: np.ndarray, outputs: np.ndarray) -> float:
    """Mean over samples of KL(p_reference || p_outputs), in nats; 0 when the outputs are identical.

    Both are turned into distributions with softmax (or used as they are when the reference's rows
    are already probabilities).
    """
    p, q = _distributions(reference_outputs, outputs)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


@dataclasses.dataclass(frozen=True)
class Scorer:
    """How the ``accuracy`` objective scores a model's outputs on a split (higher is better).

    Attributes:
        name: ``accuracy``, ``top_<k>``, ``agreement`` or a user function's dotted path; recorded with the study.
        function: ``(labels, outputs) -> float``.
        against_reference: score against the float reference's top-1 predictions instead of the labels
            (``agreement``: no labels needed).
        k: for top-k accuracy, the ``k`` (checked against the model's outputs).
    """

    name: str
    function: ScoreFunction
    against_reference: bool = False
    k: int | None = None

    def score(self, labels: np.ndarray, outputs: np.ndarray, reference_outputs: np.ndarray | None = None) -> float:
        """Score ``outputs`` (one row per test sample).

        Raises:
            ValueError: the function returned something that is not a finite number, or a scorer
                against the reference got no reference outputs.
        """
        if self.against_reference:
            if reference_outputs is None:
                raise ValueError(f"objective.metric = '{self.name}' compares with the float reference's outputs; none were given")
            labels = np.argmax(reference_outputs, axis=1)
        value = self.function(labels, outputs)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            raise ValueError(f"objective.metric = '{self.name}' returned {value!r}; accepted: a finite number (higher is better)")
        return float(value)


def builtin_scorer(name: str, k: int = 5) -> Scorer:
    """The built-in scorer ``name`` (one of ``BUILTIN_SCORERS``).

    Raises:
        ConfigError: unknown name or ``k`` below 1.
    """
    if name == "accuracy":
        return Scorer("accuracy", top_k_accuracy)
    if name == "agreement":
        return Scorer("agreement", top_k_accuracy, against_reference=True)
    if name == "top_k":
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"objective.k = {k!r} is not accepted; accepted: an integer >= 1")
        return Scorer(f"top_{k}", lambda labels, outputs: top_k_accuracy(labels, outputs, k), k=k)
    raise ConfigError(f"objective.metric = {name!r} is not supported; accepted: {list(BUILTIN_SCORERS)} or {{_target_: module.function}}")


ACCURACY = builtin_scorer("accuracy")
