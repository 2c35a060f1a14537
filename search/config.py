"""Typed schemas of every config group, registered in Hydra's ConfigStore.

A misspelt key or a value of the wrong type fails when the config is composed, with the key named.
Value ranges (bit widths, sparsity, temperatures...) are checked by ``validate`` before any store is opened.

The groups ``objectives/`` is built from (``data``, ``model``, ``finetune``, ``latency``) are its own
classes (``objectives.settings``), used here as schema nodes: ``settings(cfg.finetune, FineTuneSettings)``
(``OmegaConf.to_object``) is the object the Workbench takes, and each class checks its own values (``validate``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.policy import METHODS, TECHNIQUES, check_choice
from litesweep.objectives.settings import CnnSpec, FineTuneSettings, LatencyProtocol, Source
from litesweep.search.space_config import (
    DistillSpaceConfig,
    LayerSpaceConfig,
    RangeConfig,
    SpaceConfig,
    validate_space,
)
from litesweep.search.study_config import (
    DIRECTIONS,
    INJECTION_POINTS,
    ISOLATION_MODES,
    NATIVE_FAULTS,
    SAMPLERS,
    StudyConfig,
    check_study,
)

__all__ = [  # the space group's classes and the constants a command line is checked against are re-exported
    "CONF_DIR", "DIRECTIONS", "INJECTION_POINTS", "ISOLATION_MODES", "METHODS", "NATIVE_FAULTS", "PREFERENCES", "SAMPLERS",
    "SENSITIVITY_USES", "TECHNIQUES",
    "DistillSpaceConfig", "LayerSpaceConfig", "LitesweepConfig", "RangeConfig", "SpaceConfig", "StudyConfig",
    "register_configs", "validate",
]

#: The packaged configs (package ``litesweep.conf``): the repo's ``conf/`` in an editable install, the installed
#: copy otherwise. Its folder on disk, found without importing it (an older editable install saw a namespace).
CONF_DIR = next(p for p in (importlib.util.find_spec("litesweep.conf").submodule_search_locations or [])  # type: ignore[union-attr]
                if os.path.isfile(os.path.join(p, "config.yaml")))
SENSITIVITY_USES = ("report", "narrow", "seed")
PREFERENCES = ("smallest", "fastest", "most_accurate", "knee")


@dataclasses.dataclass
class PathsConfig:
    """Where everything is written; tests point ``output_dir`` at a temporary directory."""

    output_dir: str = "."
    store_dir: str = "${paths.output_dir}/mlruns"
    cache_dir: str = "${paths.output_dir}/.cache/litesweep"


@dataclasses.dataclass
class ObjectiveConfig:
    """What the ``accuracy`` objective measures on the validation split (and, for the front, the test split; higher is better).

    ``metric``: ``accuracy`` (top-1 on the labels), ``top_k`` (with ``k``), ``agreement`` (top-1 agreement
    with the float model, no labels needed) or ``{_target_: module.function}``, a function
    ``f(labels, outputs) -> float``. Untyped so that a mapping with ``_target_`` is accepted.
    """

    metric: Any = "accuracy"
    k: int = 5


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
class TrackingConfig:
    """MLflow: where runs and artifacts go."""

    uri: str = "sqlite:///${paths.store_dir}/mlflow.db"
    artifact_location: str = "${paths.store_dir}/artifacts"
    experiment: str = "${study.name}"
    # refresh the study report on the parent run at most this often, and at most 5% of the wall time (and at the
    # end); 0: after every trial
    report_interval_s: float = 60.0


@dataclasses.dataclass
class PickConfig:
    """``litesweep-pick``: choose a front trial by constraints and a preference, export and register it."""

    prefer: str = "knee"
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    max_size_bytes: float | None = None
    max_latency_ms: float | None = None
    trial: int | None = None  # pick this trial number instead (it must be on the front)
    output_dir: str = "${paths.output_dir}/picked/${study.name}"
    register: str | None = None  # MLflow registered model name; null = do not register
    alias: str = "champion"


@dataclasses.dataclass
class ApplyConfig:
    """``litesweep-apply``: rebuild a model from a logged policy and the base model, and compare."""

    policy: str | None = None  # a policy.json file
    run_id: str | None = None  # or the MLflow run of a trial (its policy.json and logged metrics)
    output_dir: str = "${paths.output_dir}/applied"
    accuracy_tolerance: float = 1.0  # points; training trials are not bit-reproducible across runs
    size_tolerance: float = 0.02  # share of size_bytes


@dataclasses.dataclass
class AuditConfig:
    """``litesweep-audit``: check the two stores against each other and the logged files."""

    remeasure: bool = True  # also score every logged model.tflite again: validation, and test for front trials


@dataclasses.dataclass
class LitesweepConfig:
    """The whole configuration."""

    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)
    # objectives' own settings classes; the defaults a config group must give (name, source) are MISSING,
    # and paths follow the paths group.
    data: Source = dataclasses.field(default_factory=lambda: Source(MISSING, name=MISSING))
    model: CnnSpec = dataclasses.field(default_factory=lambda: CnnSpec(name=MISSING))
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    space: SpaceConfig = dataclasses.field(default_factory=SpaceConfig)
    finetune: FineTuneSettings = dataclasses.field(default_factory=FineTuneSettings)
    latency: LatencyProtocol = dataclasses.field(default_factory=lambda: LatencyProtocol(cache_dir="${paths.cache_dir}/latency"))
    study: StudyConfig = dataclasses.field(default_factory=StudyConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    sensitivity: SensitivityConfig = dataclasses.field(default_factory=SensitivityConfig)
    screen: ScreenConfig = dataclasses.field(default_factory=ScreenConfig)
    pick: PickConfig = dataclasses.field(default_factory=PickConfig)
    apply: ApplyConfig = dataclasses.field(default_factory=ApplyConfig)
    audit: AuditConfig = dataclasses.field(default_factory=AuditConfig)
    progress: bool = True
    verbose: bool = False  # also show TensorFlow's, Optuna's and MLflow's own output (search/console.py)


#: Groups whose schema is an ``objectives.settings`` class: each validates itself.
SETTINGS_GROUPS: dict[str, type] = {"data": Source, "model": CnnSpec, "finetune": FineTuneSettings, "latency": LatencyProtocol}
_Settings = TypeVar("_Settings")


def settings(node: DictConfig, kind: type[_Settings]) -> _Settings:
    """The ``objectives.settings`` object (``kind``) a config group node holds, interpolations resolved."""
    found = OmegaConf.to_object(node)
    if not isinstance(found, kind):  # pragma: no cover - the schema types the node
        raise TypeError(f"a config node holds {type(found).__name__}, not {kind.__name__}")
    return found


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can use ``litesweep_schema`` as its base."""
    schema = OmegaConf.structured(LitesweepConfig)
    # OmegaConf makes the nodes of frozen dataclasses (objectives' settings) read-only, which would refuse
    # every config group and command-line override; the domain objects stay frozen (to_object).
    for group in SETTINGS_GROUPS:
        OmegaConf.set_readonly(schema[group], None)
    ConfigStore.instance().store(name="litesweep_schema", node=schema)


