"""Two checkpoints on the same images: how far their clusterings and maps agree.

Clusters are matched one-to-one by the Hungarian algorithm on their contingency table
(scipy's linear_sum_assignment); agreement is the share of images whose cluster in A is matched
to their cluster in B. Each checkpoint gets its own 2-D map (UMAP, as in `embedding_map`); B's
is aligned onto A's by Procrustes (rotation/reflection, scale, shift), and the remaining
disparity is the drift score: 0 for identical geometry, near 1 for unrelated maps.

Both models see exactly the same images: A's data set (or the one named) is loaded once and
B's features are taken on that very image set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.config import DataConfig
from models.embedding_map import checkpoint_hash, default_cache_dir, map_of
from models.evaluate import paired_contingency
from models.features import FeatureKey, Features, analysis_data, cached_features, load_inputs

DEFAULT_K = 10  # k-means K when neither model has prototypes and the data set has no classes
TOP_CHANGES = 20  # clusters listed as having gained or lost the most images
KMEANS_ITERS = 25

Progress = Callable[[float, str], None]
Matching = list[tuple[int, int, int]]


# --- clusterings ------------------------------------------------------------------------------
def match_clusters(a: np.ndarray, b: np.ndarray) -> tuple[Matching, float]:
    """Hungarian matching of A's clusters to B's: ([(cluster_a, cluster_b, shared)], agreement).

    Cluster ids may be any integers and the two sides may have different numbers of clusters;
    images in unmatched clusters count as disagreement. Pairs come sorted by shared count.
    """
    from scipy.optimize import linear_sum_assignment

    va, vb, table = paired_contingency(a, b)
    if table.size == 0:
        return [], 1.0
    rows, cols = linear_sum_assignment(table, maximize=True)
    pairs = [(int(va[r]), int(vb[c]), int(table[r, c])) for r, c in zip(rows, cols, strict=True)]
    pairs.sort(key=lambda p: (-p[2], p[0]))
    return pairs, float(sum(p[2] for p in pairs) / table.sum())


def cluster_changes(a: np.ndarray, b: np.ndarray, matching: Matching) -> list[dict[str, int]]:
    """For every cluster of A: its size, its partner in B (-1: none) and the partner's size."""
    count_b = dict(zip(*np.unique(b, return_counts=True), strict=True))
    partner = {ca: cb for ca, cb, _ in matching}
    out = []
    for ca, n_a in zip(*np.unique(a, return_counts=True), strict=True):
        cb = partner.get(int(ca))
        n_b = int(count_b.get(cb, 0)) if cb is not None else 0
        out.append(
            {
                "cluster_a": int(ca),
                "cluster_b": -1 if cb is None else int(cb),
                "images_a": int(n_a),
                "images_b": n_b,
                "change": n_b - int(n_a),
            }
        )
    return out


def gained_lost(
    a: np.ndarray, b: np.ndarray, matching: Matching, top: int = TOP_CHANGES
) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """A's clusters whose matched B cluster holds more (gained) or fewer (lost) images.

    Largest changes first, at most `top` of each; an A cluster without a partner lost all.
    """
    changes = cluster_changes(a, b, matching)
    gained = sorted((c for c in changes if c["change"] > 0), key=lambda c: -c["change"])
    lost = sorted((c for c in changes if c["change"] < 0), key=lambda c: c["change"])
    return gained[:top], lost[:top]


