"""The search space: generated from the space config and the model's compressible layers; samples ``Policy``.

Each *unit* is a layer, or a group of layers matched by a name pattern (``space.groups``) that shares
one set of parameters. Parameter names are ``<setting>.<unit>`` (``bits.conv1``, ``sparsity.dense``,
``distill.temperature``) in Optuna and in the MLflow params.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.policy import DistillPolicy, LayerPolicy, Policy, parse_recipe, recipe_name


@dataclasses.dataclass(frozen=True)
class FloatRange:
    """A float range; ``low == high`` is a constant and samples nothing."""

    low: float
    high: float
    step: float | None = None
    log: bool = False

    @classmethod
    def from_config(cls, node: Any) -> FloatRange:
        """From a ``{low, high, step, log}`` mapping (typed or plain)."""
        step = node.get("step")
        return cls(float(node["low"]), float(node["high"]), None if step is None else float(step), bool(node.get("log", False)))

    def sample(self, trial: optuna.Trial, name: str) -> float:
        """Suggest a value, or return the constant."""
        if self.low == self.high:
            return self.low
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


def _categorical(trial: optuna.Trial, name: str, choices: Sequence[Any]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


@dataclasses.dataclass(frozen=True)
class UnitSpace:
    """The choices for one layer or one group of layers."""

    name: str
    layers: tuple[str, ...]
    bits: tuple[int, ...]
    act_bits: tuple[int, ...] = (8,)
    ptq_modes: tuple[str, ...] = ("dynamic",)
    sparsity: FloatRange = FloatRange(0.0, 0.0)
    structures: tuple[str, ...] = ("unstructured",)
    clusters: tuple[int, ...] = (0,)
    width: FloatRange = FloatRange(1.0, 1.0)
    recipes: tuple[str, ...] = ()  # post-training recipes (ptq/mixed), e.g. ("float", "dynamic_w4", "static_w8a16")

    def sample(self, trial: optuna.Trial, method: str) -> LayerPolicy:
        """Suggest this unit's settings.

        With ``qat`` the weight bits are one parameter; with ``ptq``/``mixed`` one ``recipe`` parameter
        chooses bits, mode and activation bits together among the combinations the layer's op accepts.
        """
        n = self.name
        if method == "qat":
            quant: dict[str, Any] = {"bits": int(_categorical(trial, f"bits.{n}", self.bits))}
        else:
            quant = parse_recipe(_categorical(trial, f"recipe.{n}", self.recipes))
        structure = _categorical(trial, f"structure.{n}", self.structures)
        sparsity = 0.0 if structure == "2:4" else self.sparsity.sample(trial, f"sparsity.{n}")
        clusters = int(_categorical(trial, f"clusters.{n}", self.clusters))
        width = self.width.sample(trial, f"width.{n}")
        return LayerPolicy(sparsity=sparsity, structure=structure, clusters=clusters, width=width, **quant)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """One unit per compressible layer or group, distillation and the method."""

    method: str
    units: tuple[UnitSpace, ...]
    temperature: FloatRange
    distill_weight: FloatRange

    @property
    def layer_names(self) -> list[str]:
        """Every layer the space covers, in model order of the units."""
        return [layer for unit in self.units for layer in unit.layers]

    @classmethod
    def from_config(
        cls,
        space: Any,
        layer_names: Sequence[str],
        *,
        no_2_by_4: Sequence[str] = (),
        full_width: Sequence[str] = (),
        unprunable: Sequence[str] = (),
        ptq_support: Mapping[str, set[str]] | None = None,
    ) -> SearchSpace:
        """Expand the space config over the model's layers.

        Args:
            space: the ``space`` config node.
            layer_names: compressible layers of the model, in order.
            no_2_by_4: layers whose kernel cannot hold 2:4 sparsity (input axis not a multiple of 4).
            full_width: layers that must keep all their units (the output layer, depthwise layers).
            unprunable: layers pruning does not reach (depthwise layers): sparsity stays 0.
            ptq_support: recipes each layer's op accepts (``ptq``/``mixed``); others are left out.

        Raises:
            ConfigError: a group pattern matches no layer, a layer is in two groups, or an override
                names neither a layer nor a group.
        """
        techniques = set(space.techniques)
        groups, owner = match_groups(space.groups or {}, layer_names)
        unit_names: list[tuple[str, tuple[str, ...]]] = []
        for name in layer_names:
            if name not in owner:
                unit_names.append((name, (name,)))
            elif owner[name] not in [u for u, _ in unit_names]:
                unit_names.append((owner[name], tuple(groups[owner[name]])))
        unknown = sorted(set(space.layers) - {u for u, _ in unit_names})
        if unknown:
            accepted = [u for u, _ in unit_names]
            raise ConfigError(f"space.layers names {unknown}, which the model does not have; accepted: {accepted}")
        units = [cls._unit(space, name, members, techniques, no_2_by_4, full_width, unprunable) for name, members in unit_names]
        if space.method != "qat":
            units = [cls._with_recipes(unit, ptq_support) for unit in units]
        distill = "distill" in techniques
        return cls(
            method=str(space.method),
            units=tuple(units),
            temperature=FloatRange.from_config(space.distill.temperature) if distill else FloatRange(1.0, 1.0),
            distill_weight=FloatRange.from_config(space.distill.weight) if distill else FloatRange(0.0, 0.0),
        )

    @staticmethod
    def _unit(space: Any, name: str, members: tuple[str, ...], techniques: set[str],
              no_2_by_4: Sequence[str], full_width: Sequence[str], unprunable: Sequence[str] = ()) -> UnitSpace:
        override: Mapping[str, Any] = space.layers.get(name) or {}

        def pick(key: str) -> Any:
            value = override.get(key)
            return space[key] if value is None else value

        bits = tuple(int(b) for b in pick("bits")) if "quantize" in techniques else (32,)
        prune = "prune" in techniques and not any(m in unprunable for m in members)
        structures = tuple(pick("structures")) if prune else ("unstructured",)
        if any(m in no_2_by_4 for m in members):
            structures = tuple(s for s in structures if s != "2:4") or ("unstructured",)
        width = FloatRange.from_config(pick("width")) if "width" in techniques else FloatRange(1.0, 1.0)
        if any(m in full_width for m in members):
            width = FloatRange(1.0, 1.0)
        return UnitSpace(
            name=name,
            layers=members,
            bits=bits,
            act_bits=tuple(int(b) for b in pick("act_bits")),
            ptq_modes=tuple(pick("ptq_modes")),
            sparsity=FloatRange.from_config(pick("sparsity")) if prune else FloatRange(0.0, 0.0),
            structures=structures,
            clusters=tuple(int(k) for k in pick("clusters")) if "cluster" in techniques else (0,),
            width=width,
        )

    @staticmethod
    def _with_recipes(unit: UnitSpace, support: Mapping[str, set[str]] | None) -> UnitSpace:
        wanted = []
        for bits in unit.bits:
            if bits >= 16:
                wanted.append(recipe_name(bits))
                continue
            for mode in unit.ptq_modes:
                for act in unit.act_bits if mode == "static" else (8,):
                    wanted.append(recipe_name(bits, mode, act))
        accepted = set.intersection(*(set(support[layer]) for layer in unit.layers)) if support else set(wanted)
        recipes = tuple(r for r in wanted if r in accepted)
        if not recipes:
            raise ConfigError(f"no post-training recipe of space {wanted} fits '{unit.name}'; accepted there: {sorted(accepted)}")
        return dataclasses.replace(unit, recipes=recipes)

    def sample(self, trial: optuna.Trial) -> Policy:
        """Suggest every parameter of one trial and return the policy they make."""
        layers: dict[str, LayerPolicy] = {}
        for unit in self.units:
            setting = unit.sample(trial, self.method)
            for layer in unit.layers:
                layers[layer] = setting
        weight = self.distill_weight.sample(trial, "distill.weight")
        temperature = self.temperature.sample(trial, "distill.temperature")
        return Policy(layers, DistillPolicy(temperature=temperature, weight=weight), method=self.method)

    def twin_params(self, preset: str, narrow: bool = False) -> dict[str, Any]:
        """The parameters of the point nearest an integer preset (``dynamic_int8`` or ``full_int8``).

        Weights as near 8 bits as the space allows (``qat``), or the preset's own recipe (``ptq``/``mixed``:
        static or dynamic int8), with no pruning or clustering and full width (``narrow``: the narrowest
        width); distillation at the middle of its ranges. Only parameters the space really samples are given.
        """
        params: dict[str, Any] = {}
        wanted = recipe_name(8, "static" if preset == "full_int8" else "dynamic", 8)
        for unit in self.units:
            n = unit.name
            if self.method == "qat" and len(unit.bits) > 1:
                params[f"bits.{n}"] = min(unit.bits, key=lambda b: (abs(b - 8), -b))
            if self.method != "qat" and len(unit.recipes) > 1:
                eight_bit = [r for r in unit.recipes if parse_recipe(r)["bits"] == 8]
                params[f"recipe.{n}"] = wanted if wanted in unit.recipes else (eight_bit or list(unit.recipes))[0]
            if len(unit.structures) > 1:
                params[f"structure.{n}"] = "unstructured" if "unstructured" in unit.structures else unit.structures[0]
            if unit.sparsity.low != unit.sparsity.high:
                params[f"sparsity.{n}"] = unit.sparsity.low
            if len(unit.clusters) > 1:
                params[f"clusters.{n}"] = 0 if 0 in unit.clusters else max(unit.clusters)
            if unit.width.low != unit.width.high:
                params[f"width.{n}"] = unit.width.low if narrow else unit.width.high
        for name, interval in (("distill.weight", self.distill_weight), ("distill.temperature", self.temperature)):
            if interval.low != interval.high:
                params[name] = (interval.low + interval.high) / 2 if interval.step is None else interval.low
        return params

    def restrict(self, unit: str, **changes: Any) -> SearchSpace:
        """A copy where one unit's choices are replaced (used by the sensitivity pass to narrow the space)."""
        units = tuple(dataclasses.replace(u, **changes) if u.name == unit else u for u in self.units)
        return dataclasses.replace(self, units=units)

    def to_dict(self) -> dict[str, Any]:
        """The expanded space (logged as ``search_space.json``)."""
        return {
            "method": self.method,
            "units": {u.name: dataclasses.asdict(u) for u in self.units},
            "distill": {"temperature": dataclasses.asdict(self.temperature), "weight": dataclasses.asdict(self.distill_weight)},
        }


def match_groups(patterns: Mapping[str, str], layer_names: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Layers of each group (``space.groups``: name -> full-match pattern), and each grouped layer's group.

    Needs only layer names, so it runs on the untrained model, before any training or store.

    Raises:
        ConfigError: a pattern matches no layer, or a layer is matched by two groups.
    """
    groups: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for group, pattern in patterns.items():
        members = [name for name in layer_names if re.fullmatch(pattern, name)]
        if not members:
            raise ConfigError(f"space.groups.{group} = {pattern!r} matches no layer; accepted layer names: {list(layer_names)}")
        for name in members:
            if name in owner:
                raise ConfigError(f"layer '{name}' is matched by space.groups.{owner[name]} and space.groups.{group}; "
                                  "accepted: one group a layer")
            owner[name] = group
        groups[group] = members
    return groups, owner
