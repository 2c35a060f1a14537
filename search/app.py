"""The ``litesweep`` command: a thin Hydra entry point over ``run(cfg)``, which tests call directly."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from litesweep.objectives.errors import LitesweepError
from litesweep.search.cli import hydra_entry
from litesweep.search.workbench import build_workbench
from litesweep.search.config import CONF_DIR, register_configs, validate  # noqa: F401 - CONF_DIR re-exported

log = logging.getLogger("litesweep")
TAG_METRIC = "litesweep.objective.metric"
VERSIONED = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "optuna", "mlflow", "ai-edge-litert", "hydra-core")


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What a sweep produced: enough for tests and scripts to find everything in the stores."""

    study_name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    n_finished: int
    front_trial_numbers: list[int]
    reference: dict[str, float]
    presets: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    presets_dominated: dict[str, int | None] = dataclasses.field(default_factory=dict)
    #: preset -> a front trial at least as accurate and at most as large (issue 3's test), or None
    presets_dominated_on_size: dict[str, int | None] = dataclasses.field(default_factory=dict)


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_objective_metric(study: Any, metric: str) -> None:
    """Record the study's objective metric, or refuse to mix another one into it.

    Raises:
        ConfigError: the study was scored with a different ``objective.metric``.
    """
    from litesweep.objectives.errors import ConfigError
    from litesweep.search.study import METRIC_ATTR, count_finished

    recorded = study.user_attrs.get(METRIC_ATTR, "accuracy" if count_finished(study) else None)  # older studies: top-1
    if recorded is None:
        study.set_user_attr(METRIC_ATTR, metric)
    elif recorded != metric:
        raise ConfigError(f"study '{study.study_name}' is scored with objective.metric = '{recorded}', not '{metric}'; "
                          "accepted: the same objective.metric, or another study.name")


