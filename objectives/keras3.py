"""Keras 3 models in, tf_keras models out: the one module that reads a model saved by Keras 3.

TF-MOT only works with Keras 2 (``tf_keras``), while ``import keras`` has been Keras 3 since TensorFlow 2.16.
A Keras 3 ``.keras`` (or ``.h5``) file of built-in layers is rebuilt here as a tf_keras model: its saved
config is checked first (every layer needs a tf_keras class: a built-in layer tf_keras also has, or a custom
one given in ``model.custom_objects``), then the Keras 3 model is loaded, each layer is rebuilt from its
config with the tf_keras class of the same name (layer names kept), called on the same graph (residuals,
nested models), and given the Keras 3 layer's weights. The result is verified: on the given inputs its
outputs must match the Keras 3 model's (``MAX_DIFFERENCE`` of the output scale), else the layer where they
first part is named.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from litesweep.objectives.compat import keras

import numpy as np

from litesweep.objectives.errors import ModelError

__all__ = ["MAX_DIFFERENCE", "Conversion", "convert_file", "first_difference", "keras3_version", "rebuild", "saved_version", "verify"]

#: Largest max |tf_keras - Keras 3| output difference accepted, relative to the Keras 3 outputs' largest magnitude.
MAX_DIFFERENCE = 1e-5
#: Config classes that are graphs, not layers: rebuilt from their own layers.
_GRAPHS = ("Functional", "Sequential", "Model")
#: Keyword arguments tf_keras' base Layer takes besides each class's own.
_BASE_KWARGS = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape", "batch_size", "weights",
                "activity_regularizer", "autocast", "implementation"}


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A Keras 3 model rebuilt with tf_keras: the Keras version that saved it, and the check of its outputs.

    Attributes:
        source_keras: the Keras version the file records (``3.x``).
        max_difference: max |tf_keras - Keras 3| over the check inputs' outputs, relative to the outputs' scale.
        samples: how many inputs were compared.
    """

    source_keras: str
    max_difference: float
    samples: int


def saved_version(path: Path) -> str | None:
    """The Keras version a ``.keras`` or ``.h5`` file records (None when it records none or is unreadable)."""
    saved = _saved(path)
    version = saved.get("keras_version") if saved else None
    return version if isinstance(version, str) else None


def keras3_version(path: Path) -> str | None:
    """The Keras 3 version a ``.keras`` or ``.h5`` file records, or None (another version, or no record)."""
    version = saved_version(path)
    return version if version and version.startswith("3.") else None


def _saved(path: Path) -> dict[str, Any] | None:
    """The file's metadata and model config: ``{"keras_version": ..., "config": {...}}`` (None when unreadable)."""
    try:
        if path.suffix == ".keras" and path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                meta = json.loads(archive.read("metadata.json"))
                return {"keras_version": meta.get("keras_version"), "config": json.loads(archive.read("config.json"))}
        if path.suffix == ".h5" and path.is_file():
            import h5py

            with h5py.File(path, "r") as handle:
                version, config = handle.attrs.get("keras_version"), handle.attrs.get("model_config")
            as_text = [v.decode() if isinstance(v, bytes) else v for v in (version, config)]
            return {"keras_version": as_text[0], "config": json.loads(as_text[1]) if as_text[1] else {}}
    except (OSError, KeyError, ValueError):
        return None  # reported by the loader itself
    return None


