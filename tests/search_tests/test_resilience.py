"""No trial is lost: injected failures, a worker killed with SIGKILL, several workers on one study."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from litesweep.objectives.errors import LitesweepError
from litesweep.search.app import run
from litesweep.search.runner import injection_point
from litesweep.search.sweep import SweepResult
from tests.conftest import QUICK_OVERRIDES, compose_quick, processes_holding

# A FAIL trial is FAILED in MLflow when it raised, KILLED when its worker died or was interrupted.
STATUS = {TrialState.COMPLETE: {"FINISHED"}, TrialState.FAIL: {"FAILED", "KILLED"}, TrialState.PRUNED: {"KILLED"}}


def _study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)))


def _assert_stores_agree(result: SweepResult) -> list[optuna.trial.FrozenTrial]:
    """Optuna and MLflow agree trial by trial: run id <-> trial number, state <-> status. No RUNNING anywhere."""
    study = _study(result.storage, result.study_name)
    client = MlflowClient(result.tracking_uri)
    runs = {r.info.run_id: r for r in client.search_runs([result.experiment_id], filter_string="tags.`litesweep.role` = 'trial'",
                                                         max_results=1000)}
    assert len(runs) == len(study.trials), "one MLflow run per Optuna trial"
    for t in study.trials:
        assert t.state != TrialState.RUNNING
        r = runs[t.user_attrs["mlflow_run_id"]]
        assert int(r.data.tags["litesweep.trial_number"]) == t.number
        assert r.info.status in STATUS[t.state], (t.number, t.state, r.info.status)
        if r.info.status == "KILLED" and t.state == TrialState.FAIL:
            assert "worker died" in r.data.tags["litesweep.note"] or "interrupted" in r.data.tags["litesweep.note"]
        assert r.data.tags["litesweep.state"] == t.state.name
    assert not client.search_runs([result.experiment_id], filter_string="attributes.status = 'RUNNING'")
    return study.trials


def test_injected_failures_are_recorded_in_both_stores_and_the_study_reaches_its_target(tmp_path: Path) -> None:
    # Failures strike at three points: before any work, after the .tflite is measured, after it is logged to
    # MLflow but before Optuna is told. This study name makes the seeded injection hit each point in 7 trials.
    points = ("sampled", "measured", "logged")
    result = run(compose_quick(tmp_path, "study.name=faults-113", "study.n_trials=4", "study.inject_failures=0.5",
                               f"study.inject_at=[{','.join(points)}]", "study.presets=false",
                               "study.max_consecutive_failures=20", "study.max_failure_rate=0.9"))
    trials = _assert_stores_agree(result)
    assert result.n_finished == 4
    client = MlflowClient(result.tracking_uri)
    struck = set()
    for t in trials:
        point = injection_point(result.study_name, t.number, 0.5, points)
        if point is None or t.state == TrialState.PRUNED:  # a hopeless trial is pruned before it is measured
            assert t.state != TrialState.FAIL, t.number
            continue
        struck.add(point)
        run_ = client.get_run(t.user_attrs["mlflow_run_id"])
        files = {a.path for a in client.list_artifacts(run_.info.run_id)}
        assert t.state == TrialState.FAIL and run_.info.status == "FAILED", (t.number, point)
        text = Path(client.download_artifacts(run_.info.run_id, "traceback.txt", str(tmp_path))).read_text()
        assert "InjectedFailure" in text and f"after the trial was {point}" in text, text[-500:]
        assert run_.data.params, "the sampled policy is logged even when the trial fails"
        # What reached MLflow before the failure stays there, marked FAILED; nothing later was written.
        assert ("model.tflite" in files) == (point == "logged") and ("accuracy" in run_.data.metrics) == (point == "logged")
        assert t.values is None
    assert struck == set(points), "every injection point struck at least once"


def test_too_many_failures_end_the_study_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(LitesweepError, match=r"5 of 5 trials failed \(100%\), above study.max_failure_rate = 50%"):
        run(compose_quick(tmp_path, "study.n_trials=10", "study.inject_failures=1.0", "study.presets=false",
                          "study.max_consecutive_failures=100"))


def _count_finished_runs(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("select count(*) from runs r join tags t on r.run_uuid = t.run_uuid "
                                "where t.key = 'litesweep.role' and t.value = 'trial' and r.status = 'FINISHED'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _sweep_until(tmp_path: Path, n_trials: int, finished: int) -> subprocess.Popen:
    """Start ``litesweep`` in a subprocess and return once ``finished`` trial runs are FINISHED in MLflow."""
    args = [sys.executable, "-m", "litesweep.search", *QUICK_OVERRIDES, f"paths.output_dir={tmp_path}", f"study.n_trials={n_trials}",
            "study.presets=false", f"hydra.run.dir={tmp_path}/hydra"]
    # stderr to a file, not a pipe: a full pipe would stall the sweep being watched.
    with open(tmp_path / "stderr.log", "w") as stderr:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    deadline = time.time() + 300
    while _count_finished_runs(tmp_path / "mlruns" / "mlflow.db") < finished:
        assert proc.poll() is None, "the sweep ended before it could be stopped"
        assert time.time() < deadline
        time.sleep(0.2)
    return proc


def test_a_sweep_killed_with_sigkill_resumes_without_losing_a_trial(tmp_path: Path) -> None:
    proc = _sweep_until(tmp_path, n_trials=5, finished=2)
    time.sleep(random.Random().uniform(0.0, 2.0))  # a random point: mid-trial, mid-logging or between trials
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    cfg = compose_quick(tmp_path, "study.n_trials=5", "study.presets=false")
    before = {t.number: t.values for t in _study(cfg.study.storage, cfg.study.name).trials if t.state == TrialState.COMPLETE}
    assert len(before) >= 2
    result = run(cfg)
    trials = _assert_stores_agree(result)
    after = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
    assert {n: after.get(n) for n in before} == before, "every trial finished before the kill is still there"
    assert result.n_finished == 5
    parent = MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"


def test_two_workers_share_one_study(tmp_path: Path) -> None:
    result = run(compose_quick(tmp_path, "study.n_trials=4", "study.n_workers=2", "study.presets=false"))
    trials = _assert_stores_agree(result)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 4 <= len(finished) <= 5  # a worker may finish the trial it started while the other reached the target
    assert len({t.number for t in trials}) == len(trials)
    workers = {t.user_attrs["worker"].rsplit(":", 2)[1] for t in finished}
    assert len(workers) == 2, "both worker processes ran trials"
    front = {t.number for t in _study(result.storage, result.study_name).best_trials}
    client = MlflowClient(result.tracking_uri)
    tagged = {int(r.data.tags["litesweep.trial_number"]) for r in client.search_runs(
        [result.experiment_id], filter_string="tags.`litesweep.pareto` = 'true'")}
    assert tagged == front


def _newest_running_trial_age_s(db: Path) -> float | None:
    """Seconds since the newest RUNNING trial run with its policy logged started, or None when there is none."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            # A running trial whose policy is logged: sampled, now fine-tuning for seconds.
            started = conn.execute("select max(r.start_time) from runs r join tags t on r.run_uuid = t.run_uuid "
                                   "where t.key = 'litesweep.role' and t.value = 'trial' and r.status = 'RUNNING' "
                                   "and exists (select 1 from params p where p.run_uuid = r.run_uuid)").fetchone()[0]
    except sqlite3.Error:
        return None
    return None if started is None else time.time() - started / 1000


