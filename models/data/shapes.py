"""`shapes`: the procedural default data set, rendered in numpy (no download, any size)."""

from __future__ import annotations

import math

import numpy as np
import torch

from models.data.image_set import ImageSet

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
