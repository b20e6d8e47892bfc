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
RGB = tuple[float, float, float]


class DatasetError(ValueError):
    """A data set cannot be loaded; the message names the path or name and what was expected."""


# eq=False: a generated __eq__ would compare tensors (ambiguous) and drop __hash__.
@dataclass(eq=False)
class ImageSet(Dataset):
    """Square RGB images held in memory, with optional integer labels."""

    name: str
    images: Tensor  # uint8 (N, 3, H, W), contiguous
    labels: Tensor | None  # int64 (N,), None for unlabelled data
    classes: list[str] | None

    def __post_init__(self) -> None:
        # Fail here, at construction, rather than deep inside a training step.
        im = self.images
        if (
            im.dtype != torch.uint8
            or im.ndim != 4
            or im.shape[1] != 3
            or im.shape[2] != im.shape[3]
        ):
            raise ValueError(f"images must be uint8 (N, 3, H, H), got {im.dtype} {tuple(im.shape)}")
        self.images = im.contiguous()
        if self.labels is not None:
            if self.labels.shape != (im.shape[0],):
                raise ValueError(f"labels must be ({im.shape[0]},), got {tuple(self.labels.shape)}")
            self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[int, Tensor, int]:
        index = int(index)
        label = int(self.labels[index]) if self.labels is not None else -1
        return index, self.images[index], label

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, indices: Tensor) -> ImageSet:
        """The images at `indices`, in that order (a copy)."""
        labels = self.labels[indices] if self.labels is not None else None
        return ImageSet(self.name, self.images[indices], labels, self.classes)


DATASETS: dict[str, str] = {
    "shapes": "procedural: 10 shape classes, random colour/position/scale/rotation (default)",
    "digits": "scikit-learn's bundled 8×8 handwritten digits, upsampled",
    "cifar10": "CIFAR-10 from a local folder (torchvision layout)",
    "stl10": "STL-10 (labelled train/test) from a local folder (torchvision layout)",
    "imagefolder": "any folder of images; sub-folders are classes (labels optional)",
}

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MEAN_STD: dict[str, tuple[RGB, RGB]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagefolder": _IMAGENET,
}


def dataset_mean_std(name: str) -> tuple[RGB, RGB]:
    """Per-channel mean and std used to standardise images of data set `name`.

    shapes and digits span the whole [0, 1] range by construction, so 0.5/0.5 maps them to
    [−1, 1]; the natural-image sets use their published statistics.
    """
    return _MEAN_STD.get(name, ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))


# --- shapes ---------------------------------------------------------------------------------
# Ten shapes that no rotation maps onto one another (no square vs diamond, no 6 vs 9).
SHAPES: tuple[str, ...] = (
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
SHAPES_TRAIN_SIZE = 10_000
SHAPES_TEST_SIZE = 2_000
# The test set's seed offset: a large prime, so no small train seed reproduces a test set.
SHAPES_TEST_SEED_OFFSET = 1_000_003
_MIN_CONTRAST = 0.4  # L2 distance between shape and background colour, RGB in [0, 1]
_NOISE_STD = 0.03
_GRADIENT = 0.12  # max background brightness change from the centre to an edge
# Supersamples per rendering chunk: small enough to stay in cache, bounded at any image size.
_CHUNK_SAMPLES = 1 << 16

# Rendering uses numpy, not torch: its element-wise ops are single-threaded, so they neither
# fight a busy machine's other processes (torch's thread pool can slow 30× on shared cores)
# nor touch torch's global thread settings.
FloatArray = np.ndarray


def _regular_polygon(u: FloatArray, v: FloatArray, sides: int, apothem: float) -> np.ndarray:
    """Inside a regular polygon: the intersection of `sides` half-planes (no atan2 needed)."""
    inside = np.ones(u.shape, dtype=bool)
    for k in range(sides):
        a = math.pi / 2 + math.pi / sides + 2 * math.pi * k / sides
        inside &= u * math.cos(a) + v * math.sin(a) <= apothem
    return inside


def _star(u: FloatArray, v: FloatArray, points: int, outer: float, inner: float) -> np.ndarray:
    """Inside a star polygon with straight edges between `outer` tips and `inner` notches."""
    sector = 2 * math.pi / points
    # Fold the angle into one half-sector: 0 on a tip's axis, sector/2 at a notch.
    phi = np.abs(np.remainder(np.arctan2(v, u), sector) - sector / 2)
    phi = sector / 2 - phi
    r = np.sqrt(u * u + v * v)
    x, y = r * np.cos(phi), r * np.sin(phi)
    # The edge from the tip (outer, 0) to the notch at angle sector/2; inside = origin's side.
    nx, ny = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    return (x - outer) * ny - y * (nx - outer) <= 0


def _inside(shape: str, u: FloatArray, v: FloatArray) -> np.ndarray:
    """Membership of canonical coordinates (u, v) in `shape`; every shape fits the unit disc."""
    if shape == "circle":
        return u * u + v * v <= 0.9**2
    if shape == "square":  # half-side 0.68: its corners reach 0.96
        return np.maximum(np.abs(u), np.abs(v)) <= 0.68
    if shape == "triangle":  # equilateral, circumradius 1
        return _regular_polygon(u, v, 3, apothem=0.5)
    if shape == "star":
        return _star(u, v, 5, outer=1.0, inner=0.45)
    if shape == "plus":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.27) & (av <= 0.92)) | ((av <= 0.27) & (au <= 0.92))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 0.95**2) & (r2 >= 0.55**2)
    if shape == "crescent":  # a disc minus an offset disc
        return (u * u + v * v <= 0.95**2) & ((u - 0.45) ** 2 + v * v > 0.75**2)
    if shape == "heart":  # the classic sextic heart curve, scaled into the unit disc
        x, y = u * 1.25, 0.25 - v * 1.25
        return (x * x + y * y - 1) ** 3 <= x * x * y**3
    if shape == "arrow":  # a shaft and a triangular head
        shaft = (u >= -0.95) & (u <= 0.1) & (np.abs(v) <= 0.2)
        head = (u >= 0.1) & (u <= 0.95) & (np.abs(v) <= 0.6 * (0.95 - u) / 0.85)
        return shaft | head
    if shape == "ellipse":  # aspect 0.44: far from a circle at any rotation
        return (u / 0.95) ** 2 + (v / 0.42) ** 2 <= 1
    raise ValueError(f"unknown shape {shape!r}")