def test_ctrl_c_marks_the_running_trial_and_the_rerun_retries_it(tmp_path: Path) -> None:
    proc = _sweep_until(tmp_path, n_trials=4, finished=1)
    db = tmp_path / "mlruns" / "mlflow.db"
    # Interrupt a trial that has just started: a trial takes seconds, so the signal lands inside it.
    deadline = time.time() + 60
    while (age := _newest_running_trial_age_s(db)) is None or age > 1.5:
        assert time.time() < deadline and proc.poll() is None, "no trial started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted; finished trials are kept" in stderr
    children = list((tmp_path / "logs").glob("trial-process-*.stderr"))
    assert children and not [pid for path in children for pid in processes_holding(path)], "the trial's child process was stopped"
    cfg = compose_quick(tmp_path, "study.n_trials=4", "study.presets=false")
    study = _study(cfg.study.storage, cfg.study.name)
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and not [t for t in study.trials if t.state == TrialState.RUNNING], \
        [(t.number, t.state) for t in study.trials]
    client = MlflowClient(f"sqlite:///{db}")
    run_ = client.get_run(interrupted[0].user_attrs["mlflow_run_id"])
    assert run_.info.status == "KILLED" and "interrupted" in run_.data.tags["litesweep.note"]
    assert "KeyboardInterrupt" in Path(client.download_artifacts(run_.info.run_id, "traceback.txt", str(tmp_path))).read_text()
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [interrupted[0].params], "the interrupted trial is queued again"
    parent = client.search_runs([run_.info.experiment_id], filter_string="tags.`litesweep.role` = 'study'")[0]
    assert parent.info.status == "KILLED"

    result = run(cfg)
    trials = _assert_stores_agree(result)
    assert result.n_finished == 4
    retried = [t for t in trials if t.user_attrs.get("retry_of") == interrupted[0].number]
    assert len(retried) == 1 and retried[0].params == interrupted[0].params
