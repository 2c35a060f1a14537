"""Config → the per-process Workbench (objectives/): data, base model, latency backend, scorer.

The ``data``, ``model``, ``finetune`` and ``latency`` nodes are ``objectives.settings`` classes in the
schema, so ``config.settings`` (``OmegaConf.to_object``) gives the very objects ``objectives/`` takes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("litesweep")


def build_workbench(cfg: DictConfig, check_layers: Callable[[list[str]], None] | None = None,
                    check_fingerprint: Callable[[dict[str, Any]], None] | None = None) -> tuple[Any, dict]:
    """Load the data, train or load the base model, and build the per-process Workbench.

    Args:
        cfg: the composed config.
        check_layers: called with the compressible layers' names before the base model is trained, so a
            config that cannot fit the model fails before any training.
        check_fingerprint: called with the fingerprint (base model, data and split, latency protocol)
            before the base model is loaded or trained, so a study that refuses it costs nothing.

    Returns:
        The workbench and a description of the base model's training (``fingerprint`` among it).
    """
    from litesweep.objectives.architectures import build_cnn
    from litesweep.objectives.data import load_dataset
    from litesweep.objectives.inventory import compressible_layers, left_float
    from litesweep.objectives.models import cache_key, train_or_load
    from litesweep.objectives.pipeline import Workbench
    from litesweep.objectives.rewrite import compressible_form
    from litesweep.objectives.settings import CnnSpec, FineTuneSettings, LatencyProtocol, Source
    from litesweep.search.config import settings
    from litesweep.search.objective import scorer_from_config

    data = load_dataset(settings(cfg.data, Source))
    spec = settings(cfg.model, CnnSpec)
    scorer = scorer_from_config(cfg.objective)
    if not data.labelled:
        check_unlabelled(data.name, scorer, spec)
    latency = settings(cfg.latency, LatencyProtocol)
    # A file under the same name may be another model: it is known by its bytes.
    key = f"file:{Path(spec.path).name}:{file_digest(Path(spec.path))}" if spec.path else cache_key(spec, data)
    fingerprint = {"base_model": key, "data": data.fingerprint(), "latency": latency.describe()}
    if check_fingerprint is not None:
        check_fingerprint(fingerprint)
    probe = data.x_val[:256]  # inputs on which a rewritten model must compute what the original does
    if spec.path:
        from litesweep.objectives.models import load_user_model

        # A Keras 3 file is rebuilt with tf_keras and checked on the test inputs (objectives.keras3).
        model, conversion = load_user_model(spec.path, trust_code=spec.trust_code, custom_objects=spec.custom_objects,
                                            check_inputs=data.x_test)
        training = {"cache_key": key, "epochs": 0, "cached": True}
        if conversion is not None:
            training.update(source_keras=conversion.source_keras, keras3_max_difference=conversion.max_difference)
            log.info("Keras %s model rebuilt with tf_keras: outputs within %.1e of its scale on %d test inputs",
                     conversion.source_keras, conversion.max_difference, conversion.samples)
        model, rewrites = compressible_form(model, probe)
        if check_layers is not None:
            check_layers([info.name for info in compressible_layers(model)])
    else:
        if check_layers is not None:
            untrained, _ = compressible_form(build_cnn(spec, data.input_shape, data.num_classes), probe)
            check_layers([info.name for info in compressible_layers(untrained)])
        model, training = train_or_load(spec, data, Path(cfg.paths.cache_dir))
        log.info("base model %s (%s, %d epochs)", training["cache_key"], "cached" if training["cached"] else "trained", training["epochs"])
        model, rewrites = compressible_form(model, probe)
    if rewrites.skipped:
        log.warning("the model could not be rewritten into its compressible form (%s); its BatchNormalization and "
                    "separable layers stay float", rewrites.skipped)
    if rewrites:
        log.info("nested models inlined: %s; BatchNormalization folded into %d layers, %d frozen; %d separable convolutions split "
                 "(outputs within %.1e)", rewrites.inlined or "none", len(rewrites.folded), len(rewrites.frozen), len(rewrites.split),
                 rewrites.max_difference)
    training.update(fingerprint=fingerprint, unsupported_layers=left_float(model), folded_batch_norm=len(rewrites.folded),
                    split_separable=len(rewrites.split), labelled=data.labelled)
    if not data.labelled:
        log.info("data '%s' has no labels: fine-tuning distils the float model's outputs only (hard-label weight 0)", data.name)
    if training["unsupported_layers"]:
        log.warning("layers no technique supports, left float: %s", training["unsupported_layers"])
    backend = None
    if latency.backend == "command":
        from litesweep.objectives.latency_command import CommandLatency

        device = CommandLatency(command=latency.command or "", pattern=latency.pattern or "", unit=latency.unit, threads=latency.threads,
                                timeout_s=latency.timeout_s, cache_dir=latency.cache_dir)
        device.validate()

        def backend(tflite: bytes) -> tuple[float, str]:
            result = device.measure(tflite)
            return result.latency_ms, "command (cached)" if result.cached else "command"

    bench = Workbench(model, data, settings(cfg.finetune, FineTuneSettings), latency, latency_backend=backend,
                      scorer=scorer)
    return bench, training


def check_unlabelled(data_name: str, scorer: Any, spec: Any) -> None:
    """Refuse, before anything is trained or written, what data without labels cannot do.

    Raises:
        ConfigError: the metric scores against labels, or the base model would be trained here (on labels).
    """
    from litesweep.objectives.errors import ConfigError

    if not scorer.against_reference:
        raise ConfigError(f"objective.metric = '{scorer.name}' needs labels, and data '{data_name}' has none (no y_train, y_test; "
                          "no class sub-folders); accepted: objective=agreement, or data with labels")
    if not spec.path:
        raise ConfigError(f"data '{data_name}' has no labels, and model = '{spec.name}' is trained here on labels; "
                          "accepted: model.path with a trained model, or data with labels")


def file_digest(path: Path) -> str:
    """A short SHA-256 of a file, or of every file under a directory (a SavedModel), names included."""
    digest = hashlib.sha256()
    for part in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        digest.update(str(part.relative_to(path.parent if path.is_file() else path)).encode())
        digest.update(part.read_bytes())
    return digest.hexdigest()[:16]
