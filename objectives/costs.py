"""Honest size and compute accounting of a compressed model, independent of any device.

``ideal_bytes``: what the file would cost if every non-zero kernel weight took exactly the bit width of
the type it is stored as in the ``.tflite`` (biases and other layers at 32 bits) - the gap to
``size_bytes`` is format overhead.
``macs``: multiply-accumulates of one inference. ``bitops``: sum over layers of MACs x weight bits x
activation bits, a device-independent compute cost usable as an objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from litesweep.objectives.compat import keras

import numpy as np

from litesweep.objectives.policy import FLOAT_BITS, LayerPolicy


@dataclasses.dataclass(frozen=True)
class Costs:
    """Whole-model costs."""

    ideal_bytes: float
    macs: int
    bitops: float


def compute_bits(policy: LayerPolicy | None, method: str) -> tuple[int, int]:
    """(weight bits, activation bits) a layer computes with.

    Integer layers compute with their weight bits and 8-bit (or 16-bit) activations; weight-only
    and float16 layers are dequantized and computed in float32.
    """
    if policy is None or policy.bits >= 16:
        return FLOAT_BITS, FLOAT_BITS
    if method != "qat" and policy.ptq_mode == "weight_only":
        return FLOAT_BITS, FLOAT_BITS
    return policy.bits, policy.act_bits


def _macs(layer: keras.layers.Layer) -> int:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        _, oh, ow, oc = layer.output_shape
        kh, kw = layer.kernel_size
        return int(oh * ow * kh * kw * oc)
    if isinstance(layer, keras.layers.Conv2D):
        _, oh, ow, oc = layer.output_shape
        kh, kw = layer.kernel_size
        return int(oh * ow * kh * kw * layer.input_shape[-1] * oc // layer.groups)
    if isinstance(layer, keras.layers.Dense):
        return int(layer.input_shape[-1] * layer.units)
    return 0


#: Bits per element of the tensor types a kernel is stored as (``tflite_file.weight_types``).
STORED_TYPE_BITS = {"INT2": 2, "INT4": 4, "INT8": 8, "INT16": 16, "FLOAT16": 16, "FLOAT32": 32}


def model_costs(model: keras.Model, kernels: Mapping[str, np.ndarray], policies: Mapping[str, LayerPolicy], method: str,
                stored_types: Mapping[str, str] | None = None) -> Costs:
    """Costs of ``model`` (the float structure) under ``policies``.

    Args:
        model: the compressed model's float structure (after width changes), for shapes.
        kernels: the final float kernels of the compressible layers (for non-zero counts).
        policies: per-layer policy.
        method: the policy's method.
        stored_types: each kernel's type in the ``.tflite`` (the file, not the policy, says what a weight
            costs: a 2-bit policy stored as INT4 costs 4 bits); layers not named here use the policy's bits.
    """
    stored_types = stored_types or {}
    ideal_bits = 0.0
    macs = 0
    bitops = 0.0
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        policy = policies.get(layer.name)
        if layer.name in kernels:
            kernel = kernels[layer.name]
            storage_bits = STORED_TYPE_BITS.get(stored_types.get(layer.name, ""), FLOAT_BITS if policy is None else policy.bits)
            ideal_bits += np.count_nonzero(kernel) * storage_bits
            ideal_bits += sum(w.size for w in weights[1:]) * FLOAT_BITS
        else:
            ideal_bits += sum(w.size for w in weights) * FLOAT_BITS
        layer_macs = _macs(layer)
        w_bits, a_bits = compute_bits(policy, method)
        macs += layer_macs
        bitops += float(layer_macs) * w_bits * a_bits
    return Costs(ideal_bytes=ideal_bits / 8.0, macs=macs, bitops=bitops)
