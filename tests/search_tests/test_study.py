"""Which MLflow runs the stale-trial recovery may close: never one a live worker is about to end."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from litesweep.search.ledger import WORKER_ATTR
from litesweep.search.recovery import ORPHAN_GRACE_S, _abandoned, worker_id


def _trial(state: TrialState, worker: str, ended_s_ago: float):
    trial = create_trial(state=state, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                         values=[1.0] if state == TrialState.COMPLETE else None, user_attrs={WORKER_ATTR: worker})
    trial.datetime_complete = datetime.datetime.now() - datetime.timedelta(seconds=ended_s_ago)
    return trial


def test_a_live_workers_just_finished_trial_is_left_to_its_worker() -> None:
    assert not _abandoned(_trial(TrialState.COMPLETE, worker_id(), ended_s_ago=1))
    assert not _abandoned(_trial(TrialState.FAIL, worker_id(), ended_s_ago=1))


def test_a_dead_workers_trial_is_abandoned_at_once() -> None:
    child = subprocess.Popen(["true"])
    dead = worker_id().rsplit(":", 2)[0] + f":{child.pid}:0"
    child.wait()
    assert _abandoned(_trial(TrialState.FAIL, dead, ended_s_ago=1))


def test_a_run_left_open_past_the_grace_period_is_abandoned() -> None:
    assert _abandoned(_trial(TrialState.FAIL, "other-host:1:1", ended_s_ago=ORPHAN_GRACE_S + 5))
    assert not _abandoned(_trial(TrialState.FAIL, "other-host:1:1", ended_s_ago=5))


# --- a worker killed between any two steps of a trial --------------------------------------------
# The steps TrialRunner takes, in order; a kill after step k leaves the stores as the first k left them.
STEPS = ("ask", "worker", "run", "link", "tell")


def _dead_worker() -> str:
    child = subprocess.Popen(["true"])
    child.wait()
    return worker_id().rsplit(":", 2)[0] + f":{child.pid}:0"


def _killed_after(step: str, tmp_path: Path):
    """A real journal study and MLflow store holding one trial whose worker died right after ``step``."""
    import optuna

    from litesweep.search.storage import open_study
    from litesweep.search.tracking import Tracker

    study = open_study("killed", str(tmp_path / "optuna.journal"), "random", 0, {"accuracy": "maximize"})
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "killed", str(tmp_path / "artifacts"))
    tracker.open_study_run("killed", params={}, tags={})
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    done = STEPS[: STEPS.index(step) + 1]
    if "worker" in done:
        trial.set_user_attr(WORKER_ATTR, _dead_worker())
    if "run" in done:
        run_id = tracker.start_trial("killed", trial.number)
    if "link" in done:
        trial.set_user_attr("mlflow_run_id", run_id)
    if "tell" in done:
        study.tell(trial, [0.5])
    assert isinstance(study, optuna.Study)
    return study, tracker


def _runs_by_trial(tracker) -> dict[int, list]:
    runs: dict[int, list] = {}
    for run in tracker.trial_runs():
        runs.setdefault(int(run.data.tags["litesweep.trial_number"]), []).append(run)
    return runs


@pytest.mark.parametrize("step", STEPS)
def test_a_worker_killed_after_any_step_leaves_one_closed_run_per_trial(step: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from litesweep.search import recovery as study_module
    from litesweep.search.recovery import recover_stale_trials

    study, tracker = _killed_after(step, tmp_path)
    if step == "ask":
        # No worker recorded: nothing tells a dead worker from a live one but the trial's age.
        assert recover_stale_trials(study, tracker) == []
        assert study.trials[0].state == TrialState.RUNNING
        monkeypatch.setattr(study_module, "ORPHAN_GRACE_S", 0.0)
    failed = recover_stale_trials(study, tracker)

    trial = study.trials[0]
    assert failed == ([] if step == "tell" else [0])
    assert trial.state == (TrialState.COMPLETE if step == "tell" else TrialState.FAIL)
    runs = _runs_by_trial(tracker)
    assert list(runs) == [0] and len(runs[0]) == 1, "exactly one MLflow run for the trial"
    run = runs[0][0]
    assert trial.user_attrs["mlflow_run_id"] == run.info.run_id, "linked both ways"
    # Killed after telling Optuna, the trial is whole: its run ends FINISHED like any complete trial's.
    assert run.info.status == ("FINISHED" if step == "tell" else "KILLED") and run.data.tags["litesweep.state"] == trial.state.name
    assert "worker died" in run.data.tags["litesweep.note"]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.system_attrs.get("fixed_params") for t in waiting] == ([] if step == "tell" else [trial.params]), \
        "a failed trial is retried once"
    assert recover_stale_trials(study, tracker) == [] and len(study.trials) == len(waiting) + 1, "recovery is idempotent"


def test_a_live_workers_trial_is_never_recovered(tmp_path: Path) -> None:
    from litesweep.search.recovery import recover_stale_trials

    study, tracker = _killed_after("run", tmp_path)
    study._storage.set_trial_user_attr(study.trials[0]._trial_id, WORKER_ATTR, worker_id())  # this process: alive
    assert recover_stale_trials(study, tracker) == []
    assert study.trials[0].state == TrialState.RUNNING
    assert [r.info.status for r in tracker.trial_runs()] == ["RUNNING"]


def test_a_worker_on_another_machine_is_found_dead_by_its_heartbeat(tmp_path: Path) -> None:
    """Its pid means nothing here: only the trial's heartbeat, older than the grace period, tells."""
    import time

    from litesweep.search.recovery import recover_stale_trials
    from litesweep.search.storage import open_study
    from litesweep.search.tracking import Tracker

    study = open_study("remote", f"sqlite:///{tmp_path}/optuna.db", "random", 0, {"accuracy": "maximize"},
                       heartbeat_interval_s=1, heartbeat_grace_s=2)
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "remote", str(tmp_path / "artifacts"))
    tracker.open_study_run("remote", params={}, tags={})
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr(WORKER_ATTR, "another-machine:4242:1")
    trial.set_user_attr("mlflow_run_id", tracker.start_trial("remote", trial.number))
    # Its last beat before the machine went away.
    study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]  # RDB storage method behind Optuna's cache
    assert recover_stale_trials(study, tracker) == [], "a fresh heartbeat: alive"
    time.sleep(3)
    assert recover_stale_trials(study, tracker) == [0]
    assert study.trials[0].state == TrialState.FAIL
    (run,) = tracker.trial_runs()
    assert run.info.status == "KILLED" and "worker died" in run.data.tags["litesweep.note"]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [(t.system_attrs.get("fixed_params"), t.user_attrs) for t in waiting] == [(study.trials[0].params, {"retry_of": 0})]
