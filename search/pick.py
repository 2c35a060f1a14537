"""``litesweep-pick``: choose a model among a study's Pareto front and the converter's presets, export and register
it. Same config as ``litesweep``, plus ``pick``: ``litesweep-pick pick.max_size_bytes=60000 pick.prefer=most_accurate``.

Front trials and presets (the parent run's baseline runs) are read alike from their MLflow runs and chosen on
validation figures, never on test ones; latency is the confirmed median when the run was re-timed, and one
model is faster than another only when their ranges of round medians do not overlap. A preset is exported
when it wins under ``pick.prefer`` or dominates the front's choice; its folder has no ``policy.json`` (there
is no policy; ``metrics.json`` names the preset). A file LiteRT's default interpreter refuses is skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import optuna
from mlflow.entities import LoggedModel, Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from litesweep.objectives.errors import ConfigError, LitesweepError
from litesweep.objectives.metrics import CONFIRMED_LATENCY_NAMES, METRIC_NAMES, TEST_METRIC_NAMES
from litesweep.search import ledger, logged_models
from litesweep.search.cli import hydra_entry
from litesweep.search.config import validate
from litesweep.search.ledger import POLICY_FILE, TFLITE_FILE, StudyView, open_view, run_id_of
from litesweep.search.model_card import model_card, nothing_meets, register, summary, write_folder
from litesweep.search.pareto import compare, dominates
from litesweep.search.reproduce import recorded_config, reproduce_overrides
from litesweep.search.storage import load_existing_study

BOUNDS = {"min_accuracy": ("accuracy", ">="), "max_accuracy_drop": ("accuracy_drop", "<="),
          "max_size_bytes": ("size_bytes", "<="), "max_latency_ms": ("latency_ms", "<=")}


class NothingMeetsConstraints(LitesweepError):
    """No front trial and no preset meets the pick constraints."""


#: What a candidate's run holds that pick reads: validation figures, test figures and confirmed latency.
FIGURES = (*METRIC_NAMES, *TEST_METRIC_NAMES, *CONFIRMED_LATENCY_NAMES)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A model pick may export: a front trial or a converter preset, with its MLflow run's metrics."""

    run_id: str
    metrics: dict[str, float]
    trial: int | None = None
    preset: str | None = None
    model_id: str | None = None  # its MLflow LoggedModel (None for a study from before them)

    @classmethod
    def of(cls, run: Run, trial: int | None = None, preset: str | None = None) -> Candidate:
        """A candidate with the figures its MLflow run holds (``FIGURES``)."""
        return cls(run.info.run_id, {k: v for k, v in run.data.metrics.items() if k in FIGURES}, trial, preset)

    @classmethod
    def of_model(cls, model: LoggedModel, trial: int | None = None, preset: str | None = None) -> Candidate:
        """A candidate with the figures its LoggedModel holds (the same as its run's)."""
        assert model.source_run_id is not None  # litesweep's models are made by a run
        figures = {k: v for k, v in logged_models.latest_metrics(model).items() if k in FIGURES}
        return cls(model.source_run_id, figures, trial, preset, model.model_id)

    @property
    def label(self) -> str:
        """``trial 3`` or ``preset dynamic_int8``."""
        return f"trial {self.trial}" if self.preset is None else f"preset {self.preset}"

    @property
    def figures(self) -> dict[str, float]:
        """What pick selects on (``selection_figures``)."""
        return selection_figures(self.metrics)


@dataclasses.dataclass(frozen=True)
class Pick:
    """What was picked (a front trial or a preset) and what was exported."""

    trial_number: int | None  # None when a preset was picked
    preset: str | None  # the converter preset picked, None when a trial was
    run_id: str
    metrics: dict[str, float]
    output_dir: Path
    best_preset: str | None  # the best preset meeting the constraints, picked or not
    registered_version: str | None


def selection_figures(metrics: Mapping[str, float]) -> dict[str, float]:
    """A run's metrics as pick compares them: validation figures, with ``latency_ms`` the confirmed median
    when the run was re-timed (its range in ``latency_ms_low``/``_high``)."""
    figures = dict(metrics)
    if metrics.get("latency_ms_confirmed") is not None:
        figures["latency_ms"] = metrics["latency_ms_confirmed"]
    return figures


def violation(metrics: Mapping[str, float], constraints: Mapping[str, tuple[str, str, float]]) -> float:
    """How far ``metrics`` are from meeting every constraint (0 = all met), each relative to its bound."""
    total = 0.0
    for metric, op, bound in constraints.values():
        gap = (bound - metrics[metric]) if op == ">=" else (metrics[metric] - bound)
        total += max(gap, 0.0) / max(abs(bound), 1e-9)
    return total


