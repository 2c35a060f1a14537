"""Typed schemas of every config group, registered in Hydra's ConfigStore.

A misspelt key or a value of the wrong type fails when the config is composed, with the key named.
Value ranges (bit widths, sparsity, temperatures...) are checked by ``validate`` before any store is opened.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from objectives.errors import ConfigError
from objectives.policy import check_bits, check_sparsity, check_temperature, check_unit_interval

SAMPLERS = ("tpe", "nsgaii", "random", "gp")
DIRECTIONS = ("maximize", "minimize")
DATA_SOURCES = ("mnist5k", "digits")
METHODS = ("qat",)


@dataclasses.dataclass
class PathsConfig:
    """Where everything is written; tests point ``output_dir`` at a temporary directory."""

    output_dir: str = "."
    store_dir: str = "${paths.output_dir}/mlruns"
    cache_dir: str = "${paths.output_dir}/.cache/litesweep"


@dataclasses.dataclass
class DataConfig:
    """A packaged dataset and its fixed split."""

    name: str = MISSING
    source: str = MISSING
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    limit: Optional[int] = None


@dataclasses.dataclass
class ModelConfig:
    """The base CNN, trained once and cached."""

    name: str = MISSING
    conv_filters: list[int] = dataclasses.field(default_factory=lambda: [16, 32])
    kernel_size: int = 3
    dense_units: list[int] = dataclasses.field(default_factory=lambda: [64])
    max_epochs: int = 30
    patience: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0


@dataclasses.dataclass
class RangeConfig:
    """A sampled float range; ``low == high`` fixes the value (no parameter is sampled)."""

    low: float = 0.0
    high: float = 0.0
    step: Optional[float] = None
    log: bool = False


@dataclasses.dataclass
class LayerSpaceConfig:
    """Per-layer override of the space: ``null`` keeps the space-wide choice."""

    bits: Optional[list[int]] = None
    sparsity: Optional[RangeConfig] = None


@dataclasses.dataclass
class DistillSpaceConfig:
    """Distillation temperature and loss weight ranges."""

    temperature: RangeConfig = dataclasses.field(default_factory=lambda: RangeConfig(1.0, 8.0))
    weight: RangeConfig = dataclasses.field(default_factory=lambda: RangeConfig(0.0, 0.9))


@dataclasses.dataclass
class SpaceConfig:
    """The search space: choices for every compressible layer, plus per-layer overrides by layer name."""

    name: str = MISSING
    method: str = "qat"
    bits: list[int] = dataclasses.field(default_factory=lambda: [4, 8, 32])
    sparsity: RangeConfig = dataclasses.field(default_factory=lambda: RangeConfig(0.0, 0.9, 0.05))
    distill: DistillSpaceConfig = dataclasses.field(default_factory=DistillSpaceConfig)
    # layer name -> {bits: [...], sparsity: {low, high, step}}; untyped so `+space.layers.fc1={bits:[8]}` works
    # from the command line; checked by `validate` against LayerSpaceConfig's fields.
    layers: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FineTuneConfig:
    """How each trial fine-tunes (pruning epochs, then QAT epochs)."""

    prune_epochs: int = 2
    qat_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4


@dataclasses.dataclass
class LatencyConfig:
    """The latency protocol (single-sample invocations, median after warm-up)."""

    backend: str = "local"
    threads: int = 1
    warmup: int = 10
    min_runs: int = 50
    max_runs: int = 500
    max_seconds: float = 1.0


@dataclasses.dataclass
class StudyConfig:
    """The Optuna study."""

    name: str = MISSING
    n_trials: int = 60
    sampler: str = "tpe"
    seed: int = 0
    objectives: list[str] = dataclasses.field(default_factory=lambda: ["accuracy", "size_bytes", "latency_ms"])
    directions: list[str] = dataclasses.field(default_factory=lambda: ["maximize", "minimize", "minimize"])
    storage: str = "${paths.store_dir}/optuna.journal"
    max_consecutive_failures: int = 5


@dataclasses.dataclass
class TrackingConfig:
    """MLflow: where runs and artifacts go."""

    uri: str = "sqlite:///${paths.store_dir}/mlflow.db"
    artifact_location: str = "${paths.store_dir}/artifacts"
    experiment: str = "${study.name}"


@dataclasses.dataclass
class LitesweepConfig:
    """The whole configuration."""

    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    space: SpaceConfig = dataclasses.field(default_factory=SpaceConfig)
    finetune: FineTuneConfig = dataclasses.field(default_factory=FineTuneConfig)
    latency: LatencyConfig = dataclasses.field(default_factory=LatencyConfig)
    study: StudyConfig = dataclasses.field(default_factory=StudyConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    progress: bool = True


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can use ``litesweep_schema`` as its base."""
    cs = ConfigStore.instance()
    cs.store(name="litesweep_schema", node=LitesweepConfig)


