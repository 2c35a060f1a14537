"""A real sweep end to end, asserted against the Optuna storage, the MLflow store and the files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from litesweep.objectives.metrics import METRIC_NAMES
from litesweep.search.app import run
from litesweep.search.ledger import TAG_PARETO, TAG_ROLE, TAG_TRIAL
from litesweep.search.sweep import SweepResult
from tests.conftest import QUICK_OVERRIDES, compose_quick

N_TRIALS = 3


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepResult]:
    out = tmp_path_factory.mktemp("sweep")
    return out, run(compose_quick(out, f"study.n_trials={N_TRIALS}", "study.sampler=random"))


def _client(result: SweepResult) -> MlflowClient:
    return MlflowClient(tracking_uri=result.tracking_uri)


def _trial_runs(result: SweepResult) -> list:
    return _client(result).search_runs([result.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'trial'")


def test_optuna_storage_holds_the_finished_trials(sweep) -> None:
    out, result = sweep
    assert Path(result.storage) == out / "mlruns" / "optuna.journal"
    study = optuna.load_study(study_name=result.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(result.storage)))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == N_TRIALS == result.n_finished
    assert all(len(t.values) == 3 for t in complete)
    # The front, recomputed here from the stored values: no other trial at least as good on all three.
    def beats(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> bool:
        (aa, asz, alat), (ba, bsz, blat) = a.values, b.values
        return aa >= ba and asz <= bsz and alat <= blat and a.values != b.values

    assert {t.number for t in complete if not any(beats(o, t) for o in complete)} == set(result.front_trial_numbers)


def test_mlflow_has_one_parent_and_one_child_per_trial_linked_both_ways(sweep) -> None:
    _, result = sweep
    client = _client(result)
    parents = client.search_runs([result.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'study'")
    assert [p.info.run_id for p in parents] == [result.parent_run_id]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["reference.accuracy"] == pytest.approx(result.reference["accuracy"])
    versions = {"tensorflow", "tensorflow-model-optimization", "optuna", "mlflow", "ai-edge-litert"}
    assert {f"litesweep.version.{p}" for p in versions} <= set(parent.data.tags)
    assert parent.data.tags["litesweep.seed"] == "0"
    assert parent.data.params["study.n_trials"] == str(N_TRIALS)
    parent_files = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"config.yaml", "search_space.json", "reference.json", "model_float32.tflite"} <= parent_files

    runs = _trial_runs(result)
    assert len(runs) == N_TRIALS
    study = optuna.load_study(study_name=result.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(result.storage)))
    by_number = {t.number: t for t in study.trials}
    front = set(result.front_trial_numbers)
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert r.info.status == "FINISHED"
        number = int(r.data.tags[TAG_TRIAL])
        assert by_number[number].user_attrs["mlflow_run_id"] == r.info.run_id
        assert r.data.tags[TAG_PARETO] == ("true" if number in front else "false")
        assert set(METRIC_NAMES) <= set(r.data.metrics)
        assert r.data.tags["litesweep.delegate"] in ("xnnpack", "builtin")
        for i, metric in enumerate(("accuracy", "size_bytes", "latency_ms")):
            assert r.data.metrics[metric] == pytest.approx(by_number[number].values[i])
        assert {k for k in r.data.params if k.startswith("bits.")} == {"bits.conv1", "bits.fc1", "bits.logits"}
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"model.tflite", "policy.json"}
        # Phase timings are on the run, and the phases fit inside the trial's wall time.
        phases = {k: r.data.metrics[f"time_{k}_s"] for k in ("prepare", "finetune", "convert", "evaluate", "log", "trial", "overhead")}
        assert 0 < phases["convert"] + phases["evaluate"] + phases["log"] < phases["trial"]
        assert phases["overhead"] == pytest.approx(phases["trial"] - phases["finetune"] - phases["convert"] - phases["evaluate"])


def test_a_logged_tflite_remeasures_to_its_logged_metrics(sweep, tmp_path: Path) -> None:
    from litesweep.objectives.data import load_dataset
    from litesweep.objectives.measure import accuracy

    _, result = sweep
    client = _client(result)
    run_ = _trial_runs(result)[0]
    local = Path(client.download_artifacts(run_.info.run_id, "model.tflite", str(tmp_path)))
    policy = json.loads(Path(client.download_artifacts(run_.info.run_id, "policy.json", str(tmp_path))).read_text())
    assert {f"bits.{k}": str(v["bits"]) for k, v in policy["layers"].items()} == {
        k: v for k, v in run_.data.params.items() if k.startswith("bits.")}
    tflite = local.read_bytes()
    assert len(tflite) == run_.data.metrics["size_bytes"]
    data = load_dataset("digits", name="digits", val_fraction=0.15, test_fraction=0.25, seed=0)
    acc, _ = accuracy(tflite, data.x_val, data.y_val)  # the search's figure: the validation split
    assert acc == run_.data.metrics["accuracy"]


def test_front_runs_carry_test_figures_and_confirmed_latency_and_no_other_run_touches_test(sweep, tmp_path: Path) -> None:
    from litesweep.objectives.data import load_dataset
    from litesweep.objectives.measure import accuracy
    from litesweep.objectives.metrics import CONFIRMED_LATENCY_NAMES, TEST_METRIC_NAMES, wilson_interval
    from litesweep.objectives.runtime import default_runtime_error

    _, result = sweep
    client = _client(result)
    data = load_dataset("digits", name="digits", val_fraction=0.15, test_fraction=0.25, seed=0)
    parent = client.get_run(result.parent_run_id).data.metrics
    front = set(result.front_trial_numbers)
    study = optuna.load_study(study_name=result.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(result.storage)))
    ever_on_front = {int(k.split(".")[1]) for k in study.user_attrs if k.startswith("confirmed.")}
    assert front <= ever_on_front
    for run_ in _trial_runs(result):
        logged, number = run_.data.metrics, int(run_.data.tags[TAG_TRIAL])
        tflite = Path(client.download_artifacts(run_.info.run_id, "model.tflite", str(tmp_path / run_.info.run_id))).read_bytes()
        assert default_runtime_error(tflite) is None  # every finished trial's file runs in LiteRT's default interpreter
        assert run_.data.tags["litesweep.encoding"] in ("dense", "sparse")
        assert run_.data.params["latency.statistic"] == "median" and run_.data.params["latency.batch_size"] == "1"
        assert run_.data.params["latency.max_runs"] == "60"  # the protocol the quick tier sets
        if number not in ever_on_front:  # measured on test only when it reached the front
            assert not set(TEST_METRIC_NAMES) & set(logged) and not set(CONFIRMED_LATENCY_NAMES) & set(logged)
            continue
        test, _ = accuracy(tflite, data.x_test, data.y_test)
        assert logged["test_accuracy"] == test
        assert (logged["test_accuracy_low"], logged["test_accuracy_high"]) == pytest.approx(wilson_interval(test, len(data.y_test)))
        assert logged["test_accuracy_drop"] == pytest.approx((parent["reference.test_accuracy"] - test) * 100)
        if number in front:  # re-timed beside the presets at the end of the run
            assert 0 < logged["latency_ms_low"] <= logged["latency_ms_confirmed"] <= logged["latency_ms_high"]
            assert result.figures[number]["latency_ms_confirmed"] == logged["latency_ms_confirmed"]
    presets = client.search_runs([result.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'baseline'")
    assert len(presets) == 5
    for preset in presets:  # presets are compared on both splits and re-timed beside the front
        assert set(TEST_METRIC_NAMES) | set(CONFIRMED_LATENCY_NAMES) <= set(preset.data.metrics)


def test_the_first_trial_is_the_spaces_twin_of_the_integer_presets(sweep) -> None:
    _, result = sweep
    first = next(r for r in _trial_runs(result) if r.data.tags[TAG_TRIAL] == "0")
    assert first.data.tags["litesweep.preset_twin"] == "dynamic_int8,full_int8"
    assert {v for k, v in first.data.params.items() if k.startswith("bits.")} == {"8"}
    assert {v for k, v in first.data.params.items() if k.startswith("sparsity.")} == {"0.0"}


def test_rerunning_the_same_command_adds_no_trial(sweep) -> None:
    out, result = sweep
    proc = subprocess.run(
        [sys.executable, "-m", "litesweep.search", *QUICK_OVERRIDES, f"paths.output_dir={out}",
         f"study.n_trials={N_TRIALS}", "study.sampler=random", f"hydra.run.dir={out}/hydra"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pareto front of study" in proc.stdout
    assert len(_trial_runs(result)) == N_TRIALS
    client = _client(result)
    assert len(client.search_runs([result.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'study'")) == 1
    study = optuna.load_study(study_name=result.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(result.storage)))
    assert len(study.trials) == N_TRIALS


def test_raising_n_trials_resumes_the_same_study(sweep, capsys: pytest.CaptureFixture) -> None:
    out, result = sweep
    more = run(compose_quick(out, f"study.n_trials={N_TRIALS + 1}", "study.sampler=random", "progress=true"))
    console = capsys.readouterr().out
    # The progress bar starts at the finished count and shows the front size; the end names the store.
    assert f"{N_TRIALS + 1}/{N_TRIALS + 1}" in console and f"front={len(more.front_trial_numbers)}" in console
    assert f"Browse it: mlflow ui --backend-store-uri 'sqlite:///{out}/mlruns/mlflow.db' --host 127.0.0.1" in console
    assert more.parent_run_id == result.parent_run_id
    assert more.n_finished == N_TRIALS + 1
    runs = _trial_runs(result)
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in runs) == list(range(N_TRIALS + 1))
    front = set(more.front_trial_numbers)
    assert {int(r.data.tags[TAG_TRIAL]) for r in runs if r.data.tags[TAG_PARETO] == "true"} == front
    assert {int(r.data.tags[TAG_TRIAL]) for r in runs if "test_accuracy" in r.data.metrics} >= front
    # Resumed under the same fingerprint: the float reference logged at creation is not logged over.
    client = _client(result)
    assert len(client.get_metric_history(result.parent_run_id, "reference.latency_ms")) == 1


def test_resuming_with_another_data_split_is_refused_in_one_line_and_writes_nothing(sweep) -> None:
    out, result = sweep
    client = _client(result)
    before = len(client.search_runs([result.experiment_id]))
    proc = subprocess.run(
        [sys.executable, "-m", "litesweep.search", *QUICK_OVERRIDES, f"paths.output_dir={out}", "data.seed=1",
         f"study.n_trials={N_TRIALS + 5}", "study.sampler=random", f"hydra.run.dir={out}/hydra"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("litesweep: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    # A built-in CNN is trained on the data, so the base model changed with the split.
    found = re.fullmatch(rf"litesweep: error: study '{result.study_name}' was run with another base model and data or its split "
                         r"\(base model: \w+ then, \w+ now; data or its split: ([0-9a-f]{16}) then, ([0-9a-f]{16}) now\); "
                         r"accepted: the study's own settings, or a new study.name for the new ones", errors[0])
    assert found is not None and found[1] != found[2], errors[0]
    assert len(client.search_runs([result.experiment_id])) == before


def _audit(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from litesweep.search.audit import main; main()", *QUICK_OVERRIDES, f"paths.output_dir={out}",
         "study.sampler=random", f"hydra.run.dir={out}/hydra", *overrides],
        capture_output=True, text=True, timeout=600,
    )


def test_the_audit_finds_both_stores_and_every_file_in_agreement(sweep) -> None:
    out, result = sweep
    proc = _audit(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    n = len(_trial_runs(result))
    front = len(_client(result).search_runs([result.experiment_id], filter_string=f"tags.`{TAG_PARETO}` = 'true'"))
    assert (f"{n} trials, {n} trial runs, {n} model.tflite files checked, {n} re-measured on validation, "
            f"{front} front trials on test, 0 running, 0 problem(s)") in proc.stdout


def test_the_audit_names_a_tampered_file_and_a_wrong_front_tag(sweep) -> None:
    """Runs last in this module: it changes the store."""
    from urllib.parse import urlparse

    out, result = sweep
    client = _client(result)
    runs = sorted(_trial_runs(result), key=lambda r: int(r.data.tags[TAG_TRIAL]))
    tampered, mislabelled = runs[0], runs[1]
    path = Path(urlparse(tampered.info.artifact_uri).path) / "model.tflite"
    path.write_bytes(path.read_bytes() + b"\0")
    wrong = "false" if mislabelled.data.tags[TAG_PARETO] == "true" else "true"
    client.set_tag(mislabelled.info.run_id, TAG_PARETO, wrong)
    proc = _audit(out, "audit.remeasure=false")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    problems = [line for line in proc.stdout.splitlines() if line.startswith("litesweep-audit:")]
    size = int(tampered.data.metrics["size_bytes"])
    assert problems == [
        f"litesweep-audit: trial {tampered.data.tags[TAG_TRIAL]} (COMPLETE): model.tflite is {size + 1} bytes, "
        f"logged size_bytes = {float(size)}",
        f"litesweep-audit: trial {tampered.data.tags[TAG_TRIAL]} (COMPLETE): model.tflite's SHA-256 is not the logged "
        "litesweep.tflite_sha256",
        f"litesweep-audit: trial {mislabelled.data.tags[TAG_TRIAL]} (COMPLETE): tag {TAG_PARETO} = {wrong!r}, the front says "
        f"{mislabelled.data.tags[TAG_PARETO]!r}",
    ]
