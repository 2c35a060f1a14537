"""The ``litesweep`` command: a thin Hydra entry point over ``run(cfg)``, which tests call directly.

``run`` validates the config, checks the stores can be reached, hands the work to a ``Sweep`` and prints
the front. Nothing heavy (TensorFlow, MLflow, Optuna) is imported before the cheap checks have passed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from litesweep.search import console
from litesweep.search.cli import hydra_entry
from litesweep.search.config import validate
from litesweep.search.preflight import check_output_dir, check_storage, check_tracking, mask

if TYPE_CHECKING:
    from litesweep.search.sweep import SweepResult


def run(cfg: DictConfig) -> SweepResult:
    """Run (or resume) the sweep ``cfg`` describes.

    Raises:
        LitesweepError: invalid configuration or data, unreachable stores; nothing is written before
            the configuration has been checked.
    """
    validate(cfg)
    check_output_dir(cfg.paths.output_dir)
    check_tracking(cfg.tracking.uri)
    check_storage(cfg.study.storage)
    from litesweep.search.storage import count_finished
    from litesweep.search.sweep import Sweep, log
    from litesweep.search.workers import run_workers

    sweep = Sweep(cfg, check_layers=True)
    from litesweep.objectives.data import MIN_VAL_SAMPLES

    if len(sweep.bench.data.y_val) < MIN_VAL_SAMPLES:
        log.warning("the validation split has %d examples (fewer than %d): trials are selected on it, so the front will be "
                    "noisy; raise data.val_fraction or give more data", len(sweep.bench.data.y_val), MIN_VAL_SAMPLES)
    parent_id, resumed = sweep.open_parent_run()
    print(console.start_line(cfg, sweep, resumed, count_finished(sweep.study)), flush=True)
    log.info("study '%s': parent run %s", sweep.study.study_name, parent_id)
    status = "FAILED"
    bar = None
    try:
        sweep.first_passes()
        from litesweep.search.recovery import recover_stale_trials

        stale = recover_stale_trials(sweep.study, sweep.tracker)
        if stale:
            log.warning("trials %s were left RUNNING by a dead worker: marked FAIL (MLflow: KILLED) and retried", stale)
        bar = console.progress_bar(cfg, count_finished(sweep.study))
        if cfg.study.n_workers > 1:  # the workers report nothing per trial: this process's bar follows the study
            console.with_bar(bar, lambda: run_workers(cfg, sweep.space, parent_id, on_tick=lambda: _on_tick(sweep, bar)))
            _on_tick(sweep, bar)
        else:
            console.with_bar(bar, lambda: sweep.loop(lambda state, finished: _on_trial_end(sweep, bar, state, finished)))
        result = sweep.finish()
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if bar is not None:
            bar.close()
        sweep.tracker.close_study_run(status)
    _print_summary(cfg, sweep, result)
    return result


def _on_trial_end(sweep: Any, bar: Any, state: Any, finished: int) -> None:
    """After each trial: the front's tags, the report when it is due (``Sweep.report_due``), the progress bar."""
    front = sweep.update_front()
    if sweep.report_due():
        sweep.refresh_report()
    console.advance(bar, sweep.cfg.study.n_trials, finished, len(front), state.name)


def _on_tick(sweep: Any, bar: Any) -> None:
    """While workers run: the bar follows the study's finished trials (read from its storage)."""
    from litesweep.search import pareto
    from litesweep.search.ledger import FINISHED_STATES

    trials = sweep.study.get_trials(deepcopy=False, states=FINISHED_STATES)
    if trials and len(trials) != bar.n:  # the workers keep the front's tags: here it is only counted
        last = max(trials, key=lambda t: t.number)
        console.advance(bar, sweep.cfg.study.n_trials, len(trials), len(pareto.front(sweep.study)), last.state.name)


def _print_summary(cfg: DictConfig, sweep: Any, result: SweepResult) -> None:
    from litesweep.search import baselines, pareto

    feasible = "" if not sweep.constraints else f", constraints {sweep.constraints}"
    metric = sweep.bench.scorer.name
    scored = "" if metric == "accuracy" else f"; accuracy is objective.metric = {metric}"
    print(f"\nPareto front of study '{result.study_name}' ({result.n_finished} finished trials, objectives "
          f"{sweep.directions}{feasible}{scored}):")
    print(pareto.format_table(sweep.front, result.reference, result.presets, result.figures))
    print("val_* figures selected the front (validation split); test_* are reported only (test split, Wilson 95% interval); "
          "latency_ms is the median of rounds timed side by side, latency_range their lowest and highest")
    if result.presets:
        print(baselines.dominance_line(result.presets_dominated_on_size, "accuracy, size_bytes", "dominated or equalled"))
        print(baselines.dominance_line(result.presets_dominated, ", ".join(sweep.directions), "dominated"))
        line = baselines.latency_line(result.figures, result.presets)
        if line:
            print(line)
    print(f"\nBrowse it: mlflow ui --backend-store-uri '{mask(cfg.tracking.uri)}' --host 127.0.0.1 --port 5000, then open "
          f"http://127.0.0.1:5000/#/experiments/{result.experiment_id}?workflowType=machine_learning")


main = hydra_entry(run, "litesweep")
