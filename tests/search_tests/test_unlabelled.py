"""A pretrained model with data that has no labels: ``objective=agreement`` scores and distils against the float
model's own outputs; an objective that needs labels is refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from litesweep.search.app import run
from tests.conftest import compose_quick


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small CNN trained on the digits (saved as ``.keras``), and those digits as an npz without labels and a flat folder."""
    from litesweep.objectives.compat import keras

    from PIL import Image
    from sklearn.datasets import load_digits

    from litesweep.objectives.architectures import build_cnn
    from litesweep.objectives.settings import CnnSpec

    bunch = load_digits()
    images = (bunch.images * 15).astype("uint8")  # 0..16 -> 0..240
    root = tmp_path_factory.mktemp("unlabelled")
    keras.utils.set_random_seed(0)
    model = build_cnn(CnnSpec(conv_filters=(8,), dense_units=(32,)), (8, 8, 1), 10)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images[:1400, ..., None] / 255.0, bunch.target[:1400], epochs=8, batch_size=64, verbose=0)
    model.save(root / "pretrained.keras")
    np.savez(root / "unlabelled.npz", x_train=images[:1400], x_test=images[1400:])
    for i, image in enumerate(images[:400]):
        (root / "flat").mkdir(exist_ok=True)
        Image.fromarray(image, mode="L").save(root / "flat" / f"{i:04d}.png")
    return {"model": root / "pretrained.keras", "npz": root / "unlabelled.npz", "flat": root / "flat"}


def test_an_unlabelled_npz_is_swept_by_agreement_with_the_float_model(pretrained, tmp_path: Path) -> None:
    from litesweep.objectives.data import Source, load_dataset
    from litesweep.objectives.measure import predict
    from litesweep.search.ledger import TAG_METRIC, read_artifact

    result = run(compose_quick(tmp_path / "out", "data=npz", f"data.path={pretrained['npz']}", f"model.path={pretrained['model']}",
                               "objective=agreement", "study.n_trials=2", "study.presets=false"))
    assert result.n_finished == 2  # trained trials (QAT), distilled from the float model only
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags[TAG_METRIC] == "agreement"
    assert parent.data.metrics["reference.accuracy"] == 1.0 and parent.data.metrics["reference.test_accuracy"] == 1.0
    assert json.loads(read_artifact(client, result.parent_run_id, "reference.json"))["training"]["labelled"] is False

    data = load_dataset(Source("npz", path=str(pretrained["npz"])), name="npz")  # as the sweep read it
    assert not data.labelled and len(data.x_train) + len(data.x_val) == 1400
    reference = Path(client.download_artifacts(result.parent_run_id, "model_float32.tflite", str(tmp_path))).read_bytes()
    reference_outputs, _ = predict(reference, data.x_val)
    for trial in client.search_runs([result.experiment_id], filter_string="tags.`litesweep.role` = 'trial'"):
        tflite = Path(client.download_artifacts(trial.info.run_id, "model.tflite", str(tmp_path / trial.info.run_id))).read_bytes()
        outputs, _ = predict(tflite, data.x_val)
        agreement = float(np.mean(np.argmax(outputs, axis=1) == np.argmax(reference_outputs, axis=1)))
        assert trial.data.metrics["accuracy"] == agreement and len(tflite) == trial.data.metrics["size_bytes"]


@pytest.mark.parametrize("objective", ["accuracy", "top_k"])
def test_an_objective_that_needs_labels_is_refused_on_unlabelled_data_in_one_line(objective, pretrained, tmp_path: Path) -> None:
    from litesweep.objectives.errors import ConfigError

    out = tmp_path / "out"
    cfg = compose_quick(out, "data=npz", f"data.path={pretrained['npz']}", f"model.path={pretrained['model']}", f"objective={objective}")
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    name = "top_5" if objective == "top_k" else objective
    assert str(caught.value) == (f"objective.metric = '{name}' needs labels, and data 'npz' has none (no y_train, y_test; no class "
                                 "sub-folders); accepted: objective=agreement, or data with labels")
    assert not out.exists() or not any(out.rglob("*"))


def test_a_flat_folder_of_images_is_swept_by_agreement(pretrained, tmp_path: Path) -> None:
    result = run(compose_quick(tmp_path / "out", "data=folder", f"data.path={pretrained['flat']}", "data.image_size=[8,8]",
                               "data.color_mode=grayscale", f"model.path={pretrained['model']}", "objective=agreement",
                               "space=ptq", "study.n_trials=2", "study.presets=false"))
    assert result.n_finished == 2
    parent = MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.data.metrics["reference.accuracy"] == 1.0
