"""Width multipliers on real Keras models: Sequential, residual (coupled Add), Concatenate, identity rebuild."""

from __future__ import annotations

from litesweep.objectives.compat import keras, litert, tf

import numpy as np
import pytest

from litesweep.objectives.errors import ConfigError, ModelError
from litesweep.objectives.techniques.shrink import keep_count, shrink

L = keras.layers


def _images(shape: tuple[int, ...], n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, *shape)).astype(np.float32)


def _top(kernels: list[np.ndarray], width: float) -> np.ndarray:
    """The rule shrink documents: top filters by L1 summed over the coupled (full teacher) kernels, in index order."""
    importance = sum(np.abs(k).reshape(-1, k.shape[-1]).sum(axis=0) for k in kernels)
    return np.sort(np.argsort(-importance, kind="stable")[:keep_count(kernels[0].shape[-1], width)])


def _kernel(model: keras.Model, name: str) -> np.ndarray:
    return model.get_layer(name).get_weights()[0]


def _randomise_batch_norms(model: keras.Model) -> None:
    """Non-trivial BN statistics, so that a wrong slice shows in the outputs."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape), rng.uniform(0.5, 1.5, var.shape)])


def _user_cnn() -> keras.Model:
    return keras.Sequential([
        keras.Input((32, 32, 1)),
        L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(),
        L.Flatten(), L.Dense(64, activation="relu"), L.Dense(10, activation="softmax"),
    ], name="user_cnn")


def test_a_loaded_sequential_model_shrinks_and_converts_with_fewer_filters(tmp_path) -> None:
    path = tmp_path / "user.keras"
    _user_cnn().save(path)
    teacher = keras.models.load_model(path)
    convs = [layer.name for layer in teacher.layers if isinstance(layer, L.Conv2D)]
    dense = [layer.name for layer in teacher.layers if isinstance(layer, L.Dense)]
    student = shrink(teacher, {convs[0]: 0.5, convs[1]: 0.5, dense[0]: 0.5})

    assert student.name == teacher.name
    assert [layer.name for layer in student.layers[1:]] == [layer.name for layer in teacher.layers]
    assert student.predict(_images((32, 32, 1)), verbose=0).shape == (4, 10)
    assert [student.get_layer(n).filters for n in convs] == [8, 16]
    assert student.get_layer(dense[0]).units == 32
    first = _top([_kernel(teacher, convs[0])], 0.5)
    second = _top([_kernel(teacher, convs[1])], 0.5)
    np.testing.assert_array_equal(_kernel(student, convs[1]), _kernel(teacher, convs[1])[:, :, first][..., second])
    assert _kernel(student, dense[0]).shape == (6 * 6 * 16, 32)

    interpreter = litert.Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(student).convert())
    shapes = [tuple(d["shape"]) for d in interpreter.get_tensor_details() if len(d["shape"]) == 4]
    assert (8, 3, 3, 1) in shapes and (16, 3, 3, 8) in shapes  # TFLite conv kernels: (out, h, w, in)
    assert not any(s[0] in (16, 32) and s[1:3] == (3, 3) and s != (16, 3, 3, 8) for s in shapes)


def _residual() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(x))
    y = L.Conv2D(16, 3, padding="same", name="b1_conv1")(x)
    y = L.ReLU()(L.BatchNormalization(name="b1_bn1")(y))
    y = L.BatchNormalization(name="b1_bn2")(L.Conv2D(16, 3, padding="same", name="b1_conv2")(y))
    x = L.ReLU()(L.Add(name="b1_add")([x, y]))
    y = L.Conv2D(32, 3, strides=2, padding="same", name="b2_conv1")(x)
    y = L.ReLU()(L.BatchNormalization(name="b2_bn1")(y))
    y = L.BatchNormalization(name="b2_bn2")(L.Conv2D(32, 3, padding="same", name="b2_conv2")(y))
    shortcut = L.Conv2D(32, 1, strides=2, name="b2_proj")(x)
    x = L.Add(name="b2_add")([shortcut, y])
    x = L.ReLU()(L.BatchNormalization(name="dw_bn")(L.DepthwiseConv2D(3, padding="same", name="dw")(x)))
    outputs = L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs, name="resnetish")
    _randomise_batch_norms(model)
    return model


def test_residual_adds_couple_their_branches_and_keep_the_same_channels() -> None:
    teacher = _residual()
    student = shrink(teacher, {"b1_conv2": 0.5, "b1_conv1": 0.5, "b2_proj": 0.5})
    assert student.name == "resnetish"
    assert student.predict(_images((16, 16, 3)), verbose=0).shape == (4, 10)
    for add, channels in (("b1_add", 8), ("b2_add", 16)):
        assert [tuple(t.shape)[-1] for t in student.get_layer(add).input] == [channels, channels]
    # Stem and block 1's second conv meet at b1_add: one group, width from b1_conv2 (first asked in model order).
    group1 = _top([_kernel(teacher, n) for n in ("stem", "b1_conv2")], 0.5)
    inner1 = _top([_kernel(teacher, "b1_conv1")], 0.5)
    group2 = _top([_kernel(teacher, n) for n in ("b2_conv2", "b2_proj")], 0.5)
    np.testing.assert_array_equal(_kernel(student, "stem"), _kernel(teacher, "stem")[..., group1])
    np.testing.assert_array_equal(_kernel(student, "b1_conv2"), _kernel(teacher, "b1_conv2")[:, :, inner1][..., group1])
    np.testing.assert_array_equal(_kernel(student, "b2_proj"), _kernel(teacher, "b2_proj")[:, :, group1][..., group2])
    np.testing.assert_array_equal(_kernel(student, "b2_conv2"), _kernel(teacher, "b2_conv2")[..., group2])
    assert student.get_layer("b2_conv1").filters == 32  # not coupled, not asked
    np.testing.assert_array_equal(_kernel(student, "b2_conv1"), _kernel(teacher, "b2_conv1")[:, :, group1])
    np.testing.assert_array_equal(_kernel(student, "dw"), _kernel(teacher, "dw")[:, :, group2])
    for i, weights in enumerate(student.get_layer("b1_bn2").get_weights()):
        np.testing.assert_array_equal(weights, teacher.get_layer("b1_bn2").get_weights()[i][group1])
    np.testing.assert_array_equal(_kernel(student, "logits"), _kernel(teacher, "logits")[group2])

    with pytest.raises(ConfigError, match="logits"):
        shrink(teacher, {"logits": 0.5})


@pytest.mark.parametrize("model", [_residual, _user_cnn], ids=["residual", "sequential"])
def test_full_widths_rebuild_the_same_model(model) -> None:
    teacher = model()
    names = [layer.name for layer in teacher.layers if type(layer) in (L.Conv2D, L.Dense)]
    student = shrink(teacher, dict.fromkeys(names, 1.0))
    assert student is not teacher
    x = _images(teacher.input_shape[1:])
    assert np.max(np.abs(student.predict(x, verbose=0) - teacher.predict(x, verbose=0))) < 1e-5
    assert shrink(teacher, {}) is teacher


def test_a_concatenation_offsets_the_kept_channels_of_its_inputs() -> None:
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="branch_a")(inputs)
    b = L.Conv2D(10, 1, name="branch_b")(inputs)
    x = L.Conv2D(12, 3, name="after")(L.Concatenate(name="cat")([a, b]))
    teacher = keras.Model(inputs, L.Dense(4, name="out")(L.GlobalMaxPooling2D()(x)))
    student = shrink(teacher, {"branch_b": 0.5})
    assert student.predict(_images((8, 8, 3)), verbose=0).shape == (4, 4)
    kept = np.concatenate([np.arange(6), 6 + _top([_kernel(teacher, "branch_b")], 0.5)])
    assert _kernel(student, "after").shape == (3, 3, 11, 12)
    np.testing.assert_array_equal(_kernel(student, "after"), _kernel(teacher, "after")[:, :, kept])
    # The teacher with branch_b's dropped filters zeroed computes what the student does.
    dropped = np.setdiff1d(np.arange(10), kept[6:] - 6)
    kernel, bias = teacher.get_layer("branch_b").get_weights()
    kernel[..., dropped], bias[dropped] = 0.0, 0.0
    teacher.get_layer("branch_b").set_weights([kernel, bias])
    x = _images((8, 8, 3))
    np.testing.assert_allclose(student.predict(x, verbose=0), teacher.predict(x, verbose=0), atol=1e-5)


def test_a_layer_that_cannot_take_a_narrower_tensor_is_named() -> None:
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, name="conv")(inputs)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw2")(x)
    teacher = keras.Model(inputs, L.Dense(4, name="out")(L.Flatten()(x)))
    with pytest.raises(ModelError, match="'dw2' \\(DepthwiseConv2D\\)"):
        shrink(teacher, {"conv": 0.5})
