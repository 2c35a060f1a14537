"""The README's "Compress your own model" walk-through, run as written.

The test writes the files the section starts from (``my_model.keras``: a small CNN trained on
scikit-learn's digits; ``my_data.npz``: those digits as 8-bit images; ``my_keras3_model.keras``, a Keras 3
model trained on them; ``my_images.npz``, the images without labels) into a temporary folder, runs every
``bash`` block of the section there with ``bash -eu``, and appends quick-tier settings to each ``litesweep``
sweep command (two post-training trials, short latency runs, no presets: training trials on user files are
covered by tests/search_tests/test_own_model.py). Then it re-measures the picked ``.tflite`` against the
exported metrics.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Compress your own model"
QUICK_SWEEP = ["study.n_trials=2", "space=ptq", "study.presets=false", "latency.max_seconds=0.05", "latency.max_runs=60", "progress=false"]
ROOT = README.parent


def walkthrough() -> list[str]:
    """The ``bash`` blocks of the section, in order."""
    text = README.read_text()
    assert SECTION in text, f"README has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def quick(block: str) -> str:
    """The block with the quick-tier settings appended to each sweep command (Hydra: the last override wins)."""
    lines = []
    for line in block.splitlines():
        command = line.split(" #", 1)[0].rstrip()
        if re.match(r"litesweep\s", command):
            line = " ".join([command, *QUICK_SWEEP])
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def own_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """``my_model.keras`` and ``my_data.npz``, as a user's training script would leave them."""
    from litesweep.objectives.compat import keras

    from sklearn.datasets import load_digits

    from litesweep.objectives.architectures import build_cnn
    from litesweep.objectives.settings import CnnSpec

    bunch = load_digits()
    images = (bunch.images * 15).astype("uint8")[..., None]  # 0..16 -> 0..240, (N, 8, 8, 1)
    arrays = {"x_train": images[:1400], "y_train": bunch.target[:1400], "x_test": images[1400:], "y_test": bunch.target[1400:]}
    folder = tmp_path_factory.mktemp("readme")
    np.savez(folder / "my_data.npz", **arrays)
    keras.utils.set_random_seed(0)
    model = build_cnn(CnnSpec(conv_filters=(8,), dense_units=(32,)), (8, 8, 1), 10)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(arrays["x_train"] / 255.0, arrays["y_train"], epochs=8, batch_size=64, verbose=0)
    model.save(folder / "my_model.keras")
    # The Keras 3 model and the unlabelled images of the second block.
    from litesweep.objectives.compat import keras3

    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((8, 8, 1))
    x = keras3.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras3.layers.ReLU(name="relu")(keras3.layers.BatchNormalization(momentum=0.9, name="bn")(x))
    keras_3_model = keras3.Model(inputs, keras3.layers.Dense(10, name="logits")(keras3.layers.Flatten(name="flatten")(x)))
    keras_3_model.compile(keras3.optimizers.Adam(3e-3), keras3.losses.SparseCategoricalCrossentropy(from_logits=True))
    keras_3_model.fit(arrays["x_train"] / 255.0, arrays["y_train"], epochs=8, batch_size=64, verbose=0)
    keras_3_model.save(folder / "my_keras3_model.keras")
    np.savez(folder / "my_images.npz", x_train=arrays["x_train"], x_test=arrays["x_test"])
    return folder, arrays


def test_the_compress_your_own_model_walkthrough_runs_as_written(own_files) -> None:
    from litesweep.objectives.data import Source, load_dataset
    from litesweep.objectives.measure import predict

    folder, arrays = own_files
    blocks = walkthrough()
    commands = [line for block in blocks for line in block.splitlines() if re.match(r"litesweep(-pick)?\s", line)]
    assert len(commands) == 4 and "model.path=" in commands[0] and "data=npz" in commands[0], commands
    # The console scripts of this interpreter, importing this checkout's packages first.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    consoles = []
    # The second block runs in the first one's shell (its MODEL and DATA).
    for block in (blocks[0], blocks[0].split("\n", 1)[0] + "\n" + blocks[1]):
        proc = subprocess.run(["bash", "-eu", "-c", quick(block)], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        consoles.append(proc.stdout + proc.stderr)
        if len(consoles) == 1:
            first = proc
    console = consoles[0]
    # 1,400 training images, 10% held out: 140 to select on, and the sweep says that is too few to trust.
    warned = [line for line in console.splitlines() if "the validation split has" in line]
    assert len(warned) == 1 and "has 140 examples (fewer than 200)" in warned[0], warned

    picked = folder / "my_sweep" / "picked" / "my-model"
    assert {"model.tflite", "policy.json", "metrics.json", "MODEL_CARD.md"} <= {p.name for p in picked.iterdir()}
    assert "model.tflite" in first.stdout  # the closing `ls` printed the export
    tflite = (picked / "model.tflite").read_bytes()
    exported = json.loads((picked / "metrics.json").read_text())["metrics"]
    data = load_dataset(Source("npz", path=str(folder / "my_data.npz")), name="npz")  # as the sweep read it
    assert np.array_equal(np.sort(data.y_test), np.sort(arrays["y_test"]))  # the same test split (shuffled)
    outputs, _ = predict(tflite, data.x_val)  # selected on validation
    assert len(tflite) == exported["size_bytes"] and "kl_divergence" in exported
    card = (picked / "MODEL_CARD.md").read_text()
    assert f"base model `{folder / 'my_model.keras'}`" in card and "data `npz`" in card, card
    assert f"data.path={folder / 'my_data.npz'}" in card  # its litesweep-apply command rebuilds from the same files
    assert float(np.mean(np.argmax(outputs, axis=1) == data.y_val)) == exported["accuracy"]
    test_outputs, _ = predict(tflite, data.x_test)  # and reported on the untouched test split
    assert float(np.mean(np.argmax(test_outputs, axis=1) == data.y_test)) == exported["test_accuracy"]

    # The second block: the Keras 3 model was rebuilt and checked; the unlabelled images were scored by agreement.
    from mlflow.tracking import MlflowClient

    from litesweep.search.ledger import read_artifact

    def parent(out: str, study: str) -> tuple[MlflowClient, str, dict[str, float]]:
        client = MlflowClient(f"sqlite:///{folder / out / 'mlruns' / 'mlflow.db'}")
        experiment = client.get_experiment_by_name(study)
        assert experiment is not None, study
        run = client.search_runs([experiment.experiment_id], "tags.`litesweep.role` = 'study'")[0]
        return client, run.info.run_id, run.data.metrics

    client, run_id, _ = parent("keras3_sweep", "my-keras3-model")
    training = json.loads(read_artifact(client, run_id, "reference.json"))["training"]
    assert training["source_keras"].startswith("3.") and training["keras3_max_difference"] <= 1e-5, training
    _, _, metrics = parent("unlabelled_sweep", "unlabelled")
    assert metrics["reference.accuracy"] == 1.0
