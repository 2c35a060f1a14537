"""Rewrites that make every weight of a real network compressible without changing what it computes.

Real networks (ResNet, MobileNet, Xception) hold most of their weights in layers the techniques cannot
wrap as they are. Before anything else, the base model is put in its *compressible form*:

- ``SeparableConv2D`` is split into a ``DepthwiseConv2D`` (``<name>_depthwise``) and a 1x1 ``Conv2D``
  keeping the layer's name: the two ops the converter emits for it anyway, each wrappable by TF-MOT.
- ``BatchNormalization`` right after a linear Conv2D, DepthwiseConv2D or Dense (its only consumer) is
  folded into that layer's kernel and bias, as TF-MOT's Conv-BN folding does: QAT quantizes the folded
  kernel, the file has no BN ops, and fine-tuning keeps the pretrained statistics (inference mode).
- A nested model (a pretrained backbone inside the user's model) is replaced by its layers first.
- A BatchNormalization that cannot be folded is frozen: in Keras 2 a non-trainable BN runs in inference
  mode, as QAT of pretrained networks expects.

The rewritten model's outputs are checked against the original's (``compressible_form``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

from litesweep.objectives.compat import keras

import numpy as np

from litesweep.objectives.errors import ModelError

#: Layers a BatchNormalization can be folded into (when their activation is linear).
_FOLDS_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")
#: Per-kernel settings a split separable convolution hands to its two halves.
_SETTINGS = ("initializer", "regularizer", "constraint")
#: Largest difference between the original and the rewritten model's outputs, relative to their scale.
MAX_RELATIVE_DIFFERENCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Rewrites:
    """What ``compressible_form`` changed: ``folded`` BN name -> the layer it went into; ``split``
    separable layers; ``frozen`` BN layers left in place but in inference mode; ``max_difference``
    between the two models' outputs on the probe inputs, relative to their scale; ``inlined`` nested models;
    ``skipped``: why the rewritten graph could not be rebuilt (the model is then used as it is)."""

    folded: dict[str, str] = dataclasses.field(default_factory=dict)
    split: list[str] = dataclasses.field(default_factory=list)
    frozen: list[str] = dataclasses.field(default_factory=list)
    max_difference: float = 0.0
    inlined: list[str] = dataclasses.field(default_factory=list)
    skipped: str = ""

    def __bool__(self) -> bool:
        return bool(self.folded or self.split or self.frozen or self.inlined)


def compressible_form(model: keras.Model, probe: np.ndarray) -> tuple[keras.Model, Rewrites]:
    """The model with separable convolutions split and BatchNormalization folded (or frozen).

    Returns the model itself when there is nothing to rewrite, or when the rewritten graph cannot be rebuilt
    (``Rewrites.skipped`` says why; its BatchNorm and separable layers then stay float).

    Raises:
        ModelError: the rewritten model's outputs on ``probe`` differ from the original's by more than
            ``MAX_RELATIVE_DIFFERENCE`` of their scale (the folded and split layers are named).
    """
    kinds = {type(layer).__name__ for layer in model.layers}
    if not kinds & {"SeparableConv2D", "BatchNormalization"} and not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model, Rewrites()
    graph = _functional(model)
    config = copy.deepcopy(graph.get_config())
    layers = {layer.name: layer for layer in graph.layers}
    weights = {name: layer.get_weights() for name, layer in layers.items()}
    inlined = _inline_nested(config, weights, layers)
    split = _split_separable(config, weights)
    folded = _fold_batch_norm(config, weights, layers)
    frozen = []
    for entry in config["layers"]:
        if entry["class_name"] == "BatchNormalization":
            entry["config"]["trainable"] = False
            frozen.append(entry["name"])
    try:
        rewritten = keras.Model.from_config(config)
        for layer in rewritten.layers:
            layer.set_weights(weights[layer.name])
    except Exception as exc:  # noqa: BLE001 - any failure leaves the model as it was, said why
        return model, Rewrites(skipped=f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
    difference = _relative_difference(model, rewritten, probe)
    if difference > MAX_RELATIVE_DIFFERENCE:
        raise ModelError(f"rewriting the model (folding {sorted(folded)}, splitting {split}) changed its outputs by "
                         f"{difference:.2e} of their scale; accepted: at most {MAX_RELATIVE_DIFFERENCE:g} "
                         "(report this model: litesweep would compress another network than yours)")
    return rewritten, Rewrites(folded, split, frozen, difference, inlined)


def _functional(model: keras.Model) -> keras.Model:
    return keras.Model(model.inputs, model.outputs, name=model.name) if isinstance(model, keras.Sequential) else model


def _inline_nested(config: dict[str, Any], weights: dict[str, list[np.ndarray]], layers: dict[str, keras.layers.Layer]) -> list[str]:
    """Replace each nested model called once (a pretrained backbone inside the user's model) by its layers.

    Its inputs are wired to what fed it, its outputs to what read it. A nested model whose layer names clash
    with the outer model's, or that is called several times, stays as it is (its weights left float).
    """
    inlined = []
    for entry in list(config["layers"]):
        nested = layers.get(entry["name"])
        if not isinstance(nested, keras.Model) or len(entry["inbound_nodes"]) != 1:
            continue
        inner_graph = _functional(nested)
        inner = copy.deepcopy(inner_graph.get_config())
        taken = {e["name"] for e in config["layers"]} - {entry["name"]}
        body = [e for e in inner["layers"] if e["class_name"] != "InputLayer"]
        if taken & {e["name"] for e in body} or len(inner["input_layers"]) != len(entry["inbound_nodes"][0]):
            continue
        fed_by = {ref[0]: outer[:3] for ref, outer in zip(inner["input_layers"], entry["inbound_nodes"][0], strict=True)}
        for ref in _refs([e["inbound_nodes"] for e in body]):
            if ref[0] in fed_by:
                ref[:3] = fed_by[ref[0]]
        position = config["layers"].index(entry)
        config["layers"][position:position + 1] = body
        for ref in _all_refs(config):
            if ref[0] == entry["name"]:
                ref[:3] = inner["output_layers"][ref[2]][:3]
        for layer in inner_graph.layers:
            layers[layer.name] = layer
            weights[layer.name] = layer.get_weights()
        inlined.append(entry["name"])
    return inlined


def _relative_difference(original: keras.Model, rewritten: keras.Model, probe: np.ndarray) -> float:
    def outputs(model: keras.Model) -> np.ndarray:  # every output of the model side by side
        found = model.predict(probe, batch_size=256, verbose=0)
        return np.concatenate([o.reshape(len(probe), -1) for o in (found if isinstance(found, list) else [found])], axis=1)

    expected, got = outputs(original), outputs(rewritten)
    return float(np.max(np.abs(expected - got)) / max(float(np.max(np.abs(expected))), 1e-6))


def _refs(value: Any) -> Iterator[list[Any]]:
    """Every ``[layer, node, tensor, ...]`` reference in an ``inbound_nodes`` value, positional or passed as a
    keyword (``a + b`` in Keras 2 is a TFOpLambda whose second input is ``{'y': [b, 0, 0]}``), as mutable lists."""
    if isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
        yield value
        yield from _refs(value[3:])
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _refs(item)


def _all_refs(config: dict[str, Any]) -> Iterator[list[Any]]:
    for entry in config["layers"]:
        yield from _refs(entry["inbound_nodes"])
    yield from _refs(config["output_layers"])


def _inbound_names(entry: dict[str, Any]) -> list[str]:
    return [ref[0] for ref in _refs(entry["inbound_nodes"])]


def _rename_references(config: dict[str, Any], old: str, new: str) -> None:
    for ref in _all_refs(config):
        if ref[0] == old:
            ref[0] = new


def _split_separable(config: dict[str, Any], weights: dict[str, list[np.ndarray]]) -> list[str]:
    split = []
    taken = {entry["name"] for entry in config["layers"]}
    layers: list[dict[str, Any]] = []
    for entry in config["layers"]:
        if entry["class_name"] != "SeparableConv2D" or len(entry["inbound_nodes"]) != 1:  # a shared one stays whole
            layers.append(entry)
            continue
        name, cfg = entry["name"], entry["config"]
        depthwise_name = f"{name}_depthwise"
        if depthwise_name in taken:
            raise ModelError(f"layer '{name}' (SeparableConv2D) cannot be split: the model already has a layer '{depthwise_name}'; "
                             "accepted: a model without that name")
        depthwise = {"class_name": "DepthwiseConv2D", "name": depthwise_name, "inbound_nodes": entry["inbound_nodes"], "config": {
            "name": depthwise_name, "trainable": cfg.get("trainable", True), "dtype": cfg.get("dtype", "float32"),
            "kernel_size": cfg["kernel_size"], "strides": cfg["strides"], "padding": cfg["padding"],
            "data_format": cfg.get("data_format"), "dilation_rate": cfg.get("dilation_rate", (1, 1)),
            "depth_multiplier": cfg.get("depth_multiplier", 1), "activation": "linear", "use_bias": False,
            **{f"depthwise_{k}": cfg[f"depthwise_{k}"] for k in _SETTINGS if cfg.get(f"depthwise_{k}")}}}
        pointwise = {"class_name": "Conv2D", "name": name, "inbound_nodes": [[[depthwise_name, 0, 0, {}]]], "config": {
            "name": name, "trainable": cfg.get("trainable", True), "dtype": cfg.get("dtype", "float32"),
            "filters": cfg["filters"], "kernel_size": (1, 1), "data_format": cfg.get("data_format"),
            "activation": cfg["activation"], "use_bias": cfg["use_bias"],
            **{f"kernel_{k}": cfg[f"pointwise_{k}"] for k in _SETTINGS if cfg.get(f"pointwise_{k}")},
            **{k: cfg[k] for k in (*(f"bias_{k}" for k in _SETTINGS), "activity_regularizer") if cfg.get(k)}}}
        layers += [depthwise, pointwise]
        depthwise_kernel, pointwise_kernel, *bias = weights.pop(name)
        weights[depthwise_name] = [depthwise_kernel]
        weights[name] = [pointwise_kernel, *bias]
        split.append(name)
    config["layers"] = layers
    return split


def _fold_batch_norm(config: dict[str, Any], weights: dict[str, list[np.ndarray]],
                     layers: dict[str, keras.layers.Layer]) -> dict[str, str]:
    by_name = {entry["name"]: entry for entry in config["layers"]}
    consumers: dict[str, int] = {}
    for ref in _all_refs(config):
        consumers[ref[0]] = consumers.get(ref[0], 0) + 1
    folded: dict[str, str] = {}
    for entry in list(config["layers"]):
        if entry["class_name"] != "BatchNormalization" or len(entry["inbound_nodes"]) != 1:
            continue
        sources = [ref[0] for ref in entry["inbound_nodes"][0]]  # positional inputs only
        source = sources[0] if len(sources) == 1 and len(_inbound_names(entry)) == 1 else ""
        producer = by_name.get(source)
        batch_norm = layers[entry["name"]]
        on_channels = list(batch_norm.axis) == [len(batch_norm.input_shape) - 1]  # channels last, as the kernel's last axis
        if (producer is None or producer["class_name"] not in _FOLDS_INTO or consumers.get(source) != 1 or not on_channels
                or len(producer["inbound_nodes"]) != 1 or producer["config"].get("activation", "linear") != "linear"
                or producer["config"].get("data_format") not in (None, "channels_last")):
            continue
        weights[source] = _folded_weights(producer, weights[source], entry["config"], weights[entry["name"]])
        producer["config"]["use_bias"] = True
        producer.pop("build_config", None)
        config["layers"].remove(entry)
        _rename_references(config, entry["name"], source)
        folded[entry["name"]] = source
    return folded


def _folded_weights(producer: dict[str, Any], layer_weights: list[np.ndarray], bn: dict[str, Any],
                    bn_weights: list[np.ndarray]) -> list[np.ndarray]:
    """Kernel and bias of ``producer`` followed by the BN: ``k * s`` and ``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``."""
    kernel, *rest = layer_weights
    channels = int(np.prod(kernel.shape[2:])) if producer["class_name"] == "DepthwiseConv2D" else kernel.shape[-1]
    values = list(bn_weights)
    gamma = values.pop(0) if bn.get("scale", True) else np.ones(channels, "float32")
    beta = values.pop(0) if bn.get("center", True) else np.zeros(channels, "float32")
    mean, variance = values
    scale = gamma / np.sqrt(variance + bn.get("epsilon", 1e-3))
    bias = rest[0] if rest else np.zeros(channels, "float32")
    shaped = scale.reshape(kernel.shape[2:]) if producer["class_name"] == "DepthwiseConv2D" else scale
    return [(kernel * shaped).astype("float32"), ((bias - mean) * scale + beta).astype("float32")]
