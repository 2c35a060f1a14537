"""The ``study`` group's schema and its checks: the Optuna study, its failures, workers and trial isolation.

Split from ``search/config.py`` (which registers it with the rest of the schema) to keep each file to one concern.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

from omegaconf import MISSING, DictConfig

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.policy import check_choice
from litesweep.search.space_config import check_list

SAMPLERS = ("tpe", "nsgaii", "random", "gp")
DIRECTIONS = ("maximize", "minimize")
#: Native faults a trial's child process meets on purpose (``study.isolation = process`` only).
NATIVE_FAULTS = ("abort", "segfault", "hang", "memory")
#: Where an injected failure strikes: after the policy is sampled (before any work), after the .tflite is made and
#: measured (before anything is logged), after its files and metrics are in MLflow (before Optuna is told), or natively.
INJECTION_POINTS = ("sampled", "measured", "logged", *NATIVE_FAULTS)
ISOLATION_MODES = ("process", "none")


@dataclasses.dataclass
class StudyConfig:
    """The Optuna study."""

    name: str = MISSING
    n_trials: int = 60
    sampler: str = "tpe"
    n_startup_trials: int | None = None  # random trials before tpe/gp model the results (null: Optuna's 10)
    seed: int = 0
    objectives: list[str] = dataclasses.field(default_factory=lambda: ["accuracy", "size_bytes", "latency_ms"])
    directions: list[str] = dataclasses.field(default_factory=lambda: ["maximize", "minimize", "minimize"])
    storage: str = "${paths.store_dir}/optuna.journal"
    max_consecutive_failures: int = 5
    max_failure_rate: float = 0.5  # end the study when more than this share of a run's trials fail (after 5)
    inject_failures: float = 0.0  # testing: this share of trials raises on purpose (fault injection)
    inject_at: list[str] = dataclasses.field(default_factory=lambda: ["sampled"])  # INJECTION_POINTS
    isolation: str = "process"  # process: each trial's work in a child process that may crash alone | none
    trial_timeout_s: float | None = None  # isolation=process: a trial's work killed after this many seconds
    trial_max_memory_mb: float | None = None  # isolation=process: killed past this resident memory
    n_workers: int = 1  # worker processes on this machine sharing the study (and the cores)
    # Database storages: each running trial's heartbeat, and how old it may get before the trial counts as dead
    heartbeat_interval_s: float = 20.0
    heartbeat_grace_s: float = 90.0
    timeout_s: float | None = None  # wall-time budget of this run: no trial starts after it (null: none)
    # metric name -> upper bound (e.g. {accuracy_drop: 1.0, size_bytes: 60000}); infeasible trials are
    # kept and marked, and the front is made of feasible trials only.
    constraints: Any = None
    presets: bool = True
    preset_twins: bool = True  # a new study's first trials are the space's points nearest each integer preset


def check_study(study: DictConfig) -> None:
    """Raise ``ConfigError`` naming the first bad value of the ``study`` group."""
    from litesweep.objectives.metrics import METRIC_NAMES

    check_choice(study.sampler, SAMPLERS, "study.sampler")
    if study.sampler == "gp" and importlib.util.find_spec("torch") is None:
        raise ConfigError("study.sampler = 'gp' needs PyTorch, which is not installed; "
                          "accepted: one of ['nsgaii', 'random', 'tpe'], or 'gp' after pip install -e '.[gp]'")
    if study.n_startup_trials is not None and study.n_startup_trials < 1:
        raise ConfigError(f"study.n_startup_trials = {study.n_startup_trials!r} is not accepted; accepted: an integer >= 1, or null")
    if study.constraints is not None and not hasattr(study.constraints, "items"):
        raise ConfigError(f"study.constraints = {study.constraints!r} is not accepted; "
                          "accepted: a mapping of metric to upper bound, or null")
    for metric, bound in (study.constraints or {}).items():
        check_choice(metric, METRIC_NAMES, "study.constraints key")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ConfigError(f"study.constraints.{metric} = {bound!r} is not accepted; accepted: a number (an upper bound)")
    for key in ("max_failure_rate", "inject_failures"):
        if not 0.0 <= study[key] <= 1.0:
            raise ConfigError(f"study.{key} = {study[key]!r} is out of range; accepted: 0.0 to 1.0")
    check_list(study.inject_at, INJECTION_POINTS, "study.inject_at")
    check_choice(study.isolation, ISOLATION_MODES, "study.isolation")
    for key in ("trial_timeout_s", "trial_max_memory_mb"):
        if study[key] is not None and not study[key] > 0:
            raise ConfigError(f"study.{key} = {study[key]!r} is not accepted; accepted: a number > 0, or null")
        if study[key] is not None and study.isolation != "process":
            raise ConfigError(f"study.{key} = {study[key]!r} needs study.isolation = 'process' (it is {study.isolation!r}); "
                              "accepted: null, or study.isolation=process")
    native = [point for point in study.inject_at if point in NATIVE_FAULTS]
    if native and study.inject_failures and study.isolation != "process":
        raise ConfigError(f"study.inject_at = {list(study.inject_at)} would kill the worker with study.isolation = "
                          f"{study.isolation!r}; accepted: study.isolation=process, or only {list(INJECTION_POINTS[:3])}")
    if not 1 <= study.heartbeat_interval_s < study.heartbeat_grace_s:
        raise ConfigError(f"study.heartbeat_interval_s = {study.heartbeat_interval_s!r}, study.heartbeat_grace_s = "
                          f"{study.heartbeat_grace_s!r}; accepted: 1 <= interval < grace (seconds)")
    for key, accepted in (("n_workers", "an integer >= 1"), ("n_trials", "an integer >= 1")):
        if study[key] < 1:
            raise ConfigError(f"study.{key} = {study[key]!r} is not accepted; accepted: {accepted}")
    if study.timeout_s is not None and not study.timeout_s > 0:
        raise ConfigError(f"study.timeout_s = {study.timeout_s!r} is not accepted; accepted: seconds > 0, or null")
    if not study.objectives:
        raise ConfigError("study.objectives is empty; accepted: a list of metric names")
    for metric in study.objectives:
        check_choice(metric, METRIC_NAMES, "study.objectives entry")
    for direction in study.directions:
        check_choice(direction, DIRECTIONS, "study.directions entry")
    if len(study.objectives) != len(study.directions):
        raise ConfigError(f"study.objectives has {len(study.objectives)} entries but study.directions has {len(study.directions)}; "
                          "accepted: one direction per objective")
    if len(set(study.objectives)) != len(study.objectives):
        raise ConfigError(f"study.objectives = {list(study.objectives)} repeats a metric; accepted: each metric once")
