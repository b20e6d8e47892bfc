"""Data sets in memory as uint8 tensors: shapes (procedural), digits, CIFAR-10, STL-10, folders.

One module a job: `image_set` (the ImageSet every data set becomes, statistics, resizing),
`shapes` (the procedural renderer), `torchvision_sets` (digits, CIFAR-10, STL-10), `folders`
(any image folder); `load_dataset` below picks one by name.
"""

from __future__ import annotations

from models.config import DataConfig
from models.data.folders import load_imagefolder
from models.data.image_set import (
    DATASETS,
    RGB,
    DatasetError,
    ImageSet,
    Split,
    dataset_mean_std,
    seeded_perm,
)
from models.data.shapes import (
    SHAPES,
    SHAPES_TEST_SEED_OFFSET,
    SHAPES_TEST_SIZE,
    SHAPES_TRAIN_SIZE,
    make_shapes,
)
from models.data.torchvision_sets import load_cifar10, load_digits, load_stl10

__all__ = [
    "DATASETS",
    "RGB",
    "SHAPES",
    "SHAPES_TEST_SEED_OFFSET",
    "SHAPES_TEST_SIZE",
    "SHAPES_TRAIN_SIZE",
    "DatasetError",
    "ImageSet",
    "Split",
    "dataset_mean_std",
    "load_dataset",
    "make_shapes",
]


def load_dataset(cfg: DataConfig, split: Split) -> ImageSet:
    """The `split` of the data set `cfg` names, in memory; `num_train` caps the train split."""
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    cap = cfg.num_train if split == "train" else None
    if cfg.name == "shapes":
        if split == "test":
            return make_shapes(SHAPES_TEST_SIZE, cfg.seed + SHAPES_TEST_SEED_OFFSET, cfg.image_size)
        # Already random and balanced: generate only the images that will be used.
        return make_shapes(
            min(SHAPES_TRAIN_SIZE, cap or SHAPES_TRAIN_SIZE), cfg.seed, cfg.image_size
        )
    loaders = {
        "digits": load_digits,
        "cifar10": load_cifar10,
        "stl10": load_stl10,
        "imagefolder": load_imagefolder,
    }
    if cfg.name not in loaders:
        raise DatasetError(f"unknown data set {cfg.name!r}; choose one of: {', '.join(DATASETS)}")
    ds = loaders[cfg.name](cfg, split)
    if cap is not None and cap < len(ds):
        # Files on disk are often sorted by class: a seeded random subset keeps every class.
        ds = ds.subset(seeded_perm(len(ds), cfg.seed)[:cap].sort().values)
    return ds
