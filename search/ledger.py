"""The link between the two stores: every Optuna attribute and MLflow tag name, the ``TrialRecord``, and the
one way to open an existing study with its runs and front (``StudyView``: pick, audit, benchmarks).

Optuna holds what the sampler needs (values, params, constraints) plus a copy of each trial's record;
MLflow holds the same record for people (params, metrics, tags, the ``.tflite``). A trial's record is written
to both from one ``TrialRecord``, and each store names the other: ``RUN_ID_ATTR`` on the trial,
``TAG_TRIAL`` on the run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from litesweep.objectives.errors import ConfigError

# --- Optuna trial user attributes -----------------------------------------------------------------------
RUN_ID_ATTR: Final = "mlflow_run_id"  # the trial's MLflow child run
METRICS_ATTR: Final = "metrics"  # every figure measured on the .tflite (objectives.metrics.METRIC_NAMES)
FEASIBLE_ATTR: Final = "feasible"  # within study.constraints
POLICY_ATTR: Final = "policy"  # Policy.to_dict()
TIMINGS_ATTR: Final = "timings"  # seconds per phase of the trial
WORKER_ATTR: Final = "worker"  # host:pid:start of the process running it (recovery tells dead workers by it)
RETRY_OF_ATTR: Final = "retry_of"  # the failed trial this one retries
TWIN_ATTR: Final = "preset_twin"  # set when enqueued: the integer preset this trial is the search-space twin of

# --- Optuna study user attributes -----------------------------------------------------------------------
OBJECTIVES_ATTR: Final = "objectives"  # names of the study's values, in order
PARENT_RUN_ATTR: Final = "mlflow_parent_run_id"  # the study's MLflow parent run
METRIC_ATTR: Final = "objective_metric"  # what the accuracy objective scores (objective.metric)
SCREEN_ATTR: Final = "screen"  # rows of the post-training screen (cached for a resumed study)
SENSITIVITY_ATTR: Final = "sensitivity"  # per-unit accuracy drops (cached for a resumed study)
FINGERPRINT_ATTR: Final = "fingerprint"  # base model, data and split, latency protocol: what every trial is compared under
CONFIRMED_ATTR_PREFIX: Final = "confirmed."  # + trial number: test figures and confirmed latency of a front trial

# --- MLflow tags ----------------------------------------------------------------------------------------
TAG_ROLE: Final = "litesweep.role"  # ROLE_STUDY, ROLE_TRIAL or ROLE_BASELINE
ROLE_STUDY: Final = "study"
ROLE_TRIAL: Final = "trial"
ROLE_BASELINE: Final = "baseline"
TAG_STUDY: Final = "litesweep.study_name"
TAG_TRIAL: Final = "litesweep.trial_number"
TAG_PARETO: Final = "litesweep.pareto"  # "true" while the trial is on the study's front
TAG_STATE: Final = "litesweep.state"  # the trial's Optuna state
TAG_NOTE: Final = "litesweep.note"  # why a run ended as it did (pruned, killed, interrupted)
TAG_FEASIBLE: Final = "litesweep.feasible"
TAG_TFLITE_SHA256: Final = "litesweep.tflite_sha256"
TAG_DELEGATE: Final = "litesweep.delegate"  # the interpreter delegate the file was measured with
TAG_FALLBACK: Final = "litesweep.fallback"  # layers whose technique fell back (e.g. left float)
TAG_ENCODING: Final = "litesweep.encoding"  # "sparse" or "dense": how pruned kernels are stored in the file
TAG_PRESET_TWIN: Final = "litesweep.preset_twin"  # the preset an enqueued first trial is nearest to
TAG_WEIGHT_TYPE_PREFIX: Final = "litesweep.weight_type."  # + layer: the weight type in the .tflite
TAG_PRESET: Final = "litesweep.preset"  # a baseline run's converter preset
TAG_METRIC: Final = "litesweep.objective.metric"  # parent run: what accuracy scores
TAG_SEED: Final = "litesweep.seed"
TAG_STORAGE: Final = "litesweep.storage"
TAG_BASE_MODEL: Final = "litesweep.base_model"
TAG_UNSUPPORTED_LAYERS: Final = "litesweep.unsupported_layers"
TAG_VERSION_PREFIX: Final = "litesweep.version."  # + package: versions the study ran with
TAG_PARENT_RUN: Final = "mlflow.parentRunId"  # MLflow's own nesting tag

# --- artifacts of a trial run ---------------------------------------------------------------------------
TFLITE_FILE: Final = "model.tflite"
POLICY_FILE: Final = "policy.json"
TRACEBACK_FILE: Final = "traceback.txt"
# --- artifacts of the parent run ------------------------------------------------------------------------
CONFIG_FILE: Final = "config.yaml"  # the resolved config of the sweep that created the study

# --- parent-run metrics ---------------------------------------------------------------------------------
REFERENCE_METRIC_PREFIX: Final = "reference."  # + metric: the float32 model's figures

FINISHED_STATES: Final = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """What one trial produced, as both stores hold it: the runner builds it once from the measured output
    and writes its measured part to Optuna (``optuna_attrs``) and MLflow (``mlflow_tags`` with the metrics);
    ``TrialRecord.of`` reads it back from an Optuna trial.

    Attributes:
        number: the Optuna trial number.
        state: the Optuna state's name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``).
        run_id: the MLflow child run, or None before it exists.
        policy: ``Policy.to_dict()``, or None before the policy was sampled.
        metrics: every figure measured on the ``.tflite`` (empty until measured).
        feasible: whether the metrics meet ``study.constraints``.
        timings: seconds per phase.
        worker: ``host:pid:start`` of the process that ran it.
    """

    number: int
    state: str
    run_id: str | None = None
    policy: dict[str, Any] | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    feasible: bool | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    worker: str | None = None

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        """The record a trial carries in Optuna."""
        attrs = trial.user_attrs
        return cls(number=trial.number, state=trial.state.name, run_id=attrs.get(RUN_ID_ATTR), policy=attrs.get(POLICY_ATTR),
                   metrics=dict(attrs.get(METRICS_ATTR, {})), feasible=attrs.get(FEASIBLE_ATTR),
                   timings=dict(attrs.get(TIMINGS_ATTR, {})), worker=attrs.get(WORKER_ATTR))

    def optuna_attrs(self) -> dict[str, Any]:
        """The trial user attributes that hold this record's measured part."""
        return {METRICS_ATTR: self.metrics, FEASIBLE_ATTR: self.feasible, POLICY_ATTR: self.policy}

    def mlflow_tags(self, tflite: bytes, extra: Mapping[str, str]) -> dict[str, str]:
        """The trial run's tags for this record and its file."""
        return {**extra, TAG_FEASIBLE: str(self.feasible).lower(), TAG_TFLITE_SHA256: hashlib.sha256(tflite).hexdigest()}


