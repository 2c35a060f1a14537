"""What a sweep leaves in MLflow for an MLflow user: the experiment's kind, a LoggedModel per finished trial
(the Models tab, ``mlflow.search_logged_models``) and the data splits as dataset inputs."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_digits

from litesweep.objectives.data import load_dataset
from litesweep.objectives.settings import Source
from litesweep.search.app import run
from litesweep.search.config import settings
from litesweep.search.datasets import split_digest
from litesweep.search.ledger import POLICY_FILE, RUN_ID_ATTR, TAG_PARETO, TAG_ROLE, TFLITE_FILE
from litesweep.search.logged_models import TAG_MODEL_ID, latest_metrics
from litesweep.search.sweep import SweepResult
from litesweep.search.tracking import EXPERIMENT_KIND, Tracker
from tests.conftest import compose_quick

N_TRIALS = 3


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepResult]:
    out = tmp_path_factory.mktemp("records")
    return out, run(compose_quick(out, f"study.n_trials={N_TRIALS}", "study.sampler=random", "study.presets=false"))


def _complete(result: SweepResult) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(result.storage))
    study = optuna.load_study(study_name=result.study_name, storage=storage)
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def _trial_models(result: SweepResult, filter_string: str = "", order_by: list | None = None) -> list:
    mlflow.set_tracking_uri(result.tracking_uri)
    where = " AND ".join(f for f in (f"tags.`{TAG_ROLE}` = 'trial'", filter_string) if f)
    return mlflow.search_logged_models(experiment_ids=[result.experiment_id], filter_string=where, order_by=order_by,
                                       output_format="list")


def test_the_experiment_is_a_model_training_experiment(sweep, tmp_path: Path) -> None:
    _, result = sweep
    assert MlflowClient(result.tracking_uri).get_experiment(result.experiment_id).tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    # An experiment made before the tag (or by hand) gets it when a study opens it again.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    old = MlflowClient(uri).create_experiment("older", artifact_location=(tmp_path / "a").as_uri())
    Tracker(uri, "older", str(tmp_path / "a"))
    assert MlflowClient(uri).get_experiment(old).tags[EXPERIMENT_KIND[0]] == "custom_model_development"


def test_search_logged_models_returns_one_model_per_finished_trial_with_its_runs_metrics(sweep) -> None:
    _, result = sweep
    client = MlflowClient(result.tracking_uri)
    complete = _complete(result)
    assert len(complete) == N_TRIALS
    models = {m.source_run_id: m for m in _trial_models(result)}
    assert sorted(models) == sorted(t.user_attrs[RUN_ID_ATTR] for t in complete), "one model per finished trial"
    for trial in complete:
        model, run = models[trial.user_attrs[RUN_ID_ATTR]], client.get_run(trial.user_attrs[RUN_ID_ATTR])
        assert model.status == LoggedModelStatus.READY and model.name == run.info.run_name
        assert latest_metrics(model) == run.data.metrics, "the model's metrics are its run's"
        assert {k: model.params[k] for k in run.data.params if k in model.params} == {k: run.data.params[k] for k in model.params}
        assert model.params["method"] == model.tags["litesweep.method"] and "litesweep.encoding" in model.tags
        assert run.data.tags[TAG_MODEL_ID] == model.model_id
        assert run.outputs is not None and model.model_id in [o.model_id for o in run.outputs.model_outputs]
        on_front = trial.number in result.front_trial_numbers
        assert model.tags[TAG_PARETO] == run.data.tags[TAG_PARETO] == str(on_front).lower(), trial.number
        files = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {TFLITE_FILE, POLICY_FILE} <= files
        stored = Path(mlflow.artifacts.download_artifacts(f"{model.artifact_location}/{TFLITE_FILE}"))
        assert stored.read_bytes() == Path(client.download_artifacts(run.info.run_id, TFLITE_FILE)).read_bytes()


def test_search_logged_models_ranks_the_candidates(sweep) -> None:
    _, result = sweep
    ranked = _trial_models(result, "metrics.accuracy_drop <= 100.0",
                           order_by=[{"field_name": "metrics.size_bytes", "ascending": True}])
    sizes = [latest_metrics(m)["size_bytes"] for m in ranked]
    assert len(ranked) == N_TRIALS and sizes == sorted(sizes)
    best = _trial_models(result, "metrics.accuracy_drop <= 1.0")
    assert all(latest_metrics(m)["accuracy_drop"] <= 1.0 for m in best)


def _digests(result: SweepResult, run_id: str) -> dict[str, tuple[str, str]]:
    run = MlflowClient(result.tracking_uri).get_run(run_id)
    assert run.inputs is not None
    return {next(t.value for t in d.tags if t.key == "mlflow.data.context"): (d.dataset.name, d.dataset.digest)
            for d in run.inputs.dataset_inputs}


def test_trial_runs_take_the_validation_and_test_data_they_were_scored_on_as_inputs(sweep) -> None:
    out, result = sweep
    data = load_dataset(settings(compose_quick(out).data, Source))
    expected = {"validation": split_digest(data.x_val, data.y_val), "test": split_digest(data.x_test, data.y_test)}
    for trial in _complete(result):
        found = _digests(result, trial.user_attrs[RUN_ID_ATTR])
        assert {c: found[c][1] for c in expected} == expected
        assert found["validation"][0] == "digits-validation"
    parent = _digests(result, result.parent_run_id)
    assert parent["training"][1] == split_digest(data.x_train, data.y_train) and parent["test"][1] == expected["test"]
    inputs = MlflowClient(result.tracking_uri).get_run(result.parent_run_id).inputs
    assert inputs is not None
    dataset = inputs.dataset_inputs[0].dataset
    assert dataset.source_type == "litesweep_data_config" and '"source": "digits"' in dataset.source


def test_a_changed_data_file_gives_another_digest(tmp_path: Path) -> None:
    digits = load_digits()
    x, y = digits.images.astype("uint8"), digits.target
    np.savez(tmp_path / "a.npz", x_train=x[:1300], y_train=y[:1300], x_test=x[1300:], y_test=y[1300:])
    x_changed = x.copy()
    x_changed[-1, -1, -1] ^= 1  # one pixel of the last test image: past the 10,000 values MLflow's own digest reads
    np.savez(tmp_path / "b.npz", x_train=x[:1300], y_train=y[:1300], x_test=x_changed[1300:], y_test=y[1300:])
    found = {}
    for name in ("a", "b"):
        result = run(compose_quick(tmp_path / name, "data=npz", f"data.path={tmp_path / f'{name}.npz'}", "study.n_trials=1",
                                   "study.presets=false", f"study.name=npz-{name}"))
        (trial,) = _complete(result)
        found[name] = _digests(result, trial.user_attrs[RUN_ID_ATTR])
    assert found["a"]["test"][1] != found["b"]["test"][1]
    assert found["a"]["validation"] == found["b"]["validation"], "the validation split did not change"
