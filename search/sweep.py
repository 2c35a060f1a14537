"""A sweep: the workbench and search space built once per process, the study and its parent run opened,
the first passes (presets, sensitivity, screen), then one trial loop for one worker or many.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from litesweep.search import baselines, confirm, datasets, pareto, report, screen, sensitivity
from litesweep.search.isolation import Limits, TrialProcess, set_onednn
from litesweep.search.ledger import (
    CONFIG_FILE,
    PARENT_RUN_ATTR,
    REFERENCE_METRIC_PREFIX,
    TAG_BASE_MODEL,
    TAG_METRIC,
    TAG_SEED,
    TAG_STORAGE,
    TAG_UNSUPPORTED_LAYERS,
    TAG_VERSION_PREFIX,
    TWIN_ATTR,
    check_fingerprint,
    figures_of,
    record_objective_metric,
)
from litesweep.search.preflight import mask
from litesweep.search.runner import TrialRunner, run_trials
from litesweep.search.space import SearchSpace, match_groups
from litesweep.search.storage import count_finished, find_study, open_study
from litesweep.search.tracking import Tracker, dumps, flatten
from litesweep.search.workbench import build_workbench

log = logging.getLogger("litesweep")
#: The largest share of a sweep's wall time the report refreshes may take (``Sweep.report_due``).
REPORT_SHARE = 0.05
#: Marks the preset twin enqueued at the space's narrowest width (``Sweep.enqueue_twins``).
NARROW_TWIN_PREFIX = "narrow:"
VERSIONED = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "optuna", "mlflow", "ai-edge-litert", "hydra-core")
#: The Keras version a user's Keras 3 file was saved with, when litesweep rebuilt it with tf_keras.
TAG_SOURCE_KERAS = "litesweep.source_keras"


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
    #: front trial number -> its validation figures plus its test figures and confirmed latency
    figures: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)


class Sweep:
    """One process's share of a study: built once, then ``run`` (the main process) or ``work`` (a worker)."""

    def __init__(self, cfg: DictConfig, seed_offset: int = 0, check_layers: bool = False,
                 space: SearchSpace | None = None) -> None:
        self.cfg = cfg
        self.directions = dict(zip(cfg.study.objectives, cfg.study.directions, strict=True))
        self.constraints = dict(cfg.study.constraints or {})
        # TensorFlow is imported only now, after every cheap check has passed.
        def check(names: list[str]) -> None:
            match_groups(cfg.space.groups or {}, names)  # raises on a group that matches no layer

        s = cfg.study

        def same_reference(found: dict) -> None:  # an existing study refuses another reference before any training
            existing = find_study(s.name, s.storage)
            if existing is not None:
                check_fingerprint(existing, found, record=False)

        set_onednn(bool(cfg.finetune.onednn))  # before TensorFlow loads, here and in every child
        self.bench, self.training = build_workbench(cfg, check_layers=check if check_layers else None,
                                                    check_fingerprint=same_reference)
        self.space = space if space is not None else self._space()
        self.study = open_study(s.name, s.storage, s.sampler, s.seed + seed_offset, self.directions, s.n_startup_trials,
                                s.heartbeat_interval_s, s.heartbeat_grace_s)
        check_fingerprint(self.study, self.training["fingerprint"])  # recorded on a new study
        record_objective_metric(self.study, self.bench.scorer.name)
        self.tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
        self.tracker.data_inputs = datasets.data_inputs(self.bench.data, OmegaConf.to_container(cfg.data, resolve=True))
        self.presets: dict[str, dict[str, float]] = {}
        self.front: list[optuna.trial.FrozenTrial] = []
        self.keeper = pareto.FrontKeeper(self.study.directions)
        self._report_cost_s, self._report_at = 0.0, time.monotonic()
        self.trial_process: TrialProcess | None = None
        if s.isolation == "process":  # its workbench is built while this process measures the presets
            self.trial_process = TrialProcess(cfg, Limits(s.trial_timeout_s, s.trial_max_memory_mb),
                                              Path(cfg.paths.output_dir) / "logs" / f"trial-process-{os.getpid()}.stderr")
            self.trial_process.start()

    def _space(self) -> SearchSpace:
        bench, cfg = self.bench, self.cfg
        narrowable = bench.narrowable() if "width" in cfg.space.techniques else []
        if "width" in cfg.space.techniques and not narrowable:
            log.warning("width multipliers cannot narrow this model's layers; every layer keeps its full width")
        return SearchSpace.from_config(
            cfg.space, [info.name for info in bench.layers],
            no_2_by_4=[info.name for info in bench.layers if not info.supports_2_by_4],
            full_width=[i.name for i in bench.layers if i.name not in narrowable],
            unprunable=[i.name for i in bench.layers if "prune" not in i.techniques],
            ptq_support=bench.ptq_recipes() if cfg.space.method != "qat" else None,
        )

    @property
    def reference(self) -> dict[str, float]:
        """The float32 model's figures: validation, and test beside them."""
        return self.bench.reference.measurement.metrics.as_dict() | self.bench.reference.test

    def open_parent_run(self) -> tuple[str, bool]:
        """Create or reopen the study's parent run with its config, versions, reference and files."""
        cfg, bench, training = self.cfg, self.bench, self.training
        versions = {f"{TAG_VERSION_PREFIX}{p}": importlib.metadata.version(p) for p in VERSIONED}
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(resolved, dict)
        parent_id, resumed = self.tracker.open_study_run(
            self.study.study_name, params={k: mask(str(v)) for k, v in flatten({str(k): v for k, v in resolved.items()}).items()},
            tags={**versions, TAG_SEED: str(cfg.study.seed), TAG_STORAGE: mask(str(cfg.study.storage)),
                  TAG_BASE_MODEL: training["cache_key"], TAG_METRIC: bench.scorer.name,
                  TAG_UNSUPPORTED_LAYERS: ",".join(training.get("unsupported_layers", [])) or "none",
                  **({TAG_SOURCE_KERAS: training["source_keras"]} if "source_keras" in training else {})},
        )
        self.study.set_user_attr(PARENT_RUN_ATTR, parent_id)
        datasets.log_inputs(self.tracker.client, parent_id, self.tracker.data_inputs, datasets.SPLITS)
        if resumed:  # the fingerprint matched: the reference, config and files logged at creation still hold
            return parent_id, resumed
        self.tracker.log_study_metrics({f"{REFERENCE_METRIC_PREFIX}{k}": v for k, v in self.reference.items()}
                                       | {"base_model.epochs": training["epochs"],
                                          "base_model.folded_batch_norm": training.get("folded_batch_norm", 0),
                                          "base_model.split_separable": training.get("split_separable", 0)}
                                       | ({"base_model.keras3_max_difference": training["keras3_max_difference"]}
                                          if "keras3_max_difference" in training else {}))
        self.tracker.log_study_files({
            CONFIG_FILE: mask(OmegaConf.to_yaml(cfg, resolve=True)),
            "search_space.json": dumps(self.space.to_dict()),
            "reference.json": dumps({"metrics": self.reference, "delegate": bench.reference.measurement.delegate,
                                     "training": training}),
            "model_float32.tflite": bench.reference.tflite,
        })
        return parent_id, resumed

    def first_passes(self) -> None:
        """Presets, then the optional sensitivity pass and post-training screen (each cached on the study)."""
        cfg, study, tracker = self.cfg, self.study, self.tracker
        fresh = not study.get_trials(deepcopy=False)  # before anything is enqueued: what is enqueued, is enqueued once
        self.presets = baselines.measure_presets(self.bench, tracker, study.study_name) if cfg.study.presets else {}
        if cfg.sensitivity.enabled:
            drops = sensitivity.measure_sensitivity(self.bench, self.space, study)
            sensitivity.log_report(tracker, drops)
            log.info("sensitivity (accuracy drop, points): %s", {k: round(v, 2) for k, v in drops.items()})
            if cfg.sensitivity.use == "narrow":
                self.space = sensitivity.narrow(self.space, drops, cfg.sensitivity.insensitive_drop, cfg.sensitivity.sensitive_drop)
                tracker.log_study_files({"search_space_narrowed.json": dumps(self.space.to_dict())})
            elif cfg.sensitivity.use == "seed" and count_finished(study) == 0:
                study.enqueue_trial(sensitivity.seed_params(self.space, drops, cfg.sensitivity.insensitive_drop), skip_if_exists=True)
        if cfg.study.preset_twins and fresh:  # in the space as narrowed: the search starts at the presets' level
            self.enqueue_twins()
        if cfg.screen.enabled:
            rows = screen.screen(self.bench, self.space, study, cfg.screen.trials, cfg.screen.seeds, cfg.study.seed,
                                 self.directions, cfg.screen.max_drop)
            screen.log_report(tracker, rows)
            if fresh:
                log.info("screen: %d post-training mixtures measured, %d enqueued for training", len(rows), screen.enqueue(study, rows))

    def enqueue_twins(self) -> None:
        """Enqueue the search-space points nearest each integer preset, each once (``SearchSpace.twin_params``),
        then, where the space narrows layers, the same points at their narrowest width: narrow all-8-bit files
        are often the fastest, and the sampler would otherwise meet them late."""
        from litesweep.objectives.presets import INTEGER_PRESETS

        twins: dict[str, list[str]] = {}
        for preset in INTEGER_PRESETS:
            key = repr(sorted(self.space.twin_params(preset).items()))
            twins.setdefault(key, []).append(preset)
        enqueued = []
        for narrow in (False, True):
            for presets in twins.values():
                params = self.space.twin_params(presets[0], narrow=narrow)
                if narrow and params == self.space.twin_params(presets[0]):
                    continue  # no layer narrows
                enqueued.append(f"{NARROW_TWIN_PREFIX if narrow else ''}{','.join(presets)}")
                self.study.enqueue_trial(params, user_attrs={TWIN_ATTR: enqueued[-1]}, skip_if_exists=True)
        log.info("enqueued %d preset twin(s): %s", len(enqueued), enqueued)

    def runner(self) -> TrialRunner:
        """The trial runner of this process."""
        s = self.cfg.study
        return TrialRunner(self.study, self.space, self.bench, self.tracker, self.directions, self.constraints,
                           s.inject_failures, tuple(s.inject_at), self.trial_process)

    def loop(self, on_trial_end: Callable[[TrialState, int], None]) -> None:
        """This process's trials, until the study holds ``study.n_trials`` finished ones."""
        s = self.cfg.study
        try:
            run_trials(self.runner(), s.n_trials, s.max_consecutive_failures, s.max_failure_rate, on_trial_end, timeout_s=s.timeout_s)
        finally:
            if self.trial_process is not None:
                self.trial_process.close()

    def update_front(self, reconcile: bool = False) -> list[optuna.trial.FrozenTrial]:
        """The current front (kept trial by trial), with the ``litesweep.pareto`` tags of the trials that entered
        or left it written. ``reconcile``: read every trial run's tag first (other workers write them too)."""
        front = self.keeper.update(self.study)
        confirm.measure_front_on_test(self.study, self.tracker, self.bench, front)  # new members only
        if reconcile:
            self.tracker.reload_pareto_state()
        self.tracker.update_pareto(pareto.front_run_ids(front))
        return front

    def refresh_report(self) -> None:
        """The study report on the parent run, with every front tag checked against the stores."""
        started = time.perf_counter()
        self.update_front(reconcile=True)
        self.tracker.log_study_files(report.build(self.study, self.directions, self.presets, self.reference))
        self._report_cost_s, self._report_at = time.perf_counter() - started, time.monotonic()

    def report_due(self) -> bool:
        """``tracking.report_interval_s`` has passed, and long enough that refreshing costs at most
        ``REPORT_SHARE`` of the wall time (0: after every trial, for tests)."""
        interval = float(self.cfg.tracking.report_interval_s)
        waited = time.monotonic() - self._report_at
        return interval == 0 or waited >= max(interval, self._report_cost_s / REPORT_SHARE)

    def finish(self) -> SweepResult:
        """Final front, report and summary metrics on the parent run."""
        self.front = front = self.update_front(reconcile=True)
        runs = {name: run.info.run_id for name, run in baselines.preset_runs(self.tracker).items() if name in self.presets}
        for name, latency in confirm.retime(self.study, self.tracker, self.bench, front, runs, self.cfg.study.seed).items():
            self.presets[name] = self.presets[name] | latency
        self.refresh_report()
        figures = {t.number: figures_of(self.study, t) for t in front}
        dominated = baselines.dominance(self.presets, figures, self.directions)
        on_size = baselines.dominance(self.presets, figures, baselines.ACCURACY_AND_SIZE, or_equal=True)
        self.tracker.log_study_metrics({"n_finished": count_finished(self.study), "front_size": len(front),
                                        "presets_dominated": sum(v is not None for v in dominated.values()),
                                        "presets_dominated_on_size": sum(v is not None for v in on_size.values())})
        assert self.tracker.parent_run_id is not None
        return SweepResult(
            study_name=self.study.study_name, storage=str(self.cfg.study.storage), tracking_uri=self.cfg.tracking.uri,
            experiment_id=self.tracker.experiment_id, parent_run_id=self.tracker.parent_run_id,
            n_finished=count_finished(self.study), front_trial_numbers=[t.number for t in front], reference=self.reference,
            presets=self.presets, presets_dominated=dominated, presets_dominated_on_size=on_size, figures=figures,
        )
