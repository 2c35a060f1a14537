"""``litesweep-pick``: choose a model from a study's Pareto front, export it and register it.

Same config as ``litesweep`` (the same overrides find the same study), plus the ``pick`` node:
``litesweep-pick pick.max_size_bytes=60000 pick.prefer=most_accurate pick.register=digits-cnn``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from litesweep.objectives.errors import ConfigError, LitesweepError
from litesweep.search.cli import hydra_entry
from litesweep.search.config import validate
from litesweep.search.ledger import POLICY_FILE, TAG_DELEGATE, TAG_TFLITE_SHA256, TFLITE_FILE, metrics_of, open_view, run_id_of
from litesweep.search.preflight import mask
from litesweep.search.storage import load_existing_study

BOUNDS = {"min_accuracy": ("accuracy", ">="), "max_accuracy_drop": ("accuracy_drop", "<="),
          "max_size_bytes": ("size_bytes", "<="), "max_latency_ms": ("latency_ms", "<=")}


class NothingMeetsConstraints(LitesweepError):
    """No front trial meets the pick constraints."""


@dataclasses.dataclass(frozen=True)
class Pick:
    """The chosen trial and what was exported."""

    trial_number: int
    run_id: str
    metrics: dict[str, float]
    output_dir: Path
    best_preset: str | None
    registered_version: str | None


def _constraints(pick: Any) -> dict[str, tuple[str, str, float]]:
    return {key: (*BOUNDS[key], float(pick[key])) for key in BOUNDS if pick[key] is not None}


def violation(metrics: Mapping[str, float], constraints: Mapping[str, tuple[str, str, float]]) -> float:
    """How far ``metrics`` are from meeting every constraint (0 = all met), each relative to its bound."""
    total = 0.0
    for metric, op, bound in constraints.values():
        gap = (bound - metrics[metric]) if op == ">=" else (metrics[metric] - bound)
        total += max(gap, 0.0) / max(abs(bound), 1e-9)
    return total


def choose(candidates: Sequence[Mapping[str, float]], prefer: str, directions: Mapping[str, str]) -> int:
    """Index of the preferred candidate.

    ``knee``: closest to the ideal point once every objective is scaled to [0, 1] over the candidates.
    """
    if prefer == "smallest":
        return min(range(len(candidates)), key=lambda i: (candidates[i]["size_bytes"], -candidates[i]["accuracy"]))
    if prefer == "fastest":
        return min(range(len(candidates)), key=lambda i: (candidates[i]["latency_ms"], -candidates[i]["accuracy"]))
    if prefer == "most_accurate":
        return max(range(len(candidates)), key=lambda i: (candidates[i]["accuracy"], -candidates[i]["size_bytes"]))
    scaled = []
    for metric, direction in directions.items():
        values = [c[metric] for c in candidates]
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        scaled.append([(hi - v) / span if direction == "maximize" else (v - lo) / span for v in values])
    return min(range(len(candidates)), key=lambda i: math.sqrt(sum(col[i] ** 2 for col in scaled)))


def _describe(metrics: Mapping[str, float]) -> str:
    return (f"accuracy {metrics['accuracy']:.4f}, size_bytes {int(metrics['size_bytes']):,}, "
            f"latency_ms {metrics['latency_ms']:.4f}")


def model_card(study: str, trial: optuna.trial.FrozenTrial, metrics: Mapping[str, float], reference: Mapping[str, float],
               best_preset: tuple[str, Mapping[str, float]] | None, policy: Mapping[str, Any], cfg: DictConfig,
               tracking_uri: str, run_id: str, sha256: str, metric: str = "accuracy") -> str:
    """The markdown model card: metrics, policy summary, how it was made, how to reproduce it.

    ``metric`` is what the study's ``accuracy`` scores (``objective.metric``).
    """
    rows = [("this model", metrics), ("float32 reference", reference)]
    if best_preset:
        rows.append((f"best preset ({best_preset[0]})", best_preset[1]))
    names = ("accuracy", "accuracy_drop", "size_bytes", "size_gzip_bytes", "latency_ms", "compression_ratio")
    table = ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, m in rows:
        table.append(f"| {label} | " + " | ".join(f"{m.get(n, float('nan')):.6g}" for n in names) + " |")
    layers = ["| layer | bits | act bits | sparsity | structure | clusters | width | post-training mode |", "|---" * 8 + "|"]
    for name, p in policy["layers"].items():
        layers.append(f"| {name} | {p['bits']} | {p['act_bits']} | {p['sparsity']:.2f} | {p['structure']} | "
                      f"{p['clusters'] or '-'} | {p['width']:.2f} | {p['ptq_mode'] if policy['method'] != 'qat' else '-'} |")
    overrides = " ".join(task_overrides(exclude=("pick.",)))
    return mask("\n".join([
        f"# Model card: {study}, trial {trial.number}",
        "",
        f"`model.tflite` (sha256 `{sha256}`), picked by `litesweep-pick` (preference `{cfg.pick.prefer}`) from the Pareto "
        f"front of Optuna study `{study}`. MLflow run `{run_id}` in `{tracking_uri}`.",
        "",
        "## Metrics (LiteRT interpreter, held-out test split)",
        "",
        *table,
        *(["", f"`accuracy` is `objective.metric` = `{metric}` (higher is better)."] if metric != "accuracy" else []),
        "",
        f"Latency: median of single-sample invocations on {cfg.latency.threads} thread(s) after {cfg.latency.warmup} "
        f"warm-up runs. Delegate: see the run's `{TAG_DELEGATE}` tag.",
        "",
        f"## Policy (method `{policy['method']}`)",
        "",
        *layers,
        "",
        f"Distillation: temperature {policy['distill']['temperature']:.3g}, weight {policy['distill']['weight']:.3g}.",
        "",
        "## How it was made",
        "",
        f"Data `{cfg.data.name}` ({cfg.data.source}, split seed {cfg.data.seed}); "
        f"base model `{cfg.model.path or cfg.model.name}`; "
        f"fine-tuning {OmegaConf.to_container(cfg.finetune)}.",
        "",
        "## How to reproduce",
        "",
        "```bash",
        f"litesweep-apply apply.run_id={run_id} {overrides}".rstrip(),
        "```",
        "",
        "`litesweep-apply` rebuilds the model from `policy.json` and the cached base model and compares the metrics.",
    ]))  # a card is shared: no password from the URIs or overrides


def task_overrides(exclude: tuple[str, ...] = ()) -> list[str]:
    """The command-line overrides of the running Hydra app (empty when called from Python)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [o for o in HydraConfig.get().overrides.task if not o.startswith(exclude)]
    except ValueError:
        return []


