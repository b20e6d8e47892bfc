"""`run_timeline`: every checkpoint of a run on one time line (the Timeline page's answer).

The maps of consecutive checkpoints are aligned by a Procrustes chain over each checkpoint's
own cached UMAP map (alignment.py) rather than by AlignedUMAP: the per-checkpoint maps are
the ones Explore and Compare already compute and cache, so aligning costs milliseconds, a run
that gained a checkpoint maps only that one, and 15 checkpoints on 2,000 images stay within a
minute on 2 cores (benchmarks/timeline_timing.py). AlignedUMAP would refit every epoch
together each time a checkpoint is added.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.timeline.alignment import procrustes_chain
from models.timeline.cluster_flow import epoch_flow, relabel_chain
from models.timeline.epoch_frame import EpochFrame, frame_of
from models.timeline.usage_over_epochs import births_and_deaths, usage_matrix

Progress = Callable[[float, str], None]
MAX_TOP_K = 64
COORD_DIGITS = 3  # map coordinates are rounded: the answer is ~40 % smaller, the plot the same


@dataclass(frozen=True)
class TimelineCheckpoint:
    """One checkpoint of the run: its file and what the backend knows about it."""

    path: Path
    checkpoint_id: int | None = None
    epochs_done: float | None = None
    step: int | None = None


def _knn_at(step: int | None, knn_by_step: Mapping[int, float]) -> tuple[float | None, int | None]:
    """The run's last kNN reading at or before `step` (the trainer's, same protocol as
    Diagnose), and its step."""
    if step is None:
        return None, None
    before = [s for s in knn_by_step if s <= step]
    if not before:
        return None, None
    s = max(before)
    return float(knn_by_step[s]), s


def _share(report: Progress, lo: float, hi: float, what: str) -> Progress:
    """The progress of one part of the work, mapped onto [lo, hi] of the whole bar."""
    return lambda f, m: report(lo + (hi - lo) * f, f"{what}: {m}")


def _name(ck: TimelineCheckpoint) -> str:
    return f"#{ck.checkpoint_id}" if ck.checkpoint_id is not None else ck.path.name


def _optional(values: np.ndarray, digits: int | None = None) -> list[Any]:
    """Floats with NaN as None (JSON has no NaN), optionally rounded."""
    out: list[Any] = []
    for v in values.tolist():
        if v != v:  # NaN
            out.append(None)
        else:
            out.append(round(v, digits) if digits is not None else v)
    return out


def _check_same_images(frames: Sequence[EpochFrame], names: Sequence[str]) -> None:
    first = frames[0].index
    for frame, name in zip(frames[1:], names[1:], strict=True):
        if frame.index.shape != first.shape or not np.array_equal(frame.index, first):
            raise ValueError(
                f"checkpoint {name} was analysed on other images than {names[0]} "
                f"({frame.index.size} against {first.size}): pick one data set for all"
            )


def run_timeline(
    checkpoints: Sequence[TimelineCheckpoint],
    frame_cache: str | Path,
    map_cache: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    max_images: int | None = 2000,
    top_k: int = 8,
    knn_by_step: Mapping[int, float] | None = None,
    feature_cache: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Aligned maps, per-epoch usage, verdicts, kNN, cluster flow and galleries of a run.

    `checkpoints` in training order, all evaluated on the same images (`dataset` /
    `data_root`, else the first checkpoint's own). `knn_by_step`: the run's kNN readings
    (step → top-1), matched to each checkpoint. Cluster ids are prototype numbers for SwAV (a
    prototype is the same vector all run long); PCL's k-means clusters are renamed along the
    chain (`relabel_chain`) so a cluster keeps its id and colour. Raises ValueError for bad
    arguments, CheckpointError / DatasetError for unusable files or data.
    """
    if not checkpoints:
        raise ValueError("the run has no checkpoints yet: a timeline needs at least one")
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be in [1, {MAX_TOP_K}], got {top_k}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be ≥ 1 or None, got {max_images}")
    t0 = time.perf_counter()
    report = progress or (lambda f, m: None)
    n_ck = len(checkpoints)
    frames: list[EpochFrame] = []
    cached = 0
    for i, ck in enumerate(checkpoints):
        name = _name(ck)
        part = _share(
            report, 0.95 * i / n_ck, 0.95 * (i + 1) / n_ck, f"checkpoint {i + 1} of {n_ck} ({name})"
        )
        part(0.0, "loading")
        frame, hit = frame_of(
            ck.path,
            Path(frame_cache),
            Path(map_cache),
            dataset,
            data_root,
            split,
            max_images,
            top_k,
            Path(feature_cache) if feature_cache is not None else None,
            part,
        )
        frames.append(frame)
        cached += int(hit)
    names = [_name(c) for c in checkpoints]
    _check_same_images(frames, names)
    report(0.95, "aligning the maps and following the clusters")
    method = str(frames[-1].summary.get("method", ""))
    aligned, disparities = procrustes_chain([f.xy for f in frames])
    raw = [f.cluster for f in frames]
    renamed = relabel_chain(raw) if method == "pcl" else None
    clusters = renamed if renamed is not None else [np.asarray(c) for c in raw]
    num_ids = int(max((c.max(initial=-1) for c in clusters), default=-1)) + 1
    if renamed is None:  # every prototype has an id, also one no image picks at any epoch
        num_ids = max(num_ids, *(f.galleries.shape[0] for f in frames))
    usage = usage_matrix(clusters, num_ids)
    born, died = births_and_deaths(usage)
    galleries = _galleries_by_id(frames, raw, renamed, num_ids)
    epochs = [
        _epoch_entry(ck, frame, xy, c, u, d, knn_by_step or {})
        for ck, frame, xy, c, u, d in zip(
            checkpoints, frames, aligned, clusters, usage, disparities, strict=True
        )
    ]
    flows = [
        {"source": t, "target": t + 1, **epoch_flow(clusters[t], clusters[t + 1])}
        for t in range(n_ck - 1)
    ]
    report(1.0, "done")
    first = frames[0]
    has_labels = bool((first.label >= 0).any())
    return {
        "method": method,
        "dataset": first.dataset,
        "data_root": first.data_root,
        "split": split,
        "classes": first.classes or None,
        "num_points": int(first.index.size),
        "num_epochs": n_ck,
        "num_prototypes": num_ids,
        "alignment": "procrustes chain over each checkpoint's UMAP map",
        "cluster_ids": "relabelled along the chain" if method == "pcl" else "prototype numbers",
        "index": first.index.astype(int).tolist(),
        "label": first.label.astype(int).tolist() if has_labels else None,
        "epochs": epochs,
        "flows": flows,
        "born": [list(b) for b in born],
        "died": [list(d) for d in died],
        "galleries": galleries,
        "top_k": top_k,
        "cached_checkpoints": cached,
        "seconds": time.perf_counter() - t0,
    }


