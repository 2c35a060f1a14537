"""Bad input, table-driven: one line naming the bad thing and what is accepted, exit code 2, nothing
written to the stores. Models are real Keras files written by the test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import QUICK_OVERRIDES


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model files: good (digits-shaped), 28x28 input, 5 outputs, Lambda (.keras and .h5), subclassed, not a model."""
    from litesweep.objectives.compat import keras

    root = tmp_path_factory.mktemp("models")

    def cnn(shape: tuple[int, ...], outputs: int, lam: bool = False) -> keras.Model:
        inputs = keras.Input(shape)
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
        if lam:
            x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
        x = keras.layers.Flatten()(x)
        return keras.Model(inputs, keras.layers.Dense(outputs, name="logits")(x))

    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(keras.layers.Flatten()(x))

    files = {"mnist_shape": root / "mnist.keras", "five_outputs": root / "five.keras", "lambda_keras": root / "lambda.keras",
             "lambda_h5": root / "lambda.h5", "subclassed": root / "subclassed_savedmodel", "not_a_model": root / "notes.keras"}
    cnn((28, 28, 1), 10).save(files["mnist_shape"])
    cnn((8, 8, 1), 5).save(files["five_outputs"])
    cnn((8, 8, 1), 10, lam=True).save(files["lambda_keras"])
    cnn((8, 8, 1), 10, lam=True).save(files["lambda_h5"])
    # The same HDF5 file under a name Keras would not treat as HDF5, and a Lambda model as a SavedModel.
    files["lambda_h5_renamed"] = root / "lambda_h5.model"
    files["lambda_h5_renamed"].write_bytes(files["lambda_h5"].read_bytes())
    files["lambda_savedmodel"] = root / "lambda_savedmodel"
    cnn((8, 8, 1), 10, lam=True).save(files["lambda_savedmodel"], save_format="tf")
    sub = Subclassed()
    sub(keras.Input((8, 8, 1)))
    sub.save(files["subclassed"], save_format="tf")
    files["not_a_model"].write_text("this is not a model")
    files["file"] = root / "a_file"
    files["file"].write_text("x")
    rng = np.random.default_rng(0)
    files["val_shape_npz"] = root / "val_shape.npz"  # x_val images 6x6, the rest 8x8
    np.savez(files["val_shape_npz"], x_train=rng.random((60, 8, 8)), y_train=np.arange(60) % 10, x_val=rng.random((20, 6, 6)),
             y_val=np.arange(20) % 10, x_test=rng.random((20, 8, 8)), y_test=np.arange(20) % 10)
    return files