def kmeans_assignments(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Spherical-ish k-means (faiss) of the L2-normalised rows of x: (N,) cluster ids.

    K is clipped to [2, N // 2] so every cluster can hold at least two points.
    """
    import faiss

    z = torch.nn.functional.normalize(torch.as_tensor(np.asarray(x, np.float32)), dim=1)
    z_np = np.ascontiguousarray(z.numpy())
    k = max(1, min(k, z_np.shape[0] // 2)) if z_np.shape[0] >= 4 else 1
    if k == 1:
        return np.zeros(z_np.shape[0], dtype=np.int64)
    km = faiss.Kmeans(z_np.shape[1], k, niter=KMEANS_ITERS, seed=seed, verbose=False)
    km.train(z_np)
    return km.index.search(z_np, 1)[1][:, 0].astype(np.int64)


def num_prototypes(features: Features, method: str) -> int | None:
    """K of a model's prototypes; None without (the supervised baseline's classes are not)."""
    if method == "supervised" or features.logits is None or features.logits.shape[1] == 0:
        return None
    return int(features.logits.shape[1])


def assignments(features: Features, method: str, k: int, seed: int = 0) -> np.ndarray:
    """Argmax over the prototypes, or k-means (K = k) of the backbone features without them."""
    if num_prototypes(features, method) is not None:
        assert features.logits is not None
        return features.logits.argmax(dim=1).numpy().astype(np.int64)
    return kmeans_assignments(features.backbone.numpy(), k, seed)


def compare_clusterings(assign_a: np.ndarray, assign_b: np.ndarray) -> dict[str, Any]:
    """Agreement after Hungarian matching, NMI, ARI, the matching and who gained or lost.

    Pure: two (N,) arrays of cluster ids of the same images, in the same order.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    a, b = np.asarray(assign_a), np.asarray(assign_b)
    matching, agreement = match_clusters(a, b)
    gained, lost = gained_lost(a, b, matching)
    return {
        "num_images": int(a.size),
        "num_clusters_a": int(np.unique(a).size),
        "num_clusters_b": int(np.unique(b).size),
        "agreement": agreement,
        "nmi": float(normalized_mutual_info_score(a, b)),
        "ari": float(adjusted_rand_score(a, b)),
        "matching": [list(p) for p in matching],
        "gained": gained,
        "lost": lost,
    }


# --- maps -------------------------------------------------------------------------------------
def procrustes_align(map_a: np.ndarray, map_b: np.ndarray) -> tuple[np.ndarray, float]:
    """B's map rotated (or mirrored), scaled and shifted onto A's, in A's frame; the disparity.

    The disparity is scipy's: the sum of squared differences after both are centred and scaled
    to unit norm, so it lies in [0, 1] whatever the maps' scales. Mirroring is allowed because
    UMAP's orientation is arbitrary.
    """
    from scipy.spatial import procrustes

    a = np.asarray(map_a, dtype=np.float64)
    b = np.asarray(map_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"maps must have the same (N, 2) shape: {a.shape} vs {b.shape}")
    if a.shape[0] < 3 or np.allclose(a, a[0]) or np.allclose(b, b[0]):
        # scipy cannot scale a single point to unit norm; such maps carry no geometry.
        return b.copy(), 0.0 if np.allclose(a, b) else 1.0
    _, aligned, disparity = procrustes(a, b)
    # Back into A's frame: procrustes centred A and scaled it to unit Frobenius norm.
    mean_a = a.mean(axis=0)
    return aligned * np.linalg.norm(a - mean_a) + mean_a, float(disparity)


def map_pair(
    a: str | Path,
    b: str | Path,
    features_a: Features,
    features_b: Features,
    data: DataConfig,
    split: str,
    cache_dir: Path,
    temperatures: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, float]:
    """Both maps (B's aligned onto A's) and the disparity.

    Each map is Explore's map of that checkpoint on these images (`embedding_map.map_of`), so
    a checkpoint already opened on Explore is not mapped again.
    """
    (arrays_a, _), (arrays_b, _) = (
        map_of(checkpoint_hash(ckpt), feats, data, split, cache_dir, temperature)
        for ckpt, feats, temperature in (
            (a, features_a, temperatures[0]),
            (b, features_b, temperatures[1]),
        )
    )
    aligned_b, disparity = procrustes_align(arrays_a["xy"], arrays_b["xy"])
    return arrays_a["xy"], aligned_b, disparity


def _points(indices: torch.Tensor, xy: np.ndarray, assign: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"index": int(i), "x": float(x), "y": float(y), "cluster": int(c)}
        for i, (x, y), c in zip(indices.tolist(), xy, assign, strict=True)
    ]


