"""Which layers of a model can be compressed, and by which technique (checked before any trial runs)."""

from __future__ import annotations

import dataclasses

from litesweep.objectives.compat import keras, tf

TECHNIQUES: tuple[str, ...] = ("quantize", "prune", "cluster", "width")
_WEIGHTED: tuple[type, ...] = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
#: Layer classes each technique supports (a narrower DepthwiseConv2D follows its input instead).
_SUPPORTED: dict[str, tuple[type, ...]] = {
    "quantize": _WEIGHTED,
    "prune": _WEIGHTED,
    "cluster": _WEIGHTED,
    "width": (keras.layers.Conv2D, keras.layers.Dense),
}


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One compressible layer.

    Attributes:
        name: the Keras layer name (the key of ``Policy.layers``).
        kind: the layer class name.
        kernel_params: number of kernel weights (what bits and sparsity act on).
        input_channels: size of the kernel's input axis (2:4 sparsity needs a multiple of 4).
        techniques: techniques that support this layer.
    """

    name: str
    kind: str
    kernel_params: int
    input_channels: int
    techniques: tuple[str, ...]

    @property
    def supports_2_by_4(self) -> bool:
        """Whether 2:4 sparsity fits the kernel (blocks of four along the input axis)."""
        return "prune" in self.techniques and self.input_channels % 4 == 0


def kernel_of(layer: keras.layers.Layer) -> tf.Variable:
    """The weight kernel of a Conv2D, DepthwiseConv2D or Dense layer (depthwise layers name it differently)."""
    return layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel


def compressible_layers(model: keras.Model) -> list[LayerInfo]:
    """List the model's layers that at least one technique supports, in model order.

    Layers no technique supports (custom or unusual layers) are simply left float.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            # TF-MOT 0.8.1 wraps DepthwiseConv2D for pruning but gives it no mask (nothing is pruned), and a
            # narrower depthwise layer follows its input: neither technique is offered.
            techniques = tuple(t for t in TECHNIQUES if t not in ("width", "prune"))
            kernel = kernel_of(layer)
        elif type(layer) in (keras.layers.Conv2D, keras.layers.Dense):
            techniques = TECHNIQUES
            kernel = kernel_of(layer)
        else:
            continue
        found.append(LayerInfo(layer.name, type(layer).__name__, int(kernel.shape.num_elements()),
                               int(kernel.shape[-2]), techniques))
    return found
