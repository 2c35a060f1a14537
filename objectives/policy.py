"""What a trial does to the model: a ``Policy`` of per-layer settings plus distillation.

Plain dataclasses with a JSON round-trip: ``policy.json`` is enough to rebuild a compressed model.
No TensorFlow here, so policies can be validated before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from objectives.errors import ConfigError

#: Weight bit widths a layer may get. 32 means "leave float"; 2..8 go through n-bit QAT
#: (TFLite has no 2-bit packing for QAT output, so 2-bit weights are stored as INT4).
SUPPORTED_WEIGHT_BITS: tuple[int, ...] = (2, 4, 8, 32)
FLOAT_BITS = 32
MAX_SPARSITY = 0.95


@dataclasses.dataclass(frozen=True)
class LayerPolicy:
    """Compression settings for one layer.

    Attributes:
        bits: weight bit width, one of ``SUPPORTED_WEIGHT_BITS`` (32 = float).
        sparsity: target share of zero weights in ``[0, MAX_SPARSITY]``.
    """

    bits: int = FLOAT_BITS
    sparsity: float = 0.0

    def validate(self, layer: str) -> None:
        """Raise ``ConfigError`` naming ``layer`` if a setting is out of range."""
        check_bits(self.bits, f"bits of layer '{layer}'")
        check_sparsity(self.sparsity, f"sparsity of layer '{layer}'")


@dataclasses.dataclass(frozen=True)
class DistillPolicy:
    """Knowledge distillation from the float base model during fine-tuning.

    Attributes:
        temperature: softmax temperature (> 0) applied to teacher and student logits.
        weight: share of the distillation loss in ``[0, 1]``; the rest is cross-entropy on labels.
    """

    temperature: float = 1.0
    weight: float = 0.0

    def validate(self) -> None:
        """Raise ``ConfigError`` if the temperature or weight is out of range."""
        check_temperature(self.temperature, "distill temperature")
        check_unit_interval(self.weight, "distill weight")


@dataclasses.dataclass(frozen=True)
class Policy:
    """A whole compression policy: one ``LayerPolicy`` per compressible layer, and distillation."""

    layers: Mapping[str, LayerPolicy]
    distill: DistillPolicy = DistillPolicy()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", dict(self.layers))

    def validate(self) -> None:
        """Raise ``ConfigError`` on the first out-of-range setting."""
        for name, layer in self.layers.items():
            layer.validate(name)
        self.distill.validate()

    @property
    def quantized_layers(self) -> dict[str, int]:
        """Layers whose weights are quantized, with their bit width."""
        return {n: p.bits for n, p in self.layers.items() if p.bits < FLOAT_BITS}

    @property
    def sparse_layers(self) -> dict[str, float]:
        """Layers with a non-zero sparsity target."""
        return {n: p.sparsity for n, p in self.layers.items() if p.sparsity > 0.0}

    @property
    def needs_training(self) -> bool:
        """Whether the policy changes weights (pruning or QAT) and so needs fine-tuning."""
        return bool(self.quantized_layers or self.sparse_layers)

    def flat_params(self) -> dict[str, Any]:
        """The policy as flat ``name: value`` pairs (MLflow params, tables)."""
        flat: dict[str, Any] = {}
        for name, layer in self.layers.items():
            flat[f"bits.{name}"] = layer.bits
            flat[f"sparsity.{name}"] = round(layer.sparsity, 6)
        flat["distill.temperature"] = round(self.distill.temperature, 6)
        flat["distill.weight"] = round(self.distill.weight, 6)
        return flat

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (the content of ``policy.json``)."""
        return {
            "layers": {n: dataclasses.asdict(p) for n, p in self.layers.items()},
            "distill": dataclasses.asdict(self.distill),
        }

    def to_json(self) -> str:
        """Serialise to the ``policy.json`` text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """Rebuild a policy from ``to_dict`` output; unknown keys are errors."""
        unknown = set(data) - {"layers", "distill"}
        if unknown:
            raise ConfigError(f"unknown policy key(s) {sorted(unknown)}; accepted: ['distill', 'layers']")
        layers = {name: _build(LayerPolicy, spec, f"layer '{name}'") for name, spec in data.get("layers", {}).items()}
        distill = _build(DistillPolicy, data.get("distill", {}), "distill")
        policy = cls(layers=layers, distill=distill)
        policy.validate()
        return policy

    @classmethod
    def from_json(cls, text: str) -> Policy:
        """Parse ``policy.json`` text."""
        return cls.from_dict(json.loads(text))


def _build(kind: type, spec: Mapping[str, Any], where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(kind)}
    unknown = set(spec) - fields
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; accepted: {sorted(fields)}")
    return kind(**spec)


def check_bits(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``value`` is a supported weight bit width."""
    if isinstance(value, bool) or value not in SUPPORTED_WEIGHT_BITS:
        raise ConfigError(f"{what} = {value!r} is not supported; accepted bit widths: {list(SUPPORTED_WEIGHT_BITS)}")


def check_sparsity(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``0 <= value <= MAX_SPARSITY``."""
    if not isinstance(value, (int, float)) or not 0.0 <= value <= MAX_SPARSITY:
        raise ConfigError(f"{what} = {value!r} is out of range; accepted: 0.0 <= sparsity <= {MAX_SPARSITY}")


def check_temperature(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``value > 0``."""
    if not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{what} = {value!r} must be a positive number (> 0)")


def check_unit_interval(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``0 <= value <= 1``."""
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{what} = {value!r} is out of range; accepted: 0.0 <= value <= 1.0")
