"""One checkpoint's share of a timeline: its map, clusters, usage, galleries and verdict.

Computed from the shared caches (features: models/features.py; map: Explore's own
`embedding_map.checkpoint_map`, so a checkpoint already opened on Explore is not mapped again) and
kept as one .npz per checkpoint × images × parameters. A timeline of a run that gained one
checkpoint computes one frame; a timeline opened again reads files only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.diagnostics.report import json_value
from models.disk_cache import Arrays, cache_key, checkpoint_hash, load_arrays, save_arrays
from models.embedding_map import CACHE_VERSION as MAP_VERSION
from models.embedding_map import ImageRequest, checkpoint_map
from models.features import FEATURES_VERSION

FRAME_VERSION = 2  # bump when what a frame holds, or how it is computed, changes
# The report's scalars a timeline plots per epoch (whichever a model has).
SUMMARY_KEYS = (
    "verdict",
    "reason",
    "num_prototypes",
    "active_prototypes",
    "usage_entropy",
    "assignment_entropy",
    "embedding_std",
    "expected_std",
    "effective_rank",
    "nmi",
    "cluster_accuracy",
)

Progress = Callable[[float, str], None]
# The frame's fields kept as they are in its .npz (the others are JSON or text there).
ARRAY_FIELDS = ("index", "label", "xy", "cluster", "confidence", "phi", "galleries")


@dataclass
class EpochFrame:
    """Row i of every per-image array is the image `index[i]`.

    xy (N, 2) is this checkpoint's own map (not yet aligned); cluster (N,) the argmax
    prototype (-1: none); galleries (K, top_k) the data set indices of the images nearest to
    each prototype; summary the verdict and scalars of `SUMMARY_KEYS`, `method`, `epochs_done`,
    `step` and, for PCL, `pcl` (φ against size for each clustering).
    """

    index: np.ndarray
    label: np.ndarray
    xy: np.ndarray
    cluster: np.ndarray
    confidence: np.ndarray
    phi: np.ndarray
    galleries: np.ndarray
    summary: dict[str, Any]
    dataset: str
    data_root: str | None
    classes: list[str]

    def to_arrays(self) -> Arrays:
        return {
            **{k: getattr(self, k) for k in ARRAY_FIELDS},
            "summary": np.array(json.dumps(self.summary), dtype=np.str_),
            "dataset": np.array(self.dataset, dtype=np.str_),
            "data_root": np.array(self.data_root or "", dtype=np.str_),
            "classes": np.array(self.classes, dtype=np.str_),
        }

    @classmethod
    def from_arrays(cls, a: Arrays) -> EpochFrame:
        return cls(
            **{k: a[k] for k in ARRAY_FIELDS},
            summary=json.loads(str(a["summary"])),
            dataset=str(a["dataset"]),
            data_root=str(a["data_root"]) or None,
            classes=[str(c) for c in a["classes"].tolist()],
        )


def prototype_galleries(space: np.ndarray, prototypes: np.ndarray, top_k: int) -> np.ndarray:
    """(K, min(top_k, N)) row positions of the images nearest (cosine) to each prototype."""
    from models.galleries import nearest

    if prototypes.shape[0] == 0 or space.shape[0] == 0:
        return np.zeros((prototypes.shape[0], 0), dtype=np.int64)
    _, ids = nearest(prototypes, space, top_k)
    return ids.astype(np.int64)


def compute_frame(
    checkpoint: Path,
    checkpoint_sha256: str,
    images: ImageRequest,
    top_k: int,
    map_cache: Path,
    feature_cache: Path | None,
    report: Progress,
) -> EpochFrame:
    """A frame from the checkpoint (features and map from their caches when there)."""
    from models.diagnostics.of_checkpoint import measure_inputs
    from models.galleries import feature_space

    inputs, arrays, _ = checkpoint_map(
        checkpoint, checkpoint_sha256, images, map_cache, feature_cache, report, 0.6
    )
    feats, loaded = inputs.features, inputs.loaded
    cfg = loaded.config
    report(0.9, "verdict and galleries")
    has_protos = cfg.method != "supervised" and feats.logits is not None
    space = feature_space(feats)
    metrics, pcl = measure_inputs(inputs)
    # NaN (a measure that does not apply) is not JSON: the timeline's answer carries None.
    summary: dict[str, Any] = {k: json_value(metrics[k]) for k in SUMMARY_KEYS if k in metrics}
    summary.update(
        method=cfg.method,
        epochs_done=loaded.epochs_fraction,
        step=loaded.step,
        pcl=[{k: v for k, v in asdict(p).items() if k != "train_sizes"} for p in pcl]
        if pcl
        else None,
    )
    protos = feats.prototypes if has_protos and feats.prototypes is not None else None
    if protos is not None:
        rows = prototype_galleries(space.numpy(), protos.numpy(), top_k)
        galleries = arrays["index"][rows] if rows.size else rows
    else:
        galleries = np.zeros((0, 0), dtype=np.int64)
    return EpochFrame(
        **{k: arrays[k] for k in ("index", "label", "cluster", "confidence", "phi")},
        xy=arrays["xy"].astype(np.float32),
        galleries=galleries.astype(np.int64),
        summary=summary,
        dataset=inputs.data.name,
        data_root=inputs.data.root,
        classes=[str(c) for c in inputs.images.classes or []],
    )


def frame_of(
    checkpoint: str | Path,
    folder: Path,
    map_cache: Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    max_images: int | None = 2000,
    top_k: int = 8,
    feature_cache: Path | None = None,
    progress: Progress | None = None,
) -> tuple[EpochFrame, bool]:
    """(frame, from the cache?) of one checkpoint on these images.

    Keyed by the checkpoint's bytes and the request, so a repeated request needs neither the
    model nor the images. Raises CheckpointError, DatasetError or ValueError.
    """
    report = progress or (lambda f, m: None)
    path = Path(checkpoint)
    sha = checkpoint_hash(path)
    key = cache_key(
        FRAME_VERSION,
        sha,
        dataset=dataset,
        data_root=data_root,
        split=split,
        max_images=max_images,
        top_k=top_k,
        # A frame holds a copy of the map and of what the features gave: stale when either
        # cache's meaning changes.
        map_version=MAP_VERSION,
        features_version=FEATURES_VERSION,
    )
    file = folder / f"frame-{key}.npz"
    arrays = load_arrays(file) if file.exists() else None
    if arrays is not None:
        try:
            return EpochFrame.from_arrays(arrays), True
        except (KeyError, ValueError):  # an entry of another layout: computed again
            pass
    images = (dataset, data_root, split, max_images)
    frame = compute_frame(path, sha, images, top_k, map_cache, feature_cache, report)
    save_arrays(file, frame.to_arrays())
    return frame, False
