"""The converter's standard presets, the reference points every study is compared with.

Each preset converts the float base model once, with no training; litesweep measures the result
with the same split and protocol as the trials.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from litesweep.objectives.compat import keras, tf

import numpy as np

from litesweep.objectives.policy import FLOAT16_BITS, LayerPolicy
from litesweep.objectives.quiet import native_noise_filtered

PRESETS: tuple[str, ...] = ("float32", "float16", "dynamic_int8", "full_int8", "int16x8")
#: What each preset does to every compressible layer, as a policy (``None``: left float32).
PRESET_LAYER_POLICY: dict[str, LayerPolicy | None] = {
    "float32": None, "float16": LayerPolicy(bits=FLOAT16_BITS), "dynamic_int8": LayerPolicy(bits=8),
    "full_int8": LayerPolicy(bits=8, ptq_mode="static"), "int16x8": LayerPolicy(bits=8, act_bits=16, ptq_mode="static"),
}
#: The presets with integer weights: a new study's first trials are the search-space points nearest them.
INTEGER_PRESETS: tuple[str, ...] = ("dynamic_int8", "full_int8")


def _representative(calibration: np.ndarray) -> Callable[[], object]:
    def gen() -> Iterator[list[np.ndarray]]:  # the converter's representative-dataset protocol
        for sample in calibration:
            yield [sample[None].astype(np.float32)]

    return gen


def convert_preset(model: keras.Model, preset: str, calibration: np.ndarray) -> bytes:
    """Convert ``model`` with one of ``PRESETS``.

    ``full_int8`` has int8 input and output (what integer-only accelerators need); ``int16x8`` keeps
    float input/output with int16 activations and int8 weights inside.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if preset == "float32":
        pass
    elif preset == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif preset == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif preset == "full_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif preset == "int16x8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    else:
        raise ValueError(f"unknown preset {preset!r}; accepted: {list(PRESETS)}")
    if converter.representative_dataset is None:
        return converter.convert()
    with native_noise_filtered():  # the calibrated quantizer prints "fully_quantize: ..." to stderr (llvm::dbgs())
        return converter.convert()