def pick(cfg: DictConfig) -> Pick:
    """Choose, export and optionally register a model from the study ``cfg`` names.

    Raises:
        NothingMeetsConstraints: no front trial meets the constraints (the closest are named).
        ConfigError: the study or its runs cannot be found.
    """
    validate(cfg)
    view = open_view(load_existing_study(cfg.study.name, cfg.study.storage), cfg.tracking.uri)
    study, client, directions = view.study, view.client, view.directions
    if view.parent_run_id is None:
        raise ConfigError(f"study.name = {cfg.study.name!r} has no MLflow parent run (it never started a sweep); "
                          "accepted: a study litesweep has run trials in")
    reference, presets = view.reference(), view.presets()

    constraints = _constraints(cfg.pick)
    front = view.front()
    if cfg.pick.trial is not None:
        chosen_list = [t for t in front if t.number == cfg.pick.trial]
        if not chosen_list:
            raise ConfigError(f"pick.trial = {cfg.pick.trial} is not on the front; accepted: {[t.number for t in front]}")
        trial = chosen_list[0]
    else:
        candidates = [t for t in front if violation(metrics_of(t), constraints) == 0]
        if not candidates:
            pool = front or study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
            closest = sorted(pool, key=lambda t: violation(metrics_of(t), constraints))[:3]
            wanted = ", ".join(f"{metric} {op} {bound:g}" for metric, op, bound in constraints.values())
            near = "; ".join(f"trial {t.number} ({_describe(metrics_of(t))})" for t in closest)
            raise NothingMeetsConstraints(f"no front trial meets {wanted}; closest: {near or 'none (no finished trial)'}")
        trial = candidates[choose([metrics_of(t) for t in candidates], cfg.pick.prefer, directions)]
    metrics = metrics_of(trial)
    run_id = run_id_of(trial)
    assert run_id is not None  # a COMPLETE trial is always linked

    fitting = {n: m for n, m in presets.items() if violation(m, constraints) == 0}
    best_preset = None
    if fitting:
        names_ = list(fitting)
        best = names_[choose([fitting[n] for n in names_], cfg.pick.prefer, directions)]
        best_preset = (best, fitting[best])

    output_dir = Path(cfg.pick.output_dir)
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        tflite_path = Path(client.download_artifacts(run_id, TFLITE_FILE, tmp))
        policy_path = Path(client.download_artifacts(run_id, POLICY_FILE, tmp))
        tflite = tflite_path.read_bytes()
        sha256 = hashlib.sha256(tflite).hexdigest()
        logged = run.data.tags.get(TAG_TFLITE_SHA256)
        if logged is not None and logged != sha256:
            raise LitesweepError(f"the model.tflite of run {run_id} has sha256 {sha256}, not the logged {logged}")
        policy = json.loads(policy_path.read_text())
        staging = Path(tempfile.mkdtemp(prefix=".pick-", dir=_ensure_parent(output_dir)))
        shutil.copyfile(tflite_path, staging / TFLITE_FILE)
        shutil.copyfile(policy_path, staging / POLICY_FILE)
        (staging / "metrics.json").write_text(json.dumps({"trial": trial.number, "run_id": run_id, "metrics": metrics,
                                                          "reference": reference, "sha256": sha256}, indent=2))
        (staging / "MODEL_CARD.md").write_text(model_card(study.study_name, trial, metrics, reference, best_preset, policy, cfg,
                                                          cfg.tracking.uri, run_id, sha256, view.metric))
        # Swap the folder in whole: a reader never sees a half-written export.
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)

    version = None
    if cfg.pick.register:
        version = register(client, cfg.tracking.uri, run_id, output_dir / TFLITE_FILE, cfg.pick.register, cfg.pick.alias)

    print(f"Picked trial {trial.number} of study '{study.study_name}' (prefer {cfg.pick.prefer}"
          + (f", constraints {', '.join(f'{m} {o} {b:g}' for m, o, b in constraints.values())}" if constraints else "") + "):")
    print(f"  picked            {_describe(metrics)}")
    print(f"  float32 reference {_describe(reference)}" if reference else "")
    if best_preset:
        print(f"  best preset       {_describe(best_preset[1])} ({best_preset[0]})")
    else:
        print("  best preset       none meets the constraints")
    print(f"Exported to {output_dir}: model.tflite, policy.json, metrics.json, MODEL_CARD.md")
    if version:
        print(f"Registered as models:/{cfg.pick.register}@{cfg.pick.alias} (version {version}); serve it with:\n"
              f"  MLFLOW_TRACKING_URI='{mask(cfg.tracking.uri)}' mlflow models serve -m 'models:/{cfg.pick.register}@{cfg.pick.alias}' "
              "--env-manager local --host 127.0.0.1 --port 5001")
    return Pick(trial.number, run_id, dict(metrics), output_dir, best_preset[0] if best_preset else None, version)


def _ensure_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def register(client: MlflowClient, tracking_uri: str, run_id: str, tflite_path: Path, name: str, alias: str) -> str:
    """Log the ``.tflite`` as a pyfunc model on the trial's run, register it and point ``alias`` at it."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from litesweep.objectives.runtime import input_shape, predict
    from litesweep.search.serving import TfliteModel
    from litesweep.search.tracking import quiet_run_urls

    quiet_run_urls(tracking_uri)  # ending the run would print its URL, password included
    tflite = tflite_path.read_bytes()
    example = np.zeros((1, *input_shape(tflite)), dtype=np.float32)
    signature = infer_signature(example, predict(tflite, example)[0])
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="served_model", python_model=TfliteModel(), artifacts={"tflite": str(tflite_path)},
            signature=signature, input_example=example, registered_model_name=name,
            pip_requirements=["ai-edge-litert==2.3.*", "numpy", "mlflow==3.17.*"],
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    return version


main = hydra_entry(pick, "litesweep-pick")