def convert_file(path: Path, custom_objects: Sequence[str], tf_keras_classes: dict[str, type], trust_code: bool,
                 check_inputs: np.ndarray | None) -> tuple[keras.Model, Conversion]:
    """Load a Keras 3 file and return the equivalent tf_keras model, verified on ``check_inputs``.

    Args:
        path: the ``.keras`` or ``.h5`` file.
        custom_objects: ``model.custom_objects`` entries; their Keras 3 layer classes load the file.
        tf_keras_classes: the tf_keras classes those entries define (``models.import_custom_objects``), by name.
        trust_code: allow Lambda layers (Keras' safe mode off).
        check_inputs: inputs both models must agree on (the user's test split); None: 64 random inputs.

    Raises:
        ModelError: a layer has no tf_keras class, its config or weights do not fit it, or the outputs differ.
    """
    from litesweep.objectives.compat import keras3  # imported only when a Keras 3 file is read
    saved = _saved(path) or {}
    version = str(saved.get("keras_version"))
    where = f"model.path = '{path}' (saved by Keras {version})"
    _check_layers(saved.get("config") or {}, tf_keras_classes, where)
    custom = _keras3_classes(custom_objects)
    try:
        source = keras3.saving.load_model(path, compile=False, safe_mode=not trust_code, custom_objects=custom)
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        lambda_ = "Lambda" in text or "safe_mode" in text
        what = "holds a Lambda layer (arbitrary code), refused" if lambda_ else "cannot be loaded by Keras 3"
        raise ModelError(f"{where} {what} ({type(exc).__name__}: {text}); accepted: a Sequential or Functional model of built-in "
                         "layers (Lambda only with model.trust_code=true)") from exc
    if not isinstance(source, keras3.Sequential) and type(source).__name__ != "Functional":
        raise ModelError(f"{where} is a subclassed model ({type(source).__name__}), which cannot be rebuilt; "
                         "accepted: a Sequential or Functional model")
    model, made = rebuild(source, tf_keras_classes, where)
    if check_inputs is None:
        check_inputs = np.random.default_rng(0).uniform(size=(64, *model.input_shape[1:])).astype("float32")
    difference = verify(source, model, made, check_inputs, where)
    return model, Conversion(version, difference, len(check_inputs))


def _check_layers(config: dict[str, Any], tf_keras_classes: dict[str, type], where: str) -> None:
    """Name the first layer of a saved config that has no tf_keras class, before anything is loaded."""
    for entry in (config.get("config") or {}).get("layers", []):
        kind, name = entry.get("class_name", "?"), entry.get("name") or (entry.get("config") or {}).get("name", "?")
        module = str(entry.get("module") or "")
        if kind in _GRAPHS:
            _check_layers(entry, tf_keras_classes, where)
        elif module.startswith("keras") and ".ops" in module:
            raise ModelError(f"{where}: '{name}' is the operation {module}.{kind}, not a layer, and has no tf_keras equivalent; "
                             "accepted: keras.layers layers (e.g. keras.layers.Add()([x, y]) instead of x + y)")
        elif module and not module.startswith("keras"):
            if kind not in tf_keras_classes:
                raise ModelError(f"{where}: layer '{name}' ({kind}) is a custom layer, and model.custom_objects gives no tf_keras class "
                                 f"'{kind}' for it; accepted: built-in layers, or model.custom_objects naming modules that define "
                                 f"{kind} for Keras 3 and for tf_keras")
        elif not isinstance(getattr(keras.layers, kind, None), type):
            raise ModelError(f"{where}: layer '{name}' ({kind}) has no tf_keras equivalent; accepted: Keras 3 layers tf_keras also "
                             "has (Conv2D, DepthwiseConv2D, Dense, BatchNormalization, Add, pooling...)")


def _keras3_classes(entries: Sequence[str]) -> dict[str, type]:
    """The Keras 3 layer classes the ``model.custom_objects`` entries define (already importable: checked before)."""
    from litesweep.objectives.compat import keras3  # imported only when a Keras 3 file is read
    found: dict[str, type] = {}
    for entry in entries:
        try:
            objects = list(vars(importlib.import_module(entry)).values())
        except ModuleNotFoundError:
            module, _, attribute = entry.rpartition(".")
            objects = [getattr(importlib.import_module(module), attribute)]
        for obj in objects:
            if inspect.isclass(obj) and issubclass(obj, keras3.layers.Layer):
                found[obj.__name__] = obj
                found[keras3.saving.get_registered_name(obj)] = obj
    return found