def metrics_of(trial: FrozenTrial) -> dict[str, float]:
    """A trial's measured figures (empty when it was never measured)."""
    return dict(trial.user_attrs.get(METRICS_ATTR, {}))


def run_id_of(trial: FrozenTrial) -> str | None:
    """A trial's MLflow run id (None before it was linked)."""
    return trial.user_attrs.get(RUN_ID_ATTR)


def directions_of(study: optuna.Study) -> dict[str, str]:
    """Objective name → ``maximize``/``minimize``, as the study was created."""
    names = study.user_attrs.get(OBJECTIVES_ATTR) or [f"value{i}" for i in range(len(study.directions))]  # a damaged study
    return dict(zip(names, [d.name.lower() for d in study.directions], strict=True))


def reference_of(parent: Run) -> dict[str, float]:
    """The float32 reference's metrics, from the parent run."""
    prefix = REFERENCE_METRIC_PREFIX
    return {k.removeprefix(prefix): v for k, v in parent.data.metrics.items() if k.startswith(prefix)}


def record_objective_metric(study: optuna.Study, metric: str) -> None:
    """Record the study's objective metric, or refuse to mix another one into it.

    Raises:
        ConfigError: the study was scored with a different ``objective.metric``.
    """
    older = bool(study.get_trials(deepcopy=False, states=FINISHED_STATES))  # studies from before the attribute: top-1
    recorded = study.user_attrs.get(METRIC_ATTR, "accuracy" if older else None)
    if recorded is None:
        study.set_user_attr(METRIC_ATTR, metric)
    elif recorded != metric:
        raise ConfigError(f"study '{study.study_name}' is scored with objective.metric = '{recorded}', not '{metric}'; "
                          "accepted: the same objective.metric, or another study.name")


#: What ``Sweep.fingerprint`` records, in words for the one-line refusal.
FINGERPRINT_PARTS: Final = {"base_model": "base model", "data": "data or its split", "latency": "latency protocol"}


def check_fingerprint(study: optuna.Study, fingerprint: Mapping[str, Any], record: bool = True) -> None:
    """Record the study's fingerprint (with ``record``), or refuse to resume it under another one.

    Raises:
        ConfigError: the base model, the data (or its split) or the latency protocol differs from the
            study's, so new trials would be compared with another reference than the old ones.
    """
    recorded = study.user_attrs.get(FINGERPRINT_ATTR)
    if recorded is None and study.get_trials(deepcopy=False, states=FINISHED_STATES):
        raise ConfigError(f"study '{study.study_name}' was made by a litesweep that scored trials on the test split, not "
                          "validation; accepted: a new study.name (or remove the old study)")
    if recorded is None:
        if record:
            study.set_user_attr(FINGERPRINT_ATTR, dict(fingerprint))
        return
    changed = [key for key in FINGERPRINT_PARTS if recorded.get(key) != fingerprint.get(key)]
    if changed:
        what = "; ".join(f"{FINGERPRINT_PARTS[k]}: {_short(recorded.get(k))} then, {_short(fingerprint.get(k))} now" for k in changed)
        raise ConfigError(f"study '{study.study_name}' was run with another {' and '.join(FINGERPRINT_PARTS[k] for k in changed)} "
                          f"({what}); accepted: the study's own settings, or a new study.name for the new ones")


