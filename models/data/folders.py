"""`imagefolder`: any folder of images, its sub-folders the classes (labels optional)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.config import DataConfig
from models.data.image_set import DatasetError, ImageSet, Split, seeded_perm

_IMAGE_EXT = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"})
_PROGRESS_MIN_FILES = 500
_IMAGEFOLDER_EXPECTED = (
    "a folder of images: one sub-folder of images per class, or the images directly "
    "(optionally split into train/ and test/ or val/)"
)


def _image_files(folder: Path) -> list[Path]:
    # Hidden files are skipped: macOS "._x.jpg" companions look like images but are not.
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in _IMAGE_EXT and not p.name.startswith(".")
    )


def _class_names(folder: Path) -> list[str]:
    """Sub-folders of `folder` that hold images directly, sorted."""
    return sorted(
        d.name
        for d in folder.iterdir()
        if d.is_dir() and not d.name.startswith(".") and _image_files(d)
    )


def _scan(folder: Path, classes: list[str]) -> tuple[list[Path], list[int] | None]:
    """Files of `folder`, labelled by sub-folder when `classes` is non-empty."""
    if not classes:
        return _image_files(folder), None
    files: list[Path] = []
    labels: list[int] = []
    for c, name in enumerate(classes):
        if (folder / name).is_dir():
            fs = _image_files(folder / name)
            files += fs
            labels += [c] * len(fs)
    return files, labels


def _open_image(path: Path, size: int) -> Tensor:
    """RGB (3, size, size): resize the short side to `size`, then centre-crop."""
    from PIL import Image

    with Image.open(path) as opened:
        opened.draft("RGB", (size, size))  # JPEG: decode at reduced scale, faster for big files
        im: Image.Image = opened
        if "transparency" in im.info:  # avoids PIL's palette-transparency warning
            im = im.convert("RGBA")
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        # PIL's resize filters scale their support when shrinking, so this is antialiased.
        im = im.resize(
            (max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR
        )
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)


def _load_images(files: list[Path], size: int, root: Path) -> tuple[Tensor, list[int]]:
    """Decode `files`, skipping unreadable ones with a warning; the indices of those kept."""
    from PIL import Image
    from tqdm import tqdm

    out: list[Tensor] = []
    kept: list[int] = []
    show = len(files) > _PROGRESS_MIN_FILES
    for i, f in enumerate(tqdm(files, desc=f"loading {root}", unit="img", disable=not show)):
        try:
            out.append(_open_image(f, size))
            kept.append(i)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            warnings.warn(f"skipping unreadable image {f}: {e}", stacklevel=3)
    if not out:
        raise DatasetError(f"{root}: none of {len(files)} image files could be read")
    return torch.stack(out), kept


def _imagefolder_files(
    root: Path, split: Split, seed: int
) -> tuple[Path, list[Path], list[int] | None, list[str]]:
    """The folder the split comes from, its files, their labels, and the class names."""
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        # One class list for both splits, so label i means the same class in each.
        classes = sorted(set(_class_names(root / "train")) | set(_class_names(test_dir)))
        folder = root / "train" if split == "train" else test_dir
        files, labels = _scan(folder, classes)
        return folder, files, labels, classes
    classes = _class_names(root)
    files, labels = _scan(root, classes)
    if len(files) > 1:  # seeded 90/10 split; both sides keep at least one image
        perm = seeded_perm(len(files), seed).tolist()
        cut = min(len(files) - 1, max(1, round(0.9 * len(files))))
        chosen = perm[:cut] if split == "train" else perm[cut:]
        files = [files[i] for i in chosen]
        labels = [labels[i] for i in chosen] if labels is not None else None
    return root, files, labels, classes


def load_imagefolder(cfg: DataConfig, split: Split) -> ImageSet:
    if not cfg.root:
        raise DatasetError(
            f"data set 'imagefolder' needs root (--data-root): {_IMAGEFOLDER_EXPECTED}"
        )
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; expected {_IMAGEFOLDER_EXPECTED}")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder; expected {_IMAGEFOLDER_EXPECTED}")
    folder, files, labels, classes = _imagefolder_files(root, split, cfg.seed)
    if not files:
        exts = "/".join(sorted(e[1:] for e in _IMAGE_EXT))
        raise DatasetError(
            f"{folder}: no image files ({exts}) found; expected {_IMAGEFOLDER_EXPECTED}"
        )
    images, kept = _load_images(files, cfg.image_size, folder)
    y = torch.tensor([labels[i] for i in kept], dtype=torch.long) if labels is not None else None
    return ImageSet("imagefolder", images, y, classes or None)


# --- entry point ----------------------------------------------------------------------------
