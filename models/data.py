"""Data sets in memory as uint8 tensors: shapes (procedural), digits, CIFAR-10, STL-10, folders.

Everything becomes an `ImageSet` — (N, 3, H, W) uint8 images, optional labels — so the trainer
can gather and augment whole batches of tensors, and every item yields its index, so a point on
a plot can always be traced back to its image.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from models.config import DataConfig

Split = Literal["train", "test"]


class DatasetError(ValueError):
    """A data set cannot be loaded; the message names the path or name and what was expected."""


@dataclass
class ImageSet(Dataset):
    name: str
    images: Tensor  # uint8 (N, 3, H, W)
    labels: Tensor | None  # int64 (N,)
    classes: list[str] | None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[int, Tensor, int]:
        label = int(self.labels[index]) if self.labels is not None else -1
        return index, self.images[index], label

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


DATASETS: dict[str, str] = {
    "shapes": "procedural: 10 shape classes, random colour/position/scale/rotation (default)",
    "digits": "scikit-learn's bundled 8×8 handwritten digits, upsampled",
    "cifar10": "CIFAR-10 from a local folder (torchvision layout)",
    "stl10": "STL-10 from a local folder (torchvision layout)",
    "imagefolder": "any folder of images; sub-folders are classes (labels optional)",
}

_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def dataset_mean_std(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std used to standardise images of data set `name`."""
    return _MEAN_STD.get(name, ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))


# --- shapes ---------------------------------------------------------------------------------
SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "plus",
    "ring",
    "crescent",
    "heart",
    "arrow",
    "ellipse",
)


def _polygon_inside(u: Tensor, v: Tensor, sides: int, radius: float = 1.0) -> Tensor:
    """Inside a regular polygon with `sides` vertices on a circle of `radius`."""
    angle = torch.atan2(v, u)
    sector = 2 * math.pi / sides
    a = torch.remainder(angle + math.pi / 2, sector) - sector / 2
    apothem = radius * math.cos(math.pi / sides)
    return torch.sqrt(u**2 + v**2) * torch.cos(a) <= apothem


def _inside(cls: int, u: Tensor, v: Tensor) -> Tensor:
    """Membership of canonical coordinates (u, v) ∈ [−1, 1]² in shape `cls`."""
    r = torch.sqrt(u**2 + v**2)
    if cls == 0:  # circle
        return r <= 0.9
    if cls == 1:  # square
        return torch.maximum(u.abs(), v.abs()) <= 0.72
    if cls == 2:  # triangle
        return _polygon_inside(u, v, 3, 1.0)
    if cls == 3:  # five-pointed star: radius oscillates between inner and outer
        theta = torch.atan2(v, u) + math.pi / 2
        sector = 2 * math.pi / 5
        t = (torch.remainder(theta, sector) - sector / 2).abs() / (sector / 2)  # 0 at tip
        return r <= 0.42 + (1.0 - 0.42) * (1 - t) ** 1.6
    if cls == 4:  # plus
        return ((u.abs() <= 0.28) & (v.abs() <= 0.95)) | ((v.abs() <= 0.28) & (u.abs() <= 0.95))
    if cls == 5:  # ring
        return (r <= 0.95) & (r >= 0.55)
    if cls == 6:  # crescent
        return (r <= 0.95) & (torch.sqrt((u - 0.45) ** 2 + v**2) > 0.75)
    if cls == 7:  # heart
        x, y = u * 1.25, -v * 1.25 + 0.25
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    if cls == 8:  # arrow: a shaft and a triangular head
        shaft = (u >= -0.95) & (u <= 0.1) & (v.abs() <= 0.2)
        head = (u >= 0.1) & (u <= 0.95) & (v.abs() <= 0.6 * (0.95 - u) / 0.85)
        return shaft | head
    if cls == 9:  # ellipse
        return (u / 0.95) ** 2 + (v / 0.42) ** 2 <= 1
    raise ValueError(cls)


