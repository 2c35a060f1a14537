"""Each technique checked on the real .tflite it produces: clustering, 2:4, width, costs."""

from __future__ import annotations

from litesweep.objectives.compat import litert

import numpy as np
import pytest

from litesweep.objectives import tflite_file
from litesweep.objectives.policy import DistillPolicy, LayerPolicy, Policy
from litesweep.objectives.techniques.prune import holds_2_by_4


def _kernel_in_file(tflite: bytes, layer: str, shape: tuple[int, ...]) -> np.ndarray:
    """The constant tensor of ``layer`` with ``shape`` (TFLite layout), read through the interpreter."""
    interpreter = litert.Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    found = [d for d in interpreter.get_tensor_details() if layer in d["name"] and tuple(d["shape"]) == shape]
    assert len(found) == 1, [d["name"] for d in found]
    return interpreter.get_tensor(found[0]["index"])


def _fc1_file_shape(bench) -> tuple[int, int]:
    return tuple(bench.base_model.get_layer("fc1").kernel.shape[::-1])


@pytest.mark.parametrize(("bits", "sparsity"), [(8, 0.0), (8, 0.5), (32, 0.0)], ids=["cqat-int8", "pcqat-int8", "float"])
def test_a_clustered_layer_has_at_most_k_distinct_values_in_the_file(digits_bench, bits: int, sparsity: float) -> None:
    k = 8
    # conv1 at 4 bits keeps the converter's sparse encoding off, so fc1 is stored dense and readable.
    policy = Policy({"conv1": LayerPolicy(bits=4), "fc1": LayerPolicy(bits=bits, sparsity=sparsity, clusters=k)},
                    DistillPolicy(2.0, 0.5))
    output = digits_bench.run(policy)
    kernel = _kernel_in_file(output.tflite, "fc1", _fc1_file_shape(digits_bench))
    assert 2 <= np.unique(kernel).size <= k
    if sparsity:
        assert np.mean(kernel == 0) >= sparsity - 0.02
    assert output.metrics.accuracy > 0.5


def test_a_2_by_4_layer_holds_the_pattern_in_the_file(digits_bench) -> None:
    policy = Policy({"conv1": LayerPolicy(bits=4), "fc1": LayerPolicy(bits=8, structure="2:4")})
    output = digits_bench.run(policy)
    kernel = _kernel_in_file(output.tflite, "fc1", _fc1_file_shape(digits_bench))  # (units, inputs)
    assert holds_2_by_4(kernel.T)  # back to the Keras layout (inputs, units)
    assert not holds_2_by_4(digits_bench.base_model.get_layer("fc1").kernel.numpy())
    assert output.achieved_sparsity["fc1"] == pytest.approx(0.5, abs=0.01)


def test_ideal_size_and_bitops_follow_the_policy(digits_bench) -> None:
    ref = digits_bench.reference.measurement.metrics
    output = digits_bench.run(Policy({name: LayerPolicy(bits=4) for name in ("conv1", "fc1", "logits")}))
    m = output.metrics
    assert m.macs == ref.macs > 0
    assert m.bitops == pytest.approx(ref.bitops * (4 * 8) / (32 * 32))
    # 4-bit kernels: one eighth of the float kernel bytes; biases stay 32-bit.
    kernels = sum(digits_bench.base_model.get_layer(n).kernel.shape.num_elements() for n in ("conv1", "fc1", "logits"))
    assert ref.ideal_bytes - m.ideal_bytes == pytest.approx(kernels * (4 - 0.5), rel=0.01)
    assert m.ideal_bytes < m.size_bytes


@pytest.fixture(scope="module")
def wide_bench(tmp_path_factory):
    """A wider CNN on the digits, so that latency differences are far above timer noise."""
    from litesweep.objectives.data import load_dataset
    from litesweep.objectives.measure import LatencyProtocol
    from litesweep.objectives.models import CnnSpec, train_or_load
    from litesweep.objectives.pipeline import FineTuneSettings, Workbench

    data = load_dataset("digits", val_fraction=0.15, test_fraction=0.25)
    spec = CnnSpec(conv_filters=(64, 128), dense_units=(256,), max_epochs=3, patience=1)
    model, _ = train_or_load(spec, data, tmp_path_factory.mktemp("wide"))
    return Workbench(model, data, FineTuneSettings(prune_epochs=3), LatencyProtocol(min_runs=200, max_runs=2000, max_seconds=1.0))


