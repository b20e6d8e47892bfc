"""The in-memory image set every data set becomes, its statistics and the shared resizing.

Everything becomes an `ImageSet` — (N, 3, H, W) uint8 images, optional labels — so the trainer
can gather and augment whole batches of tensors, and every item yields its index, so a point on
a plot can always be traced back to its image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

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


# --- shared by the loaders ------------------------------------------------------------------
def resize_uint8(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
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


def seeded_perm(n: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
