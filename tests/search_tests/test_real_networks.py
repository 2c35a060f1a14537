"""Networks users bring: BatchNorm, residual Add, depthwise and separable convolutions, softmax outputs.

A pretrained Functional model with Conv-BN-ReLU, DepthwiseConv-BN-ReLU, SeparableConv2D-BN and a residual
``Add`` is saved as ``.keras`` and swept with per-layer 4/8-bit QAT and pruning; each logged ``.tflite`` is
opened: no BatchNorm ops, 4-bit kernels INT4, zeros kept, accuracy re-measured. Real architectures
(MobileNetV2, ResNet-8, an Xception-style block) leave no weight float.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from litesweep.objectives.compat import keras, litert, tf

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from litesweep.objectives import tflite_file
from litesweep.objectives.architectures import build_cnn
from litesweep.objectives.data import load_dataset
from litesweep.objectives.inventory import compressible_layers, left_float
from litesweep.objectives.measure import predict
from litesweep.objectives.pipeline import FineTuneSettings, LatencyProtocol, Workbench
from litesweep.objectives.policy import DistillPolicy, LayerPolicy, Policy
from litesweep.objectives.rewrite import compressible_form
from litesweep.objectives.settings import CnnSpec
from litesweep.objectives.techniques.distill import distillation_loss, pack_targets
from litesweep.search.app import run
from litesweep.search.ledger import read_artifact
from tests.conftest import compose_quick

#: Compressible layers of the BN model once rewritten: the separable layer is split in two.
BN_MODEL_LAYERS = {"stem", "dw", "sep_depthwise", "sep", "logits"}


def _bn_residual_model(softmax: bool = False) -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(x))
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = keras.layers.ReLU(name="dw_relu")(keras.layers.BatchNormalization(name="dw_bn")(y))
    y = keras.layers.SeparableConv2D(8, 3, padding="same", use_bias=False, name="sep")(y)
    y = keras.layers.BatchNormalization(name="sep_bn")(y)
    x = keras.layers.ReLU(name="block_relu")(keras.layers.Add(name="residual")([x, y]))
    x = keras.layers.Flatten(name="flatten")(keras.layers.MaxPooling2D(name="pool")(x))
    outputs = keras.layers.Dense(10, activation="softmax" if softmax else None, name="logits")(x)
    return keras.Model(inputs, outputs, name="bn_residual")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", name="digits", val_fraction=0.15, test_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def bn_model(digits, tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    """The BN/residual/separable model, trained (BatchNorm statistics learnt) and saved as ``.keras``."""
    keras.utils.set_random_seed(0)
    model = _bn_residual_model()
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=8, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("bn_model") / "bn_residual.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def bn_sweep(bn_model, tmp_path_factory: pytest.TempPathFactory):
    _, path = bn_model
    out = tmp_path_factory.mktemp("bn_sweep")
    return run(compose_quick(out, f"model.path={path}", "study.n_trials=2", "study.presets=false", "study.preset_twins=false",
                             "space.techniques=[quantize,prune]", "space.bits=[4,8]", "space.sparsity={low:0.5,high:0.5,step:0.05}",
                             "finetune.min_relative_accuracy=0"))


def _file_kernel(tflite: bytes, layer: str) -> np.ndarray:
    """The constant kernel of ``layer`` (rank >= 2) as the interpreter reads it from the file."""
    names = {e.name for e in tflite_file.tensors(tflite)
             if e.is_constant and len(e.shape) >= 2 and (f"/{layer}/" in e.name or f"/quant_{layer}/" in e.name)}
    interpreter = litert.Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    found = [d for d in interpreter.get_tensor_details() if d["name"] in names]
    assert len(found) == 1, names
    return interpreter.get_tensor(found[0]["index"])


def test_a_bn_residual_separable_model_sweeps_into_files_without_bn_ops_with_int4_layers_and_kept_zeros(
        bn_sweep, bn_model, digits, tmp_path: Path) -> None:
    model, _ = bn_model
    client = MlflowClient(bn_sweep.tracking_uri)
    parent = client.get_run(bn_sweep.parent_run_id)
    assert parent.data.tags["litesweep.unsupported_layers"] == "none"
    assert parent.data.metrics["base_model.folded_batch_norm"] == 3
    assert parent.data.metrics["base_model.split_separable"] == 1
    # The float reference computes what the user's model computes, BN folded and separable split.
    reference = read_artifact(client, bn_sweep.parent_run_id, "model_float32.tflite")
    np.testing.assert_allclose(predict(reference, digits.x_val)[0], model.predict(digits.x_val, verbose=0), atol=1e-4)

    trials = client.search_runs([bn_sweep.experiment_id], filter_string="tags.`litesweep.role` = 'trial'")
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
    bits_seen = set()
    for trial in trials:
        params, metrics = trial.data.params, trial.data.metrics
        assert {k.removeprefix("bits.") for k in params if k.startswith("bits.")} == BN_MODEL_LAYERS
        tflite = read_artifact(client, trial.info.run_id, "model.tflite")
        ops = tflite_file.op_names(tflite)
        assert "MUL" not in ops and ops.count("ADD") == 1, ops  # BN left as ops would show as MUL + ADD
        stored = tflite_file.weight_types(tflite, sorted(BN_MODEL_LAYERS))
        for layer in BN_MODEL_LAYERS:
            bits = int(params[f"bits.{layer}"])
            bits_seen.add(bits)
            assert stored[layer] == {4: "INT4", 8: "INT8"}[bits], (layer, bits, stored)
        for layer in ("stem", "sep", "logits"):  # every layer that takes pruning was pruned to half
            zeros = float(np.mean(_file_kernel(tflite, layer) == 0))
            assert zeros >= 0.48, (layer, zeros)
            assert metrics[f"sparsity_achieved.{layer}"] == pytest.approx(0.5, abs=0.02)
        outputs, _ = predict(tflite, digits.x_val)
        assert metrics["accuracy"] == float(np.mean(np.argmax(outputs, axis=1) == digits.y_val))
    assert bits_seen == {4, 8}


def test_width_multipliers_shrink_the_bn_residual_model_keeping_both_branches_of_the_add_equal(bn_model, digits) -> None:
    model, _ = bn_model
    rewritten, _ = compressible_form(model, digits.x_val)
    bench = Workbench(rewritten, digits, FineTuneSettings(prune_epochs=1, qat_epochs=1), LatencyProtocol(max_seconds=0.05, max_runs=60))
    output = bench.run(Policy({"stem": LayerPolicy(bits=8, width=0.5), "logits": LayerPolicy(bits=8)}, DistillPolicy()))
    # stem and sep meet at the Add: both keep 4 of 8 filters; the depthwise layers follow their input.
    assert output.filters["stem"] == output.filters["sep"] == 4
    kernels = [e for e in tflite_file.tensors(output.tflite) if e.is_constant and len(e.shape) == 4]
    stem = [e for e in kernels if "/quant_stem/" in e.name]
    sep = [e for e in kernels if "/sep/" in e.name]
    depthwise = [e for e in kernels if e.shape[0] == 1]
    # TFLite layouts: conv (out, h, w, in), depthwise (1, h, w, channels).
    assert [e.shape for e in stem] == [(4, 3, 3, 1)] and [e.shape for e in sep] == [(4, 1, 1, 4)]
    assert sorted(e.shape for e in depthwise) == [(1, 3, 3, 4)] * 2
    assert [e.type for e in stem] == ["INT8"]


def test_a_softmax_model_distils_on_its_log_probabilities_without_the_from_logits_warning(digits) -> None:
    keras.utils.set_random_seed(1)
    model = _bn_residual_model(softmax=True)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=6, batch_size=64, verbose=0)
    rewritten, _ = compressible_form(model, digits.x_val)
    bench = Workbench(rewritten, digits, FineTuneSettings(prune_epochs=1, qat_epochs=1), LatencyProtocol(max_seconds=0.05, max_runs=60))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = bench.run(Policy({name: LayerPolicy(bits=8) for name in BN_MODEL_LAYERS}, DistillPolicy(temperature=4.0, weight=0.9)))
    assert not [w for w in caught if "from_logits" in str(w.message)]
    assert output.metrics.accuracy_drop <= 5.0  # distilled towards its own teacher, not away from it


def test_the_distillation_loss_on_probabilities_equals_the_loss_on_the_logits_they_came_from() -> None:
    rng = np.random.default_rng(0)
    labels, teacher, student = rng.integers(0, 10, 32), rng.normal(size=(32, 10)), rng.normal(size=(32, 10))
    softmax = tf.nn.softmax
    on_logits = distillation_loss(10, 3.0, 0.7)(pack_targets(labels, teacher, 10), tf.constant(student, "float32"))
    on_probabilities = distillation_loss(10, 3.0, 0.7, probabilities=True)(
        pack_targets(labels, softmax(teacher).numpy(), 10), softmax(tf.constant(student, "float32")))
    np.testing.assert_allclose(on_probabilities.numpy(), on_logits.numpy(), rtol=1e-4)


def test_a_model_ending_in_a_softmax_layer_keeps_its_output_dense_full_width_and_narrows_the_rest() -> None:
    from litesweep.objectives.inventory import output_layer
    from litesweep.objectives.techniques.shrink import narrowable

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="conv"), keras.layers.Flatten(),
                              keras.layers.Dense(16, name="hidden"), keras.layers.Dense(10, name="head"), keras.layers.Softmax()])
    assert output_layer(model) == "head"
    assert narrowable(model, ["conv", "hidden"]) == ["conv", "hidden"]
    # Offered the output Dense too, its group (which feeds the output) keeps its width; the others still narrow.
    assert narrowable(model, ["conv", "hidden", "head"]) == ["conv", "hidden"]


def _xception_style() -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(x))
    for filters in (32, 64):
        shortcut = keras.layers.BatchNormalization()(keras.layers.Conv2D(filters, 1, strides=2, use_bias=False)(x))
        y = keras.layers.BatchNormalization()(keras.layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x))
        y = keras.layers.Activation("relu")(y)
        y = keras.layers.BatchNormalization()(keras.layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(y))
        x = keras.layers.Add()([keras.layers.MaxPooling2D(3, strides=2, padding="same")(y), shortcut])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def _randomise_batch_norm(layers: list[keras.layers.Layer], rng: np.random.Generator) -> None:
    """Statistics far from the initial ones, so a wrong fold would show in the outputs."""
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, variance.shape)])


def _residual_as_operator() -> keras.Model:
    """A residual written ``a + b``: Keras 2 saves it as a TFOpLambda whose second input is a keyword argument."""
    inputs = keras.Input((32, 32, 3))
    a = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)))
    b = keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(a))
    x = keras.layers.GlobalAveragePooling2D()(a + b)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


@pytest.mark.parametrize("architecture", ["mobilenet_v2", "resnet8", "xception_style", "backbone_in_sequential", "residual_as_operator"])
def test_real_architectures_are_rewritten_exactly_and_leave_no_weight_float(architecture: str) -> None:
    if architecture == "mobilenet_v2":
        model = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10)
    elif architecture == "backbone_in_sequential":  # transfer learning: a pretrained backbone under a new head
        backbone = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3), include_top=False)
        model = keras.Sequential([keras.Input((32, 32, 3)), backbone, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    elif architecture == "residual_as_operator":
        model = _residual_as_operator()
    elif architecture == "resnet8":
        spec = CnnSpec(conv_filters=(16, 32, 64), dense_units=(), residual=True, batch_norm=True)
        model = build_cnn(spec, (32, 32, 3), 10)
    else:
        model = _xception_style()
    rng = np.random.default_rng(0)
    flat = [inner for layer in model.layers for inner in (layer.layers if isinstance(layer, keras.Model) else [layer])]
    _randomise_batch_norm(flat, rng)
    batch_norms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in flat)
    rewritten, rewrites = compressible_form(model, rng.uniform(0, 1, (16, 32, 32, 3)).astype("float32"))
    assert left_float(model)  # before: BN layers (and separable ones) held weights no technique took
    assert left_float(rewritten) == []
    assert len(rewrites.folded) == batch_norms and rewrites.frozen == []
    assert len(rewrites.inlined) == (architecture == "backbone_in_sequential")
    assert rewrites.max_difference <= 1e-5
    kernel_params = sum(info.kernel_params for info in compressible_layers(rewritten))
    biases = sum(int(np.prod(w.shape)) for layer in rewritten.layers for w in layer.weights if "bias" in w.name)
    assert kernel_params + biases == rewritten.count_params()  # every weight is a compressible kernel or its bias
