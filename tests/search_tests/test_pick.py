"""litesweep-pick and litesweep-apply on a real study; the registered model served by ``mlflow models serve``."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TypedDict

import numpy as np
import optuna
import pytest

from litesweep.objectives.data import load_dataset
from litesweep.objectives.measure import accuracy, predict
from litesweep.search import pareto
from litesweep.search.app import run
from litesweep.search.pick import NothingMeetsConstraints, pick
from litesweep.search.sweep import SweepResult
from tests.conftest import QUICK_OVERRIDES, compose_quick
from tests.servers import start_mlflow, start_server, stop


class _Split(TypedDict):
    val_fraction: float
    test_fraction: float


DIGITS = _Split(val_fraction=0.15, test_fraction=0.25)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepResult]:
    out = tmp_path_factory.mktemp("pick")
    return out, run(compose_quick(out, "study.n_trials=6", "study.presets=true", "tracking.report_every=3"))


def _front(result: SweepResult) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(result.storage))
    return optuna.load_study(study_name=result.study_name, storage=storage).best_trials


def test_the_parent_run_holds_the_report(study_dir, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    _, result = study_dir
    client = MlflowClient(result.tracking_uri)
    report = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/pareto.html", "report/pareto.png", "report/hypervolume.png", "report/study.html",
            "report/front_policies.png"} <= report
    csv_path = Path(client.download_artifacts(result.parent_run_id, "trials.csv", str(tmp_path)))
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + 6 and "mlflow_run_id" in lines[0] and "size_bytes" in lines[0]
    png = Path(client.download_artifacts(result.parent_run_id, "report/pareto.png", str(tmp_path))).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    html = Path(client.download_artifacts(result.parent_run_id, "report/pareto.html", str(tmp_path))).read_text()
    assert "full_int8" in html and "plotly" in html.lower()


def test_optuna_dashboard_shows_the_study_and_its_front(study_dir) -> None:
    """The second view (``make dashboard``): optuna-dashboard on the study's journal, asked through its API."""
    _, result = study_dir
    server, url = start_server("optuna-dashboard", result.storage, health="/api/studies", timeout=60)
    try:
        with urllib.request.urlopen(f"{url}/api/studies", timeout=10) as response:
            summaries = json.loads(response.read())["study_summaries"]
        assert [s["study_name"] for s in summaries] == [result.study_name]
        with urllib.request.urlopen(f"{url}/api/studies/{summaries[0]['study_id']}?after=0", timeout=10) as response:
            detail = json.loads(response.read())
    finally:
        stop(server)
    assert len(detail["trials"]) == result.n_finished
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(result.front_trial_numbers)


def test_a_size_cap_picks_the_most_accurate_front_model_under_it(study_dir, tmp_path: Path) -> None:
    out, result = study_dir
    front = _front(result)
    sizes = sorted(t.user_attrs[pareto.METRICS_ATTR]["size_bytes"] for t in front)
    cap = sizes[len(sizes) // 2]
    under = [t for t in front if t.user_attrs[pareto.METRICS_ATTR]["size_bytes"] <= cap]
    best = max(t.user_attrs[pareto.METRICS_ATTR]["accuracy"] for t in under)
    chosen = pick(compose_quick(out, f"pick.max_size_bytes={cap}", "pick.prefer=most_accurate",
                                f"pick.output_dir={tmp_path / 'picked'}"))
    assert chosen.metrics["size_bytes"] <= cap and chosen.metrics["accuracy"] == best
    files = {p.name for p in chosen.output_dir.iterdir()}
    assert files == {"model.tflite", "policy.json", "metrics.json", "MODEL_CARD.md"}
    tflite = (chosen.output_dir / "model.tflite").read_bytes()
    data = load_dataset("digits", **DIGITS)
    assert len(tflite) == chosen.metrics["size_bytes"]
    assert accuracy(tflite, data.x_test, data.y_test)[0] == chosen.metrics["accuracy"]
    card = (chosen.output_dir / "MODEL_CARD.md").read_text()
    assert f"trial {chosen.trial_number}" in card and "litesweep-apply apply.run_id=" in card


def test_constraints_nothing_meets_fail_in_one_line_naming_the_closest(study_dir) -> None:
    out, _ = study_dir
    with pytest.raises(NothingMeetsConstraints, match=r"no front trial meets accuracy >= 1.5; closest: trial \d+"):
        pick(compose_quick(out, "pick.min_accuracy=1.5"))
    proc = subprocess.run([str(Path(sys.executable).parent / "litesweep-pick"), *QUICK_OVERRIDES, f"paths.output_dir={out}",
                           "pick.max_size_bytes=10", f"hydra.run.dir={out}/hydra-pick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("litesweep-pick: error:")]
    assert len(lines) == 1 and "size_bytes <= 10" in lines[0] and "closest: trial" in lines[0]
    assert not (out / "picked").exists()


def test_the_registered_model_serves_the_interpreters_outputs(study_dir, tmp_path: Path) -> None:
    out, result = study_dir
    chosen = pick(compose_quick(out, "pick.prefer=knee", "pick.register=digits-cnn", "pick.alias=champion",
                                f"pick.output_dir={tmp_path / 'served'}"))
    assert chosen.registered_version == "1"
    server, url = start_mlflow("models", "serve", "-m", "models:/digits-cnn@champion", "--env-manager", "local",
                               env={"MLFLOW_TRACKING_URI": result.tracking_uri}, health="/ping")
    try:
        x = load_dataset("digits", **DIGITS).x_test[:16]
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": x.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            served = np.array(json.loads(response.read())["predictions"], dtype=np.float32)
        expected, _ = predict((chosen.output_dir / "model.tflite").read_bytes(), x)
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    finally:
        stop(server)


def test_apply_rebuilds_a_trial_within_tolerance(study_dir, tmp_path: Path) -> None:
    from litesweep.search.apply import apply

    out, result = study_dir
    trial = _front(result)[0]
    applied = apply(compose_quick(out, f"apply.run_id={trial.user_attrs[pareto.RUN_ID_ATTR]}",
                                  f"apply.output_dir={tmp_path / 'applied'}", "apply.accuracy_tolerance=3.0"))
    logged = trial.user_attrs[pareto.METRICS_ATTR]
    assert abs(applied.metrics["accuracy"] - logged["accuracy"]) * 100 <= 3.0
    assert abs(applied.metrics["size_bytes"] - logged["size_bytes"]) <= 0.02 * logged["size_bytes"]
    comparison = json.loads((applied.output_dir / "comparison.json").read_text())
    assert comparison["logged"]["accuracy"] == logged["accuracy"]


def test_apply_of_a_post_training_policy_is_bit_identical(tmp_path: Path) -> None:
    from litesweep.search.apply import apply

    result = run(compose_quick(tmp_path, "space=ptq", "study.n_trials=2"))
    for trial in _front(result):
        applied = apply(compose_quick(tmp_path, "space=ptq", f"apply.run_id={trial.user_attrs[pareto.RUN_ID_ATTR]}"))
        assert applied.identical is True
        assert applied.metrics["accuracy"] == trial.user_attrs[pareto.METRICS_ATTR]["accuracy"]