def rebuild(source: Any, tf_keras_classes: dict[str, type], where: str) -> tuple[keras.Model, dict[int, Any]]:
    """The tf_keras twin of a loaded Keras 3 Functional or Sequential model, and each Keras 3 layer's twin (by ``id``)."""
    made: dict[int, Any] = {}
    return _rebuild(source, tf_keras_classes, made, where), made


def _rebuild(source: Any, tf_keras_classes: dict[str, type], made: dict[int, Any], where: str) -> keras.Model:
    """The tf_keras twin of a Keras 3 Functional or Sequential model: each layer rebuilt, called on the same graph."""
    from litesweep.objectives.compat import keras3  # imported only when a Keras 3 file is read
    graph = source._functional if isinstance(source, keras3.Sequential) else source  # Keras' graph of a Sequential
    if graph is None:
        raise ModelError(f"{where}: Sequential model '{source.name}' has no input shape; accepted: a model built on an Input")
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t._keras_history[0].name) for t in graph.inputs]

    def twin(operation: Any) -> Any:
        if id(operation) not in made:
            made[id(operation)] = _twin(operation, tf_keras_classes, made, where)
        return made[id(operation)]

    outputs = graph._run_through_graph(inputs if len(inputs) > 1 else inputs[0], operation_fn=twin,
                                       call_fn=lambda layer, *args, **kwargs: layer(*args, **kwargs))
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=source.name)
    for layer in graph.layers:
        if not isinstance(layer, keras3.Model) and layer.weights:
            _copy_weights(layer, made[id(layer)], where)
    return model


def _twin(layer: Any, tf_keras_classes: dict[str, type], made: dict[int, Any], where: str) -> Any:
    """The tf_keras layer rebuilt from a Keras 3 layer's config (a nested model: its own rebuild)."""
    from litesweep.objectives.compat import keras3  # imported only when a Keras 3 file is read
    kind = type(layer).__name__
    if isinstance(layer, keras3.Model):
        return _rebuild(layer, tf_keras_classes, made, where)
    cls: Any = tf_keras_classes.get(kind) if kind in tf_keras_classes else getattr(keras.layers, kind, None)
    if not inspect.isclass(cls) or not isinstance(layer, keras3.layers.Layer):
        raise ModelError(f"{where}: '{layer.name}' ({kind}) has no tf_keras equivalent; accepted: keras.layers layers tf_keras also has")
    try:
        built: Any = cls  # a tf_keras Layer class (mypy sees a bare type)
        return built.from_config(_tf_keras_config(layer.get_config(), cls, f"layer '{layer.name}' ({kind})", where))
    except ModelError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())[:160]
        raise ModelError(f"{where}: layer '{layer.name}' ({kind}) cannot be rebuilt with tf_keras from its config "
                         f"({type(exc).__name__}: {text}); accepted: settings tf_keras' {kind} also takes") from exc


def _accepted(cls: type) -> set[str]:
    """Keyword arguments a tf_keras class takes: its own ``__init__``'s and its bases' up to ``Layer``."""
    names = set(_BASE_KWARGS)
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values() if p.kind is not p.VAR_KEYWORD}
    return names


def _tf_keras_config(config: dict[str, Any], cls: type, what: str, where: str) -> dict[str, Any]:
    """A Keras 3 config as tf_keras' ``cls`` takes it: Keras 3-only settings dropped when unused, refused when set."""
    out: dict[str, Any] = {}
    accepted = _accepted(cls)
    for key, value in config.items():
        if key not in accepted:
            if value in (None, False, 0, "", [], {}):
                continue  # a Keras 3 option left at its default (quantization_config, lora_rank...)
            raise ModelError(f"{where}: {what} sets {key} = {value!r}, which tf_keras' {cls.__name__} lacks; "
                             f"accepted: {key} left unset")
        out[key] = _tf_keras_value(value, what, where)
    return out


_NAMESPACES = {"keras.initializers": "initializers", "keras.regularizers": "regularizers", "keras.constraints": "constraints"}