#: (case, overrides from the model files and the output dir, what the line names, what it says is accepted).
#: ``o.parent / "locked"`` is a folder nobody may write (0o555), created for every row.
CASES = [
    ("missing model file", lambda m, o: [f"model.path={o}/nope.keras"], "model.path = '",
     "does not exist; accepted: a .keras or .h5 file"),
    ("not a Keras model", lambda m, o: [f"model.path={m['not_a_model']}"], "is not a Keras model Keras can load",
     "accepted: a .keras or .h5"),
    ("Lambda in a renamed .h5", lambda m, o: [f"model.path={m['lambda_h5_renamed']}"], "holds a Lambda layer (arbitrary code), refused",
     "model.trust_code=true"),
    ("Lambda in a SavedModel", lambda m, o: [f"model.path={m['lambda_savedmodel']}"], "holds a Lambda layer (arbitrary code), refused",
     "model.trust_code=true"),
    ("subclassed model", lambda m, o: [f"model.path={m['subclassed']}"], "is a subclassed model, which cannot be cloned",
     "accepted: a Sequential or Functional"),
    ("Lambda in .keras", lambda m, o: [f"model.path={m['lambda_keras']}"], "holds a Lambda layer (arbitrary code), refused",
     "accepted: a model without Lambda layers, or model.trust_code=true"),
    ("Lambda in .h5", lambda m, o: [f"model.path={m['lambda_h5']}"], "holds a Lambda layer (arbitrary code), refused",
     "accepted: a model without Lambda layers, or model.trust_code=true"),
    ("data shape", lambda m, o: [f"model.path={m['mnist_shape']}"],
     "data samples have shape (8, 8, 1) but the model expects (28, 28, 1)",
     "accepted: data whose samples are (28, 28, 1), or a model whose input is (8, 8, 1)"),
    ("labels out of range", lambda m, o: [f"model.path={m['five_outputs']}"], "labels span [0, 9] but the model has 5 outputs",
     "accepted: 0..4"),
    ("empty split", lambda m, o: ["data.limit=3"], "split of data 'digits' is empty", "accepted: enough samples"),
    ("unknown sampler", lambda m, o: ["study.sampler=bayes"], "study.sampler = 'bayes' is not supported", "accepted: ['tpe'"),
    ("unreachable tracking server", lambda m, o: ["tracking.uri=http://127.0.0.1:9"],
     "tracking.uri = 'http://127.0.0.1:9' cannot be reached",
     "accepted: the URL of a running tracking server (mlflow server --host 127.0.0.1"),
    ("unreachable database", lambda m, o: ["study.storage=postgresql://litesweep:s3cret@127.0.0.1:9/studies"],
     "study.storage = 'postgresql://litesweep:***@127.0.0.1:9/studies' cannot be reached",
     "accepted: a journal file path or a database URL that answers"),
    ("output dir under a file", lambda m, o: [f"paths.output_dir={m['file']}/out"], "paths.output_dir = ",
     "is a file; accepted: a directory this user can write"),
    ("output dir read-only", lambda m, o: [f"paths.output_dir={o.parent}/locked"], "paths.output_dir = ",
     "is not writable ('{locked}'); accepted: a directory this user can write"),
    ("output dir under a read-only folder", lambda m, o: [f"paths.output_dir={o.parent}/locked/out"], "paths.output_dir = ",
     "is not writable ('{locked}'); accepted: a directory this user can write"),
    ("study journal folder read-only", lambda m, o: [f"study.storage={o.parent}/locked/optuna.journal"],
     "study.storage folder = ", "is not writable ('{locked}'); accepted: a directory this user can write"),
    ("study sqlite folder read-only", lambda m, o: [f"study.storage=sqlite:///{o.parent}/locked/optuna.db"],
     "study.storage folder = ", "is not writable ('{locked}'); accepted: a directory this user can write"),
    ("study sqlite folder missing", lambda m, o: [f"study.storage=sqlite:///{o.parent}/missing/optuna.db"],
     "/missing' does not exist, and SQLite does not create it", "accepted: a SQLite file in an existing folder"),
    ("tracking folder read-only", lambda m, o: [f"tracking.uri=sqlite:///{o.parent}/locked/mlflow.db"],
     "tracking.uri folder = ", "is not writable ('{locked}'); accepted: a directory this user can write"),
    ("corrupted study file", lambda m, o: [], "is not a readable Optuna journal", "accepted: a journal Optuna wrote"),
    ("unknown config key", lambda m, o: ["study.n_trails=3"], "unknown config key 'study.n_trails'", "accepted keys here"),
    ("bit width", lambda m, o: ["space.bits=[3]"], "space.bits entry = 3 is not supported", "accepted bit widths"),
    ("sparsity of 1.0", lambda m, o: ["space.sparsity.high=1.0"], "space.sparsity.high = 1.0 is out of range",
     "accepted: 0.0 <= sparsity <="),
    ("temperature", lambda m, o: ["space.distill.temperature.low=0"], "space.distill.temperature.low = 0.0 is not accepted",
     "accepted: a positive number"),
    ("constraint metric", lambda m, o: ["study.constraints={flops:1}"], "study.constraints key = 'flops' is not supported", "accepted: ["),
    ("no validation share", lambda m, o: ["data.val_fraction=0"], "data.val_fraction = 0.0 is out of range",
     "accepted: 0 < fraction < 1"),
    ("all of it for validation", lambda m, o: ["data.val_fraction=1.0"], "data.val_fraction = 1.0 is out of range",
     "accepted: 0 < fraction < 1"),
    ("npz x_val of another shape", lambda m, o: ["data=npz", f"data.path={m['val_shape_npz']}"],
     "data 'npz' has val images of shape (6, 6, 1) but training images of shape (8, 8, 1)", "accepted: one image shape in every split"),
    ("no confirmation round", lambda m, o: ["latency.confirm_rounds=0"], "latency.confirm_rounds = 0 is too few",
     "accepted: an integer >= 5"),
]


def _without_permission_bypass(args: list[str]) -> list[str]:
    """``args`` run so that a 0o555 folder refuses them, as it refuses an ordinary user.

    Root (as in CI) ignores permission bits through CAP_DAC_OVERRIDE, so as root the command runs with that
    capability dropped (setpriv, util-linux); it stays the owner of its own files. User ``nobody`` would not do:
    the interpreter may live under /root (0o700, as pyenv's does), which ``nobody`` cannot enter.
    """
    if os.geteuid() != 0:
        return args
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *args]


