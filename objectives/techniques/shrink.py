"""Narrower students: keep each layer's highest-magnitude filters/units (structured pruning).

Unstructured zeros barely speed up the runtime; fewer filters do. The student keeps the teacher's layer
names and model name and is initialised from the teacher's weights, then distilled from it. Works on
Sequential and Functional models (non-shared layers, residual merges, concatenations) through their public
config; a layer that cannot take a narrower tensor gets a clear ``ModelError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from litesweep.objectives.compat import keras

import numpy as np

from litesweep.objectives.errors import ConfigError, ModelError
from litesweep.objectives.inventory import require

L = keras.layers
#: Layers whose output filters/units a width multiplier cuts (exact classes: a subclass may lay out its kernel otherwise).
_PRODUCERS = (L.Conv2D, L.Dense)
#: Layers that leave the channels of their input as they are.
_PASS_THROUGH = (
    L.MaxPooling2D, L.AveragePooling2D, L.GlobalAveragePooling2D, L.GlobalMaxPooling2D, L.Activation, L.ReLU,
    L.LeakyReLU, L.ELU, L.Softmax, L.Dropout, L.SpatialDropout2D, L.ZeroPadding2D, L.Cropping2D, L.UpSampling2D,
)
#: Elementwise merges: every input must keep the same channels.
_MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)

def keep_count(total: int, width: float) -> int:
    """How many of ``total`` filters a width multiplier keeps (at least one)."""
    return max(1, round(total * width))


def _importance(kernel: np.ndarray) -> np.ndarray:
    """L1 norm of each output filter/unit (the kernel's last axis)."""
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def _functional(model: keras.Model) -> keras.Model:
    """The model as a functional graph (a Sequential model's ``get_config`` lists no inbound nodes)."""
    if isinstance(model, keras.Sequential):
        if not model.inputs:
            raise ModelError(f"width multipliers need a built model; Sequential model '{model.name}' has no input shape; "
                             "accepted: a model built with an Input")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


def _inbound(node: Any) -> list[str]:
    """Names of the layers an ``inbound_nodes`` entry reads, in order (``[name, node, tensor, kwargs]`` items)."""
    if isinstance(node, dict):
        return [name for value in node.values() for name in _inbound(value)]
    if isinstance(node, list):
        if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int) and isinstance(node[2], int):
            return [node[0], *_inbound(node[3:])]
        return [name for item in node for name in _inbound(item)]
    return []


def _follows(layer: keras.layers.Layer) -> bool:
    """Whether the layer's output channels are its input's, in order (so it belongs to the producer before it)."""
    kind = type(layer)
    if kind is L.BatchNormalization:
        return list(layer.axis) == [len(layer.input_shape) - 1]
    if kind is L.Flatten:
        return bool(layer.data_format == "channels_last")
    if kind is L.DepthwiseConv2D:
        return bool(layer.depth_multiplier == 1)
    return kind in _PASS_THROUGH


def _graph(model: keras.Model) -> tuple[keras.Model, dict[str, Any], dict[str, list[str]], dict[str, keras.layers.Layer]]:
    """The functional graph, its config, each layer's input layer names and each layer, in topological order."""
    graph = _functional(model)
    try:
        config = graph.get_config()
    except NotImplementedError as error:
        raise ModelError(f"width multipliers need a Sequential or Functional model; '{model.name}' is subclassed; "
                         "accepted: a Sequential or Functional model") from error
    inputs: dict[str, list[str]] = {}
    for spec in config["layers"]:
        if len(spec["inbound_nodes"]) > 1:
            raise ModelError(f"width multipliers need non-shared layers; layer '{spec['name']}' is called several times; "
                             "accepted: a model whose layers are each called once")
        inputs[spec["name"]] = _inbound(spec["inbound_nodes"])
    layer_of = {spec["name"]: graph.get_layer(spec["name"]) for spec in config["layers"]}  # topological: listed by depth
    return graph, config, inputs, layer_of