def _check_choice(value: Any, accepted: tuple[str, ...], key: str) -> None:
    if value not in accepted:
        raise ConfigError(f"{key} = {value!r} is not supported; accepted: {list(accepted)}")


def _check_range(rng: Any, key: str, check: Any) -> None:
    if rng.low > rng.high:
        raise ConfigError(f"{key}.low = {rng.low!r} is above {key}.high = {rng.high!r}; accepted: low <= high")
    check(rng.low, f"{key}.low")
    check(rng.high, f"{key}.high")
    if rng.step is not None and rng.step <= 0:
        raise ConfigError(f"{key}.step = {rng.step!r} must be > 0 (or null)")


def validate(cfg: Any) -> None:
    """Check every value range of a composed config; raise ``ConfigError`` naming the first bad value.

    Pure: imports no TensorFlow and touches no store, so bad input fails in well under a second.
    """
    from objectives.metrics import METRIC_NAMES

    _check_choice(cfg.study.sampler, SAMPLERS, "study.sampler")
    _check_choice(cfg.data.source, DATA_SOURCES, "data.source")
    _check_choice(cfg.space.method, METHODS, "space.method")
    _check_choice(cfg.latency.backend, ("local",), "latency.backend")
    if cfg.study.n_trials < 1:
        raise ConfigError(f"study.n_trials = {cfg.study.n_trials!r} must be an integer >= 1")
    if not cfg.study.objectives:
        raise ConfigError("study.objectives is empty; accepted: a list of metric names")
    for metric in cfg.study.objectives:
        _check_choice(metric, METRIC_NAMES, "study.objectives entry")
    for direction in cfg.study.directions:
        _check_choice(direction, DIRECTIONS, "study.directions entry")
    if len(cfg.study.objectives) != len(cfg.study.directions):
        raise ConfigError(
            f"study.objectives has {len(cfg.study.objectives)} entries but study.directions has {len(cfg.study.directions)}; accepted: one direction per objective"
        )
    if len(set(cfg.study.objectives)) != len(cfg.study.objectives):
        raise ConfigError(f"study.objectives = {list(cfg.study.objectives)} repeats a metric; accepted: each metric once")
    if not cfg.space.bits:
        raise ConfigError("space.bits is empty; accepted: a non-empty list of bit widths")
    for b in cfg.space.bits:
        check_bits(b, "space.bits entry")
    _check_range(cfg.space.sparsity, "space.sparsity", check_sparsity)
    _check_range(cfg.space.distill.temperature, "space.distill.temperature", check_temperature)
    _check_range(cfg.space.distill.weight, "space.distill.weight", check_unit_interval)
    layer_keys = {f.name for f in dataclasses.fields(LayerSpaceConfig)}
    range_keys = {f.name for f in dataclasses.fields(RangeConfig)}
    for name, layer in cfg.space.layers.items():
        if not hasattr(layer, "items") or set(layer) - layer_keys:
            raise ConfigError(f"space.layers.{name} = {layer!r} is not accepted; accepted keys: {sorted(layer_keys)}")
        for b in layer.get("bits") or []:
            check_bits(b, f"space.layers.{name}.bits entry")
        sparsity = layer.get("sparsity")
        if sparsity is not None:
            if not hasattr(sparsity, "items") or set(sparsity) - range_keys or not {"low", "high"} <= set(sparsity):
                raise ConfigError(f"space.layers.{name}.sparsity = {sparsity!r} is not accepted; accepted: {{low, high, step, log}}")
            _check_range(RangeConfig(**sparsity), f"space.layers.{name}.sparsity", check_sparsity)
    for key in ("prune_epochs", "qat_epochs", "batch_size"):
        if cfg.finetune[key] < 1:
            raise ConfigError(f"finetune.{key} = {cfg.finetune[key]!r} must be an integer >= 1")
    if cfg.finetune.learning_rate <= 0:
        raise ConfigError(f"finetune.learning_rate = {cfg.finetune.learning_rate!r} must be > 0")
    if cfg.latency.min_runs < 50:
        raise ConfigError(f"latency.min_runs = {cfg.latency.min_runs!r} is too few; accepted: >= 50")