def run(cfg: DictConfig) -> SweepResult:
    """Run (or resume) the sweep ``cfg`` describes.

    Raises:
        LitesweepError: invalid configuration or data, unreachable stores; nothing is written before
            the configuration has been checked.
    """
    validate(cfg)
    from litesweep.search.preflight import check_output_dir, check_storage, check_tracking, mask

    check_output_dir(cfg.paths.output_dir)
    check_tracking(cfg.tracking.uri)
    check_storage(cfg.study.storage)
    from tqdm.auto import tqdm

    from litesweep.search import baselines, pareto, report, screen, sensitivity
    from litesweep.search.space import SearchSpace, match_groups
    from litesweep.search.study import TrialRunner, count_finished, dump_space, open_study, recover_stale_trials, run_trials
    from litesweep.search.tracking import Tracker, dumps

    # TensorFlow is imported only now, after every cheap check has passed.
    bench, training = build_workbench(cfg, check_layers=lambda names: match_groups(cfg.space.groups or {}, names))
    space = SearchSpace.from_config(
        cfg.space, [info.name for info in bench.layers],
        no_2_by_4=[info.name for info in bench.layers if not info.supports_2_by_4],
        full_width=[bench.output_layer, *(i.name for i in bench.layers if "width" not in i.techniques)],
        unprunable=[i.name for i in bench.layers if "prune" not in i.techniques],
        ptq_support=bench.ptq_recipes() if cfg.space.method != "qat" else None,
    )
    directions = dict(zip(cfg.study.objectives, cfg.study.directions))
    constraints = dict(cfg.study.constraints or {})
    study = open_study(cfg.study.name, cfg.study.storage, cfg.study.sampler, cfg.study.seed, directions,
                       cfg.study.n_startup_trials, cfg.study.heartbeat_interval_s, cfg.study.heartbeat_grace_s)
    check_objective_metric(study, bench.scorer.name)

    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
    versions = {f"litesweep.version.{p}": importlib.metadata.version(p) for p in VERSIONED}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    parent_id, resumed = tracker.open_study_run(
        study.study_name, params={k: mask(str(v)) for k, v in _flatten(resolved).items()},
        tags={**versions, "litesweep.seed": str(cfg.study.seed), "litesweep.storage": mask(str(cfg.study.storage)),
              "litesweep.base_model": training["cache_key"], TAG_METRIC: bench.scorer.name,
              "litesweep.unsupported_layers": ",".join(training.get("unsupported_layers", [])) or "none"},
    )
    study.set_user_attr("mlflow_parent_run_id", parent_id)
    reference = bench.reference.measurement.metrics.as_dict()
    tracker.log_study_metrics({f"reference.{k}": v for k, v in reference.items()} | {"base_model.epochs": training["epochs"]})
    tracker.log_study_files({
        "config.yaml": mask(OmegaConf.to_yaml(cfg, resolve=True)),
        "search_space.json": dump_space(space),
        "reference.json": dumps({"metrics": reference, "delegate": bench.reference.measurement.delegate, "training": training}),
        "model_float32.tflite": bench.reference.tflite,
    })
    log.info("study '%s' %s: %d/%d trials finished; parent run %s", study.study_name,
             "resumed" if resumed else "created", count_finished(study), cfg.study.n_trials, parent_id)

    status = "FAILED"
    bar = None
    try:
        presets = baselines.measure_presets(bench, tracker, study.study_name) if cfg.study.presets else {}
        if cfg.sensitivity.enabled:
            drops = sensitivity.measure_sensitivity(bench, space, study)
            sensitivity.log_report(tracker, drops)
            log.info("sensitivity (accuracy drop, points): %s", {k: round(v, 2) for k, v in drops.items()})
            if cfg.sensitivity.use == "narrow":
                space = sensitivity.narrow(space, drops, cfg.sensitivity.insensitive_drop, cfg.sensitivity.sensitive_drop)
                tracker.log_study_files({"search_space_narrowed.json": dump_space(space)})
            elif cfg.sensitivity.use == "seed" and count_finished(study) == 0:
                study.enqueue_trial(sensitivity.seed_params(space, drops, cfg.sensitivity.insensitive_drop), skip_if_exists=True)
        if cfg.screen.enabled:
            fresh = not study.trials
            rows = screen.screen(bench, space, study, cfg.screen.trials, cfg.screen.seeds, cfg.study.seed, directions,
                                 cfg.screen.max_drop)
            screen.log_report(tracker, rows)
            if fresh:
                log.info("screen: %d post-training mixtures measured, %d enqueued for training", len(rows), screen.enqueue(study, rows))

        stale = recover_stale_trials(study, tracker)
        if stale:
            log.warning("trials %s were left RUNNING by a dead worker: marked FAIL (MLflow: KILLED) and retried", stale)
        runner = TrialRunner(study, space, bench, tracker, directions, constraints, cfg.study.inject_failures,
                             tuple(cfg.study.inject_at))
        bar = tqdm(total=cfg.study.n_trials, initial=min(count_finished(study), cfg.study.n_trials), desc="trials",
                   unit="trial", disable=not cfg.progress, file=sys.stdout)

        def refresh_report() -> None:
            tracker.log_study_files(report.build(study, directions, presets, reference))

        def on_trial_end(state: Any, finished: int) -> None:
            front = pareto.front(study)
            tracker.reload_pareto_state()  # other litesweep processes on this study may have changed the tags
            tracker.update_pareto(pareto.front_run_ids(front))
            if cfg.tracking.report_every > 0 and len(study.trials) % cfg.tracking.report_every == 0:
                refresh_report()
            bar.n = min(finished, cfg.study.n_trials)
            bar.set_postfix(front=len(front), last=state.name)
            bar.refresh()

        if cfg.study.n_workers > 1:
            bar.disable = True
            run_workers(cfg, space, parent_id)
        else:
            run_trials(runner, cfg.study.n_trials, cfg.study.max_consecutive_failures, cfg.study.max_failure_rate, on_trial_end,
                       timeout_s=cfg.study.timeout_s)
        tracker.reload_pareto_state()
        front = pareto.front(study)
        tracker.update_pareto(pareto.front_run_ids(front))
        refresh_report()
        dominated = baselines.dominance(presets, front, directions)
        on_size = baselines.dominance(presets, front, baselines.ACCURACY_AND_SIZE, or_equal=True)
        tracker.log_study_metrics({"n_finished": count_finished(study), "front_size": len(front),
                                   "presets_dominated": sum(v is not None for v in dominated.values()),
                                   "presets_dominated_on_size": sum(v is not None for v in on_size.values())})
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if bar is not None:
            bar.close()
        tracker.close_study_run(status)
    n_finished = count_finished(study)
    feasible = "" if not constraints else f", constraints {constraints}"
    scored = "" if bench.scorer.name == "accuracy" else f"; accuracy is objective.metric = {bench.scorer.name}"
    print(f"\nPareto front of study '{study.study_name}' ({n_finished} finished trials, objectives {directions}{feasible}{scored}):")
    print(pareto.format_table(front, reference, presets))
    if presets:
        print(baselines.dominance_line(on_size, "accuracy, size_bytes", "dominated or equalled"))
        print(baselines.dominance_line(dominated, ", ".join(directions), "dominated"))
    print(f"\nBrowse it: mlflow ui --backend-store-uri '{mask(cfg.tracking.uri)}' --host 127.0.0.1 --port 5000")
    return SweepResult(
        study_name=study.study_name, storage=str(cfg.study.storage), tracking_uri=cfg.tracking.uri,
        experiment_id=tracker.experiment_id, parent_run_id=parent_id, n_finished=n_finished,
        front_trial_numbers=[t.number for t in front], reference=reference, presets=presets,
        presets_dominated=dominated, presets_dominated_on_size=on_size,
    )