def make_shapes(num: int, seed: int, size: int = 32, supersample: int = 3) -> ImageSet:
    """`num` images of 10 shape classes, deterministic by `seed`.

    Rotation, scale, position, shape and background colours are all random and independent of
    the class, so colour carries no information about the label: only shape does.
    """
    g = torch.Generator().manual_seed(seed)
    k = len(SHAPES)
    labels = (torch.arange(num) % k)[torch.randperm(num, generator=g)]
    angle = torch.rand(num, generator=g) * 2 * math.pi
    scale = 0.45 + torch.rand(num, generator=g) * 0.4  # shape radius / half-side
    cx = (torch.rand(num, generator=g) * 2 - 1) * (1 - scale) * 0.9
    cy = (torch.rand(num, generator=g) * 2 - 1) * (1 - scale) * 0.9
    fg = torch.rand(num, 3, generator=g)
    bg = torch.rand(num, 3, generator=g)
    # Enough contrast to see the shape: push the background away from the foreground colour.
    diff = bg - fg
    dist = diff.norm(dim=1, keepdim=True)
    too_close = dist < 0.45
    direction = torch.where(
        dist > 1e-3, diff / dist.clamp_min(1e-3), torch.ones_like(diff) / 3**0.5
    )
    bg = torch.where(too_close, (fg + direction * 0.45), bg)
    bg = torch.where(bg > 1, bg - 0.9, bg).clamp(0, 1)
    bg = torch.where((bg - fg).norm(dim=1, keepdim=True) < 0.3, 1 - fg, bg)
    grad = (torch.rand(num, 2, generator=g) * 2 - 1) * 0.12

    n = size * supersample
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    images = torch.empty(num, 3, size, size, dtype=torch.uint8)
    chunk = 1024
    for s in range(0, num, chunk):
        sl = slice(s, min(num, s + chunk))
        cos, sin = torch.cos(angle[sl]).view(-1, 1, 1), torch.sin(angle[sl]).view(-1, 1, 1)
        dx = xx.unsqueeze(0) - cx[sl].view(-1, 1, 1)
        dy = yy.unsqueeze(0) - cy[sl].view(-1, 1, 1)
        sc = scale[sl].view(-1, 1, 1)
        u = (cos * dx + sin * dy) / sc
        v = (-sin * dx + cos * dy) / sc
        mask = torch.zeros_like(u)
        lab = labels[sl]
        for c in range(k):
            sel = lab == c
            if sel.any():
                mask[sel] = _inside(c, u[sel], v[sel]).float()
        # Anti-alias: average the supersampled mask down to the output grid.
        alpha = F.avg_pool2d(mask.unsqueeze(1), supersample)  # (b, 1, size, size)
        ramp = grad[sl, 0].view(-1, 1, 1) * coords[::supersample].view(1, 1, -1) + grad[sl, 1].view(
            -1, 1, 1
        ) * coords[::supersample].view(1, -1, 1)
        background = (bg[sl].view(-1, 3, 1, 1) + ramp.unsqueeze(1)).clamp(0, 1)
        img = alpha * fg[sl].view(-1, 3, 1, 1) + (1 - alpha) * background
        img = img + torch.randn(img.shape, generator=g) * 0.03
        images[sl] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet("shapes", images, labels.long(), list(SHAPES))