def choose(candidates: Sequence[Mapping[str, float]], prefer: str, directions: Mapping[str, str]) -> int:
    """Index of the preferred candidate (``selection_figures`` of each).

    ``fastest``: the lowest latency and every candidate whose range overlaps it tie; the most accurate of
    those wins, then the smallest. ``knee``: closest to the ideal point once every objective is scaled to
    [0, 1] over the candidates.
    """
    every = range(len(candidates))
    if prefer == "smallest":
        return min(every, key=lambda i: (candidates[i]["size_bytes"], -candidates[i]["accuracy"]))
    if prefer == "fastest":
        lowest = min(every, key=lambda i: candidates[i]["latency_ms"])
        tied = [i for i in every if compare(candidates[i], candidates[lowest], "latency_ms", "minimize") == 0]
        return max(tied, key=lambda i: (candidates[i]["accuracy"], -candidates[i]["size_bytes"]))
    if prefer == "most_accurate":
        return max(every, key=lambda i: (candidates[i]["accuracy"], -candidates[i]["size_bytes"]))
    scaled = []
    for metric, direction in directions.items():
        values = [c[metric] for c in candidates]
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        scaled.append([(hi - v) / span if direction == "maximize" else (v - lo) / span for v in values])
    return min(every, key=lambda i: math.sqrt(sum(col[i] ** 2 for col in scaled)))


@dataclasses.dataclass(frozen=True)
class Choice:
    """The candidate to export; ``reason`` says why a preset beat the front (None for a trial)."""

    candidate: Candidate
    reason: str | None
    best_trial: Candidate | None  # the best front trial meeting the constraints
    best_preset: Candidate | None  # the best preset meeting them


def select(trials: Sequence[Candidate], presets: Sequence[Candidate], constraints: Mapping[str, tuple[str, str, float]],
           prefer: str, directions: Mapping[str, str], trial: int | None = None) -> Choice:
    """The best under ``prefer`` of the front trials and presets meeting the constraints, replaced while
    another of them dominates it (with ``trial``, that front trial, kept as asked).

    Raises:
        NothingMeetsConstraints: no trial or preset meets the constraints (the closest of each are named).
    """
    fits = [[c for c in pool if violation(c.figures, constraints) == 0] for pool in (trials, presets)]
    best_trial, best_preset = (pool[choose([c.figures for c in pool], prefer, directions)] if pool else None for pool in fits)
    if trial is not None:
        return Choice(next(c for c in trials if c.trial == trial), None, best_trial, best_preset)
    pool = fits[0] + fits[1]
    if not pool:
        raise NothingMeetsConstraints(nothing_meets(closest(trials, constraints), closest(presets, constraints), constraints))
    chosen = pool[choose([c.figures for c in pool], prefer, directions)]
    reason = f"it meets the constraints and wins under prefer {prefer}" if chosen.preset is not None else None
    for _ in pool:  # dominance is a strict order: a chain is no longer than the pool
        better = [c for c in pool if dominates(c.figures, chosen.figures, directions)]
        if not better:
            break
        if chosen.preset is None:
            reason = f"it dominates {chosen.label}, prefer {prefer}'s choice, on ({', '.join(directions)})"
        chosen = better[choose([c.figures for c in better], prefer, directions)]
    return Choice(chosen, reason if chosen.preset is not None else None, best_trial, best_preset)


def closest(pool: Sequence[Candidate], constraints: Mapping[str, tuple[str, str, float]]) -> list[Candidate]:
    """The three candidates nearest to meeting the constraints."""
    return sorted(pool, key=lambda c: violation(c.figures, constraints))[:3]


def candidates(view: StudyView) -> tuple[list[Candidate], list[Candidate]]:
    """The front trials and the presets, each with its LoggedModel's figures (its run's, for a study from before them)."""
    assert view.parent_run_id is not None
    models = logged_models.study_models(view.client, view.parent.info.experiment_id, view.parent_run_id)

    def read(run_id: str, trial: int | None = None, preset: str | None = None) -> Candidate:
        model = models.get(run_id)
        return Candidate.of_model(model, trial, preset) if model else Candidate.of(view.client.get_run(run_id), trial, preset)

    trials = [read(run_id, trial=t.number) for t in view.front() if (run_id := run_id_of(t)) is not None]  # COMPLETE: linked
    presets = [read(run.info.run_id, preset=name) for name, run in ledger.first_run_per_preset(view.preset_runs()).items()]
    return trials, presets


def _runnable(client: MlflowClient, trials: list[Candidate], presets: list[Candidate],
              select_: Callable[[list[Candidate], list[Candidate]], Choice], asked: int | None) -> tuple[Choice, bytes]:
    """The choice whose file LiteRT's default interpreter runs, skipping (with a warning) those it refuses."""
    from litesweep.objectives.runtime import default_runtime_error

    refused: list[str] = []
    while True:
        try:
            choice = select_(trials, presets)
        except NothingMeetsConstraints:
            if not refused:
                raise
            raise LitesweepError(f"LiteRT's default interpreter refuses every candidate meeting the constraints "
                                 f"({', '.join(refused)}); nothing exported") from None
        chosen = choice.candidate
        tflite = ledger.read_artifact(client, chosen.run_id, TFLITE_FILE)
        error = default_runtime_error(tflite)
        if error is None:
            return choice, tflite
        print(f"litesweep-pick: warning: {chosen.label} skipped: LiteRT's default interpreter refuses its {TFLITE_FILE} ({error})",
              file=sys.stderr)
        if asked is not None:
            raise LitesweepError(f"pick.trial = {chosen.trial}: LiteRT's default interpreter refuses its {TFLITE_FILE} ({error})")
        refused.append(chosen.label)
        trials, presets = [c for c in trials if c is not chosen], [c for c in presets if c is not chosen]


