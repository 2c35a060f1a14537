"""Which MLflow runs the stale-trial recovery may close: never one a live worker is about to end."""

from __future__ import annotations

import datetime
import subprocess

from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.study import ORPHAN_GRACE_S, WORKER_ATTR, _abandoned, worker_id


def _trial(state: TrialState, worker: str, ended_s_ago: float):  # noqa: ANN202
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