def _coupled(inputs: Mapping[str, list[str]], layer_of: Mapping[str, keras.layers.Layer]
             ) -> tuple[dict[str, list[str]], dict[str, str | None], Callable[[str], str]]:
    """Groups of producers whose outputs meet at a merge (union-find), keyed by root; each layer's source producer."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    source: dict[str, str | None] = {}  # the producer whose filters a layer's output channels are
    for name, layer in layer_of.items():
        reads = inputs[name]
        if type(layer) in _PRODUCERS:
            parent[name] = source[name] = name
        elif _follows(layer) and reads:
            source[name] = source[reads[0]]
        elif type(layer) in _MERGES:
            roots = list(dict.fromkeys(find(s) for i in reads if (s := source[i]) is not None))
            for root in roots[1:]:
                parent[root] = roots[0]
            source[name] = roots[0] if roots else None
        else:
            source[name] = None
    members: dict[str, list[str]] = {}
    for name in parent:
        members.setdefault(find(name), []).append(name)
    return members, source, find


def shrink(model: keras.Model, widths: Mapping[str, float]) -> keras.Model:
    """A student where each layer in ``widths`` keeps that share of its filters/units.

    Layers whose outputs meet at an elementwise merge (``Add`` of a residual block, ...), directly or
    through pass-through, BatchNormalization or depthwise layers, form one coupled group, since the
    merge needs equal channels; chained residual blocks make one group, stem included. A group shrinks
    when any member is in ``widths``: it takes the width of its first member in model order that has
    one, and all members keep the same filters, the top ones by L1 norm summed over the members'
    (full teacher) kernels. Concatenations offset their inputs' kept channels. Layers after a narrowed
    tensor take the matching slices of their weights.

    Raises:
        ConfigError: a layer in ``widths`` is missing or takes no width (``inventory.SUPPORTED_LAYERS``),
            or its width would narrow the model's output.
        ModelError: a layer cannot pass a narrower tensor through, is shared, or a merge would get inputs
            with different channels (e.g. a ``Concatenate`` or the model input feeding a residual ``Add``).
    """
    if not widths:
        return model
    require(model, "width", widths)
    graph, config, inputs, layer_of = _graph(model)
    members, source, find = _coupled(inputs, layer_of)
    outputs = {find(s): out for out in graph.output_names if (s := source.get(out)) is not None}

    chosen: dict[str, np.ndarray] = {}  # producer -> kept output filters
    for root, names in members.items():
        asked = next((n for n in names if n in widths), None)
        if asked is None:
            continue
        kernels = [layer_of[n].get_weights()[0] for n in names]
        totals = {kernel.shape[-1] for kernel in kernels}
        if len(totals) > 1:
            raise ModelError(f"layers {names} meet at a merge but have different filter counts {sorted(totals)}; "
                             "accepted: merged layers with equal filter counts")
        total = totals.pop()
        keep = keep_count(total, widths[asked])
        if keep >= total:
            continue
        if root in outputs:
            raise ConfigError(f"width of layer '{asked}' = {widths[asked]} would narrow the model output '{outputs[root]}', "
                              "which keeps all its units; accepted: 1.0")
        top = np.sort(np.argsort(-sum(_importance(k) for k in kernels), kind="stable")[:keep])
        chosen.update({n: top for n in names})

    # Follow the kept channels through the graph and slice each layer's weights to match.
    kept: dict[str, np.ndarray | None] = {}  # indices of each output's original last axis still present (None = all)
    new_weights: dict[str, list[np.ndarray]] = {}
    for spec in config["layers"]:
        name = spec["name"]
        layer, ins = layer_of[name], [kept[i] for i in inputs[name]]
        kind, now, weights = type(layer), (ins[0] if ins else None), layer.get_weights()
        kept[name] = now
        if kind in _PRODUCERS:
            out = kept[name] = chosen.get(name)
            if (now is not None or out is not None) and getattr(layer, "groups", 1) != 1:
                raise ModelError(f"width multipliers cannot narrow grouped convolution '{name}'; accepted: groups=1")
            kernel = weights[0] if now is None else np.take(weights[0], now, axis=-2)
            if out is not None:
                kernel = kernel[..., out]
                spec["config"]["filters" if "filters" in spec["config"] else "units"] = len(out)
            weights = [kernel, *[w if out is None else w[out] for w in weights[1:]]]
        elif all(k is None for k in ins):
            pass  # nothing narrowed reaches this layer
        elif kind in _MERGES:
            if now is None or any(k is None or not np.array_equal(k, now) for k in ins):
                raise ModelError(f"width multipliers cannot narrow the inputs of merge layer '{name}' ({kind.__name__}) alike: "
                                 f"inputs {inputs[name]} keep different channels; accepted: merges of layers narrowed together")
        elif kind is L.Concatenate and layer.axis in (-1, len(layer.output_shape) - 1):
            counts = [shape[-1] for shape in layer.input_shape]
            offsets = np.cumsum([0, *counts[:-1]])
            kept[name] = np.concatenate([(np.arange(c) if k is None else k) + o for k, c, o in zip(ins, counts, offsets, strict=True)])
        elif now is None or not _follows(layer):
            raise ModelError(f"width multipliers cannot pass a narrower tensor through layer '{name}' ({kind.__name__}); "
                             "accepted: convolutions, Dense, BatchNormalization, pooling, activations, merges, Flatten")
        elif kind is L.DepthwiseConv2D:
            weights = [np.take(weights[0], now, axis=2), *[w[now] for w in weights[1:]]]
        elif kind is L.BatchNormalization:
            weights = [w[now] for w in weights]
        elif kind is L.Flatten:
            shape = layer.input_shape
            kept[name] = (np.arange(int(np.prod(shape[1:-1])))[:, None] * shape[-1] + now).ravel()
        new_weights[name] = weights
    for out in graph.output_names:
        if kept[out] is not None:
            raise ConfigError(f"the widths {dict(widths)} would narrow the model output '{out}', which keeps all its units; "
                              "accepted: width 1.0 for the layers feeding it")

    for spec in config["layers"]:
        spec.pop("build_config", None)  # built for the teacher's shapes; the student's layers build on first call
    config["name"] = model.name
    student = keras.Model.from_config(config, custom_objects={type(layer).__name__: type(layer) for layer in graph.layers})
    for name, weights in new_weights.items():
        student.get_layer(name).set_weights(weights)
    return student


def narrowable(model: keras.Model, candidates: list[str]) -> list[str]:
    """Those of ``candidates`` whose width the search should sample: one per coupled group (its first member,
    whose width the group takes; a group feeding the output or with a member outside ``candidates`` keeps its
    width), whose student at half width builds (a layer on the way may not take fewer channels)."""
    try:
        graph, _, inputs, layer_of = _graph(model)
        members, source, find = _coupled(inputs, layer_of)
        feeds_output = {find(s) for out in graph.output_names if (s := source.get(out)) is not None}
        # A group feeding the output, or holding a layer that keeps its width, keeps it whole.
        leaders = [names[0] for root, names in members.items() if root not in feeds_output and all(n in candidates for n in names)]
    except (ModelError, ConfigError):
        return []
    try:
        shrink(model, dict.fromkeys(leaders, 0.5))
    except (ModelError, ConfigError):  # some group cannot narrow: keep the ones that can, one by one
        leaders = [name for name in leaders if _narrows(model, name)]
    return [name for name in candidates if name in leaders]


def _narrows(model: keras.Model, name: str) -> bool:
    try:
        shrink(model, {name: 0.5})
    except (ModelError, ConfigError):
        return False
    return True
