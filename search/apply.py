"""``litesweep-apply``: rebuild a model from a logged ``policy.json`` and the base model, and compare.

``litesweep-apply apply.run_id=<trial run>`` (same config overrides as the sweep) re-runs the policy,
measures the new ``.tflite`` with the same protocol, and checks it against the run's logged metrics:
bit-identical where the pipeline is deterministic (post-training policies, no training), within
``apply.accuracy_tolerance`` points and ``apply.size_tolerance`` otherwise (fine-tuning on CPU is not
bit-reproducible from one process to the next).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from litesweep.objectives.errors import ConfigError, LitesweepError
from litesweep.objectives.policy import Policy
from litesweep.search.cli import hydra_entry
from litesweep.search.config import validate
from litesweep.search.ledger import POLICY_FILE, TFLITE_FILE
from litesweep.search.ledger import TAG_TFLITE_SHA256 as TFLITE_SHA256_TAG
from litesweep.search.workbench import build_workbench


class NotReproduced(LitesweepError):
    """The rebuilt model's metrics are outside the tolerance of the logged ones."""


@dataclasses.dataclass(frozen=True)
class Applied:
    """The rebuilt model and how it compares with the logged one."""

    metrics: dict[str, float]
    logged: dict[str, float] | None
    identical: bool | None
    output_dir: Path


def apply(cfg: DictConfig) -> Applied:
    """Rebuild, measure, compare and export (``model.tflite``, ``policy.json``, ``comparison.json``)."""
    validate(cfg)
    if (cfg.apply.policy is None) == (cfg.apply.run_id is None):
        raise ConfigError("give exactly one of apply.policy (a policy.json path) or apply.run_id (a trial's MLflow run)")
    logged = logged_sha = None
    if cfg.apply.run_id is not None:
        client = MlflowClient(cfg.tracking.uri)
        run = client.get_run(cfg.apply.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(client.download_artifacts(cfg.apply.run_id, POLICY_FILE, tmp)).read_text()
        logged = {k: v for k, v in run.data.metrics.items() if "." not in k and not k.startswith("time_")}
        logged_sha = run.data.tags.get(TFLITE_SHA256_TAG)
    else:
        path = Path(cfg.apply.policy)
        if not path.is_file():
            raise ConfigError(f"apply.policy = {str(path)!r} is not a file; accepted: a policy.json written by litesweep")
        text = path.read_text()
    policy = Policy.from_json(text)
    bench, _ = build_workbench(cfg)
    output = bench.run(policy)
    metrics = output.metrics.as_dict()
    sha = hashlib.sha256(output.tflite).hexdigest()
    identical = None if logged_sha is None else sha == logged_sha

    out = Path(cfg.apply.output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".apply-", dir=out.parent))
    (staging / TFLITE_FILE).write_bytes(output.tflite)
    (staging / POLICY_FILE).write_text(policy.to_json())
    (staging / "comparison.json").write_text(json.dumps({"metrics": metrics, "logged": logged, "sha256": sha,
                                                         "logged_sha256": logged_sha, "identical": identical}, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)

    print(f"Rebuilt policy ({policy.method}): accuracy {metrics['accuracy']:.4f}, size_bytes {metrics['size_bytes']:,}, "
          f"latency_ms {metrics['latency_ms']:.4f}; written to {out}")
    if logged is not None:
        drift = abs(metrics["accuracy"] - logged["accuracy"]) * 100
        size = abs(metrics["size_bytes"] - logged["size_bytes"]) / logged["size_bytes"]
        print(f"Against run {cfg.apply.run_id}: accuracy {logged['accuracy']:.4f} (|diff| {drift:.2f} points), "
              f"size_bytes {int(logged['size_bytes']):,} (|diff| {size:.2%}); bit-identical: {identical}")
        deterministic = not policy.needs_training
        if deterministic and not identical:
            raise NotReproduced(f"policy {cfg.apply.run_id} needs no training but the rebuilt .tflite differs "
                                f"(sha256 {sha[:12]} vs {str(logged_sha)[:12]})")
        if drift > cfg.apply.accuracy_tolerance or size > cfg.apply.size_tolerance:
            raise NotReproduced(f"rebuilt accuracy differs by {drift:.2f} points (tolerance {cfg.apply.accuracy_tolerance}) "
                                f"and size by {size:.2%} (tolerance {cfg.apply.size_tolerance:.0%})")
    return Applied(metrics, logged, identical, out)


main = hydra_entry(apply, "litesweep-apply")
