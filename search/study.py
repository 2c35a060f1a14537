"""Create or resume the Optuna study and run trials until it holds ``study.n_trials`` finished ones.

Ask-and-tell, so that each trial's MLflow run is opened before the policy is sampled and closed
with the same state Optuna records. Stores are written in this order: artifacts and metrics to
MLflow, then the result to Optuna, then the run is ended; a crash in between leaves a RUNNING trial,
never a COMPLETE one without its files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from objectives.errors import ConfigError, HopelessTrial, LitesweepError
from search import pareto
from search.space import SearchSpace
from search.tracking import Tracker, dumps

log = logging.getLogger(__name__)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
FEASIBLE_ATTR = "feasible"
POLICY_ATTR = "policy"
TFLITE_SHA256_TAG = "litesweep.tflite_sha256"


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """A database URL gives an RDB storage; any other string is a journal file path.

    Journal files are Optuna's recommendation for several processes on one machine.
    """
    if "://" in url:
        return RDBStorage(url)
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded. Samplers read trial constraints set with ``set_constraint``."""
    if name == "tpe":
        # group=True: conditional parameters (ptq_mode only for integer layers...) are modelled per subspace.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise ConfigError("study.sampler = 'gp' needs PyTorch; install it (pip install torch) or use tpe, nsgaii or random") from exc
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"study.sampler = {name!r} is not supported; accepted: ['gp', 'nsgaii', 'random', 'tpe']")


def open_study(name: str, storage: str, sampler: str, seed: int, directions: Mapping[str, str]) -> optuna.Study:
    """Create the study, or load it when it exists (its objectives must match the config)."""
    backend = make_storage(storage)
    existing = {s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)}
    wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
              for d in directions.values()]
    if name in existing:
        study = optuna.load_study(study_name=name, storage=backend)
        stored = study.user_attrs.get("objectives")
        if (stored is not None and stored != list(directions)) or study.directions != wanted:
            raise ConfigError(f"study '{name}' exists with objectives {stored}, not {list(directions)}; use another study.name")
        # A resumed study reseeds with its trial count, so it does not replay its first suggestions.
        study.sampler = make_sampler(sampler, seed + len(study.trials))
        return study
    study = optuna.create_study(study_name=name, storage=backend, sampler=make_sampler(sampler, seed), directions=wanted)
    study.set_user_attr("objectives", list(directions))
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

    def __call__(self) -> TrialState:
        """Run one trial; returns the state recorded in Optuna."""
        trial = self.study.ask()
        run_id = self.tracker.start_trial(self.study.study_name, trial.number)
        trial.set_user_attr(pareto.RUN_ID_ATTR, run_id)
        try:
            policy = self.space.sample(trial)
            self.tracker.log_params(run_id, policy.flat_params())
            self.bench.check(policy)
            output = self.bench.run(policy)
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
            self.tracker.log_trial(
                run_id,
                params={},
                metrics={**metrics, **extra_metrics},
                tags={**tags, "litesweep.feasible": str(feasible).lower(),
                      TFLITE_SHA256_TAG: hashlib.sha256(output.tflite).hexdigest()},
                files={"model.tflite": output.tflite, "policy.json": policy.to_json()},
            )
            self.study.tell(trial, values)
            self.tracker.end_trial(run_id, "COMPLETE", "FINISHED")
            return TrialState.COMPLETE
        except (optuna.TrialPruned, HopelessTrial) as exc:
            self.study.tell(trial, state=TrialState.PRUNED)
            self.tracker.end_trial(run_id, "PRUNED", "KILLED", note=str(exc))
            return TrialState.PRUNED
        except KeyboardInterrupt:
            self.study.tell(trial, state=TrialState.FAIL)
            self.tracker.end_trial(run_id, "FAIL", "KILLED", traceback.format_exc())
            raise
        except ConfigError:
            # A policy the model cannot take is a configuration problem, not a bad trial: stop.
            self.study.tell(trial, state=TrialState.FAIL)
            self.tracker.end_trial(run_id, "FAIL", "FAILED", traceback.format_exc())
            raise
        except Exception:  # noqa: BLE001 - a failing trial must not end a long sweep
            log.exception("trial %d failed", trial.number)
            self.study.tell(trial, state=TrialState.FAIL)
            self.tracker.end_trial(run_id, "FAIL", "FAILED", traceback.format_exc())
            return TrialState.FAIL


def run_trials(
    runner: TrialRunner,
    n_trials: int,
    max_consecutive_failures: int,
    on_trial_end: Callable[[TrialState, int], None],
) -> None:
    """Run trials until the study holds ``n_trials`` finished ones.

    Raises:
        LitesweepError: ``max_consecutive_failures`` trials failed in a row.
    """
    failures = 0
    while (done := count_finished(runner.study)) < n_trials:
        state = runner()
        failures = failures + 1 if state == TrialState.FAIL else 0
        on_trial_end(state, done + (state in FINISHED_STATES))
        if failures >= max_consecutive_failures:
            raise LitesweepError(
                f"{failures} trials failed in a row (study.max_consecutive_failures = {max_consecutive_failures}); "
                "see traceback.txt on the FAILED trial runs"
            )


def dump_space(space: SearchSpace) -> str:
    """The expanded search space as JSON text."""
    return dumps(space.to_dict())