def _tf_keras_value(value: Any, what: str, where: str) -> Any:
    """A serialized Keras 3 object (dtype policy, initializer...) as tf_keras reads it."""
    if not isinstance(value, dict) or "class_name" not in value or "module" not in value:
        return value
    inner = value.get("config") or {}
    if value["class_name"] in ("DTypePolicy", "FloatDTypePolicy"):
        return inner.get("name", "float32")
    namespace = _NAMESPACES.get(str(value["module"]))
    cls = getattr(getattr(keras, namespace), value["class_name"], None) if namespace else None
    if not isinstance(cls, type):
        raise ModelError(f"{where}: {what} uses {value['module']}.{value['class_name']}, which tf_keras lacks; "
                         "accepted: built-in initializers, regularizers and constraints")
    return {"class_name": value["class_name"], "config": _tf_keras_config(inner, cls, what, where)}


def _copy_weights(source: Any, target: Any, where: str) -> None:
    """Give the tf_keras layer the Keras 3 layer's weights, matched by name (else in order), shapes checked."""
    weights = [w for w in source.weights if "seed_generator" not in w.path]  # random state: not a weight
    names = [w.name for w in weights]
    targets = {v.name.split("/")[-1].split(":")[0]: v for v in target.weights}
    ordered = [targets[n] for n in names] if set(names) == set(targets) else list(target.weights)
    shapes = [tuple(w.shape) for w in weights]
    if [tuple(v.shape) for v in ordered] != shapes:
        raise ModelError(f"{where}: layer '{source.name}' ({type(source).__name__}) has weights {shapes} in Keras 3 but "
                         f"{[tuple(v.shape) for v in ordered]} in tf_keras; accepted: layers whose weights tf_keras stores alike")
    for variable, weight in zip(ordered, weights, strict=True):
        variable.assign(np.asarray(weight.numpy()))


def _relative(reference: np.ndarray, outputs: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(reference))), 1e-6)
    return float(np.max(np.abs(outputs.astype(np.float64) - reference))) / scale


def verify(source: Any, model: keras.Model, made: dict[int, Any], x: np.ndarray, where: str) -> float:
    """Max relative output difference of the two models on ``x``; over ``MAX_DIFFERENCE`` names the first layer that parts."""
    reference = np.asarray(source.predict(x, batch_size=256, verbose=0))
    difference = _relative(reference, np.asarray(model.predict(x, batch_size=256, verbose=0)))
    if difference <= MAX_DIFFERENCE:
        return difference
    layer, at = first_difference(source, model, made, x)
    raise ModelError(f"{where}: the tf_keras rebuild's outputs differ from Keras 3's by {difference:.2e} of their scale "
                     f"(first at layer '{layer}', {at:.2e}); accepted: at most {MAX_DIFFERENCE:.0e}")


def first_difference(source: Any, model: keras.Model, made: dict[int, Any], x: np.ndarray) -> tuple[str, float]:
    """The first layer (in graph order) whose tf_keras outputs differ from Keras 3's by over ``MAX_DIFFERENCE``, and by how much."""
    from litesweep.objectives.compat import keras3  # imported only when a Keras 3 file is read
    graph = source._functional if isinstance(source, keras3.Sequential) else source
    layers = [layer for layer in graph.layers if id(layer) in made and type(layer).__name__ != "InputLayer"]
    tapped = [layer for layer in layers if made[id(layer)] in model.layers]
    ours = keras3.Model(graph.inputs, [layer.output for layer in tapped]).predict(x, verbose=0)
    theirs = keras.Model(model.inputs, [made[id(layer)].output for layer in tapped]).predict(x, verbose=0)
    if len(tapped) == 1:
        ours, theirs = [ours], [theirs]
    for layer, a, b in zip(tapped, ours, theirs, strict=True):
        difference = _relative(np.asarray(a), np.asarray(b))
        if difference > MAX_DIFFERENCE:
            return layer.name, difference
    return model.layers[-1].name, _relative(np.asarray(source.predict(x, verbose=0)), np.asarray(model.predict(x, verbose=0)))