@pytest.mark.parametrize(("case", "overrides", "message", "accepted"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line_and_writes_nothing(case, overrides, message, accepted, models, tmp_path: Path) -> None:
    out = tmp_path / "out"
    journal = out / "mlruns" / "optuna.journal"
    cache = tmp_path / "cache"  # its own base-model cache: any file in it means the check came after training started
    if case == "corrupted study file":
        journal.parent.mkdir(parents=True)
        journal.write_text('{"op_code": 0, "worker_id": "x"\nnot json at all\n')
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)  # mkdir's mode is masked by the umask
    before = journal.read_bytes() if journal.exists() else None
    extra = overrides(models, out)
    own_output = any(a.startswith("paths.output_dir") for a in extra)
    args = [sys.executable, "-m", "litesweep.search", *QUICK_OVERRIDES, *([] if own_output else [f"paths.output_dir={out}"]),
            f"paths.cache_dir={cache}", *extra, f"hydra.run.dir={tmp_path}/hydra"]
    try:
        proc = subprocess.run(_without_permission_bypass(args), capture_output=True, text=True, timeout=300)
        assert not list(locked.iterdir())
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("litesweep: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert message in errors[0], errors[0]
    assert accepted.format(locked=locked) in errors[0] and "accepted" in errors[0], errors[0]
    assert "s3cret" not in proc.stderr + proc.stdout
    assert not (out / "mlruns" / "mlflow.db").exists() and not (out / "mlruns" / "artifacts").exists()
    assert (journal.read_bytes() if journal.exists() else None) == before
    assert not cache.exists(), "the base-model cache was opened: the check came after training started"


def test_the_table_covers_every_kind_of_bad_input() -> None:
    """The issue asks for at least 15 bad inputs, each saying what is accepted."""
    assert len(CASES) >= 15
    assert all(accepted.strip() for *_, accepted in CASES)


def test_a_layer_no_technique_supports_is_reported_and_left_float(tmp_path: Path) -> None:
    """A built-in layer no technique supports and a user's custom layer (imported by model.custom_objects)."""
    from litesweep.objectives.compat import keras

    from mlflow.tracking import MlflowClient

    from litesweep.search.app import run
    from tests.conftest import compose_quick
    from tests.search_tests.user_layers import Scale

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = Scale(name="scale")(x)
    x = keras.layers.Flatten()(x)
    keras.Model(inputs, keras.layers.Dense(10, name="logits")(x)).save(tmp_path / "norm.keras")
    result = run(compose_quick(tmp_path / "out", f"model.path={tmp_path / 'norm.keras'}", "study.n_trials=1", "study.presets=false",
                               "model.custom_objects=[tests.search_tests.user_layers]"))
    assert result.n_finished == 1
    client = MlflowClient(result.tracking_uri)
    trial = client.search_runs([result.experiment_id], filter_string="tags.`litesweep.role` = 'trial'")[0]
    assert {k for k in trial.data.params if k.startswith("bits.")} == {"bits.conv1", "bits.logits"}
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["litesweep.unsupported_layers"] == "norm,scale"


@pytest.fixture(scope="module")
def unloadable_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model with a custom layer whose class Keras cannot find when loading (defined here, not registered),
    and a Keras 3 model exported as a SavedModel (no Keras layers left to rebuild)."""
    from litesweep.objectives.compat import keras

    import keras as keras3

    class Offset(keras.layers.Layer):
        def build(self, input_shape) -> None:
            self.offset = self.add_weight(name="offset", shape=(input_shape[-1],), initializer="zeros")

        def call(self, x):
            return x + self.offset

    Offset.__module__ = "__main__"  # as when defined in the user's training script
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = Offset(name="offset")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(x)))
    root = tmp_path_factory.mktemp("custom")
    files = {"keras": root / "offset.keras", "savedmodel": root / "offset_savedmodel", "keras3_export": root / "keras3_export"}
    model.save(files["keras"])
    model.save(files["savedmodel"], save_format="tf")
    inputs3 = keras3.Input((8, 8, 1))
    model3 = keras3.Model(inputs3, keras3.layers.Dense(10)(keras3.layers.Flatten()(inputs3)))
    model3.export(files["keras3_export"], verbose=False)
    return files


LOAD_CASES = [
    ("custom class not found", "keras", [],
     "uses class 'Offset', a custom class Keras cannot find here; accepted: built-in layers, or the module defining it in "
     "model.custom_objects"),
    ("revived layer cannot be cloned", "savedmodel", [],
     "cannot be cloned, and every trial starts from a clone: layer 'offset' (Offset) was revived from the SavedModel "
     "without its Python class"),
    ("custom_objects not importable", "keras", ["no_such_module.Offset"],
     "model.custom_objects entry = 'no_such_module.Offset' cannot be imported (ModuleNotFoundError"),
    ("Keras 3 export", "keras3_export", [], "is a SavedModel without Keras layers (tf.saved_model.save or Keras 3's model.export)"),
]


@pytest.mark.parametrize(("case", "fmt", "custom", "message"), LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_a_model_that_cannot_be_loaded_or_cloned_is_refused_naming_why(case, fmt, custom, message, unloadable_files) -> None:
    from litesweep.objectives.errors import ModelError
    from litesweep.objectives.models import load_model

    with pytest.raises(ModelError) as caught:
        load_model(unloadable_files[fmt], custom_objects=custom)
    text = str(caught.value)
    assert "\n" not in text and message in text, text
