"""The search space: generated from the space config and the model's compressible layers; samples ``Policy``.

Parameter names are the policy's flat names (``bits.conv1``, ``sparsity.fc1``, ``distill.temperature``),
the same in Optuna, MLflow params and ``policy.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import optuna

from objectives.errors import ConfigError
from objectives.policy import DistillPolicy, LayerPolicy, Policy


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


@dataclasses.dataclass(frozen=True)
class LayerSpace:
    """The choices for one compressible layer."""

    name: str
    bits: tuple[int, ...]
    sparsity: FloatRange


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """One entry per compressible layer, plus distillation."""

    layers: tuple[LayerSpace, ...]
    temperature: FloatRange
    distill_weight: FloatRange

    @classmethod
    def from_config(cls, space: Any, layer_names: Sequence[str]) -> SearchSpace:
        """Expand the space config over ``layer_names``; per-layer overrides must name existing layers.

        Raises:
            ConfigError: an override names a layer the model does not have.
        """
        unknown = sorted(set(space.layers) - set(layer_names))
        if unknown:
            raise ConfigError(f"space.layers names {unknown}, which the model does not have; accepted: {list(layer_names)}")
        layers = []
        for name in layer_names:
            override = space.layers.get(name) or {}
            bits = override.get("bits") or space.bits
            sparsity = override.get("sparsity") or space.sparsity
            layers.append(LayerSpace(name, tuple(int(b) for b in bits), FloatRange.from_config(sparsity)))
        return cls(tuple(layers), FloatRange.from_config(space.distill.temperature), FloatRange.from_config(space.distill.weight))

    def sample(self, trial: optuna.Trial) -> Policy:
        """Suggest every parameter of one trial and return the policy they make."""
        layers = {}
        for layer in self.layers:
            bits = layer.bits[0] if len(layer.bits) == 1 else trial.suggest_categorical(f"bits.{layer.name}", layer.bits)
            layers[layer.name] = LayerPolicy(bits=int(bits), sparsity=layer.sparsity.sample(trial, f"sparsity.{layer.name}"))
        weight = self.distill_weight.sample(trial, "distill.weight")
        temperature = self.temperature.sample(trial, "distill.temperature")
        return Policy(layers, DistillPolicy(temperature=temperature, weight=weight))

    def to_dict(self) -> dict[str, Any]:
        """The expanded space (logged as ``search_space.json``; same shape as ``space.layers`` overrides)."""
        return {
            "layers": {l.name: {"bits": list(l.bits), "sparsity": dataclasses.asdict(l.sparsity)} for l in self.layers},
            "distill": {"temperature": dataclasses.asdict(self.temperature), "weight": dataclasses.asdict(self.distill_weight)},
        }
