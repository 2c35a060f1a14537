"""Create or resume the Optuna study and run trials until it holds ``study.n_trials`` finished ones.

Ask-and-tell, so that each trial's MLflow run is opened before the policy is sampled and closed
with the same state Optuna records. Stores are written in this order: artifacts and metrics to
MLflow, then the result to Optuna, then the run is ended; a crash in between leaves a RUNNING trial,
never a COMPLETE one without its files.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import os
import random
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from litesweep.objectives.errors import ConfigError, HopelessTrial, LitesweepError
from litesweep.search import pareto
from litesweep.search.space import SearchSpace
from litesweep.search.tracking import TAG_TRIAL, Tracker, dumps

log = logging.getLogger(__name__)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
FEASIBLE_ATTR = "feasible"
POLICY_ATTR = "policy"
METRIC_ATTR = "objective_metric"  # study attribute: what the accuracy objective scores (objective.metric)
TFLITE_SHA256_TAG = "litesweep.tflite_sha256"


HEARTBEAT_INTERVAL_S = 20.0
HEARTBEAT_GRACE_S = 90.0
WORKER_ATTR = "worker"
RETRY_OF_ATTR = "retry_of"


class _RetryAndRemember:
    """Called by Optuna for each trial its heartbeat failed: retry it once, as ``retry`` does for trials of
    a dead local worker, and remember it so that its MLflow run is ended too."""

    def __init__(self) -> None:
        self.failed: list[int] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.failed.append(trial.number)
        retry(study, trial)


def make_storage(url: str, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 heartbeat_grace_s: float = HEARTBEAT_GRACE_S) -> optuna.storages.BaseStorage:
    """A database URL gives an RDB storage (with Optuna's heartbeat, so trials of a dead worker on any
    machine are failed and retried once); any other string is a journal file path (Optuna's
    recommendation for several processes on one machine; dead local workers are found by pid).
    """
    if "://" in url:
        for attempt in range(5):
            try:
                return RDBStorage(
                    url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=max(1, round(heartbeat_interval_s)),
                    grace_period=max(1, round(heartbeat_grace_s)), heartbeat_stale_trial_callback=_RetryAndRemember(),
                )
            except Exception:  # noqa: BLE001 - workers starting together race to create Optuna's tables
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


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


def recover_stale_trials(study: optuna.Study, tracker: Tracker) -> list[int]:
    """Fail trials left RUNNING by a dead worker, retry each once, and end their MLflow runs as KILLED.

    A worker can die at any point of a trial, so this also covers the gaps between its steps: a trial
    with no worker recorded yet (failed once it is ``ORPHAN_GRACE_S`` old), a trial whose run was created
    but not yet linked (found by its trial-number tag, then linked), and a trial that never got a run
    (one is created for it, so every trial keeps exactly one run).

    Returns:
        The numbers of the trials that were failed here.
    """
    failed: list[int] = []
    optuna.storages.fail_stale_trials(study)  # RDB storages: heartbeat older than the grace period, on any machine
    get_callback = getattr(study._storage, "get_heartbeat_stale_trial_callback", None)  # RDB storages (behind Optuna's cache)
    callback = get_callback() if get_callback is not None else None
    by_heartbeat = set(callback.failed) if isinstance(callback, _RetryAndRemember) else set()
    if by_heartbeat:
        callback.failed.clear()
    open_runs = {run.data.tags.get(TAG_TRIAL): run.info.run_id for run in tracker.trial_runs(status="RUNNING")}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _dead(trial):
            continue
        run_id = trial.user_attrs.get(pareto.RUN_ID_ATTR) or open_runs.get(str(trial.number))
        run_is_open = run_id is None or run_id in open_runs.values()
        created = None
        try:
            if run_id is None:
                run_id = created = tracker.start_trial(study.study_name, trial.number)
            if pareto.RUN_ID_ATTR not in trial.user_attrs:
                study._storage.set_trial_user_attr(trial._trial_id, pareto.RUN_ID_ATTR, run_id)
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            if created is not None:  # another worker recovered it first: keep one run per trial
                tracker.client.delete_run(created)
            continue
        failed.append(trial.number)
        if run_is_open:
            tracker.end_trial(run_id, TrialState.FAIL.name, "KILLED", note=KILLED_NOTE)
        retry(study, trial)
    trials = study.get_trials(deepcopy=False)
    by_run = {t.user_attrs.get(pareto.RUN_ID_ATTR): t for t in trials if t.state != TrialState.WAITING}
    by_number = {str(t.number): t for t in trials}
    for number, run_id in open_runs.items():
        # A run not linked to its trial was created by a worker that died before it could link it.
        trial = by_run.get(run_id) or by_number.get(number)
        if trial is not None and trial.number not in failed and (trial.number in by_heartbeat or _abandoned(trial)):
            if trial.state == TrialState.COMPLETE:  # killed after telling Optuna: the trial and its files are whole
                tracker.end_trial(run_id, trial.state.name, "FINISHED", note="its worker died after the trial finished")
            else:
                tracker.end_trial(run_id, trial.state.name, "KILLED", note=KILLED_NOTE)
    return failed + sorted(by_heartbeat)


KILLED_NOTE = "its worker died; the trial was failed and retried"
# A live worker ends its MLflow run right after telling Optuna; a run still RUNNING this long after is orphaned.
# It is also how long a RUNNING trial with no worker recorded (killed right after ask) is given.
ORPHAN_GRACE_S = 120.0


def _dead(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a RUNNING trial's worker is gone (by pid on this host; by age when no worker was recorded)."""
    worker = trial.user_attrs.get(WORKER_ATTR)
    if worker is not None:
        return not _alive(worker)
    started = trial.datetime_start
    return started is not None and (datetime.datetime.now() - started).total_seconds() > ORPHAN_GRACE_S