# --- metrics ----------------------------------------------------------------------------------
def _numeric(report: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in report.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def metric_deltas(report_a: dict[str, Any], report_b: dict[str, Any]) -> dict[str, dict]:
    """{metric: {a, b, delta = b − a}} for every numeric scalar both reports hold."""
    na, nb = _numeric(report_a), _numeric(report_b)
    return {k: {"a": na[k], "b": nb[k], "delta": nb[k] - na[k]} for k in sorted(na.keys() & nb)}


def _data_warnings(data_a: DataConfig, data_b: DataConfig) -> list[str]:
    """Where B's own version of the data set differs from the images both were compared on."""
    differ = [f for f in ("seed", "image_size") if getattr(data_a, f) != getattr(data_b, f)]
    if data_a.name != data_b.name or not differ:
        return []
    return [
        f"B was trained with a different data.{'/'.join(differ)}: clusters and maps use A's "
        "images for both, but each checkpoint's diagnostics (metric_deltas) use its own"
    ]


# --- the entry point --------------------------------------------------------------------------
def compare_checkpoints(
    a: str | Path,
    b: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    max_images: int | None = 2000,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    amp: str = "auto",
    feature_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Agreement, NMI, ARI, matched clusters, gained/lost, metric deltas and aligned maps.

    Both checkpoints are evaluated on the same images: `dataset` / `data_root`, else the data
    set A was trained on. Models without prototypes are clustered by k-means (faiss) with the
    other model's K, else the number of classes, else DEFAULT_K. `metric_deltas` holds
    b − a of every numeric scalar of the two `diagnose_checkpoint` reports. Raises
    CheckpointError, DatasetError, or ValueError for bad arguments.
    """
    from models.checkpoints import load_model
    from models.diagnostics import diagnose_checkpoint

    report = progress or (lambda f, m: None)

    def part(lo: float, hi: float) -> Progress:
        return lambda f, m: report(lo + (hi - lo) * f, m)

    checkpoint_hash(b)  # fail on a missing B before the slow part
    loaded_b = load_model(b)  # and on a bad one
    ia = load_inputs(a, dataset, data_root, split, max_images, part(0.0, 0.2), amp, feature_cache)
    fa = ia.features
    _, side_b = analysis_data(loaded_b, ia.data.name, ia.data.root)
    fb = cached_features(
        FeatureKey(b, ia.data, split, side_b, amp),
        lambda: ia.images,
        lambda: loaded_b.model,
        max_images,
        feature_cache,
        part(0.2, 0.4),
        what="features of B",
    )
    method_a, method_b = ia.loaded.config.method, loaded_b.config.method
    ka, kb = num_prototypes(fa, method_a), num_prototypes(fb, method_b)
    k_fallback = len(ia.images.classes or []) or DEFAULT_K
    assign_a = assignments(fa, method_a, ka or kb or k_fallback)
    assign_b = assignments(fb, method_b, kb or ka or k_fallback)

    name, root = ia.data.name, ia.data.root
    # The two reports read the features just computed (or cached) from the shared cache.
    diag_a = diagnose_checkpoint(
        a, name, root, split, max_images, None, part(0.4, 0.55), amp, feature_cache
    )
    diag_b = diagnose_checkpoint(
        b, name, root, split, max_images, None, part(0.55, 0.7), amp, feature_cache
    )

    report(0.7, "maps")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    temps = (ia.loaded.config.prediction_temperature, loaded_b.config.prediction_temperature)
    xy_a, xy_b, disparity = map_pair(a, b, fa, fb, ia.data, split, folder, temps)
    report(1.0, "done")
    return {
        "a": str(a),
        "b": str(b),
        "dataset": name,
        "data_root": ia.data.root,
        "split": split,
        "clustering_a": "prototypes" if ka else "kmeans",
        "clustering_b": "prototypes" if kb else "kmeans",
        **compare_clusterings(assign_a, assign_b),
        "disparity": disparity,
        "metric_deltas": metric_deltas(diag_a, diag_b),
        "verdict_a": diag_a.get("verdict"),
        "verdict_b": diag_b.get("verdict"),
        "warnings": _data_warnings(ia.data, loaded_b.config.data),
        "map_a": _points(fa.indices, xy_a, assign_a),
        "map_b": _points(fb.indices, xy_b, assign_b),
    }
