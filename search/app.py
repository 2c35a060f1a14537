"""The ``litesweep`` command: a thin Hydra entry point over ``run(cfg)``, which tests call directly."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from objectives.errors import LitesweepError
from search.config import register_configs, validate

log = logging.getLogger("litesweep")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
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


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run(cfg: DictConfig) -> SweepResult:
    """Run (or resume) the sweep ``cfg`` describes.

    Raises:
        LitesweepError: invalid configuration or data, unreachable stores; nothing is written before
            the configuration has been checked.
    """
    validate(cfg)
    from search.tracking import check_reachable

    check_reachable(cfg.tracking.uri)

    # TensorFlow is imported only now, after every cheap check has passed.
    from objectives.data import load_dataset
    from objectives.measure import LatencyProtocol
    from objectives.models import CnnSpec, train_or_load
    from objectives.pipeline import FineTuneSettings, Workbench
    from tqdm.auto import tqdm

    from search import pareto
    from search.space import SearchSpace
    from search.study import TrialRunner, count_finished, dump_space, open_study, run_trials
    from search.tracking import Tracker, dumps

    data = load_dataset(cfg.data.source, name=cfg.data.name, val_fraction=cfg.data.val_fraction,
                        test_fraction=cfg.data.test_fraction, seed=cfg.data.seed, limit=cfg.data.limit)
    spec = CnnSpec(**{k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name"})
    model, training = train_or_load(spec, data, Path(cfg.paths.cache_dir))
    log.info("base model %s (%s, %d epochs)", training["cache_key"], "cached" if training["cached"] else "trained", training["epochs"])
    lat = cfg.latency
    bench = Workbench(model, data, FineTuneSettings(**OmegaConf.to_container(cfg.finetune)),
                      LatencyProtocol(lat.threads, lat.warmup, lat.min_runs, lat.max_runs, lat.max_seconds))
    space = SearchSpace.from_config(cfg.space, [info.name for info in bench.layers])
    directions = dict(zip(cfg.study.objectives, cfg.study.directions))
    study = open_study(cfg.study.name, cfg.study.storage, cfg.study.sampler, cfg.study.seed, directions)

    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
    versions = {f"litesweep.version.{p}": importlib.metadata.version(p) for p in VERSIONED}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    parent_id, resumed = tracker.open_study_run(
        study.study_name, params=_flatten(resolved),
        tags={**versions, "litesweep.seed": str(cfg.study.seed), "litesweep.storage": str(cfg.study.storage),
              "litesweep.base_model": training["cache_key"]},
    )
    study.set_user_attr("mlflow_parent_run_id", parent_id)
    reference = bench.reference.measurement.metrics.as_dict()
    tracker.log_study_metrics({f"reference.{k}": v for k, v in reference.items()} | {"base_model.epochs": training["epochs"]})
    tracker.log_study_files({
        "config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "search_space.json": dump_space(space),
        "reference.json": dumps({"metrics": reference, "delegate": bench.reference.measurement.delegate, "training": training}),
        "model_float32.tflite": bench.reference.tflite,
    })
    log.info("study '%s' %s: %d/%d trials finished; parent run %s", study.study_name,
             "resumed" if resumed else "created", count_finished(study), cfg.study.n_trials, parent_id)

    runner = TrialRunner(study, space, bench, tracker, directions)
    bar = tqdm(total=cfg.study.n_trials, initial=min(count_finished(study), cfg.study.n_trials), desc="trials",
               unit="trial", disable=not cfg.progress, file=sys.stdout)

    def on_trial_end(state: Any, finished: int) -> None:
        front = pareto.front(study)
        tracker.update_pareto(pareto.front_run_ids(front))
        bar.n = min(finished, cfg.study.n_trials)
        bar.set_postfix(front=len(front), last=state.name)
        bar.refresh()

    status = "FAILED"
    try:
        on_trial_end_state = None
        if count_finished(study) >= cfg.study.n_trials:
            on_trial_end_state = "already complete"
        run_trials(runner, cfg.study.n_trials, cfg.study.max_consecutive_failures, on_trial_end)
        front = pareto.front(study)
        tracker.update_pareto(pareto.front_run_ids(front))
        tracker.log_study_metrics({"n_finished": count_finished(study), "front_size": len(front)})
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        bar.close()
        tracker.close_study_run(status)
    if on_trial_end_state:
        log.info("study '%s' already holds %d finished trials: nothing to run", study.study_name, count_finished(study))
    print(f"\nPareto front of study '{study.study_name}' ({count_finished(study)} finished trials, "
          f"directions {directions}):")
    print(pareto.format_table(front, reference))
    print(f"\nBrowse it: mlflow ui --backend-store-uri '{cfg.tracking.uri}' --host 127.0.0.1 --port 5000")
    return SweepResult(
        study_name=study.study_name, storage=str(cfg.study.storage), tracking_uri=cfg.tracking.uri,
        experiment_id=tracker.experiment_id, parent_run_id=parent_id, n_finished=count_finished(study),
        front_trial_numbers=[t.number for t in front], reference=reference,
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except LitesweepError as exc:
        print(f"litesweep: error: {exc}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console entry point: check the command line's config first (one-line errors), then run Hydra."""
    from search.cli import precheck

    register_configs()
    precheck(sys.argv[1:], CONF_DIR)
    _hydra_main()


register_configs()