def _abandoned(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial's MLflow run was left open by a dead worker (not one between tell and end)."""
    if trial.state == TrialState.RUNNING:
        return False
    worker = trial.user_attrs.get(WORKER_ATTR)
    if worker is not None and not _alive(worker):
        return True
    ended = trial.datetime_complete
    return ended is not None and (datetime.datetime.now() - ended).total_seconds() > ORPHAN_GRACE_S


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Enqueue the same parameters once more (never a retry of a retry)."""
    if RETRY_OF_ATTR in trial.user_attrs or not trial.params:
        return
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number})


def make_sampler(name: str, seed: int, n_startup_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded. Samplers read trial constraints set with ``set_constraint``."""
    startup = {} if n_startup_trials is None else {"n_startup_trials": n_startup_trials}
    if name == "tpe":
        # group=True: conditional parameters (ptq_mode only for integer layers...) are modelled per subspace.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, **startup)
    if name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)  # torch is checked by config.validate
    raise ConfigError(f"study.sampler = {name!r} is not supported; accepted: ['gp', 'nsgaii', 'random', 'tpe']")


def open_study(name: str, storage: str, sampler: str, seed: int, directions: Mapping[str, str],
               n_startup_trials: int | None = None, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
               heartbeat_grace_s: float = HEARTBEAT_GRACE_S) -> optuna.Study:
    """Create the study, or load it when it exists (its objectives must match the config)."""
    backend = make_storage(storage, heartbeat_interval_s, heartbeat_grace_s)
    existing = {s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)}
    wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
              for d in directions.values()]
    if name not in existing:
        try:
            study = optuna.create_study(study_name=name, storage=backend, sampler=make_sampler(sampler, seed, n_startup_trials),
                                        directions=wanted)
            study.set_user_attr("objectives", list(directions))
            return study
        except optuna.exceptions.DuplicatedStudyError:
            pass  # workers started together: another one created it first
    study = optuna.load_study(study_name=name, storage=backend)
    stored = study.user_attrs.get("objectives")
    if (stored is not None and stored != list(directions)) or study.directions != wanted:
        raise ConfigError(f"study '{name}' exists with objectives {stored}, not {list(directions)}; "
                          "accepted: the same study.objectives and study.directions, or another study.name")
    # A resumed study reseeds with its trial count, so it does not replay its first suggestions.
    study.sampler = make_sampler(sampler, seed + len(study.trials), n_startup_trials)
    return study


def count_finished(study: optuna.Study) -> int:
    """COMPLETE and PRUNED trials: what ``study.n_trials`` counts."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def constraint_values(metrics: Mapping[str, float], bounds: Mapping[str, float]) -> dict[str, float]:
    """Optuna constraint values (feasible when <= 0): each metric minus its upper bound."""
    return {metric: float(metrics[metric]) - float(bound) for metric, bound in bounds.items()}


def trial_record(output: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Extra metrics and tags of a trial output (achieved sparsity, timings, file types, fallbacks)."""
    metrics = {
        **{f"sparsity_achieved.{k}": v for k, v in output.achieved_sparsity.items()},
        **{f"time_{k}_s": v for k, v in output.timings.items()},
        **{f"filters.{k}": v for k, v in output.filters.items()},
    }
    tags = {
        "litesweep.delegate": output.measurement.delegate,
        "litesweep.fallback": ",".join(output.fallback) or "none",
        **{f"litesweep.weight_type.{k}": v for k, v in output.weight_types.items()},
    }
    return metrics, tags


