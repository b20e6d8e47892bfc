"""2-D maps of a checkpoint's embedding: PCA, then UMAP (umap-learn), cached on disk.

UMAP is fitted on at most `max_fit` points (a seeded random subset) and places the rest with
`transform`, so a 50k-image split costs about as much as a 5k one. Every point keeps its data
set index, so a point on a plot always leads back to its image.

Results are cached as .npz files (never pickle) keyed by the checkpoint's content hash, the
data set, split and every parameter; a second request for the same map reads the file and does
not touch the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.features import file_sha256, load_inputs, temperature_of

# numba-compiled UMAP is not re-entrant: two maps computed at once in one process (two HTTP
# requests, say) can crash or corrupt each other. One process-wide lock is the only module
# state here, and it exists for that reason alone.
_UMAP_LOCK = threading.Lock()

CACHE_VERSION = 1  # bump when the cached content changes meaning
PCA_DIMS = 50


def default_cache_dir() -> Path:
    """$PROTOSCOPE_CACHE/umap, else ~/.cache/protoscope/umap."""
    base = os.environ.get("PROTOSCOPE_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "protoscope"
    return root / "umap"


def pca_reduce(x: np.ndarray, max_dims: int = PCA_DIMS, seed: int = 0) -> np.ndarray:
    """PCA to at most `max_dims` dimensions (UMAP's neighbour search is faster and steadier)."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float32)
    dims = min(max_dims, x.shape[0], x.shape[1])
    if dims >= x.shape[1]:
        return x
    return PCA(n_components=dims, random_state=seed).fit_transform(x).astype(np.float32)


def umap_2d(
    x: np.ndarray,
    max_fit: int = 5000,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """(N, D) features → (N, 2) coordinates: PCA, UMAP fitted on ≤ max_fit points, transform.

    Tiny inputs (fewer than 4 points) get their first two principal components instead, since
    UMAP needs a neighbourhood graph.
    """
    if max_fit < 2:
        raise ValueError(f"max_fit must be ≥ 2, got {max_fit}")
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32)
    reduced = pca_reduce(x, seed=seed)
    if n < 4:
        out = np.zeros((n, 2), dtype=np.float32)
        out[:, : min(2, reduced.shape[1])] = reduced[:, :2]
        return out
    import umap  # imported here: numba's start-up cost is paid only by callers that map

    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=min(n, max_fit), replace=False))
    model = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, len(fit_idx) - 1)),
        min_dist=min_dist,
        random_state=seed,
        # random_state makes UMAP single-threaded; on 2 cores that costs little and makes maps
        # reproducible, which the cache and the comparison rely on.
    )
    coords = np.zeros((n, 2), dtype=np.float32)
    with _UMAP_LOCK, warnings.catch_warnings():
        # "n_jobs overridden by setting random_state": expected, see the comment above.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        coords[fit_idx] = model.fit_transform(reduced[fit_idx])
        rest = np.setdiff1d(np.arange(n), fit_idx)
        if rest.size:
            coords[rest] = model.transform(reduced[rest])
    return coords


def cache_key(checkpoint_hash: str, **params: Any) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "ckpt": checkpoint_hash, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic write: a crash mid-write leaves no half file for the next reader."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is recomputed, not trusted


def _points(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    def opt_int(v: int) -> int | None:
        return int(v) if v >= 0 else None

    def opt_float(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    return [
        {
            "index": int(i),
            "x": float(x),
            "y": float(y),
            "label": opt_int(lab),
            "cluster": opt_int(c),
            "confidence": opt_float(conf),
            "phi": opt_float(p),
        }
        for i, x, y, lab, c, conf, p in zip(
            arrays["index"],
            arrays["xy"][:, 0],
            arrays["xy"][:, 1],
            arrays["label"],
            arrays["cluster"],
            arrays["confidence"],
            arrays["phi"],
            strict=True,
        )
    ]


def embedding_map(
    checkpoint: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    max_images: int | None = 5000,
    max_fit: int = 5000,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """The 2-D map of `checkpoint`'s backbone features on a split, with per-point metadata.

    Returns {"points": [{index, x, y, label, cluster, confidence, phi}], "classes", "params",
    "cached", "seconds", "dataset", "split", "num_points"}: cluster = argmax over the
    prototypes, confidence = its softmax probability, phi = PCL's φ of that cluster (None
    where they do not apply).
    """
    t0 = time.perf_counter()
    report = progress or (lambda f, m: None)
    if not 2 <= n_neighbors <= 200:
        raise ValueError(f"n_neighbors must be in [2, 200], got {n_neighbors}")
    if not 0.0 <= min_dist <= 1.0:
        raise ValueError(f"min_dist must be in [0, 1], got {min_dist}")
    params = {
        "dataset": dataset,
        "data_root": data_root,
        "split": split,
        "max_images": max_images,
        "max_fit": max_fit,
        "n_neighbors": n_neighbors,
        "min_dist": min_dist,
        "seed": seed,
    }
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    report(0.0, "hashing checkpoint")
    path = folder / f"map-{cache_key(file_sha256(checkpoint), **params)}.npz"
    arrays = _load(path) if path.exists() else None
    cached = arrays is not None
    if arrays is None:
        inputs = load_inputs(checkpoint, dataset, data_root, split, max_images, report)
        feats = inputs.features
        n = feats.num_images
        cluster = np.full(n, -1, dtype=np.int64)
        confidence = np.full(n, np.nan, dtype=np.float32)
        phi = np.full(n, np.nan, dtype=np.float32)
        if feats.logits is not None and inputs.loaded.config.method != "supervised":
            probs = torch.softmax(feats.logits / temperature_of(inputs.loaded.config), dim=1)
            conf, arg = probs.max(dim=1)
            cluster, confidence = arg.numpy(), conf.numpy().astype(np.float32)
            if feats.phi is not None:
                phi = feats.phi.numpy()[cluster].astype(np.float32)
        report(0.5, f"UMAP of {n} points")
        xy = umap_2d(feats.backbone.numpy(), max_fit, n_neighbors, min_dist, seed)
        classes = inputs.images.classes or []
        arrays = {
            "index": feats.indices.numpy(),
            "xy": xy,
            "label": feats.labels.numpy() if feats.labels is not None else np.full(n, -1),
            "cluster": cluster,
            "confidence": confidence,
            "phi": phi,
            "classes": np.array([str(c) for c in classes], dtype=np.str_),
            "dataset": np.array(inputs.data.name),
        }
        _save(path, arrays)
    report(1.0, "done")
    classes_out = [str(c) for c in arrays["classes"].tolist()]
    return {
        "points": _points(arrays),
        "classes": classes_out or None,
        "dataset": str(arrays["dataset"]),
        "split": split,
        "num_points": int(arrays["index"].shape[0]),
        "params": params,
        "cached": cached,
        "seconds": time.perf_counter() - t0,
    }
