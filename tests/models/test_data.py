"""Data sets: the procedural shapes (determinism, balance, speed, colour carries no label, shape
does), digits, image folders, the fake-on-disk CIFAR-10/STL-10 conversion, and error messages."""

from __future__ import annotations

import pickle
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

from models.config import DataConfig
from models.data import (
    DATASETS,
    SHAPES,
    DatasetError,
    ImageSet,
    dataset_mean_std,
    load_dataset,
    make_shapes,
)


# --- shapes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_train() -> ImageSet:
    return make_shapes(3000, seed=11)


@pytest.fixture(scope="module")
def shapes_test() -> ImageSet:
    return make_shapes(1000, seed=12)


def test_shapes_layout_and_balance(shapes_train: ImageSet) -> None:
    ds = shapes_train
    assert ds.images.shape == (3000, 3, 32, 32)
    assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous()
    assert ds.labels is not None and ds.labels.dtype == torch.int64
    assert ds.classes == list(SHAPES) and len(ds.classes) >= 10
    counts = torch.bincount(ds.labels, minlength=len(SHAPES))
    assert counts.tolist() == [300] * len(SHAPES)
    # Shuffled, not in class order.
    assert not torch.equal(ds.labels[:10], torch.arange(10))
    assert ds.image_size == 32
    # Real contrast and noise: full-range pixels, not a constant image.
    assert ds.images.float().std() > 40


