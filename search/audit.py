"""``litesweep-audit``: check a study's two stores against each other and against the files they hold.

Same config as ``litesweep`` (the same overrides find the same study). Trial by trial it checks that:

- every Optuna trial has exactly one MLflow child run, linked both ways (run id ↔ trial number);
- the states agree (COMPLETE ↔ FINISHED, PRUNED ↔ KILLED, FAIL ↔ FAILED or KILLED);
- a COMPLETE trial's run holds ``model.tflite`` and ``policy.json``, the file's SHA-256 is the logged one,
  its length is the logged ``size_bytes``, LiteRT's default interpreter runs it, and (``audit.remeasure=true``)
  the interpreter scores it on the validation split exactly as logged and, for a front trial, on the test
  split exactly as logged on its run and in the study;
- the ``litesweep.pareto`` tags are the study's current front.

Prints one line per problem and a summary; exits 1 when any check fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.metrics import METRIC_NAMES
from litesweep.search.cli import hydra_entry
from litesweep.search.config import validate
from litesweep.search.ledger import (
    POLICY_FILE,
    ROLE_TRIAL,
    TAG_PARETO,
    TAG_ROLE,
    TAG_TFLITE_SHA256,
    TAG_TRIAL,
    TFLITE_FILE,
    confirmed_of,
    open_view,
    run_id_of,
    search_all_runs,
)
from litesweep.search.storage import load_existing_study

#: MLflow run statuses each finished Optuna state may end in.
RUN_STATUS = {"COMPLETE": {"FINISHED"}, "PRUNED": {"KILLED"}, "FAIL": {"FAILED", "KILLED"}, "RUNNING": {"RUNNING"}}
EXIT_MISMATCH = 1


@dataclasses.dataclass
class AuditReport:
    """What the audit checked and what it found."""

    trials: int = 0
    runs: int = 0
    files_checked: int = 0
    remeasured: int = 0
    remeasured_on_test: int = 0
    running: list[int] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed."""
        return not self.problems


def audit(cfg: DictConfig) -> AuditReport:
    """Run every check on the study ``cfg`` names and return the report (nothing is written)."""
    validate(cfg)
    view = open_view(load_existing_study(cfg.study.name, cfg.study.storage), cfg.tracking.uri)
    study, client = view.study, view.client
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        raise ConfigError(f"tracking.experiment = {cfg.tracking.experiment!r} is not in the MLflow store; accepted: the study's experiment")
    runs = search_all_runs(client, experiment.experiment_id, f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'")
    report = AuditReport(trials=len(study.trials), runs=len(runs))
    by_number: dict[int, list[Any]] = {}
    for run in runs:
        by_number.setdefault(int(run.data.tags.get(TAG_TRIAL, -1)), []).append(run)
    for number in sorted(set(by_number) - {t.number for t in study.trials}):
        report.problems.append(f"run(s) {[r.info.run_id for r in by_number[number]]} name trial {number}, which the study does not have")
    front = {t.number for t in view.front()}
    bench = _bench(cfg) if cfg.audit.remeasure else None
    for trial in study.trials:
        _check_trial(trial, by_number.get(trial.number, []), front, client, bench, report, confirmed_of(study, trial.number))
    return report


def _check_trial(trial: optuna.trial.FrozenTrial, runs: list[Any], front: set[int], client: MlflowClient,
                 bench: Any, report: AuditReport, confirmed: dict[str, float]) -> None:
    problem = report.problems.append
    where = f"trial {trial.number} ({trial.state.name})"
    if trial.state == optuna.trial.TrialState.WAITING:
        return
    if len(runs) != 1:
        problem(f"{where}: {len(runs)} MLflow runs, expected 1")
        return
    run = runs[0]
    if run_id_of(trial) != run.info.run_id:
        problem(f"{where}: Optuna names run {run_id_of(trial)}, MLflow has {run.info.run_id}")
    if run.info.status not in RUN_STATUS[trial.state.name]:
        problem(f"{where}: MLflow run {run.info.run_id} is {run.info.status}, accepted: {sorted(RUN_STATUS[trial.state.name])}")
    if trial.state == optuna.trial.TrialState.RUNNING:
        report.running.append(trial.number)
        return
    on_front = "true" if trial.number in front else "false"
    if trial.state == optuna.trial.TrialState.COMPLETE and run.data.tags.get(TAG_PARETO) != on_front:
        problem(f"{where}: tag {TAG_PARETO} = {run.data.tags.get(TAG_PARETO)!r}, the front says {on_front!r}")
    if trial.state != optuna.trial.TrialState.COMPLETE:
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        missing = {TFLITE_FILE, POLICY_FILE} - files
        if missing:
            problem(f"{where}: run {run.info.run_id} lacks {sorted(missing)}")
            return
        tflite = Path(client.download_artifacts(run.info.run_id, TFLITE_FILE, tmp)).read_bytes()
    report.files_checked += 1
    logged = run.data.metrics
    if set(METRIC_NAMES) - set(logged):
        problem(f"{where}: run {run.info.run_id} lacks metrics {sorted(set(METRIC_NAMES) - set(logged))}")
    if len(tflite) != logged.get("size_bytes"):
        problem(f"{where}: model.tflite is {len(tflite)} bytes, logged size_bytes = {logged.get('size_bytes')}")
    sha = run.data.tags.get(TAG_TFLITE_SHA256)
    if sha is not None and hashlib.sha256(tflite).hexdigest() != sha:
        problem(f"{where}: model.tflite's SHA-256 is not the logged {TAG_TFLITE_SHA256}")
    from litesweep.objectives.runtime import default_runtime_error

    refused = default_runtime_error(tflite)
    if refused is not None:
        problem(f"{where}: LiteRT's default interpreter refuses model.tflite: {refused}")
    if bench is not None:
        accuracy = bench.measure(tflite).metrics.accuracy
        report.remeasured += 1
        if accuracy != logged.get("accuracy"):
            problem(f"{where}: model.tflite scores {accuracy!r} on the validation split, logged accuracy = {logged.get('accuracy')!r}")
        if trial.number in front:  # only front trials were ever measured on test
            test = bench.measure_test(tflite)["test_accuracy"]
            report.remeasured_on_test += 1
            if test != logged.get("test_accuracy") or test != confirmed.get("test_accuracy"):
                problem(f"{where}: model.tflite scores {test!r} on the test split, logged test_accuracy = "
                        f"{logged.get('test_accuracy')!r} (run), {confirmed.get('test_accuracy')!r} (study)")


def _bench(cfg: DictConfig) -> Any:
    from litesweep.search.workbench import build_workbench

    bench, _ = build_workbench(cfg)
    return bench


def _main(cfg: DictConfig) -> AuditReport:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per problem, no bars
    report = audit(cfg)
    for line in report.problems:
        print(f"litesweep-audit: {line}")
    print(f"Audited study '{cfg.study.name}': {report.trials} trials, {report.runs} trial runs, "
          f"{report.files_checked} model.tflite files checked, {report.remeasured} re-measured on validation, "
          f"{report.remeasured_on_test} front trials on test, "
          f"{len(report.running)} running, {len(report.problems)} problem(s).")
    if not report.ok:
        sys.exit(EXIT_MISMATCH)
    return report


main = hydra_entry(_main, "litesweep-audit")
