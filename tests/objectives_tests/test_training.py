"""Fine-tuning's early failures, checked without Python per batch: the accuracy floor and a NaN loss."""

from __future__ import annotations

from litesweep.objectives.compat import keras, tf

import numpy as np
import pytest

from litesweep.objectives.errors import HopelessTrial
from litesweep.objectives.models import fresh_copy
from litesweep.objectives.training import EarlyFloor, ProjectedAdam


def _predict_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), axis=1) == y))


def test_the_floor_measures_what_predict_measures(digits_bench) -> None:
    model, data = digits_bench.base_model, digits_bench.data
    accuracy = _predict_accuracy(model, data.x_val, data.y_val)
    passing = EarlyFloor(data.x_val, data.y_val, accuracy)
    passing.set_model(model)
    passing.on_epoch_end(0)
    failing = EarlyFloor(data.x_val, data.y_val, accuracy + 1e-9)
    failing.set_model(model)
    failing.on_epoch_end(1)  # only the first epoch is checked
    with pytest.raises(HopelessTrial) as raised:
        failing.on_epoch_end(0)
    assert raised.value.val_accuracy == pytest.approx(accuracy)


def test_a_nan_loss_fails_the_trial(digits_bench) -> None:
    model = fresh_copy(digits_bench.base_model)

    def nan_after_first_batch(packed: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        step = tf.cast(model.optimizer.iterations, tf.float32)
        return tf.reduce_sum(outputs, axis=-1) * 0.0 + tf.math.log(1.0 - tf.minimum(step, 1.0))  # -inf from step 1

    with pytest.raises(FloatingPointError, match="NaN or inf"):
        digits_bench._tuner._fit(model, nan_after_first_batch, 1, [])


def test_projections_run_after_every_update() -> None:
    layer = keras.layers.Dense(4, use_bias=False)
    model = keras.Sequential([keras.Input((3,)), layer])
    mask = tf.constant(np.array([[1, 0, 1, 0]] * 3, dtype="float32"))
    model.compile(optimizer=ProjectedAdam(0.1, [lambda: layer.kernel.assign(layer.kernel * mask)]), loss="mse")
    model.fit(np.ones((32, 3), "float32"), np.ones((32, 4), "float32"), batch_size=8, epochs=1, verbose=0)
    assert np.all(layer.kernel.numpy()[:, [1, 3]] == 0)
    assert np.all(layer.kernel.numpy()[:, [0, 2]] != 0)