def test_shapes_deterministic_by_seed() -> None:
    a, b, c = make_shapes(64, seed=5), make_shapes(64, seed=5), make_shapes(64, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_shapes_other_sizes() -> None:
    for size in (16, 48):
        ds = make_shapes(20, seed=0, size=size)
        assert ds.images.shape == (20, 3, size, size)
        assert ds.image_size == size


def test_shapes_generation_is_fast() -> None:
    start = time.perf_counter()
    ds = make_shapes(12_000, seed=0)
    elapsed = time.perf_counter() - start
    assert len(ds) == 12_000
    assert elapsed < 10.0, f"12k shapes took {elapsed:.1f}s"


def _mean_rgb(ds: ImageSet) -> np.ndarray:
    return ds.images.float().mean(dim=(2, 3)).numpy() / 255


def test_colour_does_not_predict_the_class(shapes_train: ImageSet, shapes_test: ImageSet) -> None:
    # Chance is 0.10; with 1000 test images its std is ~0.01, so 0.16 is ~6σ above chance.
    x_tr, x_te = _mean_rgb(shapes_train), _mean_rgb(shapes_test)
    y_tr, y_te = shapes_train.labels.numpy(), shapes_test.labels.numpy()
    for clf in (LogisticRegression(max_iter=1000), NearestCentroid()):
        acc = clf.fit(x_tr, y_tr).score(x_te, y_te)
        assert acc < 0.16, f"{type(clf).__name__} on mean colour: {acc:.3f}"


def _foreground(ds: ImageSet) -> np.ndarray:
    """A colour-free soft mask: each pixel's RGB distance to the image's border colour."""
    x = ds.images.float().numpy() / 255
    border = np.concatenate([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], axis=2)
    d = np.linalg.norm(x - np.median(border, axis=2)[:, :, None, None], axis=1)
    return (d / d.max(axis=(1, 2), keepdims=True)).reshape(len(ds), -1)


def test_shape_is_learnable(shapes_train: ImageSet, shapes_test: ImageSet) -> None:
    # The same images that hide the class in their colour give it away in their silhouette:
    # plain kNN on the foreground mask scores far above chance (~0.5 measured; chance 0.1).
    knn = KNeighborsClassifier(n_neighbors=5)
    knn.fit(_foreground(shapes_train), shapes_train.labels.numpy())
    acc = knn.score(_foreground(shapes_test), shapes_test.labels.numpy())
    assert acc > 0.3, f"kNN on the shape mask: {acc:.3f}"


def test_getitem_yields_index(shapes_train: ImageSet) -> None:
    for i in (0, 7, len(shapes_train) - 1):
        index, image, label = shapes_train[i]
        assert index == i
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
        assert torch.equal(image, shapes_train.images[i])
        assert label == int(shapes_train.labels[i])


def test_load_shapes_splits_and_cap() -> None:
    cfg = DataConfig(name="shapes", seed=3, image_size=16, num_train=256)
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    assert len(train) == 256 and len(test) == 2000
    assert train.images.shape[1:] == (3, 16, 16)
    assert torch.bincount(train.labels).min() >= 25  # still balanced under the cap
    # The test set is made from another seed: no train image reappears in it.
    flat_train = {bytes(im.numpy()) for im in train.images}
    assert not any(bytes(im.numpy()) in flat_train for im in test.images)
    again = load_dataset(cfg, "train")
    assert torch.equal(again.images, train.images)


def test_mean_std_and_registry() -> None:
    assert set(DATASETS) == {"shapes", "digits", "cifar10", "stl10", "imagefolder"}
    assert dataset_mean_std("shapes") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert dataset_mean_std("digits") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    mean, std = dataset_mean_std("cifar10")
    assert abs(mean[0] - 0.4914) < 1e-3 and all(0.2 < s < 0.3 for s in std)


# --- digits ---------------------------------------------------------------------------------
def test_digits() -> None:
    cfg = DataConfig(name="digits", image_size=32, seed=1)
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    assert len(train) + len(test) == 1797
    assert 0.75 < len(train) / 1797 < 0.85
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes == [str(i) for i in range(10)]
    assert set(train.labels.tolist()) == set(range(10))
    # Grey: the three channels are copies; the strokes reach (near) white.
    assert torch.equal(train.images[:, 0], train.images[:, 2])
    assert train.images.max() >= 250
    # Deterministic, and the two splits are disjoint.
    assert torch.equal(load_dataset(cfg, "train").images, train.images)
    train_bytes = {bytes(im.numpy()) for im in train.images}
    overlap = sum(bytes(im.numpy()) in train_bytes for im in test.images)
    assert overlap < 10  # a few digits in the set are exact duplicates of each other
    capped = load_dataset(cfg.model_copy(update={"num_train": 100}), "train")
    assert len(capped) == 100 and len(load_dataset(cfg, "test")) == len(test)


# --- image folders --------------------------------------------------------------------------
def _save(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


RED, BLUE = (220, 20, 20), (20, 20, 220)


def test_imagefolder_labelled(tmp_path: Path) -> None:
    for i in range(10):
        _save(tmp_path / "reds" / f"r{i}.png", RED)
        _save(tmp_path / "blues" / f"b{i}.JPG", BLUE, size=(25, 50))  # upper-case extension
    (tmp_path / "notes.txt").write_text("not an image")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, seed=0)
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    assert (len(train), len(test)) == (18, 2)
    assert train.classes == ["blues", "reds"] == test.classes
    assert train.images.shape == (18, 3, 16, 16)
    for ds in (train, test):
        # Each label matches its folder's colour: red channel high exactly for "reds" (1).
        is_red = ds.images[:, 0].float().mean(dim=(1, 2)) > 128
        assert torch.equal(is_red, ds.labels == 1)
    again = load_dataset(cfg, "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    capped = load_dataset(cfg.model_copy(update={"num_train": 16}), "train")
    assert len(capped) == 16 and set(capped.labels.tolist()) == {0, 1}


def test_imagefolder_train_test_folders_share_classes(tmp_path: Path) -> None:
    for i in range(4):
        _save(tmp_path / "train" / "a" / f"{i}.png", RED)
        _save(tmp_path / "train" / "b" / f"{i}.png", BLUE)
    for i in range(3):  # the test split lacks class "a": "b" must still be label 1
        _save(tmp_path / "val" / "b" / f"{i}.bmp", BLUE)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=8)
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    assert len(train) == 8 and len(test) == 3
    assert train.classes == test.classes == ["a", "b"]
    assert test.labels.tolist() == [1, 1, 1]


def test_imagefolder_unlabelled_and_unreadable(tmp_path: Path) -> None:
    for i in range(9):
        _save(tmp_path / f"img{i}.png", RED if i % 2 else BLUE, size=(20, 20))
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=12, seed=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = load_dataset(cfg, "train")
        test = load_dataset(cfg, "test")
    assert train.labels is None and train.classes is None and test.labels is None
    assert len(train) + len(test) == 9  # the broken file was skipped...
    assert any("broken.png" in str(w.message) for w in caught)  # ...with a warning
    index, image, label = train[0]
    assert (index, label) == (0, -1) and image.shape == (3, 12, 12)


def test_imagefolder_all_unreadable(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"bad{i}.jpg").write_bytes(b"\x00" * 10)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path))
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match=str(tmp_path)):
        load_dataset(cfg, "train")


