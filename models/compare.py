"""Two checkpoints on the same images: how far their clusterings and maps agree.

Clusters are matched one-to-one by the Hungarian algorithm on their contingency table
(scipy's linear_sum_assignment); agreement is the share of images whose cluster in A is matched
to their cluster in B. The two 2-D maps are aligned by Procrustes (B rotated, scaled and
shifted onto A), and the remaining disparity is the drift score: 0 for identical geometry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.features import Features, load_inputs

DEFAULT_K = 10  # k-means K for models without prototypes when the other has none either
TOP_CHANGES = 20  # prototypes listed as having gained or lost the most images


def _ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and each entry's position among them."""
    values, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return values, inverse


def match_clusters(a: np.ndarray, b: np.ndarray) -> tuple[list[tuple[int, int, int]], float]:
    """Hungarian matching of A's clusters to B's: ([(cluster_a, cluster_b, shared)], agreement).

    Cluster ids may be any integers and the two sides may have different numbers of clusters;
    unmatched clusters simply count as disagreement.
    """
    from scipy.optimize import linear_sum_assignment

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"assignments differ in length: {a.shape} vs {b.shape}")
    if a.size == 0:
        return [], 1.0
    va, ia = _ids(a)
    vb, ib = _ids(b)
    table = np.zeros((va.size, vb.size), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    pairs = [(int(va[r]), int(vb[c]), int(table[r, c])) for r, c in zip(rows, cols, strict=True)]
    pairs.sort(key=lambda p: -p[2])
    return pairs, float(sum(p[2] for p in pairs) / a.size)


def gained_lost(
    a: np.ndarray, b: np.ndarray, matching: list[tuple[int, int, int]]
) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """A's clusters whose matched B cluster holds more (gained) or fewer (lost) images.

    An A cluster with no partner in B lost all its images.
    """
    count_a = dict(zip(*np.unique(a, return_counts=True), strict=True))
    count_b = dict(zip(*np.unique(b, return_counts=True), strict=True))
    partner = {ca: cb for ca, cb, _ in matching}
    changes = []
    for ca, n_a in count_a.items():
        cb = partner.get(int(ca))
        n_b = int(count_b.get(cb, 0)) if cb is not None else 0
        changes.append(
            {
                "cluster_a": int(ca),
                "cluster_b": -1 if cb is None else int(cb),
                "images_a": int(n_a),
                "images_b": n_b,
                "change": n_b - int(n_a),
            }
        )
    gained = sorted((c for c in changes if c["change"] > 0), key=lambda c: -c["change"])
    lost = sorted((c for c in changes if c["change"] < 0), key=lambda c: c["change"])
    return gained[:TOP_CHANGES], lost[:TOP_CHANGES]


def procrustes_align(map_a: np.ndarray, map_b: np.ndarray) -> tuple[np.ndarray, float]:
    """B's map rotated, scaled and shifted onto A's (in A's coordinates), and the disparity.

    The disparity is scipy's: the sum of squared differences after both are centred and scaled
    to unit norm, so it lies in [0, 1] whatever the maps' scales.
    """
    from scipy.spatial import procrustes

    a = np.asarray(map_a, dtype=np.float64)
    b = np.asarray(map_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"maps must have the same (N, 2) shape: {a.shape} vs {b.shape}")
    if a.shape[0] < 3 or np.allclose(a, a[0]) or np.allclose(b, b[0]):
        return b.copy(), 0.0 if np.allclose(a, b) else 1.0
    _, aligned, disparity = procrustes(a, b)
    # Back into A's frame: procrustes centred A and scaled it to unit Frobenius norm.
    mean_a = a.mean(axis=0)
    norm_a = np.linalg.norm(a - mean_a)
    return aligned * norm_a + mean_a, float(disparity)


def _assignments(feats: Features, method: str, k: int, seed: int = 0) -> np.ndarray:
    """Argmax over the prototypes, or k-means (faiss) clusters of the embedding without them."""
    if feats.logits is not None and method != "supervised":
        return feats.logits.argmax(dim=1).numpy()
    import faiss

    x = torch.nn.functional.normalize(feats.backbone, dim=1).numpy().astype(np.float32)
    k = max(2, min(k, x.shape[0] // 2))
    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, verbose=False)
    km.train(x)
    return km.index.search(x, 1)[1][:, 0].astype(np.int64)


def _numeric(report: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in report.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v is not None
    }


def metric_deltas(report_a: dict[str, Any], report_b: dict[str, Any]) -> dict[str, dict]:
    """{metric: {a, b, delta}} for every numeric scalar both reports hold."""
    na, nb = _numeric(report_a), _numeric(report_b)
    return {k: {"a": na[k], "b": nb[k], "delta": nb[k] - na[k]} for k in sorted(na.keys() & nb)}


def compare_checkpoints(
    a: str | Path,
    b: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    max_images: int | None = 2000,
    cache_dir: str | Path | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Agreement, NMI, ARI, matched clusters, gained/lost, metric deltas and aligned maps.

    Both checkpoints are evaluated on the same images: `dataset` / `data_root`, else the data
    set A was trained on.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from models.diagnostics import diagnose_checkpoint
    from models.embedding_map import embedding_map

    report = progress or (lambda f, m: None)

    def part(lo: float, hi: float) -> Callable[[float, str], None]:
        return lambda f, m: report(lo + (hi - lo) * f, m)

    report(0.0, "loading A")
    ia = load_inputs(a, dataset, data_root, split, max_images, part(0.0, 0.1))
    dataset, data_root = ia.data.name, ia.data.root
    ib = load_inputs(b, dataset, data_root, split, max_images, part(0.1, 0.2))
    if ia.features.num_images != ib.features.num_images:
        raise ValueError("the two checkpoints were evaluated on different numbers of images")
    ka = ia.features.logits.shape[1] if ia.features.logits is not None else None
    kb = ib.features.logits.shape[1] if ib.features.logits is not None else None
    k_default = ka or kb or DEFAULT_K
    assign_a = _assignments(ia.features, ia.loaded.config.method, k_default)
    assign_b = _assignments(ib.features, ib.loaded.config.method, kb or k_default)
    matching, agreement = match_clusters(assign_a, assign_b)
    gained, lost = gained_lost(assign_a, assign_b, matching)
    report(0.25, "diagnostics of A and B")
    diag_a = diagnose_checkpoint(a, dataset, data_root, split, max_images, None, part(0.25, 0.4))
    diag_b = diagnose_checkpoint(b, dataset, data_root, split, max_images, None, part(0.4, 0.55))
    report(0.55, "maps")
    kwargs = {"split": split, "max_images": max_images, "cache_dir": cache_dir}
    map_a = embedding_map(a, dataset, data_root, progress=part(0.55, 0.75), **kwargs)
    map_b = embedding_map(b, dataset, data_root, progress=part(0.75, 0.95), **kwargs)
    xy_a = np.array([[p["x"], p["y"]] for p in map_a["points"]])
    xy_b = np.array([[p["x"], p["y"]] for p in map_b["points"]])
    aligned_b, disparity = procrustes_align(xy_a, xy_b)
    report(1.0, "done")

    def points(m: dict[str, Any], xy: np.ndarray, assign: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "index": p["index"],
                "x": float(x),
                "y": float(y),
                "label": p["label"],
                "cluster": int(c),
            }
            for p, (x, y), c in zip(m["points"], xy, assign, strict=True)
        ]

    return {
        "a": str(a),
        "b": str(b),
        "dataset": dataset,
        "split": split,
        "num_images": int(assign_a.size),
        "agreement": agreement,
        "nmi": float(normalized_mutual_info_score(assign_a, assign_b)),
        "ari": float(adjusted_rand_score(assign_a, assign_b)),
        "disparity": disparity,
        "num_clusters_a": int(np.unique(assign_a).size),
        "num_clusters_b": int(np.unique(assign_b).size),
        "matching": [list(p) for p in matching],
        "gained": gained,
        "lost": lost,
        "metric_deltas": metric_deltas(diag_a, diag_b),
        "verdict_a": diag_a.get("verdict"),
        "verdict_b": diag_b.get("verdict"),
        "map_a": points(map_a, xy_a, assign_a),
        "map_b": points(map_b, aligned_b, assign_b),
    }
