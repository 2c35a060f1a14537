"""Everything litesweep writes to MLflow: a parent run per study, a child run per trial.

Uses ``MlflowClient`` with explicit run ids (no global active run), so the trial number ↔ run id link
is explicit and several workers can share one tracking server.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from litesweep.search.datasets import TEST, TRAINING, VALIDATION, log_inputs
from litesweep.search.ledger import (
    ROLE_BASELINE,
    ROLE_STUDY,
    ROLE_TRIAL,
    TAG_NOTE,
    TAG_PARENT_RUN,
    TAG_PARETO,
    TAG_PRESET,
    TAG_ROLE,
    TAG_STATE,
    TAG_STUDY,
    TAG_TRIAL,
    TRACEBACK_FILE,
    read_artifact,
    search_all_runs,
    study_run_filter,
    trial_runs_filter,
)
from litesweep.search.logged_models import TAG_MODEL_ID, TrackerModels, finalize, set_front
from litesweep.search.masked import log_files, log_params, masked, run_tags
from litesweep.search.preflight import mask

#: The experiment tag MLflow's UI opens an experiment by: model training (runs, models), not GenAI (traces...).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → ``a.b.c`` keys (MLflow params are flat)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def quiet_run_urls(uri: str) -> None:
    """Stop MLflow printing each run's URL as the run ends: two lines a trial, and with credentials in the
    tracking URI the URL would carry the password (then it is off whatever the user set)."""
    setting = os.environ.__setitem__ if mask(uri) != uri else os.environ.setdefault
    setting("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _artifact_uri(location: str) -> str:
    if "://" in location:
        return location
    return Path(location).resolve().as_uri()


class Tracker(TrackerModels):
    """MLflow writer for one study.

    Args:
        uri: tracking URI (``sqlite:///mlruns/mlflow.db`` by default, or ``http://host:port``).
        experiment: experiment name (the study name).
        artifact_location: where the experiment stores artifacts when it is created.
    """

    def __init__(self, uri: str, experiment: str, artifact_location: str) -> None:
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        quiet_run_urls(uri)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # files are read back quietly, not with a bar each
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        # A tracking server decides where artifacts go (its --artifacts-destination); a local store uses ours.
        location = None if uri.startswith(("http://", "https://")) else _artifact_uri(artifact_location)
        if found is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location,
                                                                   tags=dict([EXPERIMENT_KIND]))
            except mlflow.exceptions.MlflowException:  # another worker created it first
                created = self.client.get_experiment_by_name(experiment)
                if created is None:
                    raise
                self.experiment_id = created.experiment_id
        else:
            self.experiment_id = found.experiment_id
        if found is None or found.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:  # a study made before the tag
            self.client.set_experiment_tag(self.experiment_id, *EXPERIMENT_KIND)
        self.parent_run_id: str | None = None
        self._pareto_state: dict[str, bool] = {}
        self._models, self._runs, self.data_inputs = {}, {}, {}  # see TrackerModels

    # --- the study's parent run -------------------------------------------------------------

    def open_study_run(self, study_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> tuple[str, bool]:
        """Create the study's parent run, or reopen it when the study is resumed.

        Params are logged only when the run is created (MLflow params are immutable).

        Returns:
            The run id and whether it was resumed.
        """
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=study_run_filter(study_name),
            max_results=50,
        )
        if runs:
            # The oldest parent is the one every worker keeps (see _converge); newer ones may be deleted.
            run_id = min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self.client.log_batch(run_id, tags=run_tags(tags))
            resumed = True
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=f"study-{study_name}",
                tags={TAG_ROLE: ROLE_STUDY, TAG_STUDY: study_name, **{t.key: t.value for t in run_tags(tags)}},
            )
            run_id = self._converge(study_name, run.info.run_id)
            if run_id == run.info.run_id:
                log_params(self.client, run_id, params)
            resumed = run_id != run.info.run_id
        self.parent_run_id = run_id
        self.reload_pareto_state()
        return run_id, resumed

    def _converge(self, study_name: str, mine: str) -> str:
        """Workers that started together may each create a parent run: all keep the oldest, drop their own."""
        parents = self.client.search_runs(
            [self.experiment_id],
            filter_string=study_run_filter(study_name), max_results=50,
        )
        oldest = min(parents, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if parents else mine
        if oldest != mine:
            self.client.delete_run(mine)
        return oldest

    def close_study_run(self, status: str = "FINISHED") -> None:
        """End the parent run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)

    def log_study_metrics(self, metrics: Mapping[str, float]) -> None:
        """Metrics on the parent run (the float reference, front size...)."""
        assert self.parent_run_id is not None
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def log_study_files(self, files: Mapping[str, bytes | str], artifact_path: str | None = None) -> None:
        """Write files (name → content) as artifacts of the parent run."""
        assert self.parent_run_id is not None
        log_files(self.client, self.parent_run_id, files, artifact_path)

    # --- trial runs -------------------------------------------------------------------------

    def start_trial(self, study_name: str, trial_number: int) -> str:
        """Create the child run of a trial; returns its run id."""
        assert self.parent_run_id is not None
        run = self.client.create_run(
            self.experiment_id, run_name=f"trial-{trial_number:04d}",
            tags={TAG_PARENT_RUN: self.parent_run_id, TAG_ROLE: ROLE_TRIAL, TAG_STUDY: study_name,
                  TAG_TRIAL: str(trial_number), TAG_PARETO: "false", TAG_STATE: "RUNNING"},
        )
        self._pareto_state[run.info.run_id] = False
        self._runs[run.info.run_id] = (run.info.run_name, run.data.tags)
        return run.info.run_id

    def log_trial(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        files: Mapping[str, bytes | str],
        model_params: Mapping[str, Any] | None = None,
        trained: bool = False,
    ) -> None:
        """Log a trial's params, metrics, tags and artifacts (artifacts first: a logged metric implies its files).

        With ``model_params`` (the policy), the files are also the run's ``LoggedModel`` with those params, the
        metrics are linked to it, and the data splits it was scored on (and trained on, with ``trained``) are
        the run's dataset inputs.
        """
        model_id = log_files(self.client, run_id, files, model=None if model_params is None else functools.partial(
            self._log_model, run_id, masked({**self._run_tags(run_id), **tags}), model_params))
        log_params(self.client, run_id, params)
        self.log_run_metrics(run_id, metrics, tags={**tags, **({TAG_MODEL_ID: model_id} if model_id else {})})
        if model_params is not None:
            log_inputs(self.client, run_id, self.data_inputs, (VALIDATION, TEST, TRAINING) if trained else (VALIDATION, TEST))

    def log_run_metrics(self, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, str] | None = None) -> None:
        """Metrics on a run and its LoggedModel (also figures confirmed after the trial: test split, re-timed latency)."""
        now, model_id = int(time.time() * 1000), self.model_of(run_id) if metrics else None
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0, model_id=model_id) for k, v in metrics.items()],
                              tags=run_tags(tags or {}))

    def read_file(self, run_id: str, name: str) -> bytes:
        """An artifact's bytes."""
        return read_artifact(self.client, run_id, name)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tags on a run."""
        self.client.log_batch(run_id, tags=run_tags(tags))

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params (a trial's policy, as soon as it is sampled, so failed trials show it too)."""
        log_params(self.client, run_id, params)

    def end_trial(self, run_id: str, state: str, status: str, traceback_text: str | None = None, note: str | None = None,
                  metrics: Mapping[str, float] | None = None) -> None:
        """Mark the trial's Optuna ``state`` as a tag, log last ``metrics`` and end its run with MLflow ``status``."""
        if traceback_text is not None:  # an error message may quote a storage or tracking URI
            log_files(self.client, run_id, {TRACEBACK_FILE: mask(traceback_text)})
        self.log_run_metrics(run_id, metrics or {}, tags={TAG_STATE: state, **({TAG_NOTE: note[:5000]} if note else {})})
        if run_id in self._models:  # logged by this process: READY with its trial COMPLETE, else FAILED
            finalize(self.client, self._models[run_id], ready=state == "COMPLETE")
        self.client.set_terminated(run_id, status=status)

    def log_baseline(self, study_name: str, preset: str, metrics: Mapping[str, float], tags: Mapping[str, str],
                     files: Mapping[str, bytes | str]) -> str:
        """A finished child run for one converter preset, tagged ``litesweep.role = baseline``."""
        assert self.parent_run_id is not None
        run = self.client.create_run(
            self.experiment_id, run_name=f"preset-{preset}",
            tags={TAG_PARENT_RUN: self.parent_run_id, TAG_ROLE: ROLE_BASELINE, TAG_STUDY: study_name,
                  TAG_PRESET: preset, **{t.key: t.value for t in run_tags(tags)}},
        )
        run_id = run.info.run_id
        self._runs[run_id] = (run.info.run_name, run.data.tags)
        self.log_trial(run_id, params={"preset": preset}, metrics=metrics, tags={}, files=files, model_params={"preset": preset})
        finalize(self.client, self._models[run_id], ready=True)
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    def baseline_runs(self) -> list[mlflow.entities.Run]:
        """The preset runs of this study."""
        assert self.parent_run_id is not None
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=trial_runs_filter(self.parent_run_id, ROLE_BASELINE),
            max_results=100,
        )

    def attach(self, parent_run_id: str) -> None:
        """Use an existing parent run (a worker process joining a study another process opened)."""
        self.parent_run_id = parent_run_id
        self.reload_pareto_state()

    def reload_pareto_state(self) -> None:
        """Read every trial run's ``litesweep.pareto`` tag (and model) again (other workers may have changed them)."""
        runs = self.trial_runs()
        self._pareto_state = {r.info.run_id: r.data.tags.get(TAG_PARETO) == "true" for r in runs}
        self._models.update({r.info.run_id: r.data.tags[TAG_MODEL_ID] for r in runs if TAG_MODEL_ID in r.data.tags})

    def update_pareto(self, front_run_ids: Iterable[str]) -> int:
        """Keep ``litesweep.pareto`` current on every trial run and its LoggedModel; only changed tags are written.

        Returns:
            The number of tags written.
        """
        front = set(front_run_ids)
        changed = 0
        for run_id in set(self._pareto_state) | front:
            on_front = run_id in front
            if self._pareto_state.get(run_id) != on_front:
                self.client.set_tag(run_id, TAG_PARETO, "true" if on_front else "false")
                if self.model_of(run_id) is not None:
                    set_front(self.client, self._models[run_id], on_front)
                self._pareto_state[run_id] = on_front
                changed += 1
        return changed

    def trial_runs(self, status: str | None = None) -> list[mlflow.entities.Run]:
        """Every trial run of this study (all pages), optionally only those with an MLflow ``status``."""
        assert self.parent_run_id is not None
        wanted = f" and attributes.status = '{status}'" if status else ""
        return search_all_runs(self.client, self.experiment_id,
                               trial_runs_filter(self.parent_run_id) + wanted)


def dumps(data: Any) -> str:
    """Pretty JSON for artifacts."""
    return json.dumps(data, indent=2, sort_keys=True, default=str)
