"""Sweeps that exercise presets, constraints, groups, sensitivity, early stopping and device latency.

Every assertion reads the Optuna storage, the MLflow store or the logged files.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from litesweep.objectives.errors import ConfigError
from litesweep.search.app import run
from litesweep.search.sweep import SweepResult
from tests.conftest import compose_quick


def _study(result: SweepResult) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(result.storage))
    return optuna.load_study(study_name=result.study_name, storage=storage)


def _runs(result: SweepResult, role: str) -> list:
    return MlflowClient(result.tracking_uri).search_runs([result.experiment_id], filter_string=f"tags.`litesweep.role` = '{role}'")


@pytest.fixture(scope="module")
def constrained(tmp_path_factory: pytest.TempPathFactory) -> SweepResult:
    """Presets on, an impossible size constraint, a shared group for the dense layers, sensitivity narrowing."""
    out = tmp_path_factory.mktemp("constrained")
    return run(compose_quick(out, "study.n_trials=2", "study.presets=true", "study.constraints={size_bytes:1}",
                             "space.groups={dense:'fc1|logits'}", "sensitivity=narrow"))


def test_presets_are_logged_as_baseline_runs_and_remeasure(constrained: SweepResult, tmp_path: Path) -> None:
    from litesweep.objectives.data import load_dataset
    from litesweep.objectives.measure import accuracy

    runs = {r.data.tags["litesweep.preset"]: r for r in _runs(constrained, "baseline")}
    assert set(runs) == {"float32", "float16", "dynamic_int8", "full_int8", "int16x8"}
    assert set(constrained.presets) == set(runs)
    data = load_dataset("digits", val_fraction=0.15, test_fraction=0.25)
    client = MlflowClient(constrained.tracking_uri)
    for name, r in runs.items():
        assert r.data.tags["mlflow.parentRunId"] == constrained.parent_run_id
        tflite = Path(client.download_artifacts(r.info.run_id, "model.tflite", str(tmp_path / name))).read_bytes()
        assert len(tflite) == r.data.metrics["size_bytes"]
        assert accuracy(tflite, data.x_val, data.y_val)[0] == r.data.metrics["accuracy"]  # compared with trials on validation
        assert accuracy(tflite, data.x_test, data.y_test)[0] == r.data.metrics["test_accuracy"]  # and reported on test
        assert r.data.metrics["latency_ms_low"] <= r.data.metrics["latency_ms_confirmed"] <= r.data.metrics["latency_ms_high"]
    sizes = {n: r.data.metrics["size_bytes"] for n, r in runs.items()}
    assert sizes["full_int8"] < sizes["float16"] < sizes["float32"]


def test_infeasible_trials_are_kept_marked_and_left_off_the_front(constrained: SweepResult) -> None:
    study = _study(constrained)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2
    for t in complete:
        constraints = [v for k, v in t.system_attrs.items() if k.startswith("constraints")]
        assert constraints and all(v > 0 for v in constraints)
        assert t.user_attrs["feasible"] is False
    assert constrained.front_trial_numbers == [] and study.best_trials == []
    trials = _runs(constrained, "trial")
    assert {r.data.tags["litesweep.feasible"] for r in trials} == {"false"}
    assert {r.data.tags["litesweep.pareto"] for r in trials} == {"false"}
    assert all(v is None for v in constrained.presets_dominated.values())  # nothing on the front to compare
    assert all(v is None for v in constrained.presets_dominated_on_size.values())


def test_a_group_shares_one_parameter(constrained: SweepResult, tmp_path: Path) -> None:
    client = MlflowClient(constrained.tracking_uri)
    for t in _study(constrained).trials:
        assert "bits.dense" in t.params and "bits.fc1" not in t.params and "bits.logits" not in t.params
    for r in _runs(constrained, "trial"):
        assert r.data.params["bits.fc1"] == r.data.params["bits.logits"]
        policy = json.loads(Path(client.download_artifacts(r.info.run_id, "policy.json", str(tmp_path / r.info.run_id))).read_text())
        assert policy["layers"]["fc1"]["bits"] == policy["layers"]["logits"]["bits"]
        assert policy["layers"]["fc1"]["sparsity"] == policy["layers"]["logits"]["sparsity"]
    space = json.loads(Path(client.download_artifacts(constrained.parent_run_id, "search_space.json", str(tmp_path))).read_text())
    assert space["units"]["dense"]["layers"] == ["fc1", "logits"]


def test_sensitivity_is_logged_and_narrows_the_space(constrained: SweepResult, tmp_path: Path) -> None:
    client = MlflowClient(constrained.tracking_uri)
    parent = client.get_run(constrained.parent_run_id)
    drops = {k.split(".", 1)[1]: v for k, v in parent.data.metrics.items() if k.startswith("sensitivity.")}
    assert set(drops) == {"conv1", "dense"}
    files = {a.path for a in client.list_artifacts(constrained.parent_run_id)}
    assert {"sensitivity.csv", "sensitivity.png", "search_space_narrowed.json"} <= files
    narrowed = json.loads(
        Path(client.download_artifacts(constrained.parent_run_id, "search_space_narrowed.json", str(tmp_path))).read_text())
    for unit, drop in drops.items():  # every branch asserts (the rule itself is tested in test_space.py)
        if drop <= 0.5:
            assert narrowed["units"][unit]["bits"] == [4]
        elif drop >= 3.0:
            assert narrowed["units"][unit]["bits"] == [8, 32]
        else:
            assert narrowed["units"][unit]["bits"] == [4, 8, 32]
    assert _study(constrained).user_attrs["sensitivity"] == pytest.approx(drops)


def test_hopeless_trials_are_pruned_in_both_stores_and_not_converted(tmp_path: Path) -> None:
    script = tmp_path / "device.py"
    script.write_text(textwrap.dedent("""
        import sys
        data = open(sys.argv[1], "rb").read()
        assert data[4:8] == b"TFL3"
        print("Inference timings in us: Init: 10, First inference: 20, Warmup (avg): 30, Inference (avg): 1234.5")
    """))
    result = run(compose_quick(
        tmp_path / "out", "study.n_trials=2", "finetune.min_relative_accuracy=1.0",
        "space.sparsity={low:0.9,high:0.9}", "study.preset_twins=false",
        "latency=command", f"latency.command='{sys.executable} {script} {{model}}'",
    ))
    study = _study(result)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    client = MlflowClient(result.tracking_uri)
    for r in _runs(result, "trial"):
        assert r.info.status == "KILLED" and r.data.tags["litesweep.state"] == "PRUNED"
        # The floor is the float model's validation accuracy (x 1.0), as Keras scores it: the file's within a sample.
        floor = float(r.data.tags["litesweep.note"].split("below the floor ")[1].split()[0].rstrip(";,."))
        assert floor == pytest.approx(result.reference["accuracy"], abs=1.5 / 270)
        assert "model.tflite" not in {a.path for a in client.list_artifacts(r.info.run_id)}
    # The command stood in for the device: the float reference's latency came from it.
    assert result.reference["latency_ms"] == pytest.approx(1.2345)


def test_a_group_pattern_matching_nothing_fails_before_the_stores(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConfigError,
                       match=r"space.groups.heads = 'head.\*' matches no layer; accepted layer names: \['conv1', 'fc1', 'logits'\]"):
        run(compose_quick(out, "space.groups={heads:'head.*'}"))
    assert not (out / "mlruns").exists()


def test_a_post_training_screen_chooses_the_first_training_trials(tmp_path: Path) -> None:
    result = run(compose_quick(tmp_path, "study.n_trials=4", "study.presets=false", "screen=ptq", "screen.trials=6",
                               "screen.seeds=2", "screen.max_drop=100", "space.bits=[4,8,32]"))
    study = _study(result)
    rows = study.user_attrs["screen"]
    assert len(rows) == 6 and len({tuple(r["bits"].values()) for r in rows}) == 6, "distinct mixtures"
    enqueued = sorted((r for r in rows if r["enqueued"]), key=lambda r: r["size_bytes"])
    assert len(enqueued) == 2 and all(r["front"] for r in enqueued)
    # No enqueued mixture is dominated by another screened mixture on (accuracy, size, latency).
    for r in enqueued:
        assert not any(o["accuracy"] >= r["accuracy"] and o["size_bytes"] <= r["size_bytes"] and o["latency_ms"] <= r["latency_ms"]
                       and (o["accuracy"], o["size_bytes"], o["latency_ms"]) != (r["accuracy"], r["size_bytes"], r["latency_ms"])
                       for o in rows)
    # Enqueued smallest first: the first two trials ran the enqueued mixtures in ascending screened size.
    twins = [t for t in study.trials if "preset_twin" in t.user_attrs]
    # The presets' twin comes first, then the same at the narrowest width, then the screen's choices.
    assert [(t.number, t.user_attrs["preset_twin"]) for t in twins] == [(0, "dynamic_int8,full_int8"), (1, "narrow:dynamic_int8,full_int8")]
    assert {v for k, v in twins[1].params.items() if k.startswith("width.")} == {0.5}
    first = sorted((t for t in study.trials if t not in twins), key=lambda t: t.number)[:2]
    chosen_bits = [{k.removeprefix("bits."): v for k, v in t.params.items() if k.startswith("bits.")} for t in first]
    assert chosen_bits == [r["bits"] for r in enqueued]
    parent = MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.data.metrics["screen.trials"] == 6 and parent.data.metrics["screen.enqueued"] == 2
    csv_text = Path(MlflowClient(result.tracking_uri).download_artifacts(result.parent_run_id, "screen.csv", str(tmp_path))).read_text()
    assert len(csv_text.strip().splitlines()) == 7
    assert len({r["size_bytes"] for r in rows}) > 1, "different mixtures give different files"


def test_the_front_is_the_non_dominated_set_of_the_feasible_trials(tmp_path: Path) -> None:
    """Some trials meet the size cap and some do not: the front is recomputed here from the stored metrics."""
    from litesweep.search import pareto

    cap = 12_000  # the tiny CNN is about 24 kB in float32 and about 9 kB all-int8: post-training mixes fall both sides
    result = run(compose_quick(tmp_path, "space=ptq", "study.n_trials=10", "study.sampler=random", "study.presets=true",
                               f"study.constraints={{size_bytes:{cap}}}"))
    study = _study(result)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    feasible = [t for t in complete if t.user_attrs["metrics"]["size_bytes"] <= cap]
    assert 0 < len(feasible) < len(complete), "the cap should split the trials"
    assert all(t.user_attrs["feasible"] == (t in feasible) for t in complete)
    directions = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}
    expected = {t.number for t in feasible
                if not any(pareto.dominates(o.user_attrs["metrics"], t.user_attrs["metrics"], directions) for o in feasible)}
    assert set(result.front_trial_numbers) == expected
    tags = {int(r.data.tags["litesweep.trial_number"]): r.data.tags for r in _runs(result, "trial")}
    assert {n for n, t in tags.items() if t["litesweep.pareto"] == "true"} == expected
    assert {n for n, t in tags.items() if t["litesweep.feasible"] == "true"} == {t.number for t in feasible}
    # A preset counts as beaten on (accuracy, size) only by a feasible front trial at least as good on both.
    front = [t for t in feasible if t.number in expected]
    for preset, number in result.presets_dominated_on_size.items():
        p = result.presets[preset]
        beaters = {t.number for t in front if t.user_attrs["metrics"]["accuracy"] >= p["accuracy"]
                   and t.user_attrs["metrics"]["size_bytes"] <= p["size_bytes"]}
        assert (number in beaters) if beaters else number is None


@pytest.mark.parametrize("sampler", ["gp", "nsgaii"])
def test_every_configured_sampler_runs_a_study(sampler: str, tmp_path: Path) -> None:
    """Past its random start-up trials, the sampler's own model proposes (GP needs PyTorch: the [gp] extra)."""
    result = run(compose_quick(tmp_path, "space=ptq", "study.n_trials=5", f"study.sampler={sampler}",
                               "study.n_startup_trials=2", "study.presets=false"))
    study = _study(result)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # Each sampler leaves its own mark on the trials it proposed (Optuna's system attributes).
    if sampler == "gp":
        assert all(any(k.startswith("gp:relative_params") for k in t.system_attrs) for t in complete if t.number >= 2)
    else:
        # The presets' twins are enqueued, not proposed by the sampler.
        assert all("NSGAIISampler:generation" in t.system_attrs for t in complete if "preset_twin" not in t.user_attrs)
    assert len(complete) == result.n_finished == 5
    assert len({tuple(sorted(t.params.items())) for t in complete}) >= 3, "the sampler should propose new policies"
    parent = MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.data.params["study.sampler"] == sampler


def test_sensitivity_seed_makes_the_first_trial(tmp_path: Path) -> None:
    result = run(compose_quick(tmp_path, "study.n_trials=1", "study.presets=false", "sensitivity=seed"))
    study = _study(result)
    drops = study.user_attrs["sensitivity"]
    assert set(drops) == {"conv1", "fc1", "logits"}
    first = study.trials[0]
    expected = {f"bits.{u}": 4 if d <= 0.5 else 8 for u, d in drops.items()}  # conf/sensitivity: insensitive_drop 0.5
    assert {k: v for k, v in first.params.items() if k.startswith("bits.")} == expected
    assert first.state == optuna.trial.TrialState.COMPLETE
