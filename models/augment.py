"""Multi-crop augmentation on whole batches of tensors.

Per-image PIL transforms starve the model on a 2-core CPU, so every transform here acts on a
(B, 3, H, W) batch at once: crops, flips and rotations are one `grid_sample` with a per-sample
affine matrix; colour jitter uses per-sample factors. Written by hand because torchvision's v2
transforms draw one set of parameters per call, not one per sample of a batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from models.config import AugmentConfig

_GRAY = (0.299, 0.587, 0.114)


def _uniform(n: int, lo: float, hi: float, device: torch.device) -> Tensor:
    return torch.rand(n, device=device) * (hi - lo) + lo


def random_resized_crop(
    images: Tensor,
    size: int,
    scale: tuple[float, float],
    flip_p: float = 0.5,
    rotate_deg: float = 0.0,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Per-sample RandomResizedCrop (+ horizontal flip and rotation) of a float batch.

    images: (B, C, H, W) float; returns (B, C, size, size). `scale` is the crop's area as a
    fraction of the image, as in torchvision.
    """
    b, device = images.shape[0], images.device
    area = _uniform(b, scale[0], scale[1], device)
    log_ratio = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), device)
    aspect = torch.exp(log_ratio)
    # Side lengths as fractions of the image side (affine_grid works in [-1, 1] coordinates).
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(b, device=device) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, device=device) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, device=device) < flip_p, -1.0, 1.0)
    angle = (torch.rand(b, device=device) * 2 - 1) * math.radians(rotate_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([w * cos * flip, -h * sin, cx], dim=1),
            torch.stack([w * sin * flip, h * cos, cy], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta.to(images.dtype), [b, images.shape[1], size, size], False)
    # Reflection keeps rotated corners from turning into black wedges the model could key on.
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _rotate_hue(x: Tensor, turns: Tensor) -> Tensor:
    """Rotate hue by `turns` (fraction of a full turn, per sample) in YIQ space.

    A rotation of the chroma plane is a cheap, differentiable stand-in for an HSV hue shift.
    """
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    a = turns * 2 * math.pi
    cos, sin = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rot = torch.stack(
        [
            torch.stack([one, zero, zero], 1),
            torch.stack([zero, cos, -sin], 1),
            torch.stack([zero, sin, cos], 1),
        ],
        1,
    )  # (B, 3, 3)
    m = from_yiq @ rot @ to_yiq
    return torch.einsum("bij,bjhw->bihw", m, x)


def color_distortion(
    x: Tensor, strength: float, p: float, grayscale_p: float, hue: float | None = None
) -> Tensor:
    """SimCLR/SwAV colour distortion with per-sample factors, on a batch in [0, 1].

    brightness, contrast, saturation ∈ [1 − 0.8s, 1 + 0.8s], hue ∈ [−0.2s, 0.2s] turns (capped
    at half a turn), applied with probability p; then grayscale with probability grayscale_p.
    """
    b, device = x.shape[0], x.device
    if strength > 0 and p > 0:
        apply = (torch.rand(b, device=device) < p).float().view(b, 1, 1, 1)
        s = 0.8 * strength
        bright = _uniform(b, max(0.0, 1 - s), 1 + s, device).view(b, 1, 1, 1)
        contrast = _uniform(b, max(0.0, 1 - s), 1 + s, device).view(b, 1, 1, 1)
        sat = _uniform(b, max(0.0, 1 - s), 1 + s, device).view(b, 1, 1, 1)
        hue_max = min(0.5, 0.2 * strength) if hue is None else hue
        shift = _uniform(b, -hue_max, hue_max, device)
        y = x * bright
        mean = _gray(y).mean(dim=(2, 3), keepdim=True)
        y = (y - mean) * contrast + mean
        g = _gray(y)
        y = (y - g) * sat + g
        y = _rotate_hue(y, shift)
        x = apply * y.clamp(0, 1) + (1 - apply) * x
    if grayscale_p > 0:
        gray = (torch.rand(b, device=device) < grayscale_p).float().view(b, 1, 1, 1)
        x = gray * _gray(x).expand_as(x) + (1 - gray) * x
    return x


def gaussian_blur(x: Tensor, p: float, sigma: tuple[float, float]) -> Tensor:
    """Per-sample Gaussian blur with probability p, one separable depthwise conv for the batch."""
    b, c, h, w = x.shape
    if p <= 0:
        return x
    # Reflect padding needs radius < side; a σ that large has long flattened the crop anyway.
    radius = max(1, min(math.ceil(3 * sigma[1]), min(h, w) - 1))
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    sig = _uniform(b, sigma[0], sigma[1], x.device).to(x.dtype).view(b, 1)
    kernel = torch.exp(-(coords.view(1, -1) ** 2) / (2 * sig**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, 2r+1)
    kernel = kernel.repeat_interleave(c, dim=0)  # one kernel per (sample, channel)
    flat = x.reshape(1, b * c, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
    blurred = flat.view(b, c, h, w)
    apply = (torch.rand(b, device=x.device) < p).to(x.dtype).view(b, 1, 1, 1)
    return apply * blurred + (1 - apply) * x


class Normalize:
    """uint8 (B, 3, H, W) → float, scaled to [0, 1] and standardised per channel."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def standardise(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, images: Tensor) -> Tensor:
        return self.standardise(images.float() / 255.0)


class MultiCrop:
    """N large + M small crops per image, sizes relative to the data set's resolution.

    Returns a list of standardised float batches, the large crops first (SwAV's convention:
    the assignment crops are the first ones).
    """

    def __init__(self, cfg: AugmentConfig, image_size: int, normalize: Normalize) -> None:
        self.cfg = cfg
        self.large = max(8, round(cfg.large_frac * image_size))
        self.small = max(8, round(cfg.small_frac * image_size))
        self.normalize = normalize

    @property
    def sizes(self) -> list[int]:
        return [self.large] * self.cfg.num_large + [self.small] * self.cfg.num_small

    def _one(self, x: Tensor, size: int, scale: tuple[float, float]) -> Tensor:
        cfg = self.cfg
        crop = random_resized_crop(x, size, scale, cfg.flip_p, cfg.rotate_deg)
        crop = color_distortion(crop, cfg.jitter_strength, cfg.jitter_p, cfg.grayscale_p, cfg.hue)
        if cfg.blur_p > 0:
            crop = gaussian_blur(crop, cfg.blur_p, cfg.blur_sigma)
        return self.normalize.standardise(crop)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> list[Tensor]:
        x = images.float() / 255.0
        crops = [self._one(x, self.large, self.cfg.large_scale) for _ in range(self.cfg.num_large)]
        crops += [self._one(x, self.small, self.cfg.small_scale) for _ in range(self.cfg.num_small)]
        return crops
