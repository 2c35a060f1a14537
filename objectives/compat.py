"""The one place that imports TensorFlow, Keras 2 (tf_keras), TF-MOT and the LiteRT interpreter.

TF-MOT only works with Keras 2: ``TF_USE_LEGACY_KERAS`` must be set before TensorFlow is first
imported, or ``tf.keras`` stays Keras 3 and ``prune_low_magnitude`` raises. Every module that needs
Keras imports it from here.
"""

from __future__ import annotations

import os
import warnings

# Every QAT conversion warns that input statistics are missing; QAT models carry their own ranges.
warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ["TF_USE_LEGACY_KERAS"] != "1":  # pragma: no cover - defensive
    raise ImportError("litesweep needs TF_USE_LEGACY_KERAS=1 (TF-MOT works with Keras 2 only)")

import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from ai_edge_litert import interpreter as litert  # noqa: E402

tf.get_logger().setLevel("ERROR")



def limit_threads(threads: int) -> None:
    """Cap TensorFlow's CPU threads (a worker's share of the cores); call before the first op runs."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


__all__ = ["keras", "limit_threads", "litert", "tf", "tfmot"]