# --- digits ---------------------------------------------------------------------------------
def _resize_uint8(images: Tensor, size: int) -> Tensor:
    """Antialiased bilinear resize of uint8 (N, 3, h, w) to (N, 3, size, size), in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty(images.shape[0], 3, size, size, dtype=torch.uint8)
    for s in range(0, images.shape[0], 2048):
        x = images[s : s + 2048].float()
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[s : s + 2048] = x.clamp(0, 255).round().to(torch.uint8)
    return out


def _digits(cfg: DataConfig, split: Split) -> ImageSet:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float() * (255.0 / 16.0)  # 0..16 grey levels
    x = x.unsqueeze(1).expand(-1, 3, -1, -1).round().to(torch.uint8)
    y = torch.from_numpy(d.target).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed))
    cut = int(0.8 * len(y))
    idx = perm[:cut] if split == "train" else perm[cut:]
    images = _resize_uint8(x[idx].contiguous(), cfg.image_size)
    return ImageSet("digits", images, y[idx], [str(i) for i in range(10)])


# --- CIFAR-10 / STL-10 ----------------------------------------------------------------------
def _require_root(cfg: DataConfig, what: str) -> Path:
    if not cfg.root:
        raise DatasetError(
            f"data set {cfg.name!r} needs a local folder: pass its path as root "
            f"(--data-root), expected {what}"
        )
    root = Path(cfg.root).expanduser()
    if not cfg.download and not root.is_dir():
        raise DatasetError(f"{root}: no such folder; expected {what}")
    return root


def _cifar10(cfg: DataConfig, split: Split) -> ImageSet:
    from torchvision.datasets import CIFAR10

    what = "the CIFAR-10 python batches (cifar-10-batches-py/) there"
    root = _require_root(cfg, what)
    try:
        ds = CIFAR10(str(root), train=split == "train", download=cfg.download)
    except (RuntimeError, OSError) as e:
        raise DatasetError(
            f"{root}: {what}; pass download=True (--download) to fetch them ({e})"
        ) from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(ds.targets, dtype=torch.long)
    return ImageSet("cifar10", _resize_uint8(images, cfg.image_size), labels, list(ds.classes))


def _stl10(cfg: DataConfig, split: Split) -> ImageSet:
    from torchvision.datasets import STL10

    what = "the STL-10 binaries (stl10_binary/) there"
    root = _require_root(cfg, what)
    try:
        ds = STL10(str(root), split=split, download=cfg.download)
    except (RuntimeError, OSError) as e:
        raise DatasetError(
            f"{root}: {what}; pass download=True (--download) to fetch them ({e})"
        ) from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data))
    labels = torch.from_numpy(ds.labels.astype(np.int64))
    return ImageSet("stl10", _resize_uint8(images, cfg.image_size), labels, list(ds.classes))


# --- image folder ---------------------------------------------------------------------------
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXT)


def _load_images(files: list[Path], size: int, root: Path) -> tuple[Tensor, list[int]]:
    """Open, convert to RGB, resize the short side and centre-crop; skip unreadable files."""
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    out, kept = [], []
    it = tqdm(files, desc=f"loading {root.name}", unit="img") if len(files) > 500 else files
    for i, f in enumerate(it):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = size / min(w, h)
                im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
                out.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()))
                kept.append(i)
        except (UnidentifiedImageError, OSError) as e:
            warnings.warn(f"skipping unreadable image {f}: {e}", stacklevel=2)
    if not out:
        raise DatasetError(f"{root}: no readable images (expected .png/.jpg/... files)")
    return torch.stack(out).permute(0, 3, 1, 2).contiguous(), kept


def _scan(folder: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """Files with labels from sub-folders, or unlabelled files directly in `folder`."""
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and _image_files(d))
    if subdirs:
        files, labels = [], []
        for c, d in enumerate(subdirs):
            fs = _image_files(d)
            files += fs
            labels += [c] * len(fs)
        return files, labels, [d.name for d in subdirs]
    files = _image_files(folder)
    if not files:
        raise DatasetError(
            f"{folder}: no images found (expected image files, or one sub-folder "
            f"of images per class)"
        )
    return files, None, None


def _imagefolder(cfg: DataConfig, split: Split) -> ImageSet:
    what = "a folder of images (one sub-folder per class, or images directly)"
    if not cfg.root:
        raise DatasetError(f"imagefolder needs root (--data-root): {what}")
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; expected {what}")
    if not root.is_dir():
        raise DatasetError(f"{root}: is a file; expected {what}")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        files, labels, classes = _scan(root / "train" if split == "train" else test_dir)
    else:
        files, labels, classes = _scan(root)
        perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(cfg.seed))
        cut = max(1, int(0.9 * len(files))) if len(files) > 1 else 1
        chosen = perm[:cut] if split == "train" else perm[cut:]
        if split == "test" and len(chosen) == 0:
            chosen = perm[:1]
        files = [files[i] for i in chosen.tolist()]
        labels = [labels[i] for i in chosen.tolist()] if labels is not None else None
    images, kept = _load_images(files, cfg.image_size, root)
    y = torch.tensor([labels[i] for i in kept], dtype=torch.long) if labels is not None else None
    return ImageSet("imagefolder", images, y, classes)


def load_dataset(cfg: DataConfig, split: Split) -> ImageSet:
    """The `split` of the data set `cfg` names, in memory; `num_train` caps the train split."""
    if cfg.name == "shapes":
        n_train = min(10_000, cfg.num_train or 10_000)  # generate only what is used
        ds = (
            make_shapes(n_train, cfg.seed, cfg.image_size)
            if split == "train"
            else make_shapes(2_000, cfg.seed + 1_000_003, cfg.image_size)
        )
    elif cfg.name == "digits":
        ds = _digits(cfg, split)
    elif cfg.name == "cifar10":
        ds = _cifar10(cfg, split)
    elif cfg.name == "stl10":
        ds = _stl10(cfg, split)
    elif cfg.name == "imagefolder":
        ds = _imagefolder(cfg, split)
    else:
        raise DatasetError(f"unknown data set {cfg.name!r}; choose one of {', '.join(DATASETS)}")
    if split == "train" and cfg.num_train is not None and cfg.num_train < len(ds):
        n = cfg.num_train
        labels = ds.labels[:n] if ds.labels is not None else None
        ds = ImageSet(ds.name, ds.images[:n].contiguous(), labels, ds.classes)
    return ds
