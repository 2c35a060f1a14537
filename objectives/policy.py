"""What a trial does to the model: a ``Policy`` of per-layer settings, a method and distillation.

Plain dataclasses with a JSON round-trip: ``policy.json`` is enough to rebuild a compressed model.
No TensorFlow here, so policies can be validated before anything heavy is imported.

Methods:
    ``qat``: fine-tune (width, pruning, clustering, distillation), then per-layer n-bit QAT.
    ``ptq``: no training; per-layer post-training recipes (ai-edge-quantizer) on the float ``.tflite``.
    ``mixed``: fine-tune in float (width, pruning, clustering, distillation), then post-training recipes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from litesweep.objectives.errors import ConfigError

METHODS: tuple[str, ...] = ("qat", "ptq", "mixed")
#: Every technique a search space may use: distillation acts on the whole model, the others per layer.
TECHNIQUES: tuple[str, ...] = ("quantize", "prune", "cluster", "distill", "width")
#: The per-layer techniques; ``objectives.inventory.SUPPORTED_LAYERS`` says which layer class takes which.
LAYER_TECHNIQUES: tuple[str, ...] = tuple(t for t in TECHNIQUES if t != "distill")
#: Weight bit widths: 2/4/8 integer, 16 float16 (post-training only), 32 float.
SUPPORTED_WEIGHT_BITS: tuple[int, ...] = (2, 4, 8, 16, 32)
#: Bit widths only post-training recipes give, and why.
POST_TRAINING_ONLY_BITS: dict[int, str] = {2: "QAT stores 2-bit weights as INT4: 4-bit size, 2-bit accuracy", 16: "float16"}
QAT_WEIGHT_BITS: tuple[int, ...] = tuple(b for b in SUPPORTED_WEIGHT_BITS if b not in POST_TRAINING_ONLY_BITS)
#: Activation bits of an integer layer: 8, or 16 (16x8, post-training static only).
ACTIVATION_BITS: tuple[int, ...] = (8, 16)
#: What QAT fake-quantizes every activation to (TF-MOT's n-bit scheme; not a choice).
QAT_ACTIVATION_BITS = 8
#: How a post-training recipe quantizes an integer layer: the values of ``ptq_mode`` and ``space.ptq_modes``.
#: (``techniques.ptq.RECIPE_MODES`` adds the ``float`` and ``fp16`` recipes that bits 32 and 16 map to.)
PTQ_MODES: tuple[str, ...] = ("weight_only", "dynamic", "static")
STRUCTURES: tuple[str, ...] = ("unstructured", "2:4")
FLOAT_BITS = 32
FLOAT16_BITS = 16
MAX_SPARSITY = 0.95
MIN_WIDTH = 0.05


@dataclasses.dataclass(frozen=True)
class LayerPolicy:
    """Compression settings for one layer.

    Attributes:
        bits: weight bit width, one of ``SUPPORTED_WEIGHT_BITS`` (32 = float, 16 = float16).
        act_bits: activation bits of an integer layer: 8, or 16 for 16x8 (post-training static only).
        sparsity: target share of zero weights in ``[0, MAX_SPARSITY]`` (unstructured pruning).
        structure: ``unstructured`` or ``2:4`` (two zeros in every four weights; sparsity is then 0.5).
        clusters: number of weight clusters (weight sharing); 0 = no clustering.
        width: share of the layer's filters/units kept in a narrower student (1.0 = all).
        ptq_mode: how a post-training recipe quantizes an integer layer (``weight_only``, ``dynamic``, ``static``).
    """

    bits: int = FLOAT_BITS
    act_bits: int = 8
    sparsity: float = 0.0
    structure: str = "unstructured"
    clusters: int = 0
    width: float = 1.0
    ptq_mode: str = "dynamic"

    def validate(self, layer: str, method: str = "qat") -> None:
        """Raise ``ConfigError`` naming ``layer`` if a setting is out of range or not possible with ``method``."""
        check_bits(self.bits, f"bits of layer '{layer}'")
        if method == "qat" and self.bits not in QAT_WEIGHT_BITS:
            raise ConfigError(f"bits of layer '{layer}' = {self.bits} ({POST_TRAINING_ONLY_BITS[self.bits]}) needs method ptq or mixed; "
                              f"accepted with qat: {list(QAT_WEIGHT_BITS)}")
        check_choice(self.act_bits, ACTIVATION_BITS, f"act_bits of layer '{layer}'")
        if self.act_bits == 16 and not (method != "qat" and self.bits == 8 and self.ptq_mode == "static"):
            raise ConfigError(f"act_bits of layer '{layer}' = 16 needs bits 8, ptq_mode 'static' and method ptq or mixed (16x8)")
        check_sparsity(self.sparsity, f"sparsity of layer '{layer}'")
        check_choice(self.structure, STRUCTURES, f"structure of layer '{layer}'")
        if self.structure == "2:4" and self.sparsity not in (0.0, 0.5):
            raise ConfigError(f"sparsity of layer '{layer}' = {self.sparsity} conflicts with structure '2:4' (always 0.5)")
        check_clusters(self.clusters, f"clusters of layer '{layer}'")
        check_width(self.width, f"width of layer '{layer}'")
        check_choice(self.ptq_mode, PTQ_MODES, f"ptq_mode of layer '{layer}'")
        if method == "ptq" and (self.pruned or self.clusters or self.width < 1.0):
            raise ConfigError(f"layer '{layer}' asks for pruning, clustering or width with method 'ptq', which does not train; "
                              "use method 'mixed'")

    @property
    def techniques(self) -> tuple[str, ...]:
        """The per-layer techniques (``LAYER_TECHNIQUES``) these settings use."""
        used = {"quantize": self.bits < FLOAT_BITS, "prune": self.pruned, "cluster": bool(self.clusters), "width": self.width < 1.0}
        return tuple(t for t in LAYER_TECHNIQUES if used[t])

    @property
    def pruned(self) -> bool:
        """Whether the layer is pruned (unstructured target > 0, or 2:4)."""
        return self.structure == "2:4" or self.sparsity > 0.0

    @property
    def effective_sparsity(self) -> float:
        """The share of zeros the layer should end with."""
        return 0.5 if self.structure == "2:4" else self.sparsity

    @property
    def integer(self) -> bool:
        """Whether the weights are stored as integers."""
        return self.bits <= 8


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
    """A whole compression policy: one ``LayerPolicy`` per compressible layer, a method, distillation."""

    layers: Mapping[str, LayerPolicy]
    distill: DistillPolicy = DistillPolicy()
    method: str = "qat"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", dict(self.layers))

    def validate(self) -> None:
        """Raise ``ConfigError`` on the first out-of-range setting."""
        check_choice(self.method, METHODS, "policy method")
        for name, layer in self.layers.items():
            layer.validate(name, self.method)
        self.distill.validate()

    @property
    def quantized_layers(self) -> dict[str, int]:
        """Layers whose weights are stored in fewer than 32 bits, with their bit width."""
        return {n: p.bits for n, p in self.layers.items() if p.bits < FLOAT_BITS}

    @property
    def sparse_layers(self) -> dict[str, float]:
        """Layers with unstructured pruning, with their target."""
        return {n: p.sparsity for n, p in self.layers.items() if p.structure == "unstructured" and p.sparsity > 0.0}

    @property
    def structured_layers(self) -> list[str]:
        """Layers with 2:4 sparsity."""
        return [n for n, p in self.layers.items() if p.structure == "2:4"]

    @property
    def clustered_layers(self) -> dict[str, int]:
        """Layers with weight clustering, with their cluster count."""
        return {n: p.clusters for n, p in self.layers.items() if p.clusters}

    @property
    def widths(self) -> dict[str, float]:
        """Layers made narrower, with the share of filters/units kept."""
        return {n: p.width for n, p in self.layers.items() if p.width < 1.0}

    @property
    def needs_training(self) -> bool:
        """Whether the policy fine-tunes (always for ``qat``/``mixed`` when anything changes weights)."""
        if self.method == "ptq":
            return False
        return bool(self.sparse_layers or self.structured_layers or self.clustered_layers or self.widths
                    or (self.method == "qat" and self.quantized_layers))

    def flat_params(self) -> dict[str, Any]:
        """The policy as flat ``name: value`` pairs (MLflow params, tables)."""
        flat: dict[str, Any] = {"method": self.method}
        for name, layer in self.layers.items():
            for field in dataclasses.fields(LayerPolicy):
                value = getattr(layer, field.name)
                flat[f"{field.name}.{name}"] = round(value, 6) if isinstance(value, float) else value
        flat["distill.temperature"] = round(self.distill.temperature, 6)
        flat["distill.weight"] = round(self.distill.weight, 6)
        return flat

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (the content of ``policy.json``)."""
        return {
            "method": self.method,
            "layers": {n: dataclasses.asdict(p) for n, p in self.layers.items()},
            "distill": dataclasses.asdict(self.distill),
        }

    def to_json(self) -> str:
        """Serialise to the ``policy.json`` text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """Rebuild a policy from ``to_dict`` output; unknown keys are errors."""
        unknown = set(data) - {"layers", "distill", "method"}
        if unknown:
            raise ConfigError(f"unknown policy key(s) {sorted(unknown)}; accepted: ['distill', 'layers', 'method']")
        layers = {name: _build(LayerPolicy, spec, f"layer '{name}'") for name, spec in data.get("layers", {}).items()}
        distill = _build(DistillPolicy, data.get("distill", {}), "distill")
        policy = cls(layers=layers, distill=distill, method=data.get("method", "qat"))
        policy.validate()
        return policy

    @classmethod
    def from_json(cls, text: str) -> Policy:
        """Parse ``policy.json`` text."""
        return cls.from_dict(json.loads(text))


def recipe_name(bits: int, ptq_mode: str = "dynamic", act_bits: int = 8) -> str:
    """The post-training recipe of a layer as one word: ``float``, ``fp16``, ``dynamic_w4``, ``static_w8a16``..."""
    if bits == FLOAT_BITS:
        return "float"
    if bits == FLOAT16_BITS:
        return "fp16"
    if ptq_mode == "static":
        return f"static_w{bits}a{act_bits}"
    return f"{ptq_mode}_w{bits}"


def parse_recipe(name: str) -> dict[str, Any]:
    """The ``LayerPolicy`` fields of a recipe word (inverse of ``recipe_name``)."""
    if name == "float":
        return {"bits": FLOAT_BITS}
    if name == "fp16":
        return {"bits": FLOAT16_BITS}
    mode, _, rest = name.rpartition("_w")
    if mode == "static":
        bits, _, act = rest.partition("a")
        return {"bits": int(bits), "ptq_mode": mode, "act_bits": int(act)}
    if mode in PTQ_MODES:
        return {"bits": int(rest), "ptq_mode": mode}
    raise ConfigError(f"post-training recipe {name!r} is unknown; accepted: float, fp16, <mode>_w<bits>, static_w8a<bits>")


def _build(kind: type, spec: Mapping[str, Any], where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(kind)}
    unknown = set(spec) - fields
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; accepted: {sorted(fields)}")
    return kind(**spec)


def check_choice(value: Any, accepted: tuple[Any, ...], what: str) -> None:
    """Raise ``ConfigError`` unless ``value`` is one of ``accepted``."""
    if isinstance(value, bool) or value not in accepted:
        raise ConfigError(f"{what} = {value!r} is not supported; accepted: {list(accepted)}")


def check_bits(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``value`` is a supported weight bit width."""
    if isinstance(value, bool) or value not in SUPPORTED_WEIGHT_BITS:
        raise ConfigError(f"{what} = {value!r} is not supported; accepted bit widths: {list(SUPPORTED_WEIGHT_BITS)}")


def check_sparsity(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``0 <= value <= MAX_SPARSITY``."""
    if not isinstance(value, (int, float)) or not 0.0 <= value <= MAX_SPARSITY:
        raise ConfigError(f"{what} = {value!r} is out of range; accepted: 0.0 <= sparsity <= {MAX_SPARSITY}")


def check_width(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``MIN_WIDTH <= value <= 1``."""
    if not isinstance(value, (int, float)) or not MIN_WIDTH <= value <= 1.0:
        raise ConfigError(f"{what} = {value!r} is out of range; accepted: {MIN_WIDTH} <= width <= 1.0")


def check_clusters(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``value`` is 0 (off) or at least 2."""
    if isinstance(value, bool) or not isinstance(value, int) or (value != 0 and value < 2):
        raise ConfigError(f"{what} = {value!r} is not accepted; accepted: 0 (no clustering) or an integer >= 2")


def check_temperature(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``value > 0``."""
    if not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{what} = {value!r} is not accepted; accepted: a positive number (> 0)")


def check_unit_interval(value: Any, what: str) -> None:
    """Raise ``ConfigError`` unless ``0 <= value <= 1``."""
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{what} = {value!r} is out of range; accepted: 0.0 <= value <= 1.0")