def validate(cfg: DictConfig) -> None:
    """Check every value range of a composed config; raise ``ConfigError`` naming the first bad value.

    Pure: imports no TensorFlow and touches no store, so bad input fails in well under a second. Each
    ``objectives.settings`` group checks itself; the search's own groups are checked here.
    """
    from litesweep.search.objective import scorer_from_config

    check_study(cfg.study)
    for group, kind in SETTINGS_GROUPS.items():
        settings(cfg[group], kind).validate()
    validate_space(cfg.space)
    check_choice(cfg.sensitivity.use, SENSITIVITY_USES, "sensitivity.use")
    if not cfg.tracking.report_interval_s >= 0:
        raise ConfigError(f"tracking.report_interval_s = {cfg.tracking.report_interval_s!r} is not accepted; accepted: seconds >= 0")
    if cfg.screen.enabled:
        if cfg.space.method != "qat":
            raise ConfigError(f"screen.enabled = true with space.method = {cfg.space.method!r}: post-training trials are "
                              "already cheap; accepted: space.method = 'qat'")
        if not 1 <= cfg.screen.seeds <= cfg.screen.trials:
            raise ConfigError(f"screen.seeds = {cfg.screen.seeds!r}, screen.trials = {cfg.screen.trials!r}; accepted: 1 <= seeds <= trials")
    scorer_from_config(cfg.objective)
    check_choice(cfg.pick.prefer, PREFERENCES, "pick.prefer")
    for key in ("min_accuracy", "max_accuracy_drop", "max_size_bytes", "max_latency_ms"):
        value = cfg.pick[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"pick.{key} = {value!r} is not accepted; accepted: a number or null")
