"""Data sets from a library: scikit-learn's bundled digits, CIFAR-10 and STL-10 from a local
folder in torchvision's layout (downloaded only when the user asks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.config import DataConfig
from models.data.image_set import DatasetError, ImageSet, Split, resize_uint8, seeded_perm


# --- digits ---------------------------------------------------------------------------------
def load_digits(cfg: DataConfig, split: Split) -> ImageSet:
    from sklearn.datasets import load_digits as bundled_digits  # in scikit-learn: no download

    d = bundled_digits()
    grey = torch.from_numpy(d.images).float() * (255.0 / 16.0)  # 17 grey levels 0..16
    x = grey.round().to(torch.uint8).unsqueeze(1).expand(-1, 3, -1, -1)
    y = torch.from_numpy(d.target).long()
    perm = seeded_perm(len(y), cfg.seed)
    cut = int(0.8 * len(y))
    idx = perm[:cut] if split == "train" else perm[cut:]
    images = resize_uint8(x[idx].contiguous(), cfg.image_size)
    return ImageSet("digits", images, y[idx], [str(i) for i in range(10)])


# --- CIFAR-10 / STL-10 ----------------------------------------------------------------------
def _require_root(cfg: DataConfig, what: str) -> Path:
    """The data set's folder; without download it must already exist."""
    if not cfg.root:
        raise DatasetError(
            f"data set {cfg.name!r} needs a local folder as root (--data-root): one holding "
            f"{what}, or one to fetch them into with download=True (--download)"
        )
    root = Path(cfg.root).expanduser()
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} is a file; expected a folder holding {what}")
    if not cfg.download and not root.is_dir():
        raise DatasetError(
            f"{root}: no such folder; expected {what} under it; "
            f"pass download=True (--download) to fetch them"
        )
    return root


def _torchvision_error(root: Path, what: str, e: Exception) -> DatasetError:
    return DatasetError(
        f"expected {what} under {root}; pass download=True (--download) to fetch them "
        f"(torchvision: {e})"
    )


def load_cifar10(cfg: DataConfig, split: Split) -> ImageSet:
    from torchvision.datasets import CIFAR10

    what = "the CIFAR-10 python batches (cifar-10-batches-py/)"
    root = _require_root(cfg, what)
    try:
        ds = CIFAR10(str(root), train=split == "train", download=cfg.download)
    except (RuntimeError, OSError) as e:  # "Dataset not found or corrupted", failed download
        raise _torchvision_error(root, what, e) from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # NHWC → NCHW
    labels = torch.tensor(ds.targets, dtype=torch.long)
    return ImageSet("cifar10", resize_uint8(images, cfg.image_size), labels, list(ds.classes))


_STL10_CLASSES = [
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
]


def load_stl10(cfg: DataConfig, split: Split) -> ImageSet:
    from torchvision.datasets import STL10

    what = "the STL-10 binaries (stl10_binary/)"
    root = _require_root(cfg, what)
    try:
        ds = STL10(str(root), split=split, download=cfg.download)
    except (RuntimeError, OSError) as e:
        raise _torchvision_error(root, what, e) from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data))  # already NCHW
    labels = torch.from_numpy(np.asarray(ds.labels).astype(np.int64))
    # torchvision sets .classes only when class_names.txt is present.
    classes = list(getattr(ds, "classes", _STL10_CLASSES))
    return ImageSet("stl10", resize_uint8(images, cfg.image_size), labels, classes)


# --- image folder ---------------------------------------------------------------------------