def _contrasting_colours(num: int, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """Shape and background colours, uniform in RGB, redrawn until they differ enough.

    Both colours of a rejected pair are redrawn, so accepted pairs stay uniform over the
    allowed set and symmetric in shape/background; neither depends on the class.
    """
    fg, bg = rng.random((num, 3)), rng.random((num, 3))
    bad = np.linalg.norm(fg - bg, axis=1) < _MIN_CONTRAST
    while bad.any():  # ~15 % rejected per round: a handful of rounds
        n = int(bad.sum())
        fg[bad], bg[bad] = rng.random((n, 3)), rng.random((n, 3))
        bad = np.linalg.norm(fg - bg, axis=1) < _MIN_CONTRAST
    return fg.astype(np.float32), bg.astype(np.float32)


def _render_alpha(
    shape: str,
    cx: FloatArray,
    cy: FloatArray,
    angle: FloatArray,
    scale: FloatArray,
    size: int,
    ss: int,
) -> FloatArray:
    """Anti-aliased coverage (b, size, size): the inside-test averaged over ss × ss samples."""
    n = size * ss
    coords = ((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1).astype(np.float32)
    # Rotate and scale into the canonical frame. 1/scale is folded into the rotation, so the
    # full (b, n, n) grids cost one add each; the products are on rows and columns only.
    c = (np.cos(angle) / scale).astype(np.float32)[:, None, None]
    s = (np.sin(angle) / scale).astype(np.float32)[:, None, None]
    dx = coords[None, None, :] - cx.astype(np.float32)[:, None, None]  # (b, 1, n)
    dy = coords[None, :, None] - cy.astype(np.float32)[:, None, None]  # (b, n, 1)
    u = c * dx + s * dy
    v = c * dy - s * dx
    mask = _inside(shape, u, v)
    return mask.reshape(-1, size, ss, size, ss).mean(axis=(2, 4), dtype=np.float32)


def make_shapes(num: int, seed: int, size: int = 32, supersample: int = 3) -> ImageSet:
    """`num` images of the 10 `SHAPES`, balanced, deterministic by `seed`.

    Rotation (0–360°), scale, position, shape colour, background colour and its gradient are
    random and independent of the class, so only the shape tells the label.
    """
    if num < 1 or size < 4 or supersample < 1:
        raise ValueError(f"need num >= 1, size >= 4, supersample >= 1; got {num}, {size}")
    rng = np.random.default_rng(seed)
    k = len(SHAPES)
    labels = rng.permutation(np.arange(num) % k)  # balanced, then shuffled
    angle = rng.random(num) * (2 * math.pi)
    scale = 0.4 + rng.random(num) * 0.45  # shape radius / half-side
    # Shapes fit the unit disc of their frame: a centre within ±(1 − scale) keeps them inside.
    cx = (rng.random(num) * 2 - 1) * (1 - scale) * 0.95
    cy = (rng.random(num) * 2 - 1) * (1 - scale) * 0.95
    fg, bg = _contrasting_colours(num, rng)
    gradient = ((rng.random((num, 2)) * 2 - 1) * _GRADIENT).astype(np.float32)

    pix = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    images = np.empty((num, 3, size, size), dtype=np.uint8)
    chunk = max(1, _CHUNK_SAMPLES // (size * supersample) ** 2)
    # One class at a time: every image of a chunk runs the same inside-test.
    for c, shape in enumerate(SHAPES):
        members = np.flatnonzero(labels == c)
        for start in range(0, len(members), chunk):
            idx = members[start : start + chunk]
            alpha = _render_alpha(
                shape, cx[idx], cy[idx], angle[idx], scale[idx], size, supersample
            )[:, None]
            # A mild linear brightness ramp across the background, like uneven lighting.
            gx, gy = gradient[idx, 0, None, None], gradient[idx, 1, None, None]
            ramp = gx * pix[None, None, :] + gy * pix[None, :, None]  # (b, size, size)
            back = bg[idx, :, None, None] + ramp[:, None]
            img = back + alpha * (fg[idx, :, None, None] - back)
            img += rng.standard_normal(img.shape, dtype=np.float32) * _NOISE_STD
            images[idx] = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return ImageSet(
        "shapes", torch.from_numpy(images), torch.from_numpy(labels).long(), list(SHAPES)
    )


# --- shared helpers -------------------------------------------------------------------------
def _resize_uint8(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """Bilinear resize of uint8 (N, 3, h, w) to (N, 3, size, size), antialiased, in chunks."""
    if images.shape[-2] == size and images.shape[-1] == size:
        return images.contiguous()
    out = torch.empty(images.shape[0], 3, size, size, dtype=torch.uint8)
    for s in range(0, images.shape[0], chunk):
        x = images[s : s + chunk].float()
        # antialias only matters when shrinking; when enlarging it is plain bilinear.
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[s : s + chunk] = x.clamp(0, 255).round().to(torch.uint8)
    return out


def _seeded_perm(n: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


# --- digits ---------------------------------------------------------------------------------
def _digits(cfg: DataConfig, split: Split) -> ImageSet:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    d = load_digits()
    grey = torch.from_numpy(d.images).float() * (255.0 / 16.0)  # 17 grey levels 0..16
    x = grey.round().to(torch.uint8).unsqueeze(1).expand(-1, 3, -1, -1)
    y = torch.from_numpy(d.target).long()
    perm = _seeded_perm(len(y), cfg.seed)
    cut = int(0.8 * len(y))
    idx = perm[:cut] if split == "train" else perm[cut:]
    images = _resize_uint8(x[idx].contiguous(), cfg.image_size)
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


def _cifar10(cfg: DataConfig, split: Split) -> ImageSet:
    from torchvision.datasets import CIFAR10

    what = "the CIFAR-10 python batches (cifar-10-batches-py/)"
    root = _require_root(cfg, what)
    try:
        ds = CIFAR10(str(root), train=split == "train", download=cfg.download)
    except (RuntimeError, OSError) as e:  # "Dataset not found or corrupted", failed download
        raise _torchvision_error(root, what, e) from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # NHWC → NCHW
    labels = torch.tensor(ds.targets, dtype=torch.long)
    return ImageSet("cifar10", _resize_uint8(images, cfg.image_size), labels, list(ds.classes))


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


def _stl10(cfg: DataConfig, split: Split) -> ImageSet:
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
    return ImageSet("stl10", _resize_uint8(images, cfg.image_size), labels, classes)


# --- image folder ---------------------------------------------------------------------------
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

    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster for big files
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
        perm = _seeded_perm(len(files), seed).tolist()
        cut = min(len(files) - 1, max(1, round(0.9 * len(files))))
        chosen = perm[:cut] if split == "train" else perm[cut:]
        files = [files[i] for i in chosen]
        labels = [labels[i] for i in chosen] if labels is not None else None
    return root, files, labels, classes


def _imagefolder(cfg: DataConfig, split: Split) -> ImageSet:
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
    loaders = {"digits": _digits, "cifar10": _cifar10, "stl10": _stl10, "imagefolder": _imagefolder}
    if cfg.name not in loaders:
        raise DatasetError(f"unknown data set {cfg.name!r}; choose one of: {', '.join(DATASETS)}")
    ds = loaders[cfg.name](cfg, split)
    if cap is not None and cap < len(ds):
        # Files on disk are often sorted by class: a seeded random subset keeps every class.
        ds = ds.subset(_seeded_perm(len(ds), cfg.seed)[:cap].sort().values)
    return ds
