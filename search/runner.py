"""One trial, end to end: sample a policy → compress and measure it (objectives/) → record it in both stores.

Ask-and-tell, so that each trial's MLflow run is opened before the policy is sampled and closed with the
same state Optuna records. Stores are written in this order: artifacts and metrics to MLflow, then the
result to Optuna, then the run is ended; a crash in between leaves a RUNNING trial, never a COMPLETE one
without its files (``recovery.recover_stale_trials`` closes every such gap).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import random
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from litesweep.objectives.errors import ConfigError, HopelessTrial, LitesweepError, RuntimeRefused
from litesweep.search.isolation import TrialCrashed, TrialProcess
from litesweep.search.ledger import (
    FEASIBLE_ATTR,
    POLICY_FILE,
    RUN_ID_ATTR,
    TAG_DELEGATE,
    TAG_ENCODING,
    TAG_FALLBACK,
    TAG_FEASIBLE,
    TAG_PRESET_TWIN,
    TAG_WEIGHT_TYPE_PREFIX,
    TFLITE_FILE,
    TIMINGS_ATTR,
    TWIN_ATTR,
    WORKER_ATTR,
    TrialRecord,
)
from litesweep.search.recovery import recover_stale_trials, retry, worker_id
from litesweep.search.space import SearchSpace
from litesweep.search.storage import ask, backend_of, count_finished, heartbeat, trial_id
from litesweep.search.study_config import NATIVE_FAULTS
from litesweep.search.tracking import Tracker

log = logging.getLogger(__name__)
MIN_TRIALS_FOR_FAILURE_RATE = 5
#: Seconds between stale-trial checks while no other trial is running (one runs before each trial otherwise).
RECOVERY_INTERVAL_S = 30.0
#: The phases that are the trial's real work; the rest of its wall time (sampling, logging, storage) is overhead.
WORK_PHASES = ("finetune", "convert", "evaluate")


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


def constraint_values(metrics: Mapping[str, float], bounds: Mapping[str, float]) -> dict[str, float]:
    """Optuna constraint values (feasible when <= 0): each metric minus its upper bound."""
    return {metric: float(metrics[metric]) - float(bound) for metric, bound in bounds.items()}


def output_extras(output: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Extra metrics and tags of a trial output (achieved sparsity, timings, file types, fallbacks)."""
    metrics = {
        **{f"sparsity_achieved.{k}": v for k, v in output.achieved_sparsity.items()},
        **{f"time_{k}_s": v for k, v in output.timings.items()},
        **{f"filters.{k}": v for k, v in output.filters.items()},
    }
    tags = {
        TAG_DELEGATE: output.measurement.delegate,
        TAG_FALLBACK: ",".join(output.fallback) or "none",
        TAG_ENCODING: output.encoding,
        **{f"{TAG_WEIGHT_TYPE_PREFIX}{k}": v for k, v in output.weight_types.items()},
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
    isolated: TrialProcess | None = None  # study.isolation = process: the work runs in this child

    def __call__(self) -> TrialState:
        """Run one trial; returns the state recorded in Optuna."""
        started, asked_at = time.perf_counter(), datetime.datetime.now()
        trial = ask(self.study)
        # The sampler's time, and its part before Optuna stamps the trial's start (between trials, not in it).
        self._ask = {"ask": time.perf_counter() - started,
                     "ask_in_gap": max(0.0, ((trial.datetime_start or asked_at) - asked_at).total_seconds())}
        # Each step below may be the last if the worker is killed; recover_stale_trials handles every gap.
        run_id: str | None = None
        self._sampled = False
        with heartbeat(self.study, trial):  # still beating while an interrupted trial is recorded
            try:
                trial.set_user_attr(WORKER_ATTR, worker_id())
                run_id = self.tracker.start_trial(self.study.study_name, trial.number)
                trial.set_user_attr(RUN_ID_ATTR, run_id)
                return self._run(trial, run_id, started)
            except KeyboardInterrupt:
                self._record_interrupt(trial, run_id, traceback.format_exc())
                raise

    def _record_interrupt(self, trial: optuna.Trial, run_id: str | None, traceback_text: str) -> None:
        """Ctrl-C at any step of a trial: FAIL it (retried on the next run) and end its run KILLED."""
        state = backend_of(self.study).get_trial(trial_id(self.study, trial)).state
        if state.is_finished():  # interrupted between telling Optuna and ending the run
            if run_id is not None:
                self.tracker.end_trial(run_id, state.name, "FINISHED" if state == TrialState.COMPLETE else "KILLED")
            return
        if run_id is None:
            run_id = self.tracker.start_trial(self.study.study_name, trial.number)
            trial.set_user_attr(RUN_ID_ATTR, run_id)
        self.study.tell(trial, state=TrialState.FAIL)
        if self._sampled:
            self.tracker.end_trial(run_id, "FAIL", "KILLED", traceback_text, note="interrupted (Ctrl-C); retried on the next run")
            retry(self.study, backend_of(self.study).get_trial(trial_id(self.study, trial)))
        else:  # no whole policy to retry: the next run samples a new trial in its place
            self.tracker.end_trial(run_id, "FAIL", "KILLED", traceback_text, note="interrupted (Ctrl-C) while sampling its policy")

    def _run(self, trial: optuna.Trial, run_id: str, started: float) -> TrialState:
        try:
            inject = injection_point(self.study.study_name, trial.number, self.inject_failures, self.inject_at)
            policy = self.space.sample(trial)
            self._sampled = True
            # The latency protocol beside the policy: two runs compare without opening the study's config.
            self.tracker.log_params(run_id, policy.flat_params() | self.bench.protocol.describe())
            twin = trial.user_attrs.get(TWIN_ATTR)
            if twin:
                self.tracker.set_tags(run_id, {TAG_PRESET_TWIN: twin})
            _maybe_fail(inject, "sampled", self.inject_failures)
            if self.isolated is not None:
                output = self.isolated.run(policy, inject if inject in NATIVE_FAULTS else None)
            else:
                output = self.bench.run(policy)  # checks the policy against the model first
            _maybe_fail(inject, "measured", self.inject_failures)
            metrics = output.metrics.as_dict()
            values = [metrics[m] for m in self.directions]
            violations = constraint_values(metrics, self.constraints)
            for key, value in violations.items():
                trial.set_constraint(key, value)
            record = TrialRecord(number=trial.number, state=TrialState.RUNNING.name, run_id=run_id, policy=policy.to_dict(),
                                 metrics=metrics, feasible=all(v <= 0 for v in violations.values()))
            for key, value in record.optuna_attrs().items():
                trial.set_user_attr(key, value)
            extra_metrics, extra_tags = output_extras(output)
            logging_started = time.perf_counter()
            self.tracker.log_trial(run_id, params={}, metrics={**metrics, **extra_metrics},
                                   tags=record.mlflow_tags(output.tflite, extra_tags),
                                   files={TFLITE_FILE: output.tflite, POLICY_FILE: policy.to_json()},
                                   model_params=policy.flat_params(), trained=policy.needs_training)
            _maybe_fail(inject, "logged", self.inject_failures)
            timings = {**output.timings, "log": time.perf_counter() - logging_started, **self._ask}
            timings["trial"] = time.perf_counter() - started
            timings["overhead"] = timings["trial"] - sum(timings.get(k, 0.0) for k in WORK_PHASES)
            trial.set_user_attr(TIMINGS_ATTR, timings)
            self.study.tell(trial, values)
            self.tracker.end_trial(run_id, "COMPLETE", "FINISHED",
                                   metrics={f"time_{k}_s": timings[k] for k in ("log", "trial", "overhead")})
            return TrialState.COMPLETE
        except (optuna.TrialPruned, HopelessTrial, RuntimeRefused) as exc:
            if isinstance(exc, RuntimeRefused):  # no file a user could ship: infeasible, with the runtime's reason
                trial.set_user_attr(FEASIBLE_ATTR, False)
                self.tracker.set_tags(run_id, {TAG_FEASIBLE: "false"})
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            self.tracker.end_trial(run_id, "PRUNED", "KILLED", note=str(exc))
            return TrialState.PRUNED
        except ConfigError:
            # A policy the model cannot take is a configuration problem, not a bad trial: stop.
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            self.tracker.end_trial(run_id, "FAIL", "FAILED", traceback.format_exc())
            raise
        except Exception as exc:  # a failing trial must not end a long sweep
            if isinstance(exc, TrialCrashed):  # its traceback (stderr tail) goes to traceback.txt
                log.error("trial %d failed: %s", trial.number, str(exc).splitlines()[0])
            else:
                log.exception("trial %d failed", trial.number)
            # skip_if_finished: a worker that wrongly thought this one dead may have failed the trial already.
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            self.tracker.end_trial(run_id, "FAIL", "FAILED", traceback.format_exc())
            return TrialState.FAIL


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
    recovered_at = -float("inf")
    while True:
        done = count_finished(study)
        if done >= n_trials or (deadline is not None and time.monotonic() >= deadline):
            return
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if done + running >= n_trials and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            # Other workers are finishing the last trials; if one dies, its trial is failed and retried.
            recover_stale_trials(study, runner.tracker)
            time.sleep(1.0)
            continue
        if running or time.monotonic() - recovered_at >= RECOVERY_INTERVAL_S:
            # A worker that died on any machine: its trial is retried. With no trial running, only now and then:
            # what is left to find (a run a killed worker left open) is not worth a store query per trial.
            recover_stale_trials(study, runner.tracker)
            recovered_at = time.monotonic()
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
