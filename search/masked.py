"""What litesweep writes to MLflow as it is: params, tags and text files may quote a storage or tracking URI
from the config, so every one is masked here (``preflight.mask``) on its way out."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from litesweep.search.preflight import mask


def run_tags(tags: Mapping[str, Any]) -> list[RunTag]:
    """Tags as MLflow run tags, masked."""
    return [RunTag(k, v) for k, v in masked(tags).items()]


def masked(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tag (or param) values as masked strings."""
    return {k: mask(str(v)) for k, v in tags.items()}


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Params on a run, masked and cut to MLflow's 6000 characters, in batches of 100."""
    items = [Param(k, mask(str(v))[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=items[start:start + 100])


def log_files(client: MlflowClient, run_id: str, files: Mapping[str, bytes | str], artifact_path: str | None = None,
              model: Callable[[str], str] | None = None) -> str | None:
    """Write ``files`` as the run's artifacts; ``model`` (if given) makes them a LoggedModel too and returns its id."""
    if not files:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            # bytes are binary (.tflite, .png): kept exact
            path.write_bytes(content if isinstance(content, bytes) else mask(content).encode())
        client.log_artifacts(run_id, tmp, artifact_path)
        return None if model is None else model(tmp)