def run_workers(cfg: DictConfig, space: Any, parent_run_id: str) -> None:
    """Run ``study.n_workers`` worker processes on the study, each with its share of the cores.

    Workers load the already-trained base model from the cache and join the study's parent run.

    Raises:
        LitesweepError: a worker ended with an error.
    """
    import multiprocessing

    workers = int(cfg.study.n_workers)
    threads = max(1, len(os.sched_getaffinity(0)) // workers)  # the cores this process may use, not the host's
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: TensorFlow is not fork-safe
    container = OmegaConf.to_container(cfg, resolve=True)
    processes = [context.Process(target=_worker, args=(container, space, parent_run_id, threads), name=f"litesweep-worker-{i}")
                 for i in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    bad = [p.name for p in processes if p.exitcode != 0]
    if bad:
        raise LitesweepError(f"worker(s) {bad} ended with an error; the study keeps every finished trial")


def _worker(container: dict, space: Any, parent_run_id: str, threads: int) -> None:
    """One worker process: the same trial loop as a single-process sweep."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from litesweep.objectives.compat import limit_threads

    limit_threads(threads)
    from litesweep.search import pareto
    from litesweep.search.study import TrialRunner, open_study, run_trials
    from litesweep.search.tracking import Tracker

    logging.basicConfig(level=logging.WARNING)
    from litesweep.search.cli import MaskingStream, mask_logging

    # A spawned process: none of the parent's masking came with it (its crash traceback goes to stderr too).
    sys.stdout, sys.stderr = MaskingStream(sys.stdout), MaskingStream(sys.stderr)  # type: ignore[assignment]
    mask_logging()
    cfg = OmegaConf.create(container)
    bench, _ = build_workbench(cfg)
    directions = dict(zip(cfg.study.objectives, cfg.study.directions))
    study = open_study(cfg.study.name, cfg.study.storage, cfg.study.sampler, cfg.study.seed + os.getpid(), directions,
                       cfg.study.n_startup_trials, cfg.study.heartbeat_interval_s, cfg.study.heartbeat_grace_s)
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
    tracker.attach(parent_run_id)
    runner = TrialRunner(study, space, bench, tracker, directions, dict(cfg.study.constraints or {}), cfg.study.inject_failures,
                         tuple(cfg.study.inject_at))

    def on_trial_end(state: Any, finished: int) -> None:
        tracker.reload_pareto_state()
        tracker.update_pareto(pareto.front_run_ids(pareto.front(study)))
        log.warning("%s: trial %s, %d/%d finished", multiprocessing_name(), state.name, finished, cfg.study.n_trials)

    run_trials(runner, cfg.study.n_trials, cfg.study.max_consecutive_failures, cfg.study.max_failure_rate, on_trial_end,
               timeout_s=cfg.study.timeout_s)


def multiprocessing_name() -> str:
    """This worker's process name."""
    import multiprocessing

    return multiprocessing.current_process().name


main = hydra_entry(run, "litesweep")
