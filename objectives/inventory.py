"""Which layers of a model can be compressed, and by which technique (checked before any trial runs)."""

from __future__ import annotations

import dataclasses

from objectives.compat import keras

#: Layer classes each technique supports. Prune and QAT both work on weight kernels.
_WEIGHTED: tuple[type, ...] = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
TECHNIQUES: dict[str, tuple[type, ...]] = {"quantize": _WEIGHTED, "prune": _WEIGHTED}


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One compressible layer.

    Attributes:
        name: the Keras layer name (the key of ``Policy.layers``).
        kind: the layer class name.
        kernel_params: number of kernel weights (what bits and sparsity act on).
        techniques: techniques that support this layer.
    """

    name: str
    kind: str
    kernel_params: int
    techniques: tuple[str, ...]


def compressible_layers(model: keras.Model) -> list[LayerInfo]:
    """List the model's layers that at least one technique supports, in model order."""
    found = []
    for layer in model.layers:
        techniques = tuple(t for t, kinds in TECHNIQUES.items() if isinstance(layer, kinds))
        if not techniques:
            continue
        kernel = getattr(layer, "depthwise_kernel", None) if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel
        found.append(LayerInfo(layer.name, type(layer).__name__, int(kernel.shape.num_elements()), techniques))
    return found