def _short(value: Any) -> str:  # the latency protocol as k=v pairs, the rest as it is
    return ",".join(f"{k.removeprefix('latency.')}={v}" for k, v in value.items()) if isinstance(value, Mapping) else str(value)


def confirmed_of(study: optuna.Study, number: int) -> dict[str, float]:
    """A front trial's test figures and confirmed latency (empty until it reached the front)."""
    return dict(study.user_attrs.get(f"{CONFIRMED_ATTR_PREFIX}{number}", {}))


def figures_of(study: optuna.Study, trial: FrozenTrial) -> dict[str, float]:
    """Everything measured on a trial's file: the search's validation figures plus any confirmed ones."""
    return metrics_of(trial) | confirmed_of(study, trial.number)


def trial_runs_filter(parent_run_id: str, role: str = ROLE_TRIAL) -> str:
    """An MLflow filter for the child runs of one role under a parent run."""
    return f"tags.`{TAG_PARENT_RUN}` = '{parent_run_id}' and tags.`{TAG_ROLE}` = '{role}'"


def study_run_filter(study_name: str) -> str:
    """An MLflow filter for a study's parent run(s)."""
    return f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}' and tags.`{TAG_STUDY}` = '{study_name}'"


def first_run_per_preset(runs: list[Run]) -> dict[str, Run]:
    """Each preset's baseline run, the oldest when a resumed study logged one twice."""
    found: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        if TAG_PRESET in run.data.tags:
            found.setdefault(run.data.tags[TAG_PRESET], run)
    return found


def read_artifact(client: MlflowClient, run_id: str, name: str) -> bytes:
    """The bytes of one artifact of a run."""
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, name, tmp)).read_bytes()


def search_all_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """Every run of an experiment matching ``filter_string``, all pages read."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


@dataclasses.dataclass
class StudyView:
    """A study opened in both stores: what ``litesweep-pick``, ``-audit``, the report and the benchmarks read.

    Attributes:
        study: the Optuna study.
        client: an MLflow client on the study's tracking store.
        parent_run_id: the study's parent run (None when the study never reached MLflow).
        directions: objective name → direction.
    """

    study: optuna.Study
    client: MlflowClient
    parent_run_id: str | None
    directions: dict[str, str]

    @functools.cached_property
    def parent(self) -> Run:
        """The parent run (read once)."""
        assert self.parent_run_id is not None
        return self.client.get_run(self.parent_run_id)

    @property
    def metric(self) -> str:
        """What the study's accuracy objective scores."""
        return str(self.study.user_attrs.get(METRIC_ATTR, "accuracy"))

    def reference(self) -> dict[str, float]:
        """The float32 reference's metrics."""
        return reference_of(self.parent) if self.parent_run_id else {}

    def preset_runs(self) -> list[Run]:
        """The converter presets' baseline runs, oldest first."""
        if self.parent_run_id is None:
            return []
        runs = search_all_runs(self.client, self.parent.info.experiment_id, trial_runs_filter(self.parent_run_id, ROLE_BASELINE))
        return sorted(runs, key=lambda r: r.info.start_time)

    def presets(self) -> dict[str, dict[str, float]]:
        """Metrics of each preset (``first_run_per_preset``)."""
        return {name: dict(run.data.metrics) for name, run in first_run_per_preset(self.preset_runs()).items()}

    def front(self) -> list[FrozenTrial]:
        """The study's Pareto front (see ``search.pareto.front``)."""
        from litesweep.search.pareto import front

        return front(self.study)

    def records(self, states: tuple[TrialState, ...] | None = None) -> list[TrialRecord]:
        """Every trial's record (optionally only those in ``states``)."""
        return [TrialRecord.of(t) for t in self.study.get_trials(deepcopy=False, states=states)]

    def download(self, run_id: str, name: str, into: str) -> str:
        """A run's artifact, downloaded into ``into``; returns its path."""
        return self.client.download_artifacts(run_id, name, into)


def open_view(study: optuna.Study, tracking_uri: str) -> StudyView:
    """The ``StudyView`` of an open study on the tracking store at ``tracking_uri``."""
    return StudyView(study, MlflowClient(tracking_uri), study.user_attrs.get(PARENT_RUN_ATTR), directions_of(study))
