"""The user's own data: npz, image folders and Keras' dataset files, read and preprocessed one way."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from litesweep.objectives.data import Source, load_dataset
from litesweep.objectives.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def digit_images() -> dict[str, np.ndarray]:
    """scikit-learn's digits as 8-bit 8x8 images with a fixed train/test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * 15).astype("uint8")  # 0..16 -> 0..240
    return {"x_train": images[:1400], "y_train": bunch.target[:1400], "x_test": images[1400:], "y_test": bunch.target[1400:]}


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{i:05d}.png")


def test_a_folder_and_an_npz_of_the_same_images_give_the_same_data_and_accuracy(digit_images, digits_bench, tmp_path: Path) -> None:
    np.savez(tmp_path / "digits.npz", **digit_images)
    _write_folder(tmp_path / "folder" / "train", digit_images["x_train"], digit_images["y_train"])
    _write_folder(tmp_path / "folder" / "test", digit_images["x_test"], digit_images["y_test"])

    from_npz = load_dataset(Source("npz", path=str(tmp_path / "digits.npz")), val_fraction=0.15)
    from_folder = load_dataset(Source("folder", path=str(tmp_path / "folder"), image_size=(8, 8), color_mode="grayscale"),
                               val_fraction=0.15)
    assert from_npz.x_test.shape == (397, 8, 8, 1) and from_npz.x_test.dtype == np.float32
    assert from_npz.x_test.max() == pytest.approx(240 / 255)
    # Folder order is by class, npz order by index: compare as sorted sets of (image, label) rows.
    def rows(x: np.ndarray, y: np.ndarray) -> list[bytes]:
        return sorted(xi.tobytes() + bytes([yi]) for xi, yi in zip(x, y, strict=True))
    assert rows(from_npz.x_test, from_npz.y_test) == rows(from_folder.x_test, from_folder.y_test)
    assert len(from_folder.y_train) + len(from_folder.y_val) == 1400

    from litesweep.objectives.measure import accuracy

    tflite = digits_bench.reference.tflite
    npz_accuracy, _ = accuracy(tflite, from_npz.x_test, from_npz.y_test)
    folder_accuracy, _ = accuracy(tflite, from_folder.x_test, from_folder.y_test)
    assert npz_accuracy == folder_accuracy > 0.5


def test_npz_preprocessing_is_configurable_and_one_hot_labels_are_read(digit_images, tmp_path: Path) -> None:
    one_hot = {**digit_images, "y_train": np.eye(10)[digit_images["y_train"]], "x_val": digit_images["x_test"][:50],
               "y_val": digit_images["y_test"][:50]}
    np.savez(tmp_path / "d.npz", **one_hot)
    data = load_dataset(Source("npz", path=str(tmp_path / "d.npz"), rescale=1 / 240, mean=(0.5,), std=(0.5,)))
    assert len(data.y_val) == 50 and len(data.y_train) == 1400, "the file's own validation split is kept"
    assert sorted(data.y_train.tolist()) == sorted(digit_images["y_train"].tolist()), "one-hot rows read as class ids"
    assert data.x_train.min() == pytest.approx(-1.0) and data.x_train.max() == pytest.approx(1.0)
    assert set(np.unique(data.y_train)) == set(range(10))


def test_keras_datasets_are_read_from_local_idx_files(digit_images, tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), np.uint8)
    images[1, 5, 7] = 255
    for prefix, count in (("train", 3), ("t10k", 3)):
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes(16) + images[:count].tobytes())
        with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes(8) + bytes([0, 1, 2][:count]))
    data = load_dataset(Source("keras", dataset="fashion_mnist", path=str(tmp_path)), val_fraction=0.34)
    assert data.x_test.shape == (3, 28, 28, 1) and data.num_classes == 3
    assert sorted(data.x_test.reshape(3, -1).max(axis=1).tolist()) == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(("source", "message"), [
    (Source("npz", path="/nonexistent/x.npz"), "data.path = '/nonexistent/x.npz' does not exist"),
    (Source("npz"), "data.source = 'npz' needs data.path"),
    (Source("folder", path="/"), "data.image_size = None is not accepted"),
    (Source("keras", dataset="imagenet"), "data.dataset = 'imagenet' is not a Keras dataset litesweep reads"),
    (Source("keras", dataset="cifar10", path="/tmp"), "data.path = '/tmp' does not hold cifar10"),
])
def test_bad_data_settings_are_named(source: Source, message: str) -> None:
    with pytest.raises((ConfigError, DataError), match=message.replace("(", r"\(").replace("[", r"\[")):
        load_dataset(source)


