"""litesweep-pick and litesweep-apply on a real study; the registered model served by ``mlflow models serve``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TypedDict

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from litesweep.objectives.data import load_dataset
from litesweep.objectives.measure import accuracy, predict
from litesweep.search import pareto
from litesweep.search.app import run
from litesweep.search.logged_models import TAG_MODEL_ID
from litesweep.search.pick import NothingMeetsConstraints, pick
from litesweep.search.sweep import SweepResult
from tests.conftest import CONF_DIR, QUICK_OVERRIDES, compose_quick
from tests.servers import start_mlflow, start_server, stop


class _Split(TypedDict):
    val_fraction: float
    test_fraction: float


DIGITS = _Split(val_fraction=0.15, test_fraction=0.25)


#: The study's own fine-tuning setting, which no pick command below repeats: the card must still show it.
RECORDED_FINETUNE = "finetune.max_train_samples=600"
#: A post-training space that leaves every layer float (32 or 16 bits): every trial is larger than the
#: integer presets, so with pick.prefer=smallest only a preset can win.
FLOAT_SPACE = ("space=ptq", "space.bits=[16,32]")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepResult]:
    out = tmp_path_factory.mktemp("pick")
    return out, run(compose_quick(out, "study.n_trials=6", "study.presets=true", "tracking.report_interval_s=0", RECORDED_FINETUNE))


@pytest.fixture(scope="module")
def float_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepResult]:
    out = tmp_path_factory.mktemp("pick-float")
    return out, run(compose_quick(out, *FLOAT_SPACE, "study.n_trials=2"))


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


def test_a_size_cap_picks_the_most_accurate_model_under_it(study_dir, tmp_path: Path) -> None:
    """Front trials and presets compete alike, on validation figures."""
    out, result = study_dir
    front = _front(result)
    sizes = sorted(t.user_attrs[pareto.METRICS_ATTR]["size_bytes"] for t in front)
    cap = sizes[len(sizes) // 2]
    under = [t.user_attrs[pareto.METRICS_ATTR] for t in front] + list(result.presets.values())
    best = max(m["accuracy"] for m in under if m["size_bytes"] <= cap)
    chosen = pick(compose_quick(out, f"pick.max_size_bytes={cap}", "pick.prefer=most_accurate",
                                f"pick.output_dir={tmp_path / 'picked'}"))
    assert chosen.metrics["size_bytes"] <= cap and chosen.metrics["accuracy"] == best
    files = {p.name for p in chosen.output_dir.iterdir()}
    assert files == {"model.tflite", "metrics.json", "MODEL_CARD.md"} | ({"policy.json"} if chosen.preset is None else set())
    tflite = (chosen.output_dir / "model.tflite").read_bytes()
    data = load_dataset("digits", **DIGITS)
    assert len(tflite) == chosen.metrics["size_bytes"]
    assert accuracy(tflite, data.x_val, data.y_val)[0] == chosen.metrics["accuracy"]  # selected on validation, not test
    card = (chosen.output_dir / "MODEL_CARD.md").read_text()
    picked = f"trial {chosen.trial_number}" if chosen.preset is None else f"preset {chosen.preset}"
    assert card.startswith(f"# Model card: {result.study_name}, {picked}\n")
    assert "validation accuracy" in card
    saved = json.loads((chosen.output_dir / "metrics.json").read_text())
    assert (saved["trial"], saved["preset"], saved["metrics"]) == (chosen.trial_number, chosen.preset, chosen.metrics)


def test_constraints_nothing_meets_fail_in_one_line_naming_the_closest(study_dir) -> None:
    out, _ = study_dir
    with pytest.raises(NothingMeetsConstraints, match=r"no front trial or preset meets accuracy >= 1.5; closest: trial \d+ "
                       r"\(validation accuracy .*; closest presets: preset (float32|float16|dynamic_int8|full_int8|int16x8) \("):
        pick(compose_quick(out, "pick.min_accuracy=1.5"))
    proc = subprocess.run([str(Path(sys.executable).parent / "litesweep-pick"), *QUICK_OVERRIDES, f"paths.output_dir={out}",
                           "pick.max_size_bytes=10", f"hydra.run.dir={out}/hydra-pick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("litesweep-pick: error:")]
    assert len(lines) == 1 and "size_bytes <= 10" in lines[0] and "closest: trial" in lines[0] and "closest presets: " in lines[0]
    assert not (out / "picked").exists()


def test_the_registered_model_serves_the_interpreters_outputs(study_dir, tmp_path: Path) -> None:
    out, result = study_dir
    chosen = pick(compose_quick(out, "pick.prefer=knee", "pick.register=digits-cnn", "pick.alias=champion",
                                f"pick.output_dir={tmp_path / 'served'}"))
    assert chosen.registered_version == "1"
    client = MlflowClient(result.tracking_uri)  # the picked LoggedModel itself is registered, now a pyfunc too
    model_id = client.get_run(chosen.run_id).data.tags[TAG_MODEL_ID]
    assert client.get_model_version("digits-cnn", "1").source == f"models:/{model_id}"
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


def test_the_card_and_its_reproduce_command_carry_the_studys_recorded_settings(study_dir, tmp_path: Path) -> None:
    """The pick command does not repeat the study's finetune.max_train_samples: the card still shows it, and
    its reproduce command rebuilds the trial with it through litesweep-apply."""
    from litesweep.search.apply import apply
    from litesweep.search.cli import compose_config

    out, result = study_dir
    trial = _front(result)[0]
    pick_cfg = compose_quick(out, f"pick.trial={trial.number}", f"pick.output_dir={tmp_path / 'picked'}")
    assert pick_cfg.finetune.max_train_samples == 10000  # the pick command's own (default) setting differs from the study's
    chosen = pick(pick_cfg)
    assert (chosen.trial_number, chosen.preset) == (trial.number, None)
    card = (chosen.output_dir / "MODEL_CARD.md").read_text()
    assert "'max_train_samples': 600" in card and "From the study's recorded config" in card
    command = [line for line in card.splitlines() if line.startswith("litesweep-apply ")]
    assert len(command) == 1
    words = shlex.split(command[0])
    assert words[1] == f"apply.run_id={trial.user_attrs[pareto.RUN_ID_ATTR]}" and RECORDED_FINETUNE in words
    assert "data=digits" in words and "model=tiny_cnn" in words and not any(w.startswith(("pick.", "study.")) for w in words)

    cfg = compose_config([*words[1:], f"apply.output_dir={tmp_path / 'applied'}", "apply.accuracy_tolerance=3.0"], CONF_DIR)
    assert cfg.finetune.max_train_samples == 600 and cfg.finetune.prune_epochs == 1
    applied = apply(cfg)  # raises NotReproduced outside the tolerance
    logged = trial.user_attrs[pareto.METRICS_ATTR]
    assert abs(applied.metrics["accuracy"] - logged["accuracy"]) * 100 <= 3.0
    assert abs(applied.metrics["size_bytes"] - logged["size_bytes"]) <= 0.02 * logged["size_bytes"]
    comparison = json.loads((applied.output_dir / "comparison.json").read_text())
    assert comparison["logged"]["accuracy"] == logged["accuracy"]


def test_apply_of_a_post_training_policy_is_bit_identical(float_study) -> None:
    from litesweep.search.apply import apply

    out, result = float_study
    for trial in _front(result):
        applied = apply(compose_quick(out, *FLOAT_SPACE, f"apply.run_id={trial.user_attrs[pareto.RUN_ID_ATTR]}"))
        assert applied.identical is True
        assert applied.metrics["accuracy"] == trial.user_attrs[pareto.METRICS_ATTR]["accuracy"]


def _smallest_preset(result: SweepResult) -> str:
    return min(result.presets, key=lambda name: (result.presets[name]["size_bytes"], -result.presets[name]["accuracy"]))


def _preset_file(result: SweepResult, name: str, into: Path) -> bytes:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([result.experiment_id], filter_string=f"tags.`litesweep.preset` = '{name}'")
    assert len(runs) == 1
    into.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(runs[0].info.run_id, "model.tflite", str(into))).read_bytes()


def test_a_preset_that_wins_is_exported_as_the_converters_preset(float_study, tmp_path: Path, capsys) -> None:
    """Every trial keeps its layers float, so the smallest model is an integer preset: pick exports that file,
    says so in one line, and the card calls it the converter's preset. The folder is 0755 under umask 022."""
    out, result = float_study
    name = _smallest_preset(result)
    assert result.presets[name]["size_bytes"] < min(t.user_attrs[pareto.METRICS_ATTR]["size_bytes"] for t in _front(result))
    previous = os.umask(0o022)
    try:
        chosen = pick(compose_quick(out, *FLOAT_SPACE, "pick.prefer=smallest", f"pick.output_dir={tmp_path / 'picked'}"))
    finally:
        os.umask(previous)
    assert (chosen.preset, chosen.trial_number) == (name, None)
    exported = (chosen.output_dir / "model.tflite").read_bytes()
    assert hashlib.sha256(exported).hexdigest() == hashlib.sha256(_preset_file(result, name, tmp_path)).hexdigest()
    assert {p.name for p in chosen.output_dir.iterdir()} == {"model.tflite", "metrics.json", "MODEL_CARD.md"}  # no policy
    assert stat.S_IMODE(chosen.output_dir.stat().st_mode) == 0o755

    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Picked ")]
    assert said == [f"Picked the TFLite converter's `{name}` preset, no search policy, from study '{result.study_name}' "
                    "(prefer smallest): it meets the constraints and wins under prefer smallest."]
    card = (chosen.output_dir / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# Model card: {result.study_name}, preset {name}\n")
    assert f"This is the TFLite converter's `{name}` preset, no search policy" in card and "litesweep-apply apply.run_id" not in card
    size = int(result.presets[name]["size_bytes"])
    assert f"| {size:,} |" in card and size >= 1000  # an integer with a thousands separator
    assert not re.search(r"\d\.?\d*e[+-]\d", card)  # no figure in exponent notation
    assert json.loads((chosen.output_dir / "metrics.json").read_text())["preset"] == name


def test_a_file_litert_refuses_is_skipped_for_the_next_best(float_study, tmp_path: Path, capsys) -> None:
    """The winning preset's stored file is cut short in the store: pick warns in one line and exports the next best."""
    from mlflow.tracking import MlflowClient

    out, result = float_study
    name = _smallest_preset(result)
    client = MlflowClient(result.tracking_uri)
    run_id = client.search_runs([result.experiment_id], filter_string=f"tags.`litesweep.preset` = '{name}'")[0].info.run_id
    original = _preset_file(result, name, tmp_path / "original")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.tflite").write_bytes(original[: len(original) // 2])
    client.log_artifact(run_id, str(tmp_path / "cut" / "model.tflite"))
    try:
        chosen = pick(compose_quick(out, *FLOAT_SPACE, "pick.prefer=smallest", f"pick.output_dir={tmp_path / 'picked'}"))
    finally:
        (tmp_path / "cut" / "model.tflite").write_bytes(original)
        client.log_artifact(run_id, str(tmp_path / "cut" / "model.tflite"))
    warned = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert len(warned) == 1 and warned[0].startswith(f"litesweep-pick: warning: preset {name} skipped: LiteRT's default interpreter")
    others = {n: m for n, m in result.presets.items() if n != name}
    assert chosen.preset == min(others, key=lambda n: (others[n]["size_bytes"], -others[n]["accuracy"]))
    assert chosen.preset is not None
    assert (chosen.output_dir / "model.tflite").read_bytes() == _preset_file(result, chosen.preset, tmp_path / "next")