def pick(cfg: DictConfig) -> Pick:
    """Choose, export and optionally register a model from the study ``cfg`` names.

    Raises:
        NothingMeetsConstraints: no front trial and no preset meets the constraints (the closest are named).
        ConfigError: the study or its runs cannot be found.
        LitesweepError: LiteRT's default interpreter refuses every candidate meeting the constraints.
    """
    validate(cfg)
    view = open_view(load_existing_study(cfg.study.name, cfg.study.storage), cfg.tracking.uri)
    if view.parent_run_id is None:
        raise ConfigError(f"study.name = {cfg.study.name!r} has no MLflow parent run (it never started a sweep); "
                          "accepted: a study litesweep has run trials in")
    study, client, directions = view.study, view.client, view.directions
    trials, presets = candidates(view)
    if cfg.pick.trial is not None and cfg.pick.trial not in [c.trial for c in trials]:
        raise ConfigError(f"pick.trial = {cfg.pick.trial} is not on the front; accepted: {[c.trial for c in trials]}")
    constraints = {key: (*BOUNDS[key], float(cfg.pick[key])) for key in BOUNDS if cfg.pick[key] is not None}
    try:
        chooser = functools.partial(select, constraints=constraints, prefer=cfg.pick.prefer, directions=directions, trial=cfg.pick.trial)
        choice, tflite = _runnable(client, trials, presets, chooser, cfg.pick.trial)
    except NothingMeetsConstraints:
        if trials:
            raise
        done = [Candidate(run_id_of(t) or "-", ledger.metrics_of(t), trial=t.number)  # no front: the closest finished trials
                for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
        raise NothingMeetsConstraints(nothing_meets(closest(done, constraints), closest(presets, constraints), constraints)) from None
    chosen = choice.candidate
    sha256 = hashlib.sha256(tflite).hexdigest()
    logged = client.get_run(chosen.run_id).data.tags.get(ledger.TAG_TFLITE_SHA256)
    if logged is not None and logged != sha256:
        raise LitesweepError(f"the {TFLITE_FILE} of run {chosen.run_id} has sha256 {sha256}, not the logged {logged}")
    policy = None if chosen.preset is not None else ledger.read_artifact(client, chosen.run_id, POLICY_FILE)
    recorded = recorded_config(client, view.parent_run_id)
    config = recorded if recorded is not None else cfg
    rule = ", ".join(f"{m} {o} {b:g}" for m, o, b in constraints.values())
    how = ", ".join([f"prefer {cfg.pick.prefer}", *([f"constraints {rule}"] if rule else []),
                     *([f"pick.trial = {cfg.pick.trial}"] if cfg.pick.trial is not None else [])])
    reference = view.reference()
    other = choice.best_trial if chosen.preset is not None else choice.best_preset
    card = model_card(study.study_name, chosen, reference, other, None if policy is None else json.loads(policy), config,
                      recorded is not None, reproduce_overrides(config), how_picked=how, reason=choice.reason,
                      tracking_uri=cfg.tracking.uri, parent_run_id=view.parent_run_id, sha256=sha256, metric=view.metric)
    files = {TFLITE_FILE: tflite, **({POLICY_FILE: policy} if policy is not None else {}),
             "metrics.json": json.dumps({"trial": chosen.trial, "preset": chosen.preset, "run_id": chosen.run_id,
                                         "metrics": chosen.metrics, "reference": reference, "sha256": sha256}, indent=2).encode(),
             "MODEL_CARD.md": card.encode()}
    output_dir = Path(cfg.pick.output_dir)
    write_folder(files, output_dir)

    dominated = [p.label for p in presets if chosen.preset is None and dominates(p.figures, chosen.figures, directions)]
    if dominated:  # an explicit pick.trial is kept; or the preset misses a constraint by a latency tie
        print(f"litesweep-pick: warning: {chosen.label} is dominated by {', '.join(dominated)}", file=sys.stderr)
    print(summary(study.study_name, how, chosen, choice.reason, reference, choice.best_trial, choice.best_preset))
    print(f"Exported to {output_dir}: {', '.join(files)}")
    version = None
    if cfg.pick.register:  # prints how to serve it
        version = register(client, cfg.tracking.uri, chosen.run_id, output_dir / TFLITE_FILE, cfg.pick.register, cfg.pick.alias,
                           chosen.model_id)
    best_preset = choice.best_preset.preset if choice.best_preset else None
    return Pick(chosen.trial, chosen.preset, chosen.run_id, dict(chosen.metrics), output_dir, best_preset, version)


main = hydra_entry(pick, "litesweep-pick")
