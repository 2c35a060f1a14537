"""Typed schemas of every config group, registered in Hydra's ConfigStore.

A misspelt key or a value of the wrong type fails when the config is composed, with the key named.
Value ranges (bit widths, sparsity, temperatures...) are checked by ``validate`` before any store is opened.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.policy import (
    ACTIVATION_BITS,
    MIN_WIDTH,
    PTQ_MODES,
    STRUCTURES,
    check_bits,
    check_choice,
    check_clusters,
    check_sparsity,
    check_temperature,
    check_unit_interval,
)

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
LATENCY_BACKENDS = ("local", "command")
SAMPLERS = ("tpe", "nsgaii", "random", "gp")
DIRECTIONS = ("maximize", "minimize")
DATA_SOURCES = ("mnist5k", "digits", "npz", "folder", "tfds", "keras")
METHODS = ("qat", "ptq", "mixed")
TECHNIQUES = ("quantize", "prune", "cluster", "distill", "width")
#: Where an injected failure strikes: after the policy is sampled (before any work), after the .tflite is
#: made and measured (before anything is logged), or after its files and metrics are in MLflow (before Optuna is told).
INJECTION_POINTS = ("sampled", "measured", "logged")
SENSITIVITY_USES = ("report", "narrow", "seed")
PREFERENCES = ("smallest", "fastest", "most_accurate", "knee")


@dataclasses.dataclass
class PathsConfig:
    """Where everything is written; tests point ``output_dir`` at a temporary directory."""

    output_dir: str = "."
    store_dir: str = "${paths.output_dir}/mlruns"
    cache_dir: str = "${paths.output_dir}/.cache/litesweep"


@dataclasses.dataclass
class DataConfig:
    """A dataset (packaged or the user's own), its preprocessing and its fixed split."""

    name: str = MISSING
    source: str = MISSING
    path: Optional[str] = None  # the user's file or folder (npz, folder, tfds data_dir, keras local files)
    dataset: Optional[str] = None  # tfds / keras dataset name
    image_size: Optional[list[int]] = None  # [height, width] folder images are resized to
    color_mode: str = "rgb"  # folder images: grayscale or rgb
    rescale: Optional[float] = None  # pixel multiplier; null: 1/255 for 8-bit images
    mean: Optional[list[float]] = None  # per channel, subtracted after rescale
    std: Optional[list[float]] = None  # per channel, divided after the mean
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
    separable: bool = False  # MobileNet-style depthwise-separable blocks instead of Conv-Pool
    path: Optional[str] = None  # a trained model (.keras, .h5, SavedModel dir) instead of the built CNN
    trust_code: bool = False  # allow Lambda layers (arbitrary code) in model.path
    # modules or classes to import before loading model.path (its custom layers), e.g. [my_pkg.layers]
    custom_objects: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ObjectiveConfig:
    """What the ``accuracy`` objective measures on the test split (higher is better).

    ``metric``: ``accuracy`` (top-1 on the labels), ``top_k`` (with ``k``), ``agreement`` (top-1 agreement
    with the float model, no labels needed) or ``{_target_: module.function}``, a function
    ``f(labels, outputs) -> float``. Untyped so that a mapping with ``_target_`` is accepted.
    """

    metric: Any = "accuracy"
    k: int = 5


@dataclasses.dataclass
class RangeConfig:
    """A sampled float range; ``low == high`` fixes the value (no parameter is sampled)."""

    low: float = 0.0
    high: float = 0.0
    step: Optional[float] = None
    log: bool = False


@dataclasses.dataclass
class LayerSpaceConfig:
    """Per-layer (or per-group) override of the space: a missing key keeps the space-wide choice."""

    bits: Optional[list[int]] = None
    act_bits: Optional[list[int]] = None
    ptq_modes: Optional[list[str]] = None
    sparsity: Optional[RangeConfig] = None
    structures: Optional[list[str]] = None
    clusters: Optional[list[int]] = None
    width: Optional[RangeConfig] = None


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
    techniques: list[str] = dataclasses.field(default_factory=lambda: ["quantize", "prune", "distill"])
    bits: list[int] = dataclasses.field(default_factory=lambda: [4, 8, 32])
    act_bits: list[int] = dataclasses.field(default_factory=lambda: [8])
    ptq_modes: list[str] = dataclasses.field(default_factory=lambda: ["dynamic"])
    sparsity: RangeConfig = dataclasses.field(default_factory=lambda: RangeConfig(0.0, 0.9, 0.05))
    structures: list[str] = dataclasses.field(default_factory=lambda: ["unstructured"])
    clusters: list[int] = dataclasses.field(default_factory=lambda: [0])
    width: RangeConfig = dataclasses.field(default_factory=lambda: RangeConfig(1.0, 1.0))
    distill: DistillSpaceConfig = dataclasses.field(default_factory=DistillSpaceConfig)
    # group name -> regular expression over layer names; a group shares one set of parameters.
    groups: Any = None
    # layer or group name -> LayerSpaceConfig keys; untyped so `+space.layers.fc1={bits:[8]}` works
    # from the command line; checked by `validate` against LayerSpaceConfig's fields.
    layers: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FineTuneConfig:
    """How each trial fine-tunes (pruning, clustering, then QAT), distilled from the base model."""

    prune_epochs: int = 2
    cluster_epochs: int = 1
    qat_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4
    min_val_accuracy: float = 0.0
    calibration_samples: int = 128
    max_train_samples: Optional[int] = None  # fine-tune on a fixed random subset of training data (null: all)


@dataclasses.dataclass
class LatencyConfig:
    """How latency is measured: locally (interpreter) or by a command that runs the model on a device."""

    backend: str = "local"
    threads: int = 1
    warmup: int = 10
    min_runs: int = 50
    max_runs: int = 500
    max_seconds: float = 1.0
    command: Optional[str] = None
    pattern: Optional[str] = None
    unit: str = "us"
    timeout_s: float = 300.0
    cache_dir: str = "${paths.cache_dir}/latency"


@dataclasses.dataclass
class ScreenConfig:
    """Multi-fidelity: ``trials`` post-training bit mixtures are measured before a training study starts,
    and ``seeds`` of those on their cheap front are enqueued as the first training trials."""

    enabled: bool = False
    trials: int = 30
    seeds: int = 5
    max_drop: float = 5.0  # accuracy points post-training above which a mixture is not a candidate


@dataclasses.dataclass
class SensitivityConfig:
    """Optional first pass: degrade one layer at a time and record its accuracy drop.

    ``use``: ``report`` only logs it; ``narrow`` freezes insensitive layers at the most compressed
    choice and keeps sensitive ones away from it; ``seed`` enqueues a first trial built from it.
    """

    enabled: bool = False
    use: str = "report"
    insensitive_drop: float = 0.5
    sensitive_drop: float = 3.0


@dataclasses.dataclass
class StudyConfig:
    """The Optuna study."""

    name: str = MISSING
    n_trials: int = 60
    sampler: str = "tpe"
    n_startup_trials: Optional[int] = None  # random trials before tpe/gp model the results (null: Optuna's 10)
    seed: int = 0
    objectives: list[str] = dataclasses.field(default_factory=lambda: ["accuracy", "size_bytes", "latency_ms"])
    directions: list[str] = dataclasses.field(default_factory=lambda: ["maximize", "minimize", "minimize"])
    storage: str = "${paths.store_dir}/optuna.journal"
    max_consecutive_failures: int = 5
    max_failure_rate: float = 0.5  # end the study when more than this share of a run's trials fail (after 5)
    inject_failures: float = 0.0  # testing: this share of trials raises on purpose (fault injection)
    inject_at: list[str] = dataclasses.field(default_factory=lambda: ["sampled"])  # where: sampled | measured | logged
    n_workers: int = 1  # worker processes on this machine sharing the study (and the cores)
    # Database storages: each running trial's heartbeat, and how old it may get before the trial counts as dead
    heartbeat_interval_s: float = 20.0
    heartbeat_grace_s: float = 90.0
    timeout_s: Optional[float] = None  # wall-time budget of this run: no trial starts after it (null: none)
    # metric name -> upper bound (e.g. {accuracy_drop: 1.0, size_bytes: 60000}); infeasible trials are
    # kept and marked, and the front is made of feasible trials only.
    constraints: Any = None
    presets: bool = True


@dataclasses.dataclass
class TrackingConfig:
    """MLflow: where runs and artifacts go."""

    uri: str = "sqlite:///${paths.store_dir}/mlflow.db"
    artifact_location: str = "${paths.store_dir}/artifacts"
    experiment: str = "${study.name}"
    report_every: int = 10  # refresh the study report on the parent run every N trials (and at the end)


@dataclasses.dataclass
class PickConfig:
    """``litesweep-pick``: choose a front trial by constraints and a preference, export and register it."""

    prefer: str = "knee"
    min_accuracy: Optional[float] = None
    max_accuracy_drop: Optional[float] = None
    max_size_bytes: Optional[float] = None
    max_latency_ms: Optional[float] = None
    trial: Optional[int] = None  # pick this trial number instead (it must be on the front)
    output_dir: str = "${paths.output_dir}/picked/${study.name}"
    register: Optional[str] = None  # MLflow registered model name; null = do not register
    alias: str = "champion"


@dataclasses.dataclass
class ApplyConfig:
    """``litesweep-apply``: rebuild a model from a logged policy and the base model, and compare."""

    policy: Optional[str] = None  # a policy.json file
    run_id: Optional[str] = None  # or the MLflow run of a trial (its policy.json and logged metrics)
    output_dir: str = "${paths.output_dir}/applied"
    accuracy_tolerance: float = 1.0  # points; training trials are not bit-reproducible across runs
    size_tolerance: float = 0.02  # share of size_bytes


@dataclasses.dataclass
class AuditConfig:
    """``litesweep-audit``: check the two stores against each other and the logged files."""

    remeasure: bool = True  # also score every logged model.tflite on the test split again


@dataclasses.dataclass
class LitesweepConfig:
    """The whole configuration."""

    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    space: SpaceConfig = dataclasses.field(default_factory=SpaceConfig)
    finetune: FineTuneConfig = dataclasses.field(default_factory=FineTuneConfig)
    latency: LatencyConfig = dataclasses.field(default_factory=LatencyConfig)
    study: StudyConfig = dataclasses.field(default_factory=StudyConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    sensitivity: SensitivityConfig = dataclasses.field(default_factory=SensitivityConfig)
    screen: ScreenConfig = dataclasses.field(default_factory=ScreenConfig)
    pick: PickConfig = dataclasses.field(default_factory=PickConfig)
    apply: ApplyConfig = dataclasses.field(default_factory=ApplyConfig)
    audit: AuditConfig = dataclasses.field(default_factory=AuditConfig)
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
        raise ConfigError(f"{key}.step = {rng.step!r} is not accepted; accepted: a number > 0, or null")


def _check_list(values: Any, accepted: tuple[Any, ...], key: str) -> None:
    if not values:
        raise ConfigError(f"{key} is empty; accepted: a non-empty list from {list(accepted)}")
    for value in values:
        check_choice(value, accepted, f"{key} entry")


def _check_space_entry(node: Any, key: str) -> None:
    """Checks shared by the space itself and its per-layer overrides (only keys present are checked)."""
    if node.get("bits") is not None:
        if not node["bits"]:
            raise ConfigError(f"{key}.bits is empty; accepted: a non-empty list of bit widths")
        for b in node["bits"]:
            check_bits(b, f"{key}.bits entry")
    if node.get("act_bits") is not None:
        _check_list(node["act_bits"], ACTIVATION_BITS, f"{key}.act_bits")
    if node.get("ptq_modes") is not None:
        _check_list(node["ptq_modes"], PTQ_MODES, f"{key}.ptq_modes")
    if node.get("structures") is not None:
        _check_list(node["structures"], STRUCTURES, f"{key}.structures")
    if node.get("clusters") is not None:
        if not node["clusters"]:
            raise ConfigError(f"{key}.clusters is empty; accepted: a list of 0 (off) or integers >= 2")
        for k in node["clusters"]:
            check_clusters(k, f"{key}.clusters entry")
    for name, check in (("sparsity", check_sparsity), ("width", _check_width)):
        rng = node.get(name)
        if rng is None:
            continue
        range_keys = {f.name for f in dataclasses.fields(RangeConfig)}
        if not hasattr(rng, "items") or set(rng) - range_keys or not {"low", "high"} <= set(rng):
            raise ConfigError(f"{key}.{name} = {rng!r} is not accepted; accepted: {{low, high, step, log}}")
        _check_range(RangeConfig(**rng), f"{key}.{name}", check)


def _check_width(value: Any, what: str) -> None:
    if not isinstance(value, (int, float)) or not MIN_WIDTH <= value <= 1.0:
        raise ConfigError(f"{what} = {value!r} is out of range; accepted: {MIN_WIDTH} <= width <= 1.0")


def validate(cfg: Any) -> None:
    """Check every value range of a composed config; raise ``ConfigError`` naming the first bad value.

    Pure: imports no TensorFlow and touches no store, so bad input fails in well under a second.
    """
    from litesweep.objectives.metrics import METRIC_NAMES
    from litesweep.search.objective import scorer_from_config

    _check_choice(cfg.study.sampler, SAMPLERS, "study.sampler")
    if cfg.study.sampler == "gp" and importlib.util.find_spec("torch") is None:
        raise ConfigError("study.sampler = 'gp' needs PyTorch, which is not installed; "
                          "accepted: one of ['nsgaii', 'random', 'tpe'], or 'gp' after pip install -e '.[gp]'")
    if cfg.study.n_startup_trials is not None and cfg.study.n_startup_trials < 1:
        raise ConfigError(f"study.n_startup_trials = {cfg.study.n_startup_trials!r} is not accepted; accepted: an integer >= 1, or null")
    _check_choice(cfg.data.source, DATA_SOURCES, "data.source")
    if cfg.data.source in ("npz", "folder") and not cfg.data.path:
        raise ConfigError(f"data.source = {cfg.data.source!r} needs data.path; accepted: the path of the user's {cfg.data.source} "
                          f"(e.g. data.path=/data/mine.{cfg.data.source if cfg.data.source == 'npz' else 'd'})")
    if cfg.data.source in ("tfds", "keras") and not cfg.data.dataset:
        raise ConfigError(f"data.source = {cfg.data.source!r} needs data.dataset; accepted: a dataset name (e.g. data.dataset=fashion_mnist)")
    if cfg.data.source == "folder" and (not cfg.data.image_size or len(cfg.data.image_size) != 2):
        raise ConfigError(f"data.image_size = {cfg.data.image_size!r} is not accepted for a folder; accepted: [height, width]")
    _check_choice(cfg.data.color_mode, ("grayscale", "rgb"), "data.color_mode")
    _check_choice(cfg.space.method, METHODS, "space.method")
    _check_choice(cfg.latency.backend, LATENCY_BACKENDS, "latency.backend")
    if cfg.latency.backend == "command" and (not cfg.latency.command or not cfg.latency.pattern):
        raise ConfigError("latency.backend = 'command' needs latency.command and latency.pattern; accepted: a shell command "
                          "with {model} and a regular expression whose first group is the time (as in conf/latency/command.yaml)")
    _check_list(cfg.space.techniques, TECHNIQUES, "space.techniques")
    _check_choice(cfg.sensitivity.use, SENSITIVITY_USES, "sensitivity.use")
    if cfg.screen.enabled:
        if cfg.space.method != "qat":
            raise ConfigError(f"screen.enabled = true with space.method = {cfg.space.method!r}: post-training trials are already cheap; accepted: space.method = 'qat'")
        if not 1 <= cfg.screen.seeds <= cfg.screen.trials:
            raise ConfigError(f"screen.seeds = {cfg.screen.seeds!r}, screen.trials = {cfg.screen.trials!r}; accepted: 1 <= seeds <= trials")
    if cfg.study.constraints is not None and not hasattr(cfg.study.constraints, "items"):
        raise ConfigError(f"study.constraints = {cfg.study.constraints!r} is not accepted; accepted: a mapping of metric to upper bound, or null")
    for metric, bound in (cfg.study.constraints or {}).items():
        _check_choice(metric, METRIC_NAMES, "study.constraints key")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ConfigError(f"study.constraints.{metric} = {bound!r} is not accepted; accepted: a number (an upper bound)")
    for key in ("max_failure_rate", "inject_failures"):
        if not 0.0 <= cfg.study[key] <= 1.0:
            raise ConfigError(f"study.{key} = {cfg.study[key]!r} is out of range; accepted: 0.0 to 1.0")
    _check_list(cfg.study.inject_at, INJECTION_POINTS, "study.inject_at")
    if not 1 <= cfg.study.heartbeat_interval_s < cfg.study.heartbeat_grace_s:
        raise ConfigError(f"study.heartbeat_interval_s = {cfg.study.heartbeat_interval_s!r}, study.heartbeat_grace_s = "
                          f"{cfg.study.heartbeat_grace_s!r}; accepted: 1 <= interval < grace (seconds)")
    if cfg.study.n_workers < 1:
        raise ConfigError(f"study.n_workers = {cfg.study.n_workers!r} is not accepted; accepted: an integer >= 1")
    if cfg.study.timeout_s is not None and not cfg.study.timeout_s > 0:
        raise ConfigError(f"study.timeout_s = {cfg.study.timeout_s!r} is not accepted; accepted: seconds > 0, or null")
    if cfg.study.n_trials < 1:
        raise ConfigError(f"study.n_trials = {cfg.study.n_trials!r} is not accepted; accepted: an integer >= 1")
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
    _check_space_entry(cfg.space, "space")
    if cfg.space.method == "qat":
        for key, node in [("space", cfg.space), *((f"space.layers.{n}", l) for n, l in cfg.space.layers.items())]:
            if 16 in (node.get("bits") or []):
                raise ConfigError(f"{key}.bits entry = 16 (float16) needs space.method ptq or mixed; accepted with qat: [2, 4, 8, 32]")
            if 16 in (node.get("act_bits") or []):
                raise ConfigError(f"{key}.act_bits entry = 16 (16x8) needs space.method ptq or mixed; accepted with qat: [8]")
    if cfg.space.method == "ptq":
        for technique in ("prune", "cluster", "width"):
            if technique in cfg.space.techniques:
                raise ConfigError(f"space.techniques entry = '{technique}' needs training; accepted with space.method=ptq: ['quantize']")
    _check_range(cfg.space.distill.temperature, "space.distill.temperature", check_temperature)
    _check_range(cfg.space.distill.weight, "space.distill.weight", check_unit_interval)
    layer_keys = {f.name for f in dataclasses.fields(LayerSpaceConfig)}
    for name, layer in cfg.space.layers.items():
        if not hasattr(layer, "items") or set(layer) - layer_keys:
            raise ConfigError(f"space.layers.{name} = {layer!r} is not accepted; accepted keys: {sorted(layer_keys)}")
        _check_space_entry(layer, f"space.layers.{name}")
    if cfg.space.groups is not None and not hasattr(cfg.space.groups, "items"):
        raise ConfigError(f"space.groups = {cfg.space.groups!r} is not accepted; accepted: a mapping of group name to regex, or null")
    for group, pattern in (cfg.space.groups or {}).items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"space.groups.{group} = {pattern!r} is not a valid regular expression ({exc}); "
                              "accepted: a Python regular expression matched against layer names") from exc
    for key in ("prune_epochs", "cluster_epochs", "qat_epochs", "batch_size", "calibration_samples"):
        if cfg.finetune[key] < 1:
            raise ConfigError(f"finetune.{key} = {cfg.finetune[key]!r} is not accepted; accepted: an integer >= 1")
    if cfg.finetune.learning_rate <= 0:
        raise ConfigError(f"finetune.learning_rate = {cfg.finetune.learning_rate!r} is not accepted; accepted: a number > 0")
    if cfg.model.path and not Path(cfg.model.path).exists():
        raise ConfigError(f"model.path = '{cfg.model.path}' does not exist; accepted: a .keras or .h5 file or a SavedModel directory")
    scorer_from_config(cfg.objective)
    _check_choice(cfg.pick.prefer, PREFERENCES, "pick.prefer")
    for key in ("min_accuracy", "max_accuracy_drop", "max_size_bytes", "max_latency_ms"):
        value = cfg.pick[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"pick.{key} = {value!r} is not accepted; accepted: a number or null")
    if cfg.latency.min_runs < 50:
        raise ConfigError(f"latency.min_runs = {cfg.latency.min_runs!r} is too few; accepted: >= 50")
