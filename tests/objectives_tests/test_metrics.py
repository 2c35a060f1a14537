"""The objective metrics: pure functions from tables, then on real ``.tflite`` files through the real pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.metrics import builtin_scorer, kl_divergence, top_k_accuracy

OUTPUTS = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.4, 0.4, 0.2]])
LABELS = np.array([1, 1, 1, 1])


@pytest.mark.parametrize(("k", "expected"), [
    (1, 0.25),  # only the first row; the tie in the last row goes to class 0, as argmax does
    (2, 0.75),  # rows 0, 1 and 3; row 2's label ties second with class 0, and the lower index wins
    (3, 1.0),
])
def test_top_k_accuracy_table(k: int, expected: float) -> None:
    assert top_k_accuracy(LABELS, OUTPUTS, k) == expected


def test_kl_divergence_reads_logits_and_probabilities_alike() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    other = np.array([[1.0, 1.0, -1.0], [0.0, 2.0, 1.0]])

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(logits), softmax(other)
    expected = float(np.mean(np.sum(p * np.log(p / q), axis=1)))
    assert kl_divergence(logits, logits) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(logits, other) == pytest.approx(expected, rel=1e-9)
    assert kl_divergence(p, q) == pytest.approx(expected, rel=1e-6)  # a softmax model's outputs are not softmaxed again
    assert kl_divergence(other, logits) != pytest.approx(expected, rel=1e-3)  # KL(float || compressed), not symmetric


@pytest.mark.parametrize(("name", "k", "message"), [
    ("f1", 5, "objective.metric = 'f1' is not supported; accepted: ['accuracy', 'top_k', 'agreement']"),
    ("top_k", 0, "objective.k = 0 is not accepted; accepted: an integer >= 1"),
])
def test_bad_builtin_scorer(name: str, k: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        builtin_scorer(name, k)


@pytest.fixture(scope="module")
def four_bit(digits_bench):
    """Every layer 4-bit weight-only, post-training (no training: deterministic), through Workbench.run."""
    from litesweep.objectives.policy import LayerPolicy, Policy

    policy = Policy({info.name: LayerPolicy(bits=4, ptq_mode="weight_only") for info in digits_bench.layers}, method="ptq")
    return digits_bench.run(policy)


def test_agreement_is_one_for_the_float_tflite_and_below_one_for_a_4_bit_one(digits_bench, four_bit) -> None:
    from litesweep.objectives.measure import predict
    from litesweep.objectives.pipeline import Workbench

    bench = Workbench(digits_bench.base_model, digits_bench.data, digits_bench.finetune, digits_bench.protocol,
                      scorer=builtin_scorer("agreement"))
    reference = bench.reference.measurement.metrics
    assert (reference.accuracy, reference.accuracy_drop, reference.kl_divergence) == (1.0, 0.0, 0.0)
    assert bench.measure(digits_bench.reference.tflite).metrics.accuracy == 1.0  # the same file, measured again
    float_top1 = np.argmax(bench.reference_outputs, axis=1)
    # Presets are scored with the same metric as trials and the reference.
    preset, preset_measured = bench.preset("dynamic_int8")
    assert preset_measured.metrics.accuracy == np.mean(np.argmax(predict(preset, bench.data.x_val)[0], axis=1) == float_top1)

    assert set(four_bit.weight_types.values()) == {"INT4"}
    measured = bench.measure(four_bit.tflite).metrics
    four_bit_top1 = np.argmax(predict(four_bit.tflite, bench.data.x_val)[0], axis=1)
    assert 0.5 < measured.accuracy < 1.0
    assert measured.accuracy == np.mean(four_bit_top1 == float_top1)
    assert measured.accuracy_drop == pytest.approx((1.0 - measured.accuracy) * 100)
    assert measured.kl_divergence > 0.0
    # Scored without labels: agreement is not the 4-bit file's accuracy on the labels.
    assert measured.accuracy != four_bit.metrics.accuracy


def test_top_k_is_at_least_top_1_and_one_with_every_class(digits_bench, four_bit) -> None:
    from litesweep.objectives.measure import measure

    def score(k: int) -> float:
        scorer = builtin_scorer("top_k", k)
        return measure(four_bit.tflite, digits_bench.data.x_val, digits_bench.data.y_val, reference_accuracy=1.0,
                       reference_size_bytes=1, protocol=digits_bench.protocol, scorer=scorer).metrics.accuracy

    top1, top2, top10 = score(1), score(2), score(10)
    assert top1 == four_bit.metrics.accuracy  # top-1 is the default accuracy
    assert top1 < top2 < top10 == 1.0
    with pytest.raises(ConfigError, match=r"objective.k = 11 is more than the model's 10 outputs; accepted: 1..10"):
        from litesweep.objectives.pipeline import Workbench

        Workbench(digits_bench.base_model, digits_bench.data, digits_bench.finetune, digits_bench.protocol,
                  scorer=builtin_scorer("top_k", 11))


@pytest.mark.parametrize(("score", "n", "low", "high"), [
    (0.5, 100, 0.4038, 0.5962),  # the textbook case
    (0.0, 10, 0.0, 0.2775),      # no hit in 10: still up to 28% plausible
    (1.0, 1000, 0.9962, 1.0),
])
def test_the_wilson_interval_matches_published_values(score: float, n: int, low: float, high: float) -> None:
    from litesweep.objectives.metrics import wilson_interval

    assert wilson_interval(score, n) == pytest.approx((low, high), abs=1e-4)


def test_a_score_that_is_not_a_share_has_no_interval() -> None:
    import math

    from litesweep.objectives.metrics import wilson_interval

    assert all(math.isnan(v) for v in wilson_interval(1.7, 100))
