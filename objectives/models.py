"""Base models: built from config and trained once, then cached by a hash of config, data and TF version."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from litesweep.objectives.compat import keras, tf

import numpy as np

from litesweep.objectives.architectures import build_cnn
from litesweep.objectives.data import Dataset
from litesweep.objectives.errors import ModelError
from litesweep.objectives.settings import CnnSpec

if TYPE_CHECKING:
    from litesweep.objectives.keras3 import Conversion

__all__ = ["CnnSpec", "fresh_copy", "import_custom_objects", "load_model", "load_user_model", "train_or_load"]


def cache_key(spec: CnnSpec, data: Dataset) -> str:
    described = {k: v for k, v in dataclasses.asdict(spec).items() if k not in CnnSpec.NOT_ARCHITECTURE}
    defaults = CnnSpec()
    for option in CnnSpec.LATER_OPTIONS:
        if described[option] == getattr(defaults, option):
            del described[option]
    payload = json.dumps({"spec": described, "data": data.fingerprint(), "tf": tf.__version__}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_or_load(spec: CnnSpec, data: Dataset, cache_dir: Path) -> tuple[keras.Model, dict]:
    """Return the trained base model, training it only when no cached copy exists.

    The float reference is trained to a validation plateau (early stopping with ``patience``), so
    no trial gains accuracy from extra epochs alone.

    Returns:
        The model and a dict describing its training (``cache_key``, ``epochs``, ``cached``).
    """
    spec.validate()
    key = cache_key(spec, data)
    path = Path(cache_dir) / f"base-{key}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Workers started together wait for the first one to train: every worker must share one base model.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _train_or_load_locked(spec, data, path, key)


def _train_or_load_locked(spec: CnnSpec, data: Dataset, path: Path, key: str) -> tuple[keras.Model, dict]:
    info_path = path.with_suffix(".json")
    if path.exists() and info_path.exists():
        model = keras.models.load_model(path, compile=False)
        info = json.loads(info_path.read_text())
        return model, {**info, "cached": True}
    keras.utils.set_random_seed(spec.seed)
    model = build_cnn(spec, data.input_shape, data.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(spec.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=spec.patience, restore_best_weights=True)
    callbacks: list[keras.callbacks.Callback] = [stop]
    if spec.reduce_lr_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=spec.reduce_lr_patience))
    if spec.augment:
        history = model.fit(_augmented_batches(spec, data), validation_data=(data.x_val, data.y_val),
                            epochs=spec.max_epochs, callbacks=callbacks, verbose=0)
    else:
        history = model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                            epochs=spec.max_epochs, batch_size=spec.batch_size, callbacks=callbacks, verbose=0)
    info = {"cache_key": key, "epochs": len(history.history["loss"]), "best_epoch": stop.best_epoch + 1}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary name and rename, so an interrupted run never leaves a half-written cache.
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp_model = Path(tmp) / path.name
        model.save(tmp_model)
        (Path(tmp) / info_path.name).write_text(json.dumps(info))
        os.replace(tmp_model, path)
        os.replace(Path(tmp) / info_path.name, info_path)
    return model, {**info, "cached": False}


def _augmented_batches(spec: CnnSpec, data: Dataset) -> tf.data.Dataset:
    """Training batches shuffled each epoch, randomly shifted (up to 1/8 of a side) and flipped left-right."""
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=spec.seed),
                                keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant", seed=spec.seed)])
    return (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
            .shuffle(len(data.x_train), seed=spec.seed, reshuffle_each_iteration=True).batch(spec.batch_size)
            .map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def fresh_copy(model: keras.Model) -> keras.Model:
    """A clone with its own layers and the same weights.

    TF-MOT wrappers reuse the layer objects of the model they wrap, so a trial must never wrap the
    cached base model itself.
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def load_model(path: str | Path, trust_code: bool = False, custom_objects: Sequence[str] = (),
               check_inputs: np.ndarray | None = None) -> keras.Model:
    """``load_user_model``'s model alone."""
    return load_user_model(path, trust_code, custom_objects, check_inputs)[0]


