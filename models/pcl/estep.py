"""PCL's E-step: faiss k-means of the key encoder's features, once per K, and each cluster's
concentration φ (how tight it is). Differences from the official code: models/pcl/__init__.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# The official settings (faiss's default is 256): at most this many points per centroid train
# k-means, a random subsample beyond, which bounds the E-step's cost on large data sets.
MAX_POINTS_PER_CENTROID = 1000
MIN_POINTS_PER_CENTROID = 10  # official value; lowered for small data sets, see run_kmeans


def concentration(
    distances: Tensor,
    assignments: Tensor,
    num_clusters: int,
    alpha: float = 10.0,
    temperature: float = 0.2,
) -> Tensor:
    """Per-cluster concentration φ, as PCL estimates it.

    Args:
        distances: (N,) each point's Euclidean (not squared) distance to its centroid.
        assignments: (N,) the cluster of each point, in [0, num_clusters).
        num_clusters: K.
        alpha: smoothing α in ln(Z + α); it keeps small clusters from getting a tiny φ.
        temperature: τ, the mean of the result.

    Returns:
        (K,) float32 on the device of `distances`: φ_c = mean distance / ln(Z_c + α), where
        clusters with ≤ 1 point take the largest φ of the others (a lone point has no spread to
        measure), then clipped to the [10th, 90th] percentile (numpy's linear interpolation)
        so outliers cannot dominate, then rescaled so that mean φ = τ.
    """
    if distances.shape != assignments.shape or distances.dim() != 1:
        raise ValueError(
            f"distances and assignments must both be (N,), got {tuple(distances.shape)} "
            f"and {tuple(assignments.shape)}"
        )
    d = distances.detach().to(torch.float64)  # float64: percentiles and means match numpy's
    a = assignments.detach().to(device=d.device, dtype=torch.long)
    sizes = torch.bincount(a, minlength=num_clusters).to(d.dtype)
    if sizes.numel() != num_clusters:
        raise ValueError(f"assignments reach {sizes.numel() - 1}, beyond K = {num_clusters}")
    sums = torch.zeros(num_clusters, dtype=d.dtype, device=d.device).scatter_add_(0, a, d)
    phi = sums / sizes.clamp_min(1) / torch.log(sizes + alpha)
    measured = sizes > 1
    if not measured.any():  # only singletons and empty clusters: nothing to tell them apart
        return torch.full((num_clusters,), temperature, device=d.device)
    phi = torch.where(measured, phi, phi[measured].max())
    bounds = torch.quantile(phi, torch.tensor([0.1, 0.9], dtype=d.dtype, device=d.device))
    phi = phi.clamp(bounds[0], bounds[1])
    mean = phi.mean()
    if not mean > 0:  # every point sits on its centroid: all clusters equally (infinitely) tight
        return torch.full((num_clusters,), temperature, device=d.device)
    return (temperature * phi / mean).float()


@dataclass
class Clustering:
    """One k-means result of the E-step, everything a ProtoNCE term needs."""

    centroids: Tensor  # (K, d) float32, rows L2-normalised
    assignments: Tensor  # (N,) int64, the cluster of each training image (by data set index)
    phi: Tensor  # (K,) float32 concentration, mean τ
    sizes: Tensor  # (K,) int64 points per cluster

    @property
    def density(self) -> Tensor:
        """φ under the official code's name."""
        return self.phi

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def to(self, device: torch.device | str) -> Clustering:
        return Clustering(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.centroids, self.assignments, self.phi, self.sizes


def _flat_l2_index(d: int, device: torch.device) -> tuple[Any, Any]:
    """An exact L2 index on the GPU of `device` when faiss has GPUs, else on the CPU.

    Returns (index, gpu_resources); keep the resources alive as long as the index.
    """
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if device.type == "cuda" and has_gpu:
        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.useFloat16 = False  # as upstream: fp16 distances would blur φ
        cfg.device = device.index if device.index is not None else torch.cuda.current_device()
        return faiss.GpuIndexFlatL2(res, d, cfg), res
    return faiss.IndexFlatL2(d), None


def run_kmeans(
    features: Tensor,
    num_clusters: Sequence[int],
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    alpha: float = 10.0,
    temperature: float = 0.2,
) -> list[Clustering]:
    """The E-step: faiss k-means for each K, then each cluster's φ.

    Args:
        features: (N, d) features of the whole training set in index order (the key
            encoder's L2-normalised outputs).
        num_clusters: the K of each clustering, each ≤ N.
        niter, nredo: k-means iterations and restarts (faiss keeps the best restart).
        seed: the i-th clustering uses seed + i (upstream: seed = index of K).
        alpha, temperature: passed to `concentration`.

    Returns:
        One Clustering per K, its tensors on the device of `features`. φ is computed from the
        distances to the raw centroids (as upstream); the stored centroids are then
        L2-normalised, since ProtoNCE compares them with unit-norm queries.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be (N, d), got {tuple(features.shape)}")
    x = np.ascontiguousarray(features.detach().float().cpu().numpy())
    n, d = x.shape
    out: list[Clustering] = []
    for i, k in enumerate(num_clusters):
        k = int(k)
        if not 1 <= k <= n:
            raise ValueError(f"cannot make {k} clusters from {n} points; lower num_clusters")
        km = faiss.Clustering(d, k)
        km.niter = niter
        km.nredo = nredo
        km.seed = seed + i
        km.verbose = False
        km.max_points_per_centroid = MAX_POINTS_PER_CENTROID
        km.min_points_per_centroid = max(1, min(MIN_POINTS_PER_CENTROID, n // k))
        index, _res = _flat_l2_index(d, features.device)
        km.train(x, index)
        centroids = faiss.vector_to_array(km.centroids).reshape(k, d).astype(np.float32)
        index.reset()  # search the final centroids explicitly, whatever the index holds now
        index.add(centroids)
        sq_dist, assign = index.search(x, 1)
        # faiss returns squared distances, a hair below 0 from rounding when a point sits on
        # its centroid; φ wants Euclidean ones.
        dist_t = torch.from_numpy(np.sqrt(np.maximum(sq_dist[:, 0], 0.0)))
        assign_t = torch.from_numpy(assign[:, 0].astype(np.int64))
        phi = concentration(dist_t, assign_t, k, alpha, temperature)
        out.append(
            Clustering(
                centroids=F.normalize(torch.from_numpy(centroids), dim=1),
                assignments=assign_t,
                phi=phi,
                sizes=torch.bincount(assign_t, minlength=k),
            ).to(features.device)
        )
    return out