@dataclasses.dataclass
class TrialRunner:
    """Runs one trial end to end: sample → compress/measure → record in both stores."""

    study: optuna.Study
    space: SearchSpace
    bench: Any  # objectives.pipeline.Workbench (kept untyped so search/ does not import TensorFlow here)
    tracker: Tracker
    directions: Mapping[str, str]
    constraints: Mapping[str, float] = dataclasses.field(default_factory=dict)
    inject_failures: float = 0.0
    inject_at: tuple[str, ...] = ("sampled",)  # points from search.config.INJECTION_POINTS

    def __call__(self) -> TrialState:
        """Run one trial; returns the state recorded in Optuna."""
        started = time.perf_counter()
        trial = self.study.ask()
        # Each step below may be the last if the worker is killed; recover_stale_trials handles every gap.
        heartbeat = get_heartbeat_thread(trial._trial_id, self.study._storage)
        run_id: str | None = None
        self._sampled = False
        beating = False
        try:
            heartbeat.start()
            beating = True
            trial.set_user_attr(WORKER_ATTR, worker_id())
            run_id = self.tracker.start_trial(self.study.study_name, trial.number)
            trial.set_user_attr(pareto.RUN_ID_ATTR, run_id)
            return self._run(trial, run_id, started)
        except KeyboardInterrupt:
            self._record_interrupt(trial, run_id, traceback.format_exc())
            raise
        finally:
            if beating:
                heartbeat.join()

    def _record_interrupt(self, trial: optuna.Trial, run_id: str | None, traceback_text: str) -> None:
        """Ctrl-C at any step of a trial: FAIL it (retried on the next run) and end its run KILLED."""
        state = self.study._storage.get_trial(trial._trial_id).state
        if state.is_finished():  # interrupted between telling Optuna and ending the run
            if run_id is not None:
                self.tracker.end_trial(run_id, state.name, "FINISHED" if state == TrialState.COMPLETE else "KILLED")
            return
        if run_id is None:
            run_id = self.tracker.start_trial(self.study.study_name, trial.number)
            trial.set_user_attr(pareto.RUN_ID_ATTR, run_id)
        self.study.tell(trial, state=TrialState.FAIL)
        if self._sampled:
            self.tracker.end_trial(run_id, "FAIL", "KILLED", traceback_text, note="interrupted (Ctrl-C); retried on the next run")
            retry(self.study, self.study._storage.get_trial(trial._trial_id))
        else:  # no whole policy to retry: the next run samples a new trial in its place
            self.tracker.end_trial(run_id, "FAIL", "KILLED", traceback_text, note="interrupted (Ctrl-C) while sampling its policy")

    def _run(self, trial: optuna.Trial, run_id: str, started: float) -> TrialState:
        try:
            inject = injection_point(self.study.study_name, trial.number, self.inject_failures, self.inject_at)
            policy = self.space.sample(trial)
            self._sampled = True
            self.tracker.log_params(run_id, policy.flat_params())
            _maybe_fail(inject, "sampled", self.inject_failures)
            output = self.bench.run(policy)  # checks the policy against the model first
            _maybe_fail(inject, "measured", self.inject_failures)
            metrics = output.metrics.as_dict()
            values = [metrics[m] for m in self.directions]
            violations = constraint_values(metrics, self.constraints)
            for key, value in violations.items():
                trial.set_constraint(key, value)
            feasible = all(v <= 0 for v in violations.values())
            trial.set_user_attr(pareto.METRICS_ATTR, metrics)
            trial.set_user_attr(FEASIBLE_ATTR, feasible)
            trial.set_user_attr(POLICY_ATTR, policy.to_dict())
            extra_metrics, tags = trial_record(output)
            logging_started = time.perf_counter()
            self.tracker.log_trial(
                run_id,
                params={},
                metrics={**metrics, **extra_metrics},
                tags={**tags, "litesweep.feasible": str(feasible).lower(),
                      TFLITE_SHA256_TAG: hashlib.sha256(output.tflite).hexdigest()},
                files={"model.tflite": output.tflite, "policy.json": policy.to_json()},
            )
            _maybe_fail(inject, "logged", self.inject_failures)
            timings = {**output.timings, "log": time.perf_counter() - logging_started}
            timings["trial"] = time.perf_counter() - started
            timings["overhead"] = timings["trial"] - sum(timings.get(k, 0.0) for k in WORK_PHASES)
            trial.set_user_attr(TIMINGS_ATTR, timings)
            self.study.tell(trial, values)
            self.tracker.end_trial(run_id, "COMPLETE", "FINISHED", metrics={f"time_{k}_s": timings[k] for k in ("log", "trial", "overhead")})
            return TrialState.COMPLETE
        except (optuna.TrialPruned, HopelessTrial) as exc:
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            self.tracker.end_trial(run_id, "PRUNED", "KILLED", note=str(exc))
            return TrialState.PRUNED
        except ConfigError:
            # A policy the model cannot take is a configuration problem, not a bad trial: stop.
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            self.tracker.end_trial(run_id, "FAIL", "FAILED", traceback.format_exc())
            raise
        except Exception:  # noqa: BLE001 - a failing trial must not end a long sweep
            log.exception("trial %d failed", trial.number)
            # skip_if_finished: a worker that wrongly thought this one dead may have failed the trial already.
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            self.tracker.end_trial(run_id, "FAIL", "FAILED", traceback.format_exc())
            return TrialState.FAIL