def load_user_model(path: str | Path, trust_code: bool = False, custom_objects: Sequence[str] = (),
                    check_inputs: np.ndarray | None = None) -> tuple[keras.Model, Conversion | None]:
    """Load a user's Keras model (``.keras``, ``.h5`` or a SavedModel directory), safely.

    ``.keras`` files load with Keras' ``safe_mode``: a ``Lambda`` layer (arbitrary Python) is refused
    unless ``trust_code`` is set. ``.h5`` files carry Lambda code as bytecode with no safe mode, so
    their config is read first and Lambda layers are refused the same way. A file saved by Keras 3 is
    rebuilt as a tf_keras model and checked on ``check_inputs`` (``objectives.keras3``). Every trial
    rebuilds the model from its config (``clone_model``), so that is tried here once.

    Args:
        path: the model file or SavedModel directory.
        trust_code: allow Lambda layers.
        custom_objects: dotted paths of modules (every Keras layer class they define) or classes to
            import first: the model's custom layers.
        check_inputs: inputs a Keras 3 model and its tf_keras rebuild must agree on (the test split).

    Returns:
        The tf_keras model, and the ``Conversion`` of a Keras 3 file (None for a Keras 2 one).

    Raises:
        ModelError: the path is missing, is not a Keras model, holds refused code, uses a class that
            cannot be found, is a subclassed model, cannot be rebuilt from Keras 3, or cannot be cloned
            (the layer and why are named).
    """
    path = Path(path)
    accepted = "accepted: a .keras or .h5 file or a SavedModel directory"
    if not path.exists():
        raise ModelError(f"model.path = '{path}' does not exist; {accepted}")
    from litesweep.objectives.keras3 import convert_file, keras3_version

    conversion = None
    if keras3_version(path):
        model, conversion = convert_file(path, custom_objects, import_custom_objects(custom_objects), trust_code, check_inputs)
    else:
        model = _load_keras2(path, trust_code, custom_objects)
    if not getattr(model, "_is_graph_network", False):
        raise ModelError(f"model.path = '{path}' is a subclassed model, which cannot be cloned; accepted: a Sequential or Functional model")
    try:
        fresh_copy(model)
    except Exception as exc:
        problem = _clone_problem(model, exc)
        if "accepted" not in problem:
            problem += "; accepted: layers that rebuild from their get_config() (a custom layer needs a complete get_config)"
        raise ModelError(f"model.path = '{path}' cannot be cloned, and every trial starts from a clone: {problem}") from exc
    return model, conversion


def _load_keras2(path: Path, trust_code: bool, custom_objects: Sequence[str]) -> keras.Model:
    accepted = "accepted: a .keras or .h5 file or a SavedModel directory"
    _refuse_keras_3(path)
    if not trust_code:
        # Keras applies safe_mode to .keras zips only; an HDF5 file or SavedModel, whatever its name, is checked here.
        import h5py

        if path.is_file() and h5py.is_hdf5(path):
            _refuse_h5_lambda(path)
        elif path.suffix == ".h5":
            _refuse_h5_lambda(path)  # not HDF5 at all: names what the file is not
        metadata = path / "keras_metadata.pb"
        if metadata.is_file() and re.search(rb'"class_name":\s*"Lambda"', metadata.read_bytes()):
            raise ModelError(f"model.path = '{path}' holds a Lambda layer (arbitrary code), refused; accepted: a model without "
                             "Lambda layers, or model.trust_code=true for a file you trust")
    custom = import_custom_objects(custom_objects)
    try:
        if path.suffix == ".keras":
            model = keras.models.load_model(path, compile=False, safe_mode=not trust_code, custom_objects=custom)
        else:
            model = keras.models.load_model(path, compile=False, custom_objects=custom)
    except ModelError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())
        for marker in ("Could not locate class", "Cannot deserialize object of type", "Unknown layer:"):
            if marker in text:
                name = text.split(marker, 1)[1].split(".")[0].strip(" '`:")
                raise ModelError(f"model.path = '{path}' uses class '{name}', a custom class Keras cannot find here; "
                                 "accepted: built-in layers, or the module defining it in model.custom_objects") from exc
        if "Lambda" in text or "safe_mode" in text:
            raise ModelError(f"model.path = '{path}' holds a Lambda layer (arbitrary code), refused; accepted: a model without "
                             "Lambda layers, or model.trust_code=true for a file you trust") from exc
        raise ModelError(f"model.path = '{path}' is not a Keras model Keras can load ({type(exc).__name__}: {text[:160]}); "
                         f"{accepted}") from exc
    return model


