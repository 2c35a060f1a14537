"""Knowledge distillation from the float base model, as a plain Keras loss.

Targets are packed as ``[one_hot(labels), teacher_logits]`` so distillation works with ``fit`` and
with any TF-MOT wrapper, without a custom training loop. Teacher logits are computed once per process.
"""

from __future__ import annotations

from collections.abc import Callable

from litesweep.objectives.compat import keras, tf

import numpy as np


def pack_targets(labels: np.ndarray, teacher_logits: np.ndarray, num_classes: int) -> np.ndarray:
    """Concatenate one-hot labels and teacher logits into one target array."""
    one_hot = np.eye(num_classes, dtype="float32")[labels]
    return np.concatenate([one_hot, teacher_logits.astype("float32")], axis=1)


def distillation_loss(num_classes: int, temperature: float, weight: float,
                      probabilities: bool = False) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """``(1 - weight) * CE(labels, student) + weight * T^2 * KL(teacher_T || student_T)``.

    The ``T^2`` factor keeps the soft-target gradients on the same scale as the hard ones (Hinton et al.).
    With ``probabilities`` (a model ending in softmax), outputs are turned back into logits by their log:
    ``softmax(log p) = p``, so temperature and cross-entropy act as on the logits the softmax consumed.
    """

    def as_logits(outputs: tf.Tensor) -> tf.Tensor:
        return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0)) if probabilities else outputs

    def loss(packed: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        labels, teacher = packed[:, :num_classes], as_logits(packed[:, num_classes:])
        logits = as_logits(outputs)
        hard = keras.losses.categorical_crossentropy(labels, logits, from_logits=True)
        if weight == 0.0:
            return hard
        soft = keras.losses.kl_divergence(tf.nn.softmax(teacher / temperature), tf.nn.softmax(logits / temperature))
        return (1.0 - weight) * hard + weight * (temperature**2) * soft

    return loss
