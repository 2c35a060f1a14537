"""Narrower students: keep each layer's highest-magnitude filters/units (structured pruning).

Unstructured zeros barely speed up the runtime; fewer filters do. The student keeps the teacher's
layer names and is initialised from the teacher's weights, then distilled from it.
Works on chain models (every layer has one input); anything else gets a clear ``ModelError``.
"""

from __future__ import annotations

from collections.abc import Mapping

from litesweep.objectives.compat import keras

import numpy as np

from litesweep.objectives.errors import ModelError
from litesweep.objectives.inventory import require

_PASS_THROUGH = (
    keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.Activation, keras.layers.ReLU,
    keras.layers.Dropout, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding2D, keras.layers.LeakyReLU,
)


def keep_count(total: int, width: float) -> int:
    """How many of ``total`` filters a width multiplier keeps (at least one)."""
    return max(1, round(total * width))


def _top_filters(kernel: np.ndarray, keep: int) -> np.ndarray:
    importance = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
    return np.sort(np.argsort(-importance, kind="stable")[:keep])


def shrink(model: keras.Model, widths: Mapping[str, float]) -> keras.Model:
    """A student where each layer in ``widths`` keeps that share of its filters/units.

    Raises:
        ConfigError: a layer in ``widths`` is missing or takes no width (``inventory.SUPPORTED_LAYERS``).
        ModelError: the model is not a chain, or a layer cannot pass a narrower tensor through.
    """
    if not widths:
        return model
    require(model, "width", widths)
    inputs = keras.Input(shape=model.input_shape[1:], name=model.layers[0].name)
    x = inputs
    kept: np.ndarray | None = None  # indices of the current tensor's last axis still present
    new_weights: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    for layer in model.layers[1:]:
        if isinstance(layer.input, list):
            raise ModelError(f"width multipliers need a chain model; layer '{layer.name}' has several inputs")
        config = layer.get_config()
        weights = layer.get_weights()
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = weights[0]
            if kept is not None:
                kernel = np.take(kernel, kept, axis=-2)
            out = _top_filters(kernel, keep_count(kernel.shape[-1], widths[layer.name])) if layer.name in widths else None
            if out is not None:
                kernel = kernel[..., out]
                config["filters" if "filters" in config else "units"] = len(out)
            rest = [w[out] if out is not None else w for w in weights[1:]]
            weights, kept = [kernel, *rest], out
        elif isinstance(layer, keras.layers.DepthwiseConv2D):  # follows its input's width
            if kept is not None:
                weights = [np.take(weights[0], kept, axis=2), *[w[kept] for w in weights[1:]]]
        elif isinstance(layer, keras.layers.BatchNormalization):
            if kept is not None:
                weights = [w[kept] for w in weights]
        elif isinstance(layer, keras.layers.Flatten):
            if kept is not None:
                h, w, c = layer.input_shape[1:]
                kept = np.array([(i * w + j) * c + k for i in range(h) for j in range(w) for k in kept])
        elif not isinstance(layer, _PASS_THROUGH) and kept is not None:
            raise ModelError(f"width multipliers cannot pass through layer '{layer.name}' ({type(layer).__name__})")
        clone = type(layer).from_config(config)
        x = clone(x)
        new_weights.append((clone, weights))
    student = keras.Model(inputs, x, name=model.name)
    for clone, weights in new_weights:
        clone.set_weights(weights)
    return student
