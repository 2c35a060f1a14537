"""Per-layer n-bit quantization-aware training (TF-MOT's experimental ``default_n_bit`` scheme).

Each layer gets its own weight bit width; activations stay 8-bit. Layers left at 32 bits are not
annotated and stay float. Weightless layers between quantized ones (pooling, flatten) are annotated
8-bit so the converter does not insert quantize/dequantize pairs around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litesweep.objectives.compat import keras, nbit_layout, nbit_registry, nbit_scheme, tf, tfmot

from litesweep.objectives.inventory import KERNEL_LAYERS, kernel_of, require
from litesweep.objectives.policy import QAT_ACTIVATION_BITS

_quant = tfmot.quantization.keras


def _quantize_config(layer: keras.layers.Layer, weight_bits: int) -> Any:  # a TF-MOT QuantizeConfig (untyped)
    # The registry writes its bit width into class-level _QuantizeInfo objects shared by every
    # registry (TF-MOT 0.8.1), so the last registry built decides Dense layers' bits. Build one
    # right before each lookup, then check the config really carries the width asked for.
    registry = nbit_registry.DefaultNBitQuantizeRegistry(num_bits_weight=weight_bits, num_bits_activation=QAT_ACTIVATION_BITS)
    return registry.get_quantize_config(layer)


class _WeightsOnly(tfmot.quantization.keras.QuantizeConfig):
    """A kernel layer's config with its weight quantizer only: its output is quantized after the ReLU that follows."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.weight_quantizer = config.weight_quantizer

    def get_weights_and_quantizers(self, layer: keras.layers.Layer) -> list:
        return self.config.get_weights_and_quantizers(layer)

    def set_quantize_weights(self, layer: keras.layers.Layer, quantize_weights: list) -> None:
        self.config.set_quantize_weights(layer, quantize_weights)

    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list:
        return []

    def set_quantize_activations(self, layer: keras.layers.Layer, quantize_activations: list) -> None:
        pass

    def get_output_quantizers(self, layer: keras.layers.Layer) -> list:
        return []

    def get_config(self) -> dict:
        return {}


class _KeepKernelConfigs(nbit_layout.DefaultNBitQuantizeLayoutTransform):
    """TF-MOT's n-bit layout transforms, except that each annotated kernel layer keeps its weight quantizer.

    TF-MOT 0.8.1's ``LayerReLUQuantize`` gives a Conv2D/Dense followed by a ReLU layer (ResNet and
    MobileNet blocks) a no-op config, so that no fake-quant sits between the layer and its ReLU; it would
    also leave the weights float. Such a layer keeps its weight quantizer and nothing else.
    """

    def __init__(self, configs: Mapping[str, Any]) -> None:
        super().__init__(num_bits_weight=8, num_bits_activation=QAT_ACTIVATION_BITS)
        self._configs = configs

    def apply(self, model: keras.Model, layer_quantize_map: dict) -> tuple[keras.Model, dict]:
        transformed, quantize_map = super().apply(model, layer_quantize_map)
        for name, config in self._configs.items():
            decided = quantize_map.setdefault(name, {}).get("quantize_config")
            quantize_map[name]["quantize_config"] = _WeightsOnly(config) if type(decided).__name__ == "NoOpQuantizeConfig" else config
        return transformed, quantize_map


class _PerLayerScheme(nbit_scheme.DefaultNBitQuantizeScheme):
    def __init__(self, configs: Mapping[str, Any]) -> None:
        super().__init__(num_bits_weight=8, num_bits_activation=QAT_ACTIVATION_BITS)
        self._configs = configs

    def get_layout_transformer(self) -> _KeepKernelConfigs:
        return _KeepKernelConfigs(self._configs)


def wrap_for_qat(model: keras.Model, weight_bits: Mapping[str, int]) -> keras.Model:
    """Return a QAT model where each layer in ``weight_bits`` fake-quantizes its weights to that width."""
    require(model, "quantize", weight_bits)
    probe = nbit_registry.DefaultNBitQuantizeRegistry()
    configs: dict[str, Any] = {}

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in weight_bits:
            configs[layer.name] = _quantize_config(layer, weight_bits[layer.name])
            return _quant.quantize_annotate_layer(layer, quantize_config=configs[layer.name])
        if not isinstance(layer, (*KERNEL_LAYERS, keras.layers.InputLayer)) and probe.supports(layer):
            return _quant.quantize_annotate_layer(layer, quantize_config=_quantize_config(layer, 8))
        return layer

    with _quant.quantize_scope():
        annotated = keras.models.clone_model(model, clone_function=annotate)
        qat = _quant.quantize_apply(annotated, _PerLayerScheme(configs))
    for name, bits in weight_bits.items():
        quantizer = qat.get_layer(f"quant_{name}").quantize_config.weight_quantizer
        if quantizer.num_bits != bits:  # guards against the shared-registry bug above
            raise RuntimeError(f"QAT wrapper of '{name}' quantizes weights to {quantizer.num_bits} bits, not {bits}")
    return qat


def kernel_variables(qat_model: keras.Model, layer_names: list[str]) -> dict[str, tf.Variable]:
    """The float kernel variables of ``layer_names``, inside QAT wrappers or not.

    Inside a wrapper ``wrapper.layer.kernel`` is a tensor; the variable is found in ``wrapper.weights``.
    """
    found = {}
    for name in layer_names:
        try:
            wrapper = qat_model.get_layer(f"quant_{name}")
        except ValueError:  # left unwrapped (float)
            found[name] = kernel_of(qat_model.get_layer(name))
            continue
        matches = [w for w in wrapper.weights if w.name.endswith("kernel:0") and w.name.startswith(f"{name}/")]
        if len(matches) != 1:
            raise RuntimeError(f"expected one kernel variable in QAT wrapper of '{name}', found {[w.name for w in matches]}")
        found[name] = matches[0]
    return found
