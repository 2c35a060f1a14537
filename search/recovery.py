"""Workers that die: find their trials, fail them, retry each once, and end their MLflow runs.

A worker can die between any two steps of a trial (see ``runner.TrialRunner``); ``recover_stale_trials``
leaves every trial with exactly one ended MLflow run, linked both ways.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from litesweep.search.ledger import RETRY_OF_ATTR, RUN_ID_ATTR, TAG_TRIAL, WORKER_ATTR
from litesweep.search.tracking import Tracker

KILLED_NOTE = "its worker died; the trial was failed and retried"
# A live worker ends its MLflow run right after telling Optuna; a run still RUNNING this long after is orphaned.
# It is also how long a RUNNING trial with no worker recorded (killed right after ask) is given.
ORPHAN_GRACE_S = 120.0


class RetryAndRemember:
    """Called by Optuna for each trial its heartbeat failed: retry it once, as ``retry`` does for trials of
    a dead local worker, and remember it so that its MLflow run is ended too."""

    def __init__(self) -> None:
        self.failed: list[int] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failed.append(trial.number)
        retry(study, trial)


def worker_id() -> str:
    """``host:pid:start`` of this process; the start time tells a reused pid from the original process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _alive(worker: str) -> bool:
    host, pid, start = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine: only the RDB heartbeat can tell
    return Path(f"/proc/{pid}").exists() and _start_ticks(int(pid)) == start


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Enqueue the same parameters once more (never a retry of a retry)."""
    if RETRY_OF_ATTR in trial.user_attrs or not trial.params:
        return
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number})


def recover_stale_trials(study: optuna.Study, tracker: Tracker) -> list[int]:
    """Fail trials left RUNNING by a dead worker, retry each once, and end their MLflow runs as KILLED.

    A worker can die at any point of a trial, so this also covers the gaps between its steps: a trial
    with no worker recorded yet (failed once it is ``ORPHAN_GRACE_S`` old), a trial whose run was created
    but not yet linked (found by its trial-number tag, then linked), and a trial that never got a run
    (one is created for it, so every trial keeps exactly one run).

    Returns:
        The numbers of the trials that were failed here.
    """
    from litesweep.search.storage import backend_of, fail_stale_trials, trial_id

    failed: list[int] = []
    fail_stale_trials(study)  # RDB storages: heartbeat older than the grace period, on any machine
    storage = backend_of(study)
    get_callback = getattr(storage, "get_heartbeat_stale_trial_callback", None)  # RDB storages only
    callback = get_callback() if get_callback is not None else None
    by_heartbeat = set(callback.failed) if isinstance(callback, RetryAndRemember) else set()
    if isinstance(callback, RetryAndRemember):
        callback.failed.clear()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    dead = [t for t in running if _dead(t)]
    open_runs = {run.data.tags.get(TAG_TRIAL): run.info.run_id for run in tracker.trial_runs(status="RUNNING")}
    for trial in dead:
        run_id = trial.user_attrs.get(RUN_ID_ATTR) or open_runs.get(str(trial.number))
        run_is_open = run_id is None or run_id in open_runs.values()
        created = None
        try:
            if run_id is None:
                run_id = created = tracker.start_trial(study.study_name, trial.number)
            if RUN_ID_ATTR not in trial.user_attrs:
                storage.set_trial_user_attr(trial_id(study, trial), RUN_ID_ATTR, run_id)
            storage.set_trial_state_values(trial_id(study, trial), state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            if created is not None:  # another worker recovered it first: keep one run per trial
                tracker.client.delete_run(created)
            continue
        failed.append(trial.number)
        if run_is_open:
            tracker.end_trial(run_id, TrialState.FAIL.name, "KILLED", note=KILLED_NOTE)
        retry(study, trial)
    trials = study.get_trials(deepcopy=False)
    by_run = {t.user_attrs.get(RUN_ID_ATTR): t for t in trials if t.state != TrialState.WAITING}
    by_number = {str(t.number): t for t in trials}
    for number, run_id in open_runs.items():
        # A run not linked to its trial was created by a worker that died before it could link it.
        owner = by_run.get(run_id) or by_number.get(str(number))
        if owner is not None and owner.number not in failed and (owner.number in by_heartbeat or _abandoned(owner)):
            if owner.state == TrialState.COMPLETE:  # killed after telling Optuna: the trial and its files are whole
                tracker.end_trial(run_id, owner.state.name, "FINISHED", note="its worker died after the trial finished")
            else:
                tracker.end_trial(run_id, owner.state.name, "KILLED", note=KILLED_NOTE)
    return failed + sorted(by_heartbeat)


def _dead(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial's worker is gone (by pid on this host; by age when no worker was recorded)."""
    worker = trial.user_attrs.get(WORKER_ATTR)
    if worker is not None:
        return not _alive(worker)
    started = trial.datetime_start
    return started is not None and (datetime.datetime.now() - started).total_seconds() > ORPHAN_GRACE_S


def _abandoned(trial: FrozenTrial) -> bool:
    """Whether a finished trial's MLflow run was left open by a dead worker (not one between tell and end)."""
    if trial.state == TrialState.RUNNING:
        return False
    worker = trial.user_attrs.get(WORKER_ATTR)
    if worker is not None and not _alive(worker):
        return True
    ended = trial.datetime_complete
    return ended is not None and (datetime.datetime.now() - ended).total_seconds() > ORPHAN_GRACE_S
