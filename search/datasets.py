"""The data a study is scored on, as MLflow dataset inputs of its runs (the runs table's Dataset column).

Each split is a metadata-only dataset: its name (``<data>-validation``...), a digest of its arrays and, as its
source, the ``data`` config that loaded it. No array is copied to MLflow. The digest is a SHA-256 of every
preprocessed array of the split, in full: MLflow's own numpy digest reads only the first 10,000 values, so a
change further into a data file would keep its digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from mlflow.data.dataset import Dataset as MlflowDataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from litesweep.search.preflight import mask

#: Input contexts: what the search scores on, what the front's figures are confirmed on, what fine-tuning trains on.
VALIDATION, TEST, TRAINING = "validation", "test", "training"
SPLITS = {VALIDATION: ("x_val", "y_val"), TEST: ("x_test", "y_test"), TRAINING: ("x_train", "y_train")}
SOURCE_TYPE = "litesweep_data_config"


class DataConfigSource(DatasetSource):
    """Where a split comes from: litesweep's ``data`` config (source, path or dataset, preprocessing, split)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = dict(config)

    @staticmethod
    def _get_source_type() -> str:
        return SOURCE_TYPE

    def load(self, **kwargs: Any) -> Any:
        """Not loadable from MLflow: ``litesweep`` reloads the data from its config."""
        raise NotImplementedError

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> DataConfigSource:
        raise NotImplementedError

    def to_dict(self) -> dict[Any, Any]:
        return {"data": self._config}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DataConfigSource:
        return cls(source_dict.get("data") or {})


class SplitDataset(MlflowDataset):
    """One split as MLflow sees it: name, digest, source and its shape; the arrays stay in memory."""

    def __init__(self, source: DataConfigSource, name: str, digest: str, x: np.ndarray, y: np.ndarray) -> None:
        self._profile = {"num_rows": len(y), "features_shape": list(x.shape), "features_dtype": str(x.dtype),
                         "targets_shape": list(y.shape), "num_classes": len(np.unique(y))}
        super().__init__(source=source, name=name, digest=digest)

    def _compute_digest(self) -> str:  # always given
        raise NotImplementedError

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    @property
    def schema(self) -> None:
        return None

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def split_digest(x: np.ndarray, y: np.ndarray) -> str:
    """A short SHA-256 of a split's images and labels, shapes included (``Dataset.fingerprint``'s way, per split)."""
    digest = hashlib.sha256()
    for array in (x, y):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def data_inputs(data: Any, config: Any) -> dict[str, DatasetInput]:
    """Each split of ``data`` (an ``objectives.data.Dataset``) as a dataset input, by context.

    Args:
        data: the loaded dataset (its arrays are hashed once here).
        config: the resolved ``data`` config (a dict), the datasets' source (passwords in URIs are masked).
    """
    source = DataConfigSource(json.loads(mask(json.dumps(config, default=str))))
    inputs = {}
    for context, (x_name, y_name) in SPLITS.items():
        x, y = getattr(data, x_name), getattr(data, y_name)
        split = SplitDataset(source, f"{data.name}-{context}", split_digest(x, y), x, y)
        inputs[context] = DatasetInput(split._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
    return inputs


def log_inputs(client: MlflowClient, run_id: str, inputs: Mapping[str, DatasetInput], contexts: Iterable[str]) -> None:
    """The splits a run used (``inputs`` by context: validation, test, training) as its dataset inputs."""
    chosen = [inputs[c] for c in contexts if c in inputs]
    if chosen:
        client.log_inputs(run_id, datasets=chosen)
