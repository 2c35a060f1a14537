"""A model saved by Keras 3 (``import keras``): rebuilt with tf_keras, checked, swept; or refused naming its layer.

The Keras 3 model is a Functional residual CNN built and trained here (Conv2D-BatchNormalization-ReLU, a
DepthwiseConv2D branch joined by ``Add``, GlobalAveragePooling2D, Dense) on scikit-learn's digits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from litesweep.search.app import run
from tests.conftest import QUICK_OVERRIDES, compose_quick

TOLERANCE = 1e-5  # objectives.keras3.MAX_DIFFERENCE: of the outputs' scale


def _relative(reference: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.max(np.abs(outputs - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def keras3_model(tmp_path_factory: pytest.TempPathFactory):
    """The Keras 3 model, trained a few steps on the digits as the sweep splits them, saved as ``.keras``."""
    from litesweep.objectives.compat import keras3

    from litesweep.objectives.data import Source, load_dataset
    from litesweep.search.config import settings

    data = load_dataset(settings(compose_quick(tmp_path_factory.mktemp("cfg")).data, Source))
    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((8, 8, 1), name="image")
    x = keras3.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras3.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras3.layers.ReLU(name="relu1")(x)
    y = keras3.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    y = keras3.layers.BatchNormalization(momentum=0.9, name="bn2")(y)
    x = keras3.layers.Add(name="residual")([x, keras3.layers.ReLU(name="relu2")(y)])
    x = keras3.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras3.Model(inputs, keras3.layers.Dense(10, name="logits")(x), name="keras3_residual")
    model.compile(keras3.optimizers.Adam(1e-2), keras3.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=10, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("keras3") / "k3.keras"
    model.save(path)
    return model, data, path


def test_a_keras3_model_is_rebuilt_with_tf_keras_checked_and_swept(keras3_model, tmp_path: Path) -> None:
    from litesweep.objectives.compat import keras3

    from litesweep.objectives.measure import predict
    from litesweep.search.ledger import read_artifact

    model, data, path = keras3_model
    result = run(compose_quick(tmp_path / "out", f"model.path={path}", "study.n_trials=2", "study.presets=false"))
    assert result.n_finished == 2
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    # The conversion and its check, on the parent run.
    assert parent.data.tags["litesweep.source_keras"] == keras3.__version__
    assert 0 <= parent.data.metrics["base_model.keras3_max_difference"] <= TOLERANCE
    training = json.loads(read_artifact(client, result.parent_run_id, "reference.json"))["training"]
    assert training["source_keras"] == keras3.__version__ and training["keras3_max_difference"] <= TOLERANCE

    # The float32 reference computes what the Keras 3 model computes, on the test split, within the tolerance.
    reference = Path(client.download_artifacts(result.parent_run_id, "model_float32.tflite", str(tmp_path))).read_bytes()
    outputs, _ = predict(reference, data.x_test)
    assert _relative(model.predict(data.x_test, verbose=0), outputs) <= TOLERANCE
    reference_val, _ = predict(reference, data.x_val)
    assert parent.data.metrics["reference.accuracy"] == float(np.mean(np.argmax(reference_val, axis=1) == data.y_val))

    # Trials: the user's layer names (BatchNormalization folded into conv1 and depthwise), files that re-measure.
    trials = client.search_runs([result.experiment_id], filter_string="tags.`litesweep.role` = 'trial'")
    assert len(trials) == 2
    for trial in trials:
        assert {k for k in trial.data.params if k.startswith("bits.")} == {"bits.conv1", "bits.depthwise", "bits.logits"}
        tflite = Path(client.download_artifacts(trial.info.run_id, "model.tflite", str(tmp_path / trial.info.run_id))).read_bytes()
        trial_outputs, _ = predict(tflite, data.x_val)
        assert len(tflite) == trial.data.metrics["size_bytes"]
        assert trial.data.metrics["accuracy"] == float(np.mean(np.argmax(trial_outputs, axis=1) == data.y_val))


def test_a_rebuild_that_computes_otherwise_names_the_layer_where_it_parts(keras3_model) -> None:
    from litesweep.objectives.compat import keras3

    from litesweep.objectives.errors import ModelError
    from litesweep.objectives.keras3 import rebuild, verify

    _, data, path = keras3_model
    source = keras3.saving.load_model(path, compile=False)
    model, made = rebuild(source, {}, "k3.keras")
    assert [layer.name for layer in model.layers] == [layer.name for layer in source.layers]
    assert verify(source, model, made, data.x_test, "k3.keras") <= TOLERANCE
    bias = model.get_layer("depthwise").bias
    bias.assign(bias + 0.25)  # what a layer tf_keras computes otherwise would do
    with pytest.raises(ModelError, match=r"^k3.keras: the tf_keras rebuild's outputs differ from Keras 3's by \S+ of their scale "
                                         r"\(first at layer 'depthwise', \S+\); accepted: at most 1e-05$"):
        verify(source, model, made, data.x_test, "k3.keras")


@pytest.fixture(scope="module")
def unconvertible(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keras 3 models holding a layer tf_keras lacks (RMSNormalization) and a custom layer."""
    from litesweep.objectives.compat import keras3

    class Scale(keras3.layers.Layer):
        def call(self, x):
            return x * 2.0

    root = tmp_path_factory.mktemp("unconvertible")
    files = {}
    for case, layer in (("rms", keras3.layers.RMSNormalization(name="rms")), ("custom", Scale(name="scale"))):
        inputs = keras3.Input((8, 8, 1))
        x = layer(keras3.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs))
        keras3.Model(inputs, keras3.layers.Dense(10, name="logits")(keras3.layers.Flatten()(x))).save(root / f"{case}.keras")
        files[case] = root / f"{case}.keras"
    return files


@pytest.mark.parametrize(("case", "message"), [
    ("rms", "layer 'rms' (RMSNormalization) has no tf_keras equivalent; accepted: Keras 3 layers tf_keras also has"),
    ("custom", "layer 'scale' (Scale) is a custom layer, and model.custom_objects gives no tf_keras class 'Scale' for it; "
               "accepted: built-in layers, or model.custom_objects naming modules that define Scale for Keras 3 and for tf_keras"),
])
def test_a_keras3_layer_tf_keras_lacks_is_named_in_one_line_and_nothing_is_written(case, message, unconvertible, tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [sys.executable, "-m", "litesweep.search", *QUICK_OVERRIDES, f"paths.output_dir={out}", f"paths.cache_dir={cache}",
            f"model.path={unconvertible[case]}", f"hydra.run.dir={tmp_path}/hydra"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("litesweep: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert f"model.path = '{unconvertible[case]}' (saved by Keras 3." in errors[0] and message in errors[0], errors[0]
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    assert not cache.exists()
