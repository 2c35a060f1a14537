"""Keras → ``.tflite`` bytes. Every converter flag litesweep uses is set here and nowhere else."""

from __future__ import annotations

from litesweep.objectives.compat import keras, tf

#: The sparsity pass of TF 2.21's converter aborts the whole process (SIGTRAP, "ElementsAttr does not
#: provide iteration facilities for type `signed char`") on INT4 tensors, so sparse encoding is only
#: requested when no layer has 4 bits or fewer. Pruned 4-bit layers still shrink in gzip bytes.
MIN_BITS_FOR_SPARSE_ENCODING = 8


def sparse_encoding_allowed(weight_bits: list[int]) -> bool:
    """Whether ``EXPERIMENTAL_SPARSITY`` is safe for a model with these quantized weight bit widths."""
    return all(b >= MIN_BITS_FOR_SPARSE_ENCODING for b in weight_bits)


def to_tflite(model: keras.Model, *, quantized: bool, sparse: bool) -> bytes:
    """Convert a (stripped or QAT) Keras model.

    Args:
        model: a model without pruning wrappers; QAT wrappers are what the converter reads bit widths from.
        quantized: apply ``Optimize.DEFAULT`` (turns QAT fake-quant into integer tensors).
        sparse: add ``EXPERIMENTAL_SPARSITY`` so pruned kernels are stored sparse-encoded.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = []
    if quantized:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    return converter.convert()
