"""2-D maps of a checkpoint's embedding: PCA, then UMAP (umap-learn), cached on disk.

UMAP is fitted on at most `max_fit` points (a seeded random subset) and places the rest with
`transform`, so a 50k-image split costs about as much as a 5k one. Every point keeps its data
set index, so a point on a plot always leads back to its image.

Results are cached as .npz files (never pickle) keyed by the checkpoint's content hash, the
data set, split, image cap and every map parameter; a second request for the same map reads the
file and does not touch the model.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from models import disk_cache
from models.config import DataConfig
from models.disk_cache import (
    Arrays,
    cache_root,
    cached_arrays,
    checkpoint_hash,
    load_arrays,
    save_arrays,
)
from models.features import Features, Inputs, load_inputs

# numba-compiled UMAP is not re-entrant: two maps computed at once in one process (two HTTP
# requests, say) can crash or corrupt each other. This process-wide lock is the only module
# state here, and it exists for that reason alone.
_UMAP_LOCK = threading.Lock()

CACHE_VERSION = 4  # bump when the cached content changes meaning
PCA_DIMS = 50  # UMAP's neighbour search is faster and steadier on ≤ 50 principal components
UMAP_EPOCHS = 200  # layout epochs (see _fit_transform)
MIN_UMAP_POINTS = 4  # below this there is no neighbourhood graph: principal components instead

Progress = Callable[[float, str], None]
# Which images a map is of: (dataset, data_root, split, max_images); None = the checkpoint's own
# data set, all images.
ImageRequest = tuple[str | None, str | None, str, int | None]
IMAGE_REQUEST = ("dataset", "data_root", "split", "max_images")


def _quiet(fraction: float, message: str) -> None:
    """The progress callback of callers that pass none."""


@dataclass(frozen=True)
class UmapParams:
    """How a map is drawn: UMAP fitted on ≤ `max_fit` points (a seeded subset; the rest placed
    by `transform`), with its `n_neighbors` and `min_dist`. Checked when made."""

    max_fit: int = 5000
    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_fit < 2:
            raise ValueError(f"max_fit must be ≥ 2, got {self.max_fit}")
        if not 2 <= self.n_neighbors <= 200:
            raise ValueError(f"n_neighbors must be in [2, 200], got {self.n_neighbors}")
        if not 0.0 <= self.min_dist <= 1.0:
            raise ValueError(f"min_dist must be in [0, 1], got {self.min_dist}")


# --- the numerical core ---------------------------------------------------------------------
def pca_reduce(x: np.ndarray, max_dims: int = PCA_DIMS, seed: int = 0) -> np.ndarray:
    """(N, D) → (N, min(D, N, max_dims)) principal components, float32.

    Inputs that are already narrow enough are returned unchanged (as float32).
    """
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float32)
    dims = min(max_dims, x.shape[0], x.shape[1])
    if dims >= x.shape[1]:
        return x
    return PCA(n_components=dims, random_state=seed).fit_transform(x).astype(np.float32)


def fit_subset(n: int, max_fit: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of the ≤ max_fit points UMAP is fitted on (seeded, without repeats)."""
    if max_fit < 2:
        raise ValueError(f"max_fit must be ≥ 2, got {max_fit}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, max_fit), replace=False))


def _first_two_components(reduced: np.ndarray) -> np.ndarray:
    out = np.zeros((reduced.shape[0], 2), dtype=np.float32)
    out[:, : min(2, reduced.shape[1])] = reduced[:, :2]
    return out


def umap_2d(
    features: np.ndarray,
    max_fit: int = 5000,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """(N, D) features → (N, 2) coordinates: PCA, UMAP fitted on ≤ max_fit points, transform.

    Row i of the result belongs to row i of `features`. Seeded: the same input and parameters
    give the same map, which the cache and the checkpoint comparison rely on. Fewer than
    MIN_UMAP_POINTS points get their first two principal components, and identical points
    (a fully collapsed embedding) all sit at the origin: UMAP would scatter them at random and
    invent structure that is not there.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values (did training diverge?)")
    if max_fit < 2:
        raise ValueError(f"max_fit must be ≥ 2, got {max_fit}")
    n = x.shape[0]
    if n == 0 or x.shape[1] == 0 or np.ptp(x, axis=0).max() == 0.0:
        return np.zeros((n, 2), dtype=np.float32)
    reduced = pca_reduce(x, seed=seed)
    if n < MIN_UMAP_POINTS:
        return _first_two_components(reduced)
    return _fit_transform(reduced, fit_subset(n, max_fit, seed), n_neighbors, min_dist, seed)


def _fit_transform(
    reduced: np.ndarray, fit_idx: np.ndarray, n_neighbors: int, min_dist: float, seed: int
) -> np.ndarray:
    """UMAP fitted on reduced[fit_idx]; every other row placed by `transform`."""
    # Imported here: numba's start-up cost is paid only by callers that map; that module keeps
    # umap-learn's compiled code on disk, so only the first process ever compiles it.
    from models.umap_import import umap

    k = max(2, min(n_neighbors, len(fit_idx) - 1))
    rest = np.setdiff1d(np.arange(reduced.shape[0]), fit_idx)
    fit = np.ascontiguousarray(reduced[fit_idx], dtype=np.float32)
    extra: dict[str, Any] = {}
    if not rest.size:
        # Every point is fitted: hand UMAP the exact neighbour graph (faiss, a brute-force
        # search that is cheap at ≤ max_fit points). Below 4,096 points umap-learn would
        # otherwise build it from a full distance matrix through scikit-learn with a Python
        # call per pair (4 million on 2,000 points: 5.3 s of a 5.3-s map against 0.8 s this
        # way), and NN-descent instead would cost ~40 s of numba compile in every process.
        # Without a search index `transform` is unavailable, which this case never needs.
        index = faiss.IndexFlatL2(fit.shape[1])
        index.add(fit)
        sq, nn = index.search(fit, k)
        dist = np.sqrt(np.maximum(sq, 0.0)).astype(np.float32)
        # force_approximation_algorithm: use the graph given, whatever N.
        extra = {
            "precomputed_knn": (nn.astype(np.int64), dist, None),
            "force_approximation_algorithm": True,
        }
    model = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        # umap-learn's default for fewer than 10,000 points is 500 epochs of layout; 200 (its
        # default above 10,000) drew the same clusters for a quarter less time on 2,000 points,
        # and a page waits for it.
        n_epochs=UMAP_EPOCHS,
        # random_state makes UMAP single-threaded; on 2 cores that costs little and makes the
        # maps reproducible.
        random_state=seed,
        **extra,
    )
    coords = np.zeros((reduced.shape[0], 2), dtype=np.float32)
    with _UMAP_LOCK, warnings.catch_warnings():
        # "n_jobs value 1 overridden to 1 by setting random_state": expected, see above.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        # "transform will be unavailable" without a search index: see above, never needed.
        warnings.filterwarnings("ignore", message="precomputed_knn", category=UserWarning)
        coords[fit_idx] = model.fit_transform(fit)
        if rest.size:
            coords[rest] = model.transform(reduced[rest])
    return coords


def point_metadata(
    logits: Tensor, phi: Tensor | None, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image from (N, K) logits: (cluster, confidence, phi), missing φ as NaN.

    cluster = argmax of the logits, confidence = max of softmax(logits / temperature), phi =
    the φ of that cluster when `phi` (K,) is given (PCL).
    """
    probs = torch.softmax(logits.float() / temperature, dim=1)
    conf, arg = probs.max(dim=1)
    cluster = arg.numpy().astype(np.int64)
    if phi is not None and phi.shape[0] == logits.shape[1]:
        phi_of = phi.float().numpy()[cluster]
    else:
        phi_of = np.full(cluster.shape[0], np.nan)
    return cluster, conf.numpy().astype(np.float32), phi_of.astype(np.float32)


def map_arrays(features: Features, temperature: float, umap: UmapParams = UmapParams()) -> Arrays:
    """The map of `features.backbone` and each point's metadata, as arrays aligned by row."""
    n = features.num_images
    logits = features.logits
    if logits is not None and logits.shape[1] > 0:
        cluster, confidence, phi = point_metadata(logits, features.phi, temperature)
    else:  # no prototypes (PCL before its first E-step): -1 / NaN read back as None
        cluster, confidence, phi = np.full(n, -1), np.full(n, np.nan), np.full(n, np.nan)
    labels = features.labels
    return {
        "index": features.indices.numpy().astype(np.int64),
        "xy": umap_2d(features.backbone.numpy(), **asdict(umap)),
        "label": labels.numpy().astype(np.int64) if labels is not None else np.full(n, -1),
        "cluster": cluster.astype(np.int64),
        "confidence": confidence.astype(np.float32),
        "phi": phi.astype(np.float32),
    }


# --- the cache --------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """$PROTOSCOPE_CACHE/umap, else ~/.cache/protoscope/umap."""
    return cache_root() / "umap"


def cache_key(checkpoint_sha256: str, **params: Any) -> str:
    """A file-name-safe key over the checkpoint's hash and every parameter (JSON-able values)."""
    return disk_cache.cache_key(CACHE_VERSION, checkpoint_sha256, **params)


def map_of(
    checkpoint_sha256: str,
    features: Features,
    data: DataConfig,
    split: str,
    folder: Path,
    temperature: float,
    umap: UmapParams = UmapParams(),
) -> tuple[Arrays, bool]:
    """(map arrays, from the cache?) of a checkpoint's features of these very images.

    Keyed by what the map depends on — the checkpoint's bytes, the images (data config, split,
    how many) and the UMAP parameters — not by how a request asked for them, so Explore (up to
    5,000 images) and Compare (2,000) share one map of a 2,000-image split.
    """
    key = cache_key(
        checkpoint_sha256,
        data=data.model_dump(mode="json", exclude={"download"}),
        split=split,
        num_images=features.num_images,
        **asdict(umap),
    )
    return cached_arrays(
        folder / f"points-{key}.npz", lambda: map_arrays(features, temperature, umap)
    )


def checkpoint_map(
    checkpoint: str | Path,
    checkpoint_sha256: str,
    images: ImageRequest,
    folder: Path,
    feature_cache: str | Path | None,
    report: Progress,
    share: float,
    umap: UmapParams = UmapParams(),
) -> tuple[Inputs, Arrays, bool]:
    """(inputs, map arrays, map from the cache?) of a checkpoint on `images` (dataset,
    data_root, split, max_images): the features from their cache, the map from `map_of`'s.

    What Explore's map and a timeline's frame both start from. The first `share` of the
    progress goes to the features, the rest is the caller's.
    """
    dataset, data_root, split, max_images = images
    inputs = load_inputs(
        checkpoint,
        dataset,
        data_root,
        split,
        max_images,
        lambda f, m: report(share * f, m),
        cache_dir=feature_cache,
    )
    feats = inputs.features
    report(share, f"UMAP of {feats.num_images:,} points")
    temperature = inputs.loaded.config.prediction_temperature
    arrays, cached = map_of(checkpoint_sha256, feats, inputs.data, split, folder, temperature, umap)
    return inputs, arrays, cached


# --- the entry point --------------------------------------------------------------------------
def points_from(arrays: Arrays) -> list[dict[str, Any]]:
    """Row-aligned arrays → JSON-able point dicts (-1 / NaN become None)."""

    def opt_int(v: np.integer) -> int | None:
        return int(v) if v >= 0 else None

    def opt_float(v: np.floating) -> float | None:
        return float(v) if np.isfinite(v) else None

    columns = zip(
        arrays["index"],
        arrays["xy"][:, 0],
        arrays["xy"][:, 1],
        arrays["label"],
        arrays["cluster"],
        arrays["confidence"],
        arrays["phi"],
        strict=True,
    )
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
        for i, x, y, lab, c, conf, p in columns
    ]


# Decimals kept of a column map's coordinates and scores: float32 carries ~7 significant digits,
# and a map drawn on a screen a few thousand pixels wide needs far fewer, so rounding makes the
# 50,000-point answer about a third of its size at no visible cost.
COLUMN_DECIMALS = 4
Layout = Literal["points", "columns"]


def _rounded(values: np.ndarray) -> list[float | None]:
    """float32 column → JSON-able floats rounded to COLUMN_DECIMALS (NaN becomes None)."""
    v = np.round(np.asarray(values, dtype=np.float32).astype(np.float64), COLUMN_DECIMALS)
    finite = np.isfinite(v)
    out: list[float | None] = v.tolist()
    if not finite.all():
        for i in np.flatnonzero(~finite):
            out[int(i)] = None
    return out


def _optional_ints(values: np.ndarray) -> list[int | None]:
    """int column with -1 for "none" → JSON-able ints with None."""
    v = np.asarray(values, dtype=np.int64)
    out: list[int | None] = v.tolist()
    for i in np.flatnonzero(v < 0):
        out[int(i)] = None
    return out


def columns_from(arrays: Arrays) -> dict[str, list[Any]]:
    """Row-aligned arrays → one JSON array per field (row i of each is the same point).

    {index, x, y, label, cluster, confidence, phi}: the per-point answer of `points_from`
    turned inside out, so a 50,000-point map is seven arrays rather than 50,000 objects that
    each repeat seven key names; -1 / NaN become None as there.
    """
    xy = np.asarray(arrays["xy"], dtype=np.float32).reshape(-1, 2)
    return {
        "index": np.asarray(arrays["index"], dtype=np.int64).tolist(),
        "x": _rounded(xy[:, 0]),
        "y": _rounded(xy[:, 1]),
        "label": _optional_ints(arrays["label"]),
        "cluster": _optional_ints(arrays["cluster"]),
        "confidence": _rounded(arrays["confidence"]),
        "phi": _rounded(arrays["phi"]),
    }


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
    progress: Progress | None = None,
    feature_cache: str | Path | None = None,
    layout: Layout = "points",
) -> dict[str, Any]:
    """The 2-D map of `checkpoint`'s backbone features on a split, with per-point metadata.

    Returns {"points": [{index, x, y, label, cluster, confidence, phi}], "classes", "params",
    "cached", "seconds", "dataset", "split", "num_points"}: index = the data set index,
    cluster = argmax over the prototypes (the classifier's classes for the supervised
    baseline), confidence = its softmax probability at the method's temperature, phi = PCL's
    φ of that cluster (None where they do not apply). Raises CheckpointError, DatasetError, or
    ValueError for bad arguments.

    layout="columns" gives the same map as {"columns": {index: [...], x: [...], …}} instead of
    "points" (see columns_from): the compact form a 50,000-point map travels in.
    """
    t0 = time.perf_counter()
    report = progress or _quiet
    umap = UmapParams(max_fit, n_neighbors, min_dist, seed)
    if layout not in ("points", "columns"):
        raise ValueError(f"layout must be 'points' or 'columns', got {layout!r}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be ≥ 1 or None, got {max_images}")
    images: ImageRequest = (dataset, data_root, split, max_images)
    params: dict[str, Any] = {**dict(zip(IMAGE_REQUEST, images, strict=True)), **asdict(umap)}
    report(0.0, "hashing checkpoint")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ckpt_sha = checkpoint_hash(checkpoint)
    # By request first: a repeated request needs neither the images nor the features.
    path = folder / f"map-{cache_key(ckpt_sha, **params)}.npz"
    arrays = load_arrays(path) if path.exists() else None
    cached = arrays is not None
    if arrays is None:
        inputs, arrays, cached = checkpoint_map(
            checkpoint, ckpt_sha, images, folder, feature_cache, report, 0.5, umap
        )
        classes = [str(c) for c in inputs.images.classes or []]
        arrays = {
            **arrays,
            "classes": np.array(classes, dtype=np.str_),
            "dataset": np.array(inputs.data.name, dtype=np.str_),
            # The folder the images came from ("" for the built-in sets): the app fetches each
            # point's thumbnail from it.
            "data_root": np.array(inputs.data.root or "", dtype=np.str_),
        }
        save_arrays(path, arrays)
    report(1.0, "done")
    classes = [str(c) for c in arrays["classes"].tolist()]
    body: dict[str, Any] = (
        {"columns": columns_from(arrays)}
        if layout == "columns"
        else {"points": points_from(arrays)}
    )
    return {
        **body,
        "classes": classes or None,
        "dataset": str(arrays["dataset"]),
        # Maps cached before the folder was stored have none.
        "data_root": (str(arrays["data_root"]) or None) if "data_root" in arrays else None,
        "split": split,
        "num_points": int(arrays["index"].shape[0]),
        "params": params,
        "cached": cached,
        "seconds": time.perf_counter() - t0,
    }
