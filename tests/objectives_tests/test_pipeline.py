"""A trial on real TF-MOT wrappers, a real converter and the LiteRT interpreter; checked on the file."""

from __future__ import annotations

import contextlib
import io

from litesweep.objectives.compat import litert, tf

import numpy as np
import pytest

from litesweep.objectives import tflite_file
from litesweep.objectives.policy import DistillPolicy, LayerPolicy, Policy


@pytest.fixture(scope="module")
def mixed_trial(digits_bench):
    """conv1 4-bit, fc1 8-bit and 60% sparse, logits left float; distilled."""
    before = [w.copy() for w in digits_bench.base_model.get_weights()]
    policy = Policy(
        {"conv1": LayerPolicy(bits=4), "fc1": LayerPolicy(bits=8, sparsity=0.6), "logits": LayerPolicy()},
        DistillPolicy(temperature=4.0, weight=0.5),
    )
    return policy, digits_bench.run(policy), before


def test_four_bit_layer_is_packed_int4_in_the_file(mixed_trial) -> None:
    _, output, _ = mixed_trial
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tf.lite.experimental.Analyzer.analyze(model_content=output.tflite)
    report = buffer.getvalue()
    conv1_lines = [line for line in report.splitlines() if "conv1" in line and "type:INT4" in line]
    assert conv1_lines, "conv1 kernel is not INT4 in the .tflite"
    fc1_types = {e.type for e in tflite_file.tensors(output.tflite) if e.is_constant and "fc1" in e.name and len(e.shape) == 2}
    assert fc1_types == {"INT8"}
    assert output.weight_types == {"conv1": "INT4", "fc1": "INT8", "logits": "FLOAT32"}


def test_achieved_sparsity_in_the_file_is_within_two_points(mixed_trial, digits_bench) -> None:
    _, output, _ = mixed_trial
    kernel_shape = digits_bench.base_model.get_layer("fc1").kernel.shape[::-1]  # TFLite stores (units, inputs)
    interpreter = litert.Interpreter(model_content=output.tflite)
    interpreter.allocate_tensors()
    kernels = [d for d in interpreter.get_tensor_details() if "fc1" in d["name"] and tuple(d["shape"]) == tuple(kernel_shape)]
    assert len(kernels) == 1
    zeros = float(np.mean(interpreter.get_tensor(kernels[0]["index"]) == 0))
    assert abs(zeros - 0.6) <= 0.02
    assert abs(output.achieved_sparsity["fc1"] - 0.6) <= 0.02


