"""Every file a study produced as an MLflow ``LoggedModel``: the experiment's Models tab and
``mlflow.search_logged_models`` list the candidates, and ``litesweep-pick`` reads them from there.

A finished trial's (and a preset's) ``.tflite`` and ``policy.json`` are the model's files; its params are the
policy, its metrics are logged once with the run's (``model_id`` on each), and its tags name the study, the trial
or preset, the method, the encoding and front membership (``litesweep.pareto``, kept in step with the run's
tag by ``Tracker.update_pareto``). The run names its model (``TAG_MODEL_ID``) and lists it among its outputs.
No pyfunc packaging or environment inference per trial: ``litesweep-pick`` adds the pyfunc flavour to the
one model it registers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mlflow.entities import DatasetInput, LoggedModel, LoggedModelOutput, LoggedModelStatus
from mlflow.tracking import MlflowClient

from litesweep.search.ledger import (
    TAG_DELEGATE,
    TAG_ENCODING,
    TAG_FEASIBLE,
    TAG_PARETO,
    TAG_PRESET,
    TAG_PRESET_TWIN,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TFLITE_SHA256,
    TAG_TRIAL,
)
from litesweep.search.preflight import mask

TAG_MODEL_ID: Final = "litesweep.model_id"  # on a trial or baseline run: its LoggedModel
TAG_METHOD: Final = "litesweep.method"  # on a model: the policy's method (qat, ptq, mixed) or "preset"
TAG_PARENT: Final = "litesweep.parent_run_id"  # on a model: the study's parent run
MODEL_TYPE: Final = "tflite"
#: The run tags its model carries too.
SHARED_TAGS: Final = (TAG_ROLE, TAG_STUDY, TAG_TRIAL, TAG_PRESET, TAG_PRESET_TWIN, TAG_ENCODING, TAG_FEASIBLE,
                      TAG_TFLITE_SHA256, TAG_DELEGATE, TAG_PARETO)


def model_tags(run_tags: Mapping[str, str], parent_run_id: str | None, method: str) -> dict[str, str]:
    """A model's tags from its run's: study, trial or preset, encoding, front membership; plus method and parent."""
    tags = {k: run_tags[k] for k in SHARED_TAGS if k in run_tags}
    return {**tags, TAG_METHOD: method, **({TAG_PARENT: parent_run_id} if parent_run_id else {})}


def log_model(client: MlflowClient, experiment_id: str, run_id: str, name: str, params: Mapping[str, str],
              tags: Mapping[str, str], files_dir: str) -> str:
    """Create the run's LoggedModel from the files in ``files_dir`` and list it among the run's outputs.

    The model stays PENDING until ``finalize``. Returns its id.
    """
    model = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, tags=dict(tags),
                                       params=dict(params), model_type=MODEL_TYPE)
    client.log_model_artifacts(model.model_id, files_dir)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def finalize(client: MlflowClient, model_id: str, ready: bool) -> None:
    """READY once its trial is COMPLETE (or its preset measured), FAILED when the trial failed after logging it."""
    client.finalize_logged_model(model_id, LoggedModelStatus.READY if ready else LoggedModelStatus.FAILED)


def set_front(client: MlflowClient, model_id: str, on_front: bool) -> None:
    """The model's ``litesweep.pareto`` tag, as its run's."""
    client.set_logged_model_tags(model_id, {TAG_PARETO: str(on_front).lower()})


def study_models(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, LoggedModel]:
    """Every LoggedModel of a study (trials and presets), by source run id; all pages read."""
    found: dict[str, LoggedModel] = {}
    token = None
    while True:
        page = client.search_logged_models([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'",
                                           max_results=100, page_token=token)
        for model in page:
            if model.source_run_id is not None:
                found.setdefault(model.source_run_id, model)
        token = page.token
        if not token:
            return found


def latest_metrics(model: LoggedModel) -> dict[str, float]:
    """A model's metrics, the last value of each (confirmed figures may be logged after the trial)."""
    latest: dict[str, Any] = {}
    for metric in model.metrics or []:
        if metric.key not in latest or (metric.timestamp, metric.step) >= (latest[metric.key].timestamp, latest[metric.key].step):
            latest[metric.key] = metric
    return {key: float(metric.value) for key, metric in latest.items()}


class TrackerModels:
    """The ``Tracker``'s LoggedModel side: which model each run made, and making one from a run's files."""

    client: MlflowClient
    experiment_id: str
    parent_run_id: str | None
    _models: dict[str, str]  # run id -> its LoggedModel's id
    _runs: dict[str, tuple[str, dict[str, str]]]  # run id -> name and tags, for its model
    data_inputs: dict[str, DatasetInput]  # context -> a data split (search.datasets.data_inputs)

    def _run_tags(self, run_id: str) -> dict[str, str]:
        if run_id not in self._runs:
            run = self.client.get_run(run_id)
            self._runs[run_id] = (run.info.run_name, run.data.tags)
        return self._runs[run_id][1]

    def _log_model(self, run_id: str, run_tags: Mapping[str, str], params: Mapping[str, Any], files_dir: str) -> str:
        tags = model_tags(run_tags, self.parent_run_id, str(params.get("method", "preset")))
        model_params = {k: mask(str(v))[:6000] for k, v in params.items()}
        self._models[run_id] = log_model(self.client, self.experiment_id, run_id, self._runs[run_id][0], model_params, tags, files_dir)
        return self._models[run_id]

    def model_of(self, run_id: str) -> str | None:
        """The id of a run's LoggedModel (None for a run without one: no file yet, or from an older litesweep)."""
        if run_id not in self._models:
            model_id = self.client.get_run(run_id).data.tags.get(TAG_MODEL_ID)
            if model_id is None:
                return None
            self._models[run_id] = model_id
        return self._models[run_id]
