"""The batched tensor augmentations of models/augment.py."""

from __future__ import annotations

import torch

from models.augment import MultiCrop, Normalize, gaussian_blur
from models.config import AugmentConfig


def _spread(image: torch.Tensor) -> float:
    """Standard deviation (px) of a non-negative image's mass along its width."""
    profile = image.sum(dim=(0, 1, 2))
    xs = torch.arange(profile.numel(), dtype=profile.dtype)
    mean = (profile * xs).sum() / profile.sum()
    return float(((profile * (xs - mean) ** 2).sum() / profile.sum()).sqrt())


def test_blur_sigma_is_in_pixels_of_the_crop_as_in_the_papers() -> None:
    """σ 0.1–2.0 px at any crop size (SwAV / MoCo v2); it used to be up to 0.1 × side (22 px)."""
    assert AugmentConfig().blur_sigma == (0.1, 2.0)
    impulse = torch.zeros(1, 3, 96, 96)
    impulse[..., 48, 48] = 1.0
    for sigma in (0.5, 2.0):
        blurred = gaussian_blur(impulse, 1.0, (sigma, sigma))
        assert abs(_spread(blurred) - sigma) < 0.05
        assert torch.allclose(blurred.sum(), impulse.sum(), rtol=1e-4)  # blur keeps the mass

    seen: list[tuple[float, float]] = []
    import models.augment as augment

    real = augment.gaussian_blur

    def spy(x: torch.Tensor, p: float, sigma: tuple[float, float]) -> torch.Tensor:
        seen.append(sigma)
        return real(x, p, sigma)

    augment.gaussian_blur = spy  # type: ignore[assignment]
    try:
        cfg = AugmentConfig(blur_p=1.0, num_small=1)
        crops = MultiCrop(cfg, 224, Normalize((0.5,) * 3, (0.25,) * 3))(
            torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
        )
    finally:
        augment.gaussian_blur = real  # type: ignore[assignment]
    assert [c.shape[-1] for c in crops] == [224, 224, 112]
    assert seen == [(0.1, 2.0)] * 3  # the same range for the large and the small crops


def test_a_sigma_wider_than_the_crop_still_blurs() -> None:
    x = torch.rand(2, 3, 8, 8)
    out = gaussian_blur(x, 1.0, (40.0, 40.0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert out.std() < x.std()