def test_a_narrower_student_has_fewer_filters_and_lower_latency(wide_bench) -> None:
    same_bits = {name: LayerPolicy(bits=8) for name in ("conv1", "conv2", "fc1", "logits")}
    teacher = wide_bench.run(Policy(same_bits))
    narrow = {name: LayerPolicy(bits=8, width=0.25) for name in ("conv1", "conv2", "fc1")}
    student = wide_bench.run(Policy({**same_bits, **narrow}, DistillPolicy(4.0, 0.7)))
    conv2 = [e for e in tflite_file.tensors(student.tflite) if e.is_constant and "conv2" in e.name and len(e.shape) == 4]
    assert [e.shape[0] for e in conv2] == [32]  # 128 filters x 0.25, counted in the file
    assert [e.shape[3] for e in conv2] == [16]  # and its input follows conv1's 64 x 0.25
    assert student.filters == {"conv1": 16, "conv2": 32, "fc1": 64, "logits": 10}
    assert student.metrics.latency_ms < teacher.metrics.latency_ms
    assert student.metrics.macs < teacher.metrics.macs / 8
    assert student.metrics.accuracy > 0.5


def test_post_training_trial_records_what_the_file_holds(digits_bench) -> None:
    policy = Policy({"conv1": LayerPolicy(bits=4, ptq_mode="dynamic"),
                     "fc1": LayerPolicy(bits=8, act_bits=16, ptq_mode="static"),
                     "logits": LayerPolicy(bits=16)}, method="ptq")
    output = digits_bench.run(policy)
    assert output.weight_types == {"conv1": "INT4", "fc1": "INT8", "logits": "FLOAT16"}
    assert output.fallback == []
    assert "finetune" not in output.timings  # no training
    int16 = [e for e in tflite_file.tensors(output.tflite) if not e.is_constant and e.type == "INT16"]
    assert int16, "a 16x8 layer must have int16 activations in the file"
    assert output.metrics.accuracy >= digits_bench.reference.accuracy - 0.05


def test_every_recipe_the_workbench_offers_is_accepted_by_the_quantizer(digits_bench) -> None:
    from litesweep.objectives.policy import parse_recipe

    support = digits_bench.ptq_recipes()
    assert set(support) == {"conv1", "fc1", "logits"}
    assert "dynamic_w2" in support["fc1"] and "dynamic_w2" not in support["conv1"]  # LiteRT 2.3: 2-bit conv is wrong
    stored = {2: "INT2", 4: "INT4", 8: "INT8", 16: "FLOAT16", 32: "FLOAT32"}
    for layer in ("conv1", "fc1"):
        for recipe in sorted(support[layer]):
            fields = parse_recipe(recipe)
            output = digits_bench.run(Policy({layer: LayerPolicy(**fields)}, method="ptq"))
            assert output.weight_types[layer] == stored[fields["bits"]], recipe
            assert output.fallback == [] and 0.0 <= output.metrics.accuracy <= 1.0


def test_ideal_size_follows_the_types_stored_in_the_file_not_the_policy(digits_bench) -> None:
    """The float16 preset stores its kernels as FLOAT16: two bytes each, whatever a policy would say."""
    from litesweep.objectives import tflite_file

    names = ("conv1", "fc1", "logits")
    ref = digits_bench.reference.measurement.metrics
    tflite, measured = digits_bench.preset("float16")
    assert set(tflite_file.weight_types(tflite, list(names)).values()) == {"FLOAT16"}
    kernels = sum(int(np.count_nonzero(digits_bench.base_model.get_layer(n).kernel.numpy())) for n in names)
    assert ref.ideal_bytes - measured.metrics.ideal_bytes == pytest.approx(kernels * (4 - 2))
    assert measured.metrics.ideal_bytes < measured.metrics.size_bytes