# --- CIFAR-10 / STL-10 conversion, on fake files ----------------------------------------------
def test_cifar10_layout_from_fake_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # fake files, no md5
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, size=(4, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [0, 1, 2, 9]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    first = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0]

    cfg = DataConfig(name="cifar10", root=str(tmp_path))
    train = load_dataset(cfg, "train")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    # CIFAR rows are channel-major (R plane, G plane, B plane): back to (3, 32, 32) exactly.
    assert np.array_equal(train.images[0].numpy(), first.reshape(3, 32, 32))
    assert train.labels.tolist()[:4] == [0, 1, 2, 9] and train.classes[9] == "c9"
    small = load_dataset(cfg.model_copy(update={"image_size": 16}), "test")
    assert small.images.shape == (4, 3, 16, 16)


def test_stl10_layout_from_fake_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.stl10 as stl10

    monkeypatch.setattr(stl10, "check_integrity", lambda *a, **k: True)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        rng.integers(0, 256, size=n * 3 * 96 * 96, dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        np.arange(1, n + 1, dtype=np.uint8).tofile(folder / f"{split}_y.bin")  # 1-based on disk
    train = load_dataset(DataConfig(name="stl10", root=str(tmp_path), image_size=96), "train")
    assert train.images.shape == (5, 3, 96, 96)
    assert train.labels.tolist() == [0, 1, 2, 3, 4] and len(train.classes) == 10
    test = load_dataset(DataConfig(name="stl10", root=str(tmp_path), image_size=32), "test")
    assert test.images.shape == (3, 3, 32, 32)


# --- errors ---------------------------------------------------------------------------------
def _error(cfg: DataConfig) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(cfg, "train")
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_error_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for name in ("imagefolder", "cifar10", "stl10"):
        message = _error(DataConfig(name=name, root=str(missing)))
        assert str(missing) in message


def test_error_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()  # an empty sub-folder is no class
    message = _error(DataConfig(name="imagefolder", root=str(tmp_path)))
    assert str(tmp_path) in message and "no image" in message


def test_error_file_not_folder(tmp_path: Path) -> None:
    file = tmp_path / "picture.png"
    _save(file, RED)
    for name in ("imagefolder", "cifar10"):
        message = _error(DataConfig(name=name, root=str(file)))
        assert str(file) in message and "file" in message


def test_error_cifar10_and_stl10_without_files(tmp_path: Path) -> None:
    message = _error(DataConfig(name="cifar10", root=str(tmp_path)))
    assert str(tmp_path) in message and "cifar-10-batches-py" in message
    assert "download" in message
    message = _error(DataConfig(name="stl10", root=str(tmp_path)))
    assert str(tmp_path) in message and "stl10_binary" in message


def test_error_no_root() -> None:
    for name in ("imagefolder", "cifar10", "stl10"):
        assert "root" in _error(DataConfig(name=name))


def test_error_unknown_name() -> None:
    message = _error(DataConfig(name="mnist"))
    assert "mnist" in message and all(name in message for name in DATASETS)
