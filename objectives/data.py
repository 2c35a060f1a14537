"""Datasets as model inputs: one preprocessing step and a fixed split, whatever the source.

``objectives.sources`` reads the raw images of every source (packaged sets, the user's npz, image
folders, TFDS, Keras' datasets); here every split goes through one preprocessing step (``preprocess``)
before the split, so training, calibration and ``.tflite`` evaluation all see the same float32 NHWC arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from litesweep.objectives.errors import ConfigError, DataError
from litesweep.objectives.settings import Source
from litesweep.objectives.sources import SOURCES

__all__ = ["MIN_VAL_SAMPLES", "SOURCES", "Dataset", "Source", "check_data_fits", "load_dataset", "preprocess"]

#: A validation split smaller than this selects trials by noise: the sweep warns that the front will be noisy.
MIN_VAL_SAMPLES = 200


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train / validation / test arrays (images NHWC float32 in [0, 1], integer labels).

    Data without labels (``labelled`` False) has every label -1 and ``num_classes`` 0: only scorers that
    compare with the float model's outputs (``agreement``) can score it, and fine-tuning distils only.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    labelled: bool = True

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> str:
        """A short hash of every array, so caches keyed by it notice any change of data or split."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]


def preprocess(images: np.ndarray, src: Source) -> np.ndarray:
    """Raw images (N,H,W or N,H,W,C; any numeric type) to float32 NHWC model inputs, by ``src``'s settings.

    The one preprocessing step: every split goes through it before training, calibration and evaluation.
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"images have shape {x.shape}; accepted: (N, height, width) or (N, height, width, channels)")
    if src.rescale is None:
        x = (x / 255.0 if x.dtype == np.uint8 else x).astype("float32")  # 8-bit pixels to [0, 1]
    else:
        x = (x.astype("float64") * src.rescale).astype("float32")
    for what, values in (("data.mean", src.mean), ("data.std", src.std)):
        if values is not None and len(values) not in (1, x.shape[-1]):
            raise ConfigError(f"{what} = {list(values)!r} has {len(values)} values; accepted: 1 or one per channel ({x.shape[-1]})")
    if src.mean is not None:
        x -= np.asarray(src.mean, dtype="float32")
    if src.std is not None:
        x /= np.asarray(src.std, dtype="float32")
    return x


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)  # one-hot
    y = y.reshape(-1)
    if y.size and not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"{what} labels are not whole numbers (dtype {y.dtype}); accepted: integer class ids or one-hot rows")
    return y.astype("int64")


def load_dataset(
    source: str | Source,
    *,
    name: str | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """Load a dataset and split it with a fixed seed.

    A source with its own test split (npz, keras, tfds, a folder with train/ and test/) keeps it, and
    ``test_fraction`` is unused; validation comes from the source when it has one, else from training data.

    Args:
        source: one of ``SOURCES`` or a ``Source`` (path, preprocessing, split).
        name: the name shown in reports (defaults to the source's ``name``, dataset or source).
        val_fraction: share of samples for validation: what every trial is scored and selected on.
        test_fraction: share held out for the figures reported for the front (pooled sources only).
        seed: split seed; the same seed always gives the same split.
        limit: keep only this many samples (after shuffling, spread over the splits), for quick tests.

    The keyword arguments that are not ``None`` replace the ``Source``'s own settings (``Source`` has
    the defaults: 10% validation, 20% test, seed 0, no limit).

    Raises:
        ConfigError: a setting ``Source.validate`` refuses (unknown source, missing path, bad fractions...).
        DataError: unreadable files, bad arrays, or a split that comes out empty.
    """
    src = source if isinstance(source, Source) else Source(source)
    given: dict[str, Any] = {"name": name, "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed, "limit": limit}
    src = dataclasses.replace(src, **{k: v for k, v in given.items() if v is not None})
    src.validate()
    raw = SOURCES[src.source](src)
    label = src.name or src.dataset or src.source
    limit, test_fraction, val_fraction = src.limit, src.test_fraction, src.val_fraction
    rng = np.random.default_rng(src.seed)
    labelled = raw.y is not None

    def labels(x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return x, y if y is not None else np.full(len(x), -1, dtype="int64")  # no labels: -1, never scored

    if raw.x_test is None:
        pools = {"all": labels(raw.x, raw.y)}
    else:
        pools = {"train": labels(raw.x, raw.y), "test": labels(raw.x_test, raw.y_test)}
        if raw.x_val is not None:
            pools["val"] = labels(raw.x_val, raw.y_val)
    total = sum(len(y) for _, y in pools.values())
    part: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for pool, (x, y) in pools.items():
        y = _labels(y, pool)
        if len(x) != len(y):
            raise DataError(f"data '{label}' has {len(x)} {pool} images but {len(y)} labels; accepted: one label per image")
        order = rng.permutation(len(y))
        if limit is not None:
            order = order[: max(1, round(limit * len(y) / total))]
        part[pool] = (preprocess(x[order], src), y[order])
    if "all" in part:
        x, y = part.pop("all")
        n_test, n_val = round(len(y) * test_fraction), round(len(y) * val_fraction)
        part.update(test=(x[:n_test], y[:n_test]), val=(x[n_test:n_test + n_val], y[n_test:n_test + n_val]),
                    train=(x[n_test + n_val:], y[n_test + n_val:]))
    elif "val" not in part:
        x, y = part["train"]
        n_val = round(len(y) * val_fraction)
        part.update(val=(x[:n_val], y[:n_val]), train=(x[n_val:], y[n_val:]))
    for split in ("train", "val", "test"):
        if len(part[split][1]) == 0:
            raise DataError(f"the {split} split of data '{label}' is empty (limit={limit}); accepted: enough samples for every split")
    train_shape = part["train"][0].shape[1:]
    for split in ("val", "test"):
        if part[split][0].shape[1:] != train_shape:
            raise DataError(f"data '{label}' has {split} images of shape {part[split][0].shape[1:]} but training images of shape "
                            f"{train_shape}; accepted: one image shape in every split")
    return Dataset(
        name=label,
        x_train=part["train"][0],
        y_train=part["train"][1],
        x_val=part["val"][0],
        y_val=part["val"][1],
        x_test=part["test"][0],
        y_test=part["test"][1],
        num_classes=int(max(int(y.max()) for _, y in part.values())) + 1 if labelled else 0,
        labelled=labelled,
    )


def check_data_fits(model: Any, data: Dataset) -> None:
    """Raise ``DataError`` if the data's sample shape or labels do not fit the model."""
    expected = tuple(model.input_shape[1:])
    if tuple(data.input_shape) != expected:
        raise DataError(f"data samples have shape {data.input_shape} but the model expects {expected}; "
                        f"accepted: data whose samples are {expected}, or a model whose input is {tuple(data.input_shape)}")
    outputs = int(model.output_shape[-1])
    if not data.labelled:
        return
    for split, labels in (("train", data.y_train), ("val", data.y_val), ("test", data.y_test)):
        if len(labels) and (labels.min() < 0 or labels.max() >= outputs):
            raise DataError(f"{split} labels span [{labels.min()}, {labels.max()}] but the model has {outputs} outputs; "
                            f"accepted: 0..{outputs - 1}")
