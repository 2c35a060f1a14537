"""Bring your own model: a Functional model with a residual connection, trained here and saved as
``.keras``, ``.h5`` and a SavedModel, each swept for 2 trials; every logged ``.tflite`` is re-measured.

Each format is also swept with a different ``objective.metric`` (the default top-1, a user ``_target_``,
``agreement``), so the re-measurement checks that the logged ``accuracy`` is the configured metric.
The ``.keras`` sweep trains (QAT on the residual model); the ``.h5`` and SavedModel sweeps are post-training
(``space=ptq``) to keep the quick tier quick.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from litesweep.search.app import run
from litesweep.search.ledger import METRIC_ATTR, TAG_METRIC
from tests.conftest import compose_quick

USER_METRIC = "tests.search_tests.user_metrics.macro_recall"
#: format -> (file name, objective overrides, the metric name the study records)
FORMATS = {
    "keras": ("residual.keras", [], "accuracy"),
    "h5": ("residual.h5", ["space=ptq", f"objective.metric={{_target_:{USER_METRIC}}}"], USER_METRIC),
    "savedmodel": ("residual_savedmodel", ["space=ptq", "objective=agreement"], "agreement"),
}


@pytest.fixture(scope="module")
def residual_model(tmp_path_factory: pytest.TempPathFactory):
    """One small residual CNN trained briefly on the digits, saved in the three formats."""
    from litesweep.objectives.compat import keras

    from litesweep.objectives.data import load_dataset

    data = load_dataset("digits", name="digits", val_fraction=0.15, test_fraction=0.25, seed=0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="residual_cnn")
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=6, batch_size=64, verbose=0)
    root = tmp_path_factory.mktemp("own_model")
    paths = {fmt: root / name for fmt, (name, _, _) in FORMATS.items()}
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.save(paths["savedmodel"], save_format="tf")
    return model, data, paths


@pytest.fixture(scope="module", params=list(FORMATS))
def sweep(request: pytest.FixtureRequest, residual_model, tmp_path_factory: pytest.TempPathFactory):
    fmt = request.param
    _, _, paths = residual_model
    _, overrides, _ = FORMATS[fmt]
    out = tmp_path_factory.mktemp(f"sweep_{fmt}")
    cfg = compose_quick(out, f"model.path={paths[fmt]}", "study.n_trials=2", "study.presets=false", *overrides)
    return fmt, run(cfg)


def _score(fmt: str, labels: np.ndarray, outputs: np.ndarray, reference: np.ndarray) -> float:
    """The configured metric, computed here from its definition."""
    if fmt == "keras":
        return float(np.mean(np.argmax(outputs, axis=1) == labels))
    if fmt == "h5":
        from tests.search_tests.user_metrics import macro_recall

        return macro_recall(labels, outputs)
    return float(np.mean(np.argmax(outputs, axis=1) == np.argmax(reference, axis=1)))


def test_a_sweep_of_the_residual_model_logs_tflites_that_remeasure_to_their_metrics(sweep, residual_model, tmp_path: Path) -> None:
    from litesweep.objectives.measure import predict
    from litesweep.objectives.metrics import kl_divergence

    fmt, result = sweep
    model, data, _ = residual_model
    assert result.n_finished == 2
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags[TAG_METRIC] == FORMATS[fmt][2]
    assert parent.data.tags["litesweep.unsupported_layers"] == "none"

    # The float reference is the model as trained here: the file loaded from this format kept its weights and the Add.
    reference = Path(client.download_artifacts(result.parent_run_id, "model_float32.tflite", str(tmp_path))).read_bytes()
    reference_outputs, _ = predict(reference, data.x_val)
    np.testing.assert_allclose(reference_outputs, model.predict(data.x_val, verbose=0), atol=1e-4)
    assert parent.data.metrics["reference.accuracy"] == _score(fmt, data.y_val, reference_outputs, reference_outputs)
    reference_test, _ = predict(reference, data.x_test)
    assert parent.data.metrics["reference.test_accuracy"] == _score(fmt, data.y_test, reference_test, reference_test)

    trials = client.search_runs([result.experiment_id], filter_string="tags.`litesweep.role` = 'trial'")
    assert len(trials) == 2
    for trial in trials:
        assert {k for k in trial.data.params if k.startswith("bits.")} == {"bits.conv1", "bits.conv2", "bits.logits"}
        tflite = Path(client.download_artifacts(trial.info.run_id, "model.tflite", str(tmp_path / trial.info.run_id))).read_bytes()
        outputs, _ = predict(tflite, data.x_val)
        logged = trial.data.metrics
        assert len(tflite) == logged["size_bytes"]
        assert logged["accuracy"] == _score(fmt, data.y_val, outputs, reference_outputs)
        if trial.data.tags["litesweep.pareto"] == "true":  # a front trial is measured on test too
            assert "test_accuracy" in logged
        if "test_accuracy" in logged:  # (as is one that was on the front for a while): with the configured metric
            test_outputs, _ = predict(tflite, data.x_test)
            assert logged["test_accuracy"] == _score(fmt, data.y_test, test_outputs, reference_test)
        assert logged["accuracy_drop"] == pytest.approx((parent.data.metrics["reference.accuracy"] - logged["accuracy"]) * 100, abs=1e-6)
        assert logged["kl_divergence"] == pytest.approx(kl_divergence(reference_outputs, outputs), rel=1e-6, abs=1e-9)
        if fmt == "h5":  # the user metric is not plain top-1 accuracy
            assert logged["accuracy"] != float(np.mean(np.argmax(outputs, axis=1) == data.y_val))

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(result.storage))
    assert optuna.load_study(study_name=result.study_name, storage=storage).user_attrs[METRIC_ATTR] == FORMATS[fmt][2]


@pytest.mark.parametrize("sweep", ["keras"], indirect=True)
def test_resuming_a_study_with_another_metric_is_refused(sweep, residual_model) -> None:
    from litesweep.objectives.errors import ConfigError

    _, result = sweep
    _, _, paths = residual_model
    out = Path(result.storage).parent.parent
    cfg = compose_quick(out, f"model.path={paths['keras']}", "study.n_trials=3", "study.presets=false", "objective=agreement")
    with pytest.raises(ConfigError, match=r"study 'digits-tiny_cnn-default' is scored with objective.metric = 'accuracy', not 'agreement'; "
                                          r"accepted: the same objective.metric, or another study.name"):
        run(cfg)
    client = MlflowClient(result.tracking_uri)
    assert len(client.search_runs([result.experiment_id], filter_string="tags.`litesweep.role` = 'trial'")) == 2


@pytest.mark.parametrize("sweep", ["keras"], indirect=True)
def test_resuming_a_study_with_another_model_file_is_refused_and_writes_nothing(sweep, residual_model) -> None:
    """The same architecture and weights saved as .h5 are still another file: the study keeps one reference."""
    from litesweep.objectives.errors import ConfigError

    _, result = sweep
    _, _, paths = residual_model
    out = Path(result.storage).parent.parent
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(result.storage))
    before = optuna.load_study(study_name=result.study_name, storage=storage)
    client = MlflowClient(result.tracking_uri)
    runs_before = client.search_runs([result.experiment_id])
    parent_before = client.get_run(result.parent_run_id).data
    cfg = compose_quick(out, f"model.path={paths['h5']}", "study.n_trials=3", "study.presets=false",
                        f"study.name={result.study_name}")
    with pytest.raises(ConfigError, match=r"^study 'digits-tiny_cnn-default' was run with another base model \(base model: "
                                          r"file:residual.keras:[0-9a-f]{16} then, file:residual.h5:[0-9a-f]{16} now\); "
                                          r"accepted: the study's own settings, or a new study.name for the new ones$"):
        run(cfg)
    after = optuna.load_study(study_name=result.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(result.storage)))
    assert len(after.trials) == len(before.trials) and after.user_attrs == before.user_attrs
    assert [r.info.run_id for r in client.search_runs([result.experiment_id])] == [r.info.run_id for r in runs_before]
    parent_after = client.get_run(result.parent_run_id).data
    assert (parent_after.metrics, parent_after.tags) == (parent_before.metrics, parent_before.tags)