def test_an_npz_without_the_expected_arrays_lists_what_it_has(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 8, 8)), labels=np.zeros(4))
    with pytest.raises(DataError, match=r"lacks arrays \['x_train', 'x_test'\] \(it has \['images', 'labels'\]\); accepted: "
                                        r"\['x_train', 'y_train', 'x_test', 'y_test'\] \+ optional x_val, y_val, or without labels"):
        load_dataset(Source("npz", path=str(tmp_path / "bad.npz")))
    np.savez(tmp_path / "half.npz", x_train=np.zeros((4, 8, 8)), y_train=np.zeros(4), x_test=np.zeros((4, 8, 8)))
    with pytest.raises(DataError, match=r"lacks arrays \['y_test'\]"):  # labels are all there or all absent
        load_dataset(Source("npz", path=str(tmp_path / "half.npz")))


def test_an_npz_without_labels_and_a_flat_folder_of_images_load_the_same_images_unlabelled(digit_images, tmp_path: Path) -> None:
    np.savez(tmp_path / "images.npz", x_train=digit_images["x_train"], x_test=digit_images["x_test"], x_val=digit_images["x_test"][:50])
    data = load_dataset(Source("npz", path=str(tmp_path / "images.npz")))
    assert load_dataset(Source("digits")).labelled and load_dataset(Source("digits")).num_classes == 10
    assert not data.labelled and data.num_classes == 0
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1400, 50, 397), "the file's own validation split is kept"
    assert all(np.all(y == -1) for y in (data.y_train, data.y_val, data.y_test))
    from PIL import Image

    (tmp_path / "flat").mkdir()
    for i, image in enumerate(digit_images["x_test"]):
        Image.fromarray(image, mode="L").save(tmp_path / "flat" / f"{i:04d}.png")
    flat = load_dataset(Source("folder", path=str(tmp_path / "flat"), image_size=(8, 8), color_mode="grayscale"))
    assert not flat.labelled and len(flat.x_train) + len(flat.x_val) + len(flat.x_test) == 397
    rows = sorted(x.tobytes() for x in np.concatenate([flat.x_train, flat.x_val, flat.x_test]))
    assert rows == sorted(x.tobytes() for x in data.x_test), "the same pixels as the npz's test images"


def test_the_default_data_is_mlxtends_five_thousand_mnist_digits_split_the_same_every_time() -> None:
    first = load_dataset("mnist5k", val_fraction=0.1, test_fraction=0.2, seed=0)
    again = load_dataset("mnist5k", val_fraction=0.1, test_fraction=0.2, seed=0)
    other = load_dataset("mnist5k", val_fraction=0.1, test_fraction=0.2, seed=1)
    sizes = (len(first.y_train), len(first.y_val), len(first.y_test))
    assert sum(sizes) == 5000 and sizes == (3500, 500, 1000)  # fractions of the 5,000
    assert first.input_shape == (28, 28, 1) and first.num_classes == 10
    assert set(np.unique(first.y_train)) == set(range(10))
    assert first.x_train.min() >= 0.0 and first.x_train.max() <= 1.0
    assert np.array_equal(first.x_test, again.x_test) and np.array_equal(first.y_train, again.y_train)
    assert not np.array_equal(first.y_test, other.y_test), "another seed, another split"
    # No image is in two splits.
    flat = {split: {x.tobytes() for x in getattr(first, f"x_{split}")} for split in ("train", "val", "test")}
    assert not (flat["train"] & flat["test"]) and not (flat["val"] & flat["test"])


def test_the_base_model_is_trained_once_and_then_read_from_the_cache(tmp_path: Path) -> None:
    from litesweep.objectives.models import CnnSpec, train_or_load

    data = load_dataset("digits", val_fraction=0.15, test_fraction=0.25)
    spec = CnnSpec(conv_filters=(4,), dense_units=(8,), max_epochs=2, patience=1)
    model, trained = train_or_load(spec, data, tmp_path)
    again, cached = train_or_load(spec, data, tmp_path)
    assert trained["cached"] is False and cached["cached"] is True and cached["cache_key"] == trained["cache_key"]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights(), strict=True))
    _, wider = train_or_load(CnnSpec(conv_filters=(6,), dense_units=(8,), max_epochs=2, patience=1), data, tmp_path)
    _, fewer = train_or_load(spec, load_dataset("digits", val_fraction=0.15, test_fraction=0.25, limit=900), tmp_path)
    assert len({trained["cache_key"], wider["cache_key"], fewer["cache_key"]}) == 3, "key = hash of config and data"
    assert not wider["cached"] and not fewer["cached"]
