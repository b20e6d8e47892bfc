"""Tiny numpy versions of the two ideas the Learn page teaches: Sinkhorn codes and PCL's φ.

The frontend imports nothing from `models/`; these are independent, readable re-statements that
run instantly in the browser session. They follow the papers' formulas, not the torch code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
ScoreKind = Literal["random", "clustered", "one favourite prototype"]
SCORE_KINDS: tuple[ScoreKind, ...] = ("random", "clustered", "one favourite prototype")

# PCL's smoothing constant in φ = Σ‖v − c‖ / (Z ln(Z + α)); the paper and code use 10.
PCL_ALPHA = 10.0


def _logsumexp(x: FloatArray, axis: int | None = None) -> FloatArray:
    """log Σ exp(x) without overflow: shift by the maximum first."""
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if axis is not None else out.reshape(())


def _unit_rows(x: FloatArray) -> FloatArray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


def example_scores(kind: ScoreKind, batch: int, num_prototypes: int, seed: int = 0) -> FloatArray:
    """Cosine scores (B × K) between L2-normalised embeddings and prototypes, as SwAV sees them.

    random: unrelated directions, scores near 0. clustered: every sample sits near one of the
    prototypes. one favourite prototype: every sample is closest to prototype 0, the situation
    that collapses without equipartition.
    """
    rng = np.random.default_rng(seed)
    dim = 16
    prototypes = _unit_rows(rng.normal(size=(num_prototypes, dim)))
    if kind == "random":
        z = rng.normal(size=(batch, dim))
    elif kind == "clustered":
        centres = rng.integers(0, num_prototypes, size=batch)
        z = prototypes[centres] * 3.0 + rng.normal(size=(batch, dim)) * 0.6
    elif kind == "one favourite prototype":
        z = prototypes[[0] * batch] * 3.0 + rng.normal(size=(batch, dim)) * 0.6
    else:
        raise ValueError(f"unknown kind {kind!r}; choose one of {SCORE_KINDS}")
    return _unit_rows(z) @ prototypes.T


def softmax(scores: FloatArray, temperature: float) -> FloatArray:
    """Row-wise softmax(scores / temperature): what the model predicts for each sample."""
    logits = scores / temperature
    return np.exp(logits - _logsumexp(logits, axis=1))


def sinkhorn(scores: FloatArray, epsilon: float, n_iters: int) -> FloatArray:
    """SwAV's Sinkhorn-Knopp codes (B × K), each row summing to 1, computed in log space.

    Same steps as the official algorithm (Q = exp(scores/ε)ᵀ, normalise the total, then
    alternately make every prototype row sum to 1/K and every sample column sum to 1/B, finally
    × B), but every normalisation is a subtraction of a log-sum-exp, so ε = 0.001 stays finite
    where exp(1/ε) would overflow.
    """
    if epsilon <= 0:
        raise ValueError("epsilon must be > 0")
    b, k = scores.shape
    log_q = scores.T / epsilon  # K × B
    log_q = log_q - _logsumexp(log_q)
    for _ in range(n_iters):
        log_q = log_q - _logsumexp(log_q, axis=1) - np.log(k)  # each prototype gets 1/K
        log_q = log_q - _logsumexp(log_q, axis=0) - np.log(b)  # each sample gets 1/B
    return (np.exp(log_q) * b).T


@dataclass(frozen=True)
class ToyClustering:
    """A 2-D clustering for the φ explainer: points, their cluster, centroids and φ per cluster."""

    points: FloatArray  # N × 2
    assignments: NDArray[np.int64]  # N
    centroids: FloatArray  # C × 2
    phi: FloatArray  # C, raw φ (before PCL's clip and rescale)
    sizes: NDArray[np.int64]  # C


def make_toy_points(
    spreads: list[float], sizes: list[int], seed: int = 0
) -> tuple[FloatArray, NDArray[np.int64]]:
    """Gaussian blobs on a circle: blob c has `sizes[c]` points with std `spreads[c]`."""
    if len(spreads) != len(sizes):
        raise ValueError("one spread per cluster size")
    rng = np.random.default_rng(seed)
    pts: list[FloatArray] = []
    labels: list[NDArray[np.int64]] = []
    n = len(sizes)
    for c, (spread, size) in enumerate(zip(spreads, sizes, strict=True)):
        angle = 2 * np.pi * c / max(n, 1)
        centre = np.array([np.cos(angle), np.sin(angle)]) * 4.0
        pts.append(centre + rng.normal(size=(size, 2)) * spread)
        labels.append(np.full(size, c, dtype=np.int64))
    return np.concatenate(pts), np.concatenate(labels)


def concentration(
    points: FloatArray, assignments: NDArray[np.int64], alpha: float = PCL_ALPHA
) -> ToyClustering:
    """φ_c = Σ_{v∈c} ‖v − c‖ / (Z_c ln(Z_c + α)) for each cluster c, with c its mean point.

    Raw φ only: PCL then fills empty clusters with the largest φ, clips to the 10th–90th
    percentile and rescales to mean τ; the explainer shows the formula itself.
    """
    num = int(assignments.max()) + 1 if assignments.size else 0
    centroids = np.zeros((num, points.shape[1]))
    sizes = np.bincount(assignments, minlength=num).astype(np.int64)
    phi = np.zeros(num)
    for c in range(num):
        member = points[assignments == c]
        if len(member) == 0:
            continue
        centroids[c] = member.mean(axis=0)
        dist = np.linalg.norm(member - centroids[c], axis=1)
        phi[c] = dist.sum() / (len(member) * np.log(len(member) + alpha))
    return ToyClustering(points, assignments, centroids, phi, sizes)