def test_base_model_is_unchanged_by_a_trial(mixed_trial, digits_bench) -> None:
    _, _, before = mixed_trial
    after = digits_bench.base_model.get_weights()
    assert len(before) == len(after)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_remeasuring_the_file_gives_the_same_metrics(mixed_trial, digits_bench) -> None:
    _, output, _ = mixed_trial
    again = digits_bench.measure(output.tflite).metrics
    assert again.accuracy == output.metrics.accuracy
    assert again.size_bytes == len(output.tflite) == output.metrics.size_bytes
    assert output.metrics.compression_ratio == pytest.approx(digits_bench.reference.size_bytes / len(output.tflite))
    # Accuracy measured independently of litesweep's own helper: one sample at a time.
    interpreter = litert.Interpreter(model_content=output.tflite, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def one_at_a_time(x_split: np.ndarray, y_split: np.ndarray) -> float:
        hits = 0
        for x, y in zip(x_split, y_split, strict=True):
            interpreter.set_tensor(inp["index"], x[None].astype(np.float32))
            interpreter.invoke()
            hits += int(np.argmax(interpreter.get_tensor(out["index"])) == y)
        return hits / len(y_split)

    # The search's figure is the validation split's; the test split is only for the reported figures.
    data = digits_bench.data
    assert abs(one_at_a_time(data.x_val, data.y_val) - output.metrics.accuracy) <= 0.01
    test = digits_bench.measure_test(output.tflite)
    assert abs(one_at_a_time(data.x_test, data.y_test) - test["test_accuracy"]) <= 0.01
    assert test["test_accuracy_low"] < test["test_accuracy"] < test["test_accuracy_high"]
    assert test["test_accuracy_drop"] == pytest.approx((digits_bench.reference.test["test_accuracy"] - test["test_accuracy"]) * 100)


def test_every_metric_is_in_range(mixed_trial, digits_bench) -> None:
    _, output, _ = mixed_trial
    m = output.metrics
    assert 0.5 < m.accuracy <= 1.0
    # measure rounds the drop to 6 decimals (a drop of 1/270 is 0.370370 against 0.37037037...)
    assert m.accuracy_drop == pytest.approx((digits_bench.reference.accuracy - m.accuracy) * 100, abs=1e-6)
    assert 0 < m.size_gzip_bytes < m.size_bytes < digits_bench.reference.size_bytes
    assert m.latency_ms > 0
    assert output.measurement.latency_runs >= 50
    assert output.measurement.delegate in ("xnnpack", "builtin")
    assert set(output.timings) == {"prepare", "finetune", "convert", "evaluate"}


def test_a_pruned_int8_layer_the_default_runtime_refuses_sparse_is_shipped_dense(digits_bench) -> None:
    """XNNPACK refuses sparse-encoded int8 FULLY_CONNECTED kernels (test_runtime.py): the trial converts the same
    weights dense, so its file runs in LiteRT's default interpreter, and says so; the zeros still pay off in gzip."""
    from litesweep.objectives.runtime import default_runtime_error

    layers = {"conv1": LayerPolicy(bits=8), "logits": LayerPolicy(bits=8)}
    dense = digits_bench.run(Policy({**layers, "fc1": LayerPolicy(bits=8)}))
    pruned = digits_bench.run(Policy({**layers, "fc1": LayerPolicy(bits=8, sparsity=0.8)}))
    assert (pruned.encoding, dense.encoding) == ("dense", "dense")
    assert not any(e.is_sparse for e in tflite_file.tensors(pruned.tflite))
    assert default_runtime_error(pruned.tflite) is None
    assert pruned.measurement.delegate == "xnnpack"
    assert pruned.achieved_sparsity["fc1"] >= 0.79
    assert pruned.metrics.size_gzip_bytes < dense.metrics.size_gzip_bytes * 0.9
    assert digits_bench.measure(pruned.tflite).metrics.accuracy == pruned.metrics.accuracy


def test_a_policy_naming_an_unknown_layer_is_refused(digits_bench) -> None:
    from litesweep.objectives.errors import ConfigError

    with pytest.raises(ConfigError, match="'conv9' is not a compressible layer"):
        digits_bench.check(Policy({"conv9": LayerPolicy(bits=8)}))


def test_a_depthwise_separable_model_is_pruned_clustered_and_quantized(tmp_path) -> None:
    """MobileNet-style layers keep their weights in ``depthwise_kernel``; every technique must find them."""
    from litesweep.objectives.data import load_dataset
    from litesweep.objectives.measure import LatencyProtocol
    from litesweep.objectives.models import CnnSpec, train_or_load
    from litesweep.objectives.pipeline import FineTuneSettings, Workbench

    data = load_dataset("digits", val_fraction=0.15, test_fraction=0.25)
    spec = CnnSpec(conv_filters=(8, 16), dense_units=(), max_epochs=8, patience=2, learning_rate=0.01, separable=True)
    model, _ = train_or_load(spec, data, tmp_path)
    bench = Workbench(model, data, FineTuneSettings(prune_epochs=1, cluster_epochs=1, qat_epochs=1),
                      LatencyProtocol(max_seconds=0.05, max_runs=60))
    assert [(i.name, i.kind) for i in bench.layers][:3] == [("conv1", "Conv2D"), ("dw2", "DepthwiseConv2D"), ("pw2", "Conv2D")]
    assert "prune" not in bench.layers[1].techniques, "TF-MOT gives depthwise pruning wrappers no mask"
    with pytest.raises(Exception, match="dw2"):
        bench.check(Policy({"dw2": LayerPolicy(sparsity=0.5)}, DistillPolicy()))
    policy = Policy({"conv1": LayerPolicy(bits=8), "dw2": LayerPolicy(bits=8, clusters=4),
                     "pw2": LayerPolicy(bits=8, sparsity=0.5), "logits": LayerPolicy(bits=8)}, DistillPolicy())
    output = bench.run(policy)
    assert 0.4 <= output.achieved_sparsity["pw2"] <= 0.6
    assert output.weight_types["dw2"] == "INT8"
    assert output.metrics.size_bytes == len(output.tflite) and output.metrics.accuracy > 0.3