def _galleries_by_id(
    frames: Sequence[EpochFrame],
    raw: Sequence[np.ndarray],
    renamed: Sequence[np.ndarray] | None,
    num_ids: int,
) -> dict[str, list[list[int]]]:
    """{id: [images nearest to it at each epoch]}, under the timeline's ids.

    Without renaming (`renamed` None: SwAV) id k is prototype k at every epoch, used or not.
    With it (PCL) an id is found at an epoch through the images it holds there; an id that
    holds none then (a cluster not yet born, or gone) has [] at that epoch.
    """
    out: dict[str, list[list[int]]] = {str(k): [] for k in range(num_ids)}
    for e, frame in enumerate(frames):
        rows = frame.galleries
        if renamed is None:
            to_raw = {k: k for k in range(num_ids)}
        else:
            to_raw = {}
            for new_id, raw_id in zip(renamed[e].tolist(), raw[e].tolist(), strict=True):
                to_raw.setdefault(new_id, raw_id)
        for k in range(num_ids):
            j = to_raw.get(k, -1)
            out[str(k)].append(rows[j].astype(int).tolist() if 0 <= j < rows.shape[0] else [])
    return out


def _epoch_entry(
    ck: TimelineCheckpoint,
    frame: EpochFrame,
    xy: np.ndarray,
    clusters: np.ndarray,
    usage: np.ndarray,
    disparity: float,
    knn_by_step: Mapping[int, float],
) -> dict[str, Any]:
    s = frame.summary
    step = ck.step if ck.step is not None else s.get("step")
    knn, knn_step = _knn_at(step, knn_by_step)
    return {
        "checkpoint_id": ck.checkpoint_id,
        "checkpoint": ck.path.name,
        "epochs_done": ck.epochs_done if ck.epochs_done is not None else s.get("epochs_done"),
        "step": step,
        "x": _optional(xy[:, 0], COORD_DIGITS),
        "y": _optional(xy[:, 1], COORD_DIGITS),
        "cluster": clusters.astype(int).tolist(),
        "confidence": _optional(frame.confidence.astype(np.float64), 4),
        "phi": _optional(frame.phi.astype(np.float64), 4),
        "usage": usage.astype(int).tolist(),
        "disparity": disparity,
        "knn_top1": knn,
        "knn_step": knn_step,
        **{k: v for k, v in s.items() if k not in ("step", "epochs_done")},
    }
