"""Which layers of a model can be compressed, and by which technique: the one registry every technique consults.

Like TF-MOT's ``PruneRegistry``, a layer a technique does not support is refused before any work
starts (``require``), with the layer and what is supported named. Layers no technique supports
(custom or unusual layers) are left float.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from litesweep.objectives.compat import keras, tf

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.policy import LAYER_TECHNIQUES

#: Layer class -> the per-layer techniques it takes. Looked up by exact class: a subclass (a user's
#: own Dense, Conv2DTranspose...) may give its kernel another meaning, so it stays float.
SUPPORTED_LAYERS: dict[type, tuple[str, ...]] = {
    keras.layers.Conv2D: LAYER_TECHNIQUES,
    keras.layers.DepthwiseConv2D: ("quantize", "cluster"),
    keras.layers.Dense: LAYER_TECHNIQUES,
}
#: Why a supported class does not take a technique, where the reason is not obvious.
_WHY_NOT: dict[tuple[str, str], str] = {
    ("DepthwiseConv2D", "prune"): "TF-MOT 0.8.1 wraps it for pruning but gives it no mask, so nothing would be pruned",
    ("DepthwiseConv2D", "width"): "it follows its input's width; set the width on the layer before it",
}
#: Layer classes whose kernel the policy owns: never quantized unless the policy says so.
KERNEL_LAYERS: tuple[type, ...] = tuple(SUPPORTED_LAYERS)


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


def techniques_of(layer: keras.layers.Layer) -> tuple[str, ...]:
    """The techniques the registry gives ``layer``'s class (none for a class it does not list)."""
    return SUPPORTED_LAYERS.get(type(layer), ())


def supported_kinds(technique: str | None = None) -> list[str]:
    """Names of the layer classes that take ``technique`` (any technique when ``None``), in registry order."""
    return [cls.__name__ for cls, techniques in SUPPORTED_LAYERS.items() if technique is None or technique in techniques]


def unsupported(name: str, kind: str, technique: str) -> ConfigError:
    """The error for layer ``name`` of class ``kind`` asked to take ``technique``, naming what does take it."""
    why = _WHY_NOT.get((kind, technique))
    reason = f" ({why})" if why else ""
    return ConfigError(f"layer '{name}' ({kind}) does not support technique '{technique}'{reason}; "
                       f"accepted: layers of type {supported_kinds(technique)}")


def require(model: keras.Model, technique: str, layer_names: Iterable[str]) -> None:
    """Raise ``ConfigError`` unless every layer of ``layer_names`` exists and supports ``technique``.

    Every technique calls this before it wraps or rebuilds anything.
    """
    names = {layer.name: layer for layer in model.layers}
    for name in layer_names:
        layer = names.get(name)
        if layer is None:
            raise ConfigError(f"layer '{name}' is not in the model; accepted for '{technique}': "
                              f"{[n for n, other in names.items() if technique in techniques_of(other)]}")
        if technique not in techniques_of(layer):
            raise unsupported(name, type(layer).__name__, technique)


def kernel_of(layer: keras.layers.Layer) -> tf.Variable:
    """The weight kernel of a Conv2D, DepthwiseConv2D or Dense layer (depthwise layers name it differently)."""
    return layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel


def compressible_layers(model: keras.Model) -> list[LayerInfo]:
    """List the model's layers that at least one technique supports, in model order."""
    found = []
    for layer in model.layers:
        techniques = techniques_of(layer)
        if not techniques:
            continue
        kernel = kernel_of(layer)
        found.append(LayerInfo(layer.name, type(layer).__name__, int(kernel.shape.num_elements()),
                               int(kernel.shape[-2]), techniques))
    return found


def left_float(model: keras.Model) -> list[str]:
    """Names of the layers with weights that no technique supports (they stay float in every file)."""
    compressible = {info.name for info in compressible_layers(model)}
    return [layer.name for layer in model.layers if layer.weights and layer.name not in compressible]


def output_layer(model: keras.Model) -> str:
    """The compressible layer whose units are the model's outputs, found past a final Softmax or Activation."""
    names = {info.name for info in compressible_layers(model)}
    layer = model.layers[-1]
    while layer.name not in names and layer.inbound_nodes:
        feeding = layer.inbound_nodes[0].inbound_layers
        if isinstance(feeding, list):
            if len(feeding) != 1:
                break
            feeding = feeding[0]
        layer = feeding
    return layer.name if layer.name in names else model.layers[-1].name
