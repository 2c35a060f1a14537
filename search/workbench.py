"""Config → the per-process Workbench (objectives/): data, base model, latency backend, scorer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("litesweep")


def data_source(data: DictConfig) -> Any:
    """The ``objectives.data.Source`` a ``data`` config node describes."""
    from litesweep.objectives.data import Source

    fields = ("path", "dataset", "image_size", "color_mode", "rescale", "mean", "std")
    return Source(data.source, **{k: OmegaConf.to_object(data[k]) if OmegaConf.is_config(data[k]) else data[k] for k in fields})


def build_workbench(cfg: DictConfig, check_layers: Callable[[list[str]], None] | None = None) -> tuple[Any, dict]:
    """Load the data, train or load the base model, and build the per-process Workbench.

    Args:
        cfg: the composed config.
        check_layers: called with the compressible layers' names before the base model is trained, so a
            config that cannot fit the model fails before any training.

    Returns:
        The workbench and a description of the base model's training.
    """
    from litesweep.objectives.data import load_dataset
    from litesweep.objectives.inventory import compressible_layers
    from litesweep.objectives.measure import LatencyProtocol
    from litesweep.objectives.models import CnnSpec, build_cnn, train_or_load
    from litesweep.objectives.pipeline import FineTuneSettings, Workbench
    from litesweep.search.objective import scorer_from_config

    data = load_dataset(data_source(cfg.data), name=cfg.data.name, val_fraction=cfg.data.val_fraction,
                        test_fraction=cfg.data.test_fraction, seed=cfg.data.seed, limit=cfg.data.limit)
    if cfg.model.path:
        from litesweep.objectives.models import load_model

        model, unsupported = load_model(cfg.model.path, trust_code=cfg.model.trust_code, custom_objects=list(cfg.model.custom_objects))
        training = {"cache_key": f"file:{Path(cfg.model.path).name}", "epochs": 0, "cached": True, "unsupported_layers": unsupported}
        if check_layers is not None:
            check_layers([info.name for info in compressible_layers(model)])
        if unsupported:
            log.warning("layers no technique supports, left float: %s", unsupported)
    else:
        spec = CnnSpec(**{k: v for k, v in OmegaConf.to_container(cfg.model).items() if k not in ("name", "path", "trust_code", "custom_objects")})
        if check_layers is not None:
            check_layers([info.name for info in compressible_layers(build_cnn(spec, data.input_shape, data.num_classes))])
        model, training = train_or_load(spec, data, Path(cfg.paths.cache_dir))
        log.info("base model %s (%s, %d epochs)", training["cache_key"], "cached" if training["cached"] else "trained", training["epochs"])
    lat = cfg.latency
    backend = None
    if lat.backend == "command":
        from litesweep.objectives.latency_command import CommandLatency

        device = CommandLatency(command=lat.command, pattern=lat.pattern, unit=lat.unit, threads=lat.threads,
                                timeout_s=lat.timeout_s, cache_dir=lat.cache_dir)
        device.validate()

        def backend(tflite: bytes) -> tuple[float, str]:
            result = device.measure(tflite)
            return result.latency_ms, "command (cached)" if result.cached else "command"

    bench = Workbench(model, data, FineTuneSettings(**OmegaConf.to_container(cfg.finetune)),
                      LatencyProtocol(lat.threads, lat.warmup, lat.min_runs, lat.max_runs, lat.max_seconds),
                      latency_backend=backend, scorer=scorer_from_config(cfg.objective))
    return bench, training