class InjectedFailure(RuntimeError):
    """A failure raised on purpose by ``study.inject_failures`` (fault-injection testing)."""


def injection_point(study_name: str, trial_number: int, share: float, points: tuple[str, ...]) -> str | None:
    """The point where trial ``trial_number`` fails on purpose, or None; seeded by study and trial, so tests can tell."""
    rng = random.Random(f"{study_name}:{trial_number}")
    if not share or rng.random() >= share:
        return None
    return points[rng.randrange(len(points))]


def _maybe_fail(point: str | None, here: str, share: float) -> None:
    if point == here:
        raise InjectedFailure(f"failure injected on purpose after the trial was {here} (study.inject_failures = {share})")


MIN_TRIALS_FOR_FAILURE_RATE = 5
TIMINGS_ATTR = "timings"
#: The phases that are the trial's real work; the rest of its wall time (sampling, logging, storage) is overhead.
WORK_PHASES = ("finetune", "convert", "evaluate")


def run_trials(
    runner: TrialRunner,
    n_trials: int,
    max_consecutive_failures: int,
    max_failure_rate: float,
    on_trial_end: Callable[[TrialState, int], None],
    timeout_s: float | None = None,
) -> None:
    """Run trials until the study holds ``n_trials`` finished ones (counting every worker's).

    A trial is only started while finished plus running trials are fewer than ``n_trials``, so
    several workers on one study do not overshoot it. With ``timeout_s``, no trial starts after that
    many seconds of this call (a running trial is finished, never cut).

    Raises:
        LitesweepError: ``max_consecutive_failures`` trials failed in a row, or more than
            ``max_failure_rate`` of this run's trials failed (after at least 5).
    """
    consecutive = failed = ran = 0
    study = runner.study
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        done = count_finished(study)
        if done >= n_trials or (deadline is not None and time.monotonic() >= deadline):
            return
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if done + running >= n_trials and not _has_waiting(study):
            # Other workers are finishing the last trials; if one dies, its trial is failed and retried.
            recover_stale_trials(study, runner.tracker)
            time.sleep(1.0)
            continue
        recover_stale_trials(study, runner.tracker)  # a worker that died on any machine: its trial is retried
        state = runner()
        ran += 1
        consecutive = consecutive + 1 if state == TrialState.FAIL else 0
        failed += state == TrialState.FAIL
        on_trial_end(state, count_finished(study))
        if consecutive >= max_consecutive_failures:
            raise LitesweepError(
                f"{consecutive} trials failed in a row (study.max_consecutive_failures = {max_consecutive_failures}); "
                "see traceback.txt on the FAILED trial runs"
            )
        if ran >= MIN_TRIALS_FOR_FAILURE_RATE and failed / ran > max_failure_rate:
            raise LitesweepError(
                f"{failed} of {ran} trials failed ({failed / ran:.0%}), above study.max_failure_rate = {max_failure_rate:.0%}; "
                "see traceback.txt on the FAILED trial runs"
            )


def _has_waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def dump_space(space: SearchSpace) -> str:
    """The expanded search space as JSON text."""
    return dumps(space.to_dict())
