"""The one place that imports TensorFlow, Keras 2 (tf_keras), TF-MOT, LiteRT and ai-edge-quantizer (and Keras 3).

TF-MOT only works with Keras 2: ``TF_USE_LEGACY_KERAS`` must be set before TensorFlow is first
imported, or ``tf.keras`` stays Keras 3 and ``prune_low_magnitude`` raises. Importing this module sets
it, and nothing else: each library is imported on first use of its name here
(``from litesweep.objectives.compat import keras``), so a module that only runs ``.tflite`` files
(``litert``) never pays for TensorFlow. Every module in ``objectives/`` and ``tests/`` takes these
libraries from here, never from their own packages (``tests/test_import_order.py`` checks it).
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

from litesweep.objectives.quiet import native_noise_filtered, verbose

# Every QAT conversion warns that input statistics are missing; QAT models carry their own ranges.
warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

if os.environ["TF_USE_LEGACY_KERAS"] != "1":  # pragma: no cover - defensive
    raise ImportError("litesweep needs TF_USE_LEGACY_KERAS=1 (TF-MOT works with Keras 2 only)")

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported by ``__getattr__``
    import ai_edge_litert.interpreter as litert
    import ai_edge_quantizer.qtyping as aeq_qtyping
    import ai_edge_quantizer.quantizer as aeq
    import ai_edge_quantizer.recipe_manager as aeq_recipes
    import ai_edge_quantizer.utils.tfl_flatbuffer_utils as aeq_flatbuffer
    import keras as keras3
    import tensorflow as tf
    import tensorflow.lite.python.schema_py_generated as tflite_schema
    import tensorflow_model_optimization as tfmot
    import tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit.default_n_bit_quantize_layout_transform as nbit_layout  # noqa: E501 - a module path
    import tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit.default_n_bit_quantize_registry as nbit_registry  # noqa: E501 - a module path
    import tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit.default_n_bit_quantize_scheme as nbit_scheme  # noqa: E501 - a module path
    import tf_keras as keras

_NBIT = "tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit"
#: Name here -> module it stands for.
_MODULES: dict[str, str] = {
    "tf": "tensorflow",
    "keras": "tf_keras",
    # Keras 3 (``import keras``), installed beside tf_keras: only to read a user's Keras 3 model (objectives.keras3).
    "keras3": "keras",
    "tfmot": "tensorflow_model_optimization",
    # TF-MOT 0.8.1 exports no public API for its n-bit QAT scheme (per-layer 2/4-bit weights), so its
    # internal modules are imported here, the one place that knows TF-MOT's layout.
    "nbit_registry": f"{_NBIT}.default_n_bit_quantize_registry",
    "nbit_layout": f"{_NBIT}.default_n_bit_quantize_layout_transform",
    "nbit_scheme": f"{_NBIT}.default_n_bit_quantize_scheme",
    # The flatbuffer schema of .tflite files: the only reader of stored tensor types (INT4 included).
    "tflite_schema": "tensorflow.lite.python.schema_py_generated",
    "litert": "ai_edge_litert.interpreter",
    "aeq": "ai_edge_quantizer.quantizer",
    "aeq_qtyping": "ai_edge_quantizer.qtyping",
    "aeq_recipes": "ai_edge_quantizer.recipe_manager",
    "aeq_flatbuffer": "ai_edge_quantizer.utils.tfl_flatbuffer_utils",
    "tfds": "tensorflow_datasets",  # optional: ImportError when tensorflow-datasets is not installed
}
#: Names that do not need TensorFlow: a served model runs with LiteRT (and NumPy) only.
_WITHOUT_TENSORFLOW = ("litert", "aeq", "aeq_qtyping", "aeq_recipes", "aeq_flatbuffer")
_tensorflow_ready = False


def __getattr__(name: str) -> ModuleType:
    """Import the library ``name`` stands for on first use (after ``TF_USE_LEGACY_KERAS`` is set)."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    global _tensorflow_ready
    if name not in _WITHOUT_TENSORFLOW and not _tensorflow_ready:
        # TensorFlow first, then the libraries built on it: its loggers are quietened once (verbose: all shown).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "2")
        with native_noise_filtered():  # its load and first device listing print the CUDA probe past any log level
            tf = importlib.import_module("tensorflow")
            tf.config.list_physical_devices()
        tf.get_logger().setLevel("INFO" if verbose() else "ERROR")
        _tensorflow_ready = True
    module = importlib.import_module(_MODULES[name])
    globals()[name] = module
    return module


def limit_threads(threads: int) -> None:
    """Cap TensorFlow's CPU threads (a worker's share of the cores); call before the first op runs."""
    tf = __getattr__("tf")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


__all__ = [  # every name of _MODULES but the optional tfds
    "aeq", "aeq_flatbuffer", "aeq_qtyping", "aeq_recipes", "keras", "keras3", "limit_threads", "litert", "nbit_layout", "nbit_registry",
    "nbit_scheme",
    "tf", "tflite_schema", "tfmot",
]