def import_custom_objects(entries: Sequence[str]) -> dict[str, type]:
    """Import ``model.custom_objects`` entries and register their classes with Keras.

    An entry is a module (every Keras layer class it defines) or a ``module.Class``. Classes
    are registered globally, since TF-MOT rebuilds models from their config while wrapping them.

    Raises:
        ModelError: an entry cannot be imported.
    """
    import importlib
    import inspect

    found: dict[str, type] = {}
    for entry in entries:
        try:
            try:
                module_ = importlib.import_module(entry)
                # The classes it defines, not the ones it imports (tf_keras' own layers need no registering).
                objects = [o for o in vars(module_).values() if getattr(o, "__module__", None) == module_.__name__]
            except ModuleNotFoundError as exc:
                module, _, attribute = entry.rpartition(".")
                if not module or exc.name != entry:
                    raise
                objects = [getattr(importlib.import_module(module), attribute)]
        except Exception as exc:
            raise ModelError(f"model.custom_objects entry = '{entry}' cannot be imported ({type(exc).__name__}: {exc}); "
                             "accepted: an importable module or module.Class (on PYTHONPATH)") from exc
        for obj in objects:
            if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer):
                found[obj.__name__] = obj
                found[keras.saving.get_registered_name(obj)] = obj
    keras.saving.get_custom_objects().update(found)
    return found


def _clone_problem(model: keras.Model, exc: Exception) -> str:
    """Which layer stops ``clone_model`` and why, found by rebuilding each layer from its config."""
    for layer in model.layers:
        kind = type(layer).__name__
        if "saved_model" in type(layer).__module__:
            return (f"layer '{layer.name}' ({kind}) was revived from the SavedModel without its Python class; "
                    "accepted: built-in layers, or the module defining the class in model.custom_objects")
        try:
            copy = type(layer).from_config(layer.get_config())
        except Exception as err:  # noqa: BLE001 - any failure is the reason reported
            return (f"layer '{layer.name}' ({kind}) cannot be rebuilt from its get_config() "
                    f"({type(err).__name__}: {' '.join(str(err).split())[:160]})")
        if layer.weights:
            with contextlib.suppress(Exception):  # a layer that fails to build is judged by its weights below
                copy.build(layer.input_shape)
            if len(copy.weights) != len(layer.weights):
                return (f"layer '{layer.name}' ({kind}) is rebuilt from its config with {len(copy.weights)} weights "
                        f"instead of {len(layer.weights)}")
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _refuse_keras_3(path: Path) -> None:
    """Refuse, with the way out, a model TF-MOT cannot take: saved by neither Keras 2 nor 3, or a SavedModel without Keras layers."""
    from litesweep.objectives.keras3 import saved_version

    accepted = ("accepted: a model saved by Keras 2 (tf_keras) or by Keras 3 (model.save to a .keras file), "
                "Sequential or Functional")
    version = saved_version(path)
    if version and not version.startswith("2."):
        raise ModelError(f"model.path = '{path}' was saved by Keras {version}, which litesweep cannot read; {accepted}")
    if path.is_dir() and (path / "saved_model.pb").exists() and not (path / "keras_metadata.pb").exists():
        raise ModelError(f"model.path = '{path}' is a SavedModel without Keras layers (tf.saved_model.save or Keras 3's model.export), "
                         f"which cannot be cloned; {accepted}")


def _refuse_h5_lambda(path: Path) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config")
    except OSError as exc:
        raise ModelError(f"model.path = '{path}' is not an HDF5 Keras model ({exc}); "
                         "accepted: a .keras or .h5 file or a SavedModel directory") from exc
    text = config.decode() if isinstance(config, bytes) else str(config or "")
    if '"class_name": "Lambda"' in text:
        raise ModelError(f"model.path = '{path}' holds a Lambda layer (arbitrary code), refused; accepted: a model without "
                         "Lambda layers, or model.trust_code=true for a file you trust")
