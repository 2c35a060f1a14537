"""Magnitude pruning per layer (TF-MOT ``prune_low_magnitude`` with a polynomial schedule)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from litesweep.objectives.compat import keras, tf, tfmot

import numpy as np

from litesweep.objectives.inventory import kernel_of, require

_sparsity = tfmot.sparsity.keras


def wrap_for_pruning(
    model: keras.Model, targets: Mapping[str, float], end_step: int, structured: Sequence[str] = ()
) -> keras.Model:
    """Wrap layers in ``prune_low_magnitude``: unstructured ``targets`` ramp up by ``end_step``;
    ``structured`` layers get 2:4 sparsity (two zeros in every block of four weights).

    The returned model shares layer objects with ``model`` (TF-MOT's clone_function contract), so pass
    a disposable copy.
    """
    require(model, "prune", [*(name for name, target in targets.items() if target > 0.0), *structured])
    end_step = max(int(end_step), 1)

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in structured:
            return _sparsity.prune_low_magnitude(layer, sparsity_m_by_n=(2, 4))
        target = targets.get(layer.name, 0.0)
        if target <= 0.0:
            return layer
        schedule = _sparsity.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=float(target), begin_step=0,
            end_step=max(end_step - 1, 1), frequency=max(end_step // 10, 1),
        )
        return _sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)

    return keras.models.clone_model(model, clone_function=wrap)


def pruning_callbacks() -> list[keras.callbacks.Callback]:
    """Callbacks ``fit`` needs while pruning wrappers are active."""
    return [_sparsity.UpdatePruningStep()]


def strip(model: keras.Model) -> keras.Model:
    """Remove pruning wrappers, keeping the pruned (zeroed) weights."""
    return _sparsity.strip_pruning(model)


def kernel_masks(model: keras.Model, layer_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Non-zero masks of the kernels of ``layer_names`` (to keep sparsity through later training)."""
    return {name: (kernel_of(model.get_layer(name)).numpy() != 0).astype("float32") for name in layer_names}


def holds_2_by_4(kernel: np.ndarray) -> bool:
    """Whether every block of four consecutive weights along the input axis has at least two zeros.

    Keras kernels keep the input channels on axis -2 (Dense: ``(in, out)``, Conv2D: ``(h, w, in, out)``).
    """
    moved = np.moveaxis(kernel, -2, -1)
    if moved.shape[-1] % 4:
        return False
    blocks = moved.reshape(-1, 4)
    return bool(np.all(np.sum(blocks == 0, axis=1) >= 2))


class KeepMasks(keras.callbacks.Callback):
    """Re-apply pruning masks after every batch, so training that is not sparsity-aware keeps the zeros.

    n-bit QAT does not preserve sparsity itself; symmetric weight quantization maps 0 to 0 exactly,
    so zeroed float kernels stay zero in the converted file.
    """

    def __init__(self, variables: Mapping[str, tf.Variable], masks: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self._pairs = [(variables[name], tf.constant(masks[name])) for name in masks]

    def apply(self) -> None:
        """Zero every masked weight now."""
        for variable, mask in self._pairs:
            variable.assign(variable * mask)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.apply()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.apply()


def achieved_sparsity(kernel: np.ndarray) -> float:
    """Share of exact zeros in a kernel."""
    return float(np.mean(kernel == 0))
