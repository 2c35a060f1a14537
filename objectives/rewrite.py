"""Rewrites that make every weight of a real network compressible without changing what it computes.

Real networks (ResNet, MobileNet, Xception) hold most of their weights in layers the techniques cannot
wrap as they are. Before anything else, the base model is put in its *compressible form*:

- ``SeparableConv2D`` is split into a ``DepthwiseConv2D`` (``<name>_depthwise``) and a 1x1 ``Conv2D``
  keeping the layer's name: the two ops the converter emits for it anyway, each wrappable by TF-MOT.
- ``BatchNormalization`` right after a linear Conv2D, DepthwiseConv2D or Dense (its only consumer) is
  folded into that layer's kernel and bias, as TF-MOT's Conv-BN folding does: QAT quantizes the folded
  kernel, the file has no BN ops, and fine-tuning keeps the pretrained statistics (inference mode).
- A BatchNormalization that cannot be folded is frozen: in Keras 2 a non-trainable BN runs in inference
  mode, as QAT of pretrained networks expects.

The rewritten model's outputs are checked against the original's (``compressible_form``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from litesweep.objectives.compat import keras

import numpy as np

from litesweep.objectives.errors import ModelError

#: Layers a BatchNormalization can be folded into (when their activation is linear).
_FOLDS_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")
#: Largest difference between the original and the rewritten model's outputs, relative to their scale.
MAX_RELATIVE_DIFFERENCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Rewrites:
    """What ``compressible_form`` changed: ``folded`` BN name -> the layer it went into; ``split``
    separable layers; ``frozen`` BN layers left in place but in inference mode; ``max_difference``
    between the two models' outputs on the probe inputs, relative to their scale."""

    folded: dict[str, str] = dataclasses.field(default_factory=dict)
    split: list[str] = dataclasses.field(default_factory=list)
    frozen: list[str] = dataclasses.field(default_factory=list)
    max_difference: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.folded or self.split or self.frozen)


def ends_in_softmax(model: keras.Model) -> bool:
    """Whether the model outputs probabilities (a final softmax) rather than logits."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def compressible_form(model: keras.Model, probe: np.ndarray) -> tuple[keras.Model, Rewrites]:
    """The model with separable convolutions split and BatchNormalization folded (or frozen).

    Returns the model itself when there is nothing to rewrite.

    Raises:
        ModelError: the rewritten model's outputs on ``probe`` differ from the original's by more than
            ``MAX_RELATIVE_DIFFERENCE`` of their scale (the layer where it starts is named).
    """
    kinds = {type(layer).__name__ for layer in model.layers}
    if not kinds & {"SeparableConv2D", "BatchNormalization"}:
        return model, Rewrites()
    graph = keras.Model(model.inputs, model.outputs, name=model.name) if isinstance(model, keras.Sequential) else model
    config = copy.deepcopy(graph.get_config())
    weights = {layer.name: layer.get_weights() for layer in graph.layers}
    split = _split_separable(config, weights)
    folded = _fold_batch_norm(config, weights)
    frozen = []
    for entry in config["layers"]:
        if entry["class_name"] == "BatchNormalization":
            entry["config"]["trainable"] = False
            frozen.append(entry["name"])
    rewritten = keras.Model.from_config(config)
    for layer in rewritten.layers:
        layer.set_weights(weights[layer.name])
    difference = _relative_difference(model, rewritten, probe)
    if difference > MAX_RELATIVE_DIFFERENCE:
        raise ModelError(f"rewriting the model (folding {sorted(folded)}, splitting {split}) changed its outputs by "
                         f"{difference:.2e} of their scale; accepted: at most {MAX_RELATIVE_DIFFERENCE:g} "
                         "(report this model: litesweep would compress another network than yours)")
    return rewritten, Rewrites(folded, split, frozen, difference)


def _relative_difference(original: keras.Model, rewritten: keras.Model, probe: np.ndarray) -> float:
    expected = original.predict(probe, batch_size=256, verbose=0)
    got = rewritten.predict(probe, batch_size=256, verbose=0)
    return float(np.max(np.abs(expected - got)) / max(float(np.max(np.abs(expected))), 1e-6))


def _inbound_names(entry: dict[str, Any]) -> list[str]:
    return [ref[0] for node in entry["inbound_nodes"] for ref in node]


def _rename_references(config: dict[str, Any], old: str, new: str) -> None:
    for entry in config["layers"]:
        for node in entry["inbound_nodes"]:
            for ref in node:
                if ref[0] == old:
                    ref[0] = new
    for ref in config["output_layers"]:
        if ref[0] == old:
            ref[0] = new


def _split_separable(config: dict[str, Any], weights: dict[str, list[np.ndarray]]) -> list[str]:
    split = []
    taken = {entry["name"] for entry in config["layers"]}
    layers: list[dict[str, Any]] = []
    for entry in config["layers"]:
        if entry["class_name"] != "SeparableConv2D":
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
            "depth_multiplier": cfg.get("depth_multiplier", 1), "activation": "linear", "use_bias": False}}
        pointwise = {"class_name": "Conv2D", "name": name, "inbound_nodes": [[[depthwise_name, 0, 0, {}]]], "config": {
            "name": name, "trainable": cfg.get("trainable", True), "dtype": cfg.get("dtype", "float32"),
            "filters": cfg["filters"], "kernel_size": (1, 1), "data_format": cfg.get("data_format"),
            "activation": cfg["activation"], "use_bias": cfg["use_bias"]}}
        layers += [depthwise, pointwise]
        depthwise_kernel, pointwise_kernel, *bias = weights.pop(name)
        weights[depthwise_name] = [depthwise_kernel]
        weights[name] = [pointwise_kernel, *bias]
        split.append(name)
    config["layers"] = layers
    return split


def _fold_batch_norm(config: dict[str, Any], weights: dict[str, list[np.ndarray]]) -> dict[str, str]:
    by_name = {entry["name"]: entry for entry in config["layers"]}
    consumers: dict[str, int] = {}
    for entry in config["layers"]:
        for name in _inbound_names(entry):
            consumers[name] = consumers.get(name, 0) + 1
    for ref in config["output_layers"]:
        consumers[ref[0]] = consumers.get(ref[0], 0) + 1
    folded: dict[str, str] = {}
    for entry in list(config["layers"]):
        if entry["class_name"] != "BatchNormalization" or len(entry["inbound_nodes"]) != 1:
            continue
        sources = _inbound_names(entry)
        source = sources[0] if len(sources) == 1 else ""
        producer = by_name.get(source)
        axis = entry["config"].get("axis", -1)
        if (producer is None or producer["class_name"] not in _FOLDS_INTO or consumers.get(source) != 1
                or len(producer["inbound_nodes"]) != 1 or producer["config"].get("activation", "linear") != "linear"
                or axis not in (-1, [-1], 3, [3], 1, [1]) or (axis in (1, [1]) and producer["class_name"] != "Dense")):
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
