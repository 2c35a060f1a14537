"""The ``space`` group's schema and its checks: the choices a search may make for every layer.

Split from ``search/config.py`` (which registers it with the rest of the schema) to keep each file to one concern.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from omegaconf import MISSING

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.policy import (
    ACTIVATION_BITS,
    METHODS,
    POST_TRAINING_ONLY_BITS,
    PTQ_MODES,
    QAT_ACTIVATION_BITS,
    QAT_WEIGHT_BITS,
    STRUCTURES,
    TECHNIQUES,
    check_bits,
    check_choice,
    check_clusters,
    check_sparsity,
    check_temperature,
    check_unit_interval,
    check_width,
)


@dataclasses.dataclass
class RangeConfig:
    """A sampled float range; ``low == high`` fixes the value (no parameter is sampled)."""

    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False


@dataclasses.dataclass
class LayerSpaceConfig:
    """Per-layer (or per-group) override of the space: a missing key keeps the space-wide choice."""

    bits: list[int] | None = None
    act_bits: list[int] | None = None
    ptq_modes: list[str] | None = None
    sparsity: RangeConfig | None = None
    structures: list[str] | None = None
    clusters: list[int] | None = None
    width: RangeConfig | None = None


@dataclasses.dataclass
class DistillSpaceConfig:
    """Distillation temperature and loss weight ranges."""

    temperature: RangeConfig = dataclasses.field(default_factory=lambda: RangeConfig(1.0, 8.0))
    weight: RangeConfig = dataclasses.field(default_factory=lambda: RangeConfig(0.0, 0.9))


@dataclasses.dataclass
class SpaceConfig:
    """The search space: choices for every compressible layer (or group), plus per-layer overrides."""

    name: str = MISSING
    method: str = "qat"
    techniques: list[str] = dataclasses.field(default_factory=lambda: ["quantize", "prune", "distill", "width"])
    bits: list[int] = dataclasses.field(default_factory=lambda: [4, 8, 32])
    act_bits: list[int] = dataclasses.field(default_factory=lambda: [8])
    ptq_modes: list[str] = dataclasses.field(default_factory=lambda: ["dynamic"])
    sparsity: RangeConfig = dataclasses.field(default_factory=lambda: RangeConfig(0.0, 0.9, 0.05))
    structures: list[str] = dataclasses.field(default_factory=lambda: ["unstructured"])
    clusters: list[int] = dataclasses.field(default_factory=lambda: [0])
    width: RangeConfig = dataclasses.field(default_factory=lambda: RangeConfig(0.5, 1.0, 0.25))
    distill: DistillSpaceConfig = dataclasses.field(default_factory=DistillSpaceConfig)
    # group name -> regular expression over layer names; a group shares one set of parameters.
    groups: Any = None
    # layer or group name -> LayerSpaceConfig keys; untyped so `+space.layers.fc1={bits:[8]}` works
    # from the command line; checked by `validate` against LayerSpaceConfig's fields.
    layers: dict[str, Any] = dataclasses.field(default_factory=dict)


def check_list(values: Any, accepted: tuple[Any, ...], key: str) -> None:
    """Raise ``ConfigError`` unless ``values`` is a non-empty list of ``accepted`` entries."""
    if not values:
        raise ConfigError(f"{key} is empty; accepted: a non-empty list from {list(accepted)}")
    for value in values:
        check_choice(value, accepted, f"{key} entry")


def _check_range(rng: Any, key: str, check: Any) -> None:
    if rng.low > rng.high:
        raise ConfigError(f"{key}.low = {rng.low!r} is above {key}.high = {rng.high!r}; accepted: low <= high")
    check(rng.low, f"{key}.low")
    check(rng.high, f"{key}.high")
    if rng.step is not None and rng.step <= 0:
        raise ConfigError(f"{key}.step = {rng.step!r} is not accepted; accepted: a number > 0, or null")


def _check_entry(node: Any, key: str) -> None:
    """Checks shared by the space itself and its per-layer overrides (only keys present are checked)."""
    if node.get("bits") is not None:
        if not node["bits"]:
            raise ConfigError(f"{key}.bits is empty; accepted: a non-empty list of bit widths")
        for b in node["bits"]:
            check_bits(b, f"{key}.bits entry")
    if node.get("act_bits") is not None:
        check_list(node["act_bits"], ACTIVATION_BITS, f"{key}.act_bits")
    if node.get("ptq_modes") is not None:
        check_list(node["ptq_modes"], PTQ_MODES, f"{key}.ptq_modes")
    if node.get("structures") is not None:
        check_list(node["structures"], STRUCTURES, f"{key}.structures")
    if node.get("clusters") is not None:
        if not node["clusters"]:
            raise ConfigError(f"{key}.clusters is empty; accepted: a list of 0 (off) or integers >= 2")
        for k in node["clusters"]:
            check_clusters(k, f"{key}.clusters entry")
    range_keys = {f.name for f in dataclasses.fields(RangeConfig)}
    for name, check in (("sparsity", check_sparsity), ("width", check_width)):
        rng = node.get(name)
        if rng is None:
            continue
        if not hasattr(rng, "items") or set(rng) - range_keys or not {"low", "high"} <= set(rng):
            raise ConfigError(f"{key}.{name} = {rng!r} is not accepted; accepted: {{low, high, step, log}}")
        _check_range(RangeConfig(**rng), f"{key}.{name}", check)


def validate_space(space: Any) -> None:
    """Raise ``ConfigError`` naming the first bad value of the ``space`` node (composed, not yet resolved to objects)."""
    check_choice(space.method, METHODS, "space.method")
    check_list(space.techniques, TECHNIQUES, "space.techniques")
    _check_entry(space, "space")
    layers = [("space", space), *((f"space.layers.{name}", layer) for name, layer in space.layers.items())]
    if space.method == "qat":
        for key, node in layers:
            for bits in node.get("bits") or []:
                if bits in POST_TRAINING_ONLY_BITS:
                    raise ConfigError(f"{key}.bits entry = {bits} ({POST_TRAINING_ONLY_BITS[bits]}) needs space.method ptq or mixed; "
                                      f"accepted with qat: {list(QAT_WEIGHT_BITS)}")
            if 16 in (node.get("act_bits") or []):
                raise ConfigError(f"{key}.act_bits entry = 16 (16x8) needs space.method ptq or mixed; "
                                  f"accepted with qat: [{QAT_ACTIVATION_BITS}]")
    if space.method == "ptq":
        for technique in ("prune", "cluster", "width"):
            if technique in space.techniques:
                raise ConfigError(f"space.techniques entry = '{technique}' needs training; accepted with space.method=ptq: ['quantize']")
    _check_range(space.distill.temperature, "space.distill.temperature", check_temperature)
    _check_range(space.distill.weight, "space.distill.weight", check_unit_interval)
    layer_keys = {f.name for f in dataclasses.fields(LayerSpaceConfig)}
    for name, layer in space.layers.items():
        if not hasattr(layer, "items") or set(layer) - layer_keys:
            raise ConfigError(f"space.layers.{name} = {layer!r} is not accepted; accepted keys: {sorted(layer_keys)}")
        _check_entry(layer, f"space.layers.{name}")
    if space.groups is not None and not hasattr(space.groups, "items"):
        raise ConfigError(f"space.groups = {space.groups!r} is not accepted; accepted: a mapping of group name to regex, or null")
    for group, pattern in (space.groups or {}).items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"space.groups.{group} = {pattern!r} is not a valid regular expression ({exc}); "
                              "accepted: a Python regular expression matched against layer names") from exc
