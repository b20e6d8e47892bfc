"""A run's timeline: every checkpoint's map aligned, usage, cluster flow, kNN and verdicts.

Computed by models/timeline on the analysis pool with progress (202 while running, as every
analysis), cached by the identities of the checkpoint files and every parameter. Each
checkpoint's part is also cached on its own on disk (models/timeline/epoch_frame.py), so a run
that gained a checkpoint recomputes one part. The galleries of every prototype at every epoch
are computed with the timeline and served one prototype at a time by the gallery route.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from backend.analysis_cache import Progress
from backend.app_services import Services, get_services
from backend.routes.analysis import (
    Images,
    answers,
    cached_answer,
    feature_cache_dir,
    file_identity,
    images_query,
    umap_cache_dir,
)

router = APIRouter(tags=["timeline"])

RunId = Path(ge=1, le=2**62, description="run id (GET /runs)")
MaxCheckpoints = Query(
    15, ge=2, le=200, description="at most this many checkpoints, spread over the run"
)
TopK = Query(8, ge=1, le=64, description="images per prototype and epoch")
# Every epoch carries every image's position, cluster, confidence and φ: 20,000 images over
# 15 epochs is already ~10 MB of JSON for the browser.
MAX_TIMELINE_IMAGES = 20_000
MaxImagesTl = Query(
    2000, ge=1, le=MAX_TIMELINE_IMAGES, description="the first N images of the split"
)


def spread(n: int, most: int) -> list[int]:
    """Positions of ≤ `most` of n items spread evenly, the first and the last always in."""
    if n <= most:
        return list(range(n))
    step = (n - 1) / (most - 1)
    return sorted({round(i * step) for i in range(most)})


def _checkpoints(svc: Services, run_id: int, most: int) -> list[tuple[dict[str, Any], FsPath]]:
    """The run's checkpoints whose files exist, in training order, ≤ `most` of them."""
    svc.run_row(run_id)  # 404 for an unknown run
    rows = []
    for row in svc.store.list_checkpoints(run_id, limit=100_000):
        path = svc.store.absolute(row["path"])
        if path.is_file():
            rows.append((row, path))
    if not rows:
        raise HTTPException(
            404, f"run {run_id} has no checkpoints yet: one is written after every epoch"
        )
    rows.sort(key=lambda rp: (rp[0].get("step") or 0, rp[0]["id"]))
    return [rows[i] for i in spread(len(rows), most)]


def _knn_readings(svc: Services, run_id: int, up_to_step: int) -> dict[int, float]:
    """step → kNN top-1 of the run's epoch evaluations and quick kNNs, up to `up_to_step`.

    The trainer's own readings: the same protocol as Diagnose (weighted kNN, k = 20, T = 0.07,
    against the first train images), already paid for, so a timeline runs no kNN of its own.
    """
    out: dict[int, float] = {}
    for _, _, text in svc.store.events_after(run_id, 0, 1_000_000, types=["epoch", "knn"]):
        event = json.loads(text)
        step, knn = event.get("step"), event.get("knn_top1")
        if isinstance(step, int) and isinstance(knn, int | float) and step <= up_to_step:
            out[step] = float(knn)
    return out


@dataclass(frozen=True)
class TimelineRequest:
    """A timeline's query: which run, on which images, over how many checkpoints."""

    run_id: int
    images: Images
    max_images: int
    max_checkpoints: int
    top_k: int


def timeline_request(
    run_id: int = RunId,
    images: Images = Depends(images_query),
    max_images: int = MaxImagesTl,
    max_checkpoints: int = MaxCheckpoints,
    top_k: int = TopK,
) -> TimelineRequest:
    return TimelineRequest(run_id, images, max_images, max_checkpoints, top_k)


def _timeline(
    svc: Services, req: TimelineRequest, pick: Callable[[bytes], bytes], view: str
) -> Response:
    run_id, images = req.run_id, req.images
    chosen = _checkpoints(svc, run_id, req.max_checkpoints)
    last_step = max(int(row.get("step") or 0) for row, _ in chosen)
    knn = _knn_readings(svc, run_id, last_step)
    params = {
        **images.data,
        "split": images.split,
        "max_images": req.max_images,
        "top_k": req.top_k,
    }

    def compute(progress: Progress) -> dict[str, Any]:
        from models.timeline import TimelineCheckpoint, run_timeline

        checkpoints = [
            TimelineCheckpoint(path, int(row["id"]), row.get("epochs_done"), row.get("step"))
            for row, path in chosen
        ]
        out = run_timeline(
            checkpoints,
            frame_cache=svc.settings.data_path / "cache" / "timeline",
            map_cache=umap_cache_dir(svc),
            knn_by_step=knn,
            feature_cache=feature_cache_dir(svc),
            progress=progress,
            **params,
        )
        return {**out, "run_id": run_id}

    identity = {
        "run": run_id,
        "checkpoints": [[int(row["id"]), file_identity(path)] for row, path in chosen],
        "knn": sorted(knn.items()),
        **params,
    }
    return cached_answer(svc, "timeline", identity, compute, pick, view)


@router.get(
    "/runs/{run_id}/timeline",
    summary="Every checkpoint of a run on one aligned map, with usage, flow, kNN, verdicts",
    description="Per epoch (checkpoint): the map aligned onto the previous one by Procrustes, "
    "each image's cluster, confidence and φ, prototype usage, the verdict and kNN top-1; "
    "between consecutive epochs the cluster flow (Sankey links, splits, merges); which "
    "prototypes were born or died. 202 with progress while computing.",
    responses=answers("models.timeline.run_timeline"),
)
def timeline(
    req: TimelineRequest = Depends(timeline_request), svc: Services = Depends(get_services)
) -> Response:
    def pick(body: bytes) -> bytes:
        answer = json.loads(body)
        answer.pop("galleries", None)  # served per prototype by the route below
        return json.dumps(answer).encode()

    return _timeline(svc, req, pick, "without-galleries")


@router.get(
    "/runs/{run_id}/timeline/prototypes/{k}",
    summary="Prototype k's nearest images at every epoch of the timeline",
    responses=answers("{prototype, epochs: [{checkpoint_id, step, usage, images}]}"),
)
def timeline_gallery(
    k: int = Path(ge=0, le=100_000, description="prototype (cluster id of the timeline)"),
    req: TimelineRequest = Depends(timeline_request),
    svc: Services = Depends(get_services),
) -> Response:
    def pick(body: bytes) -> bytes:
        answer = json.loads(body)
        per_epoch = answer.get("galleries", {}).get(str(k))
        if per_epoch is None:
            n = answer.get("num_prototypes", 0)
            raise HTTPException(
                404, f"no prototype {k} in this timeline: its ids are 0–{max(0, n - 1)}"
            )
        epochs = [
            {
                "checkpoint_id": e.get("checkpoint_id"),
                "epochs_done": e.get("epochs_done"),
                "step": e.get("step"),
                "usage": e["usage"][k] if k < len(e.get("usage", [])) else 0,
                "images": imgs,
            }
            for e, imgs in zip(answer["epochs"], per_epoch, strict=True)
        ]
        out = {
            "run_id": req.run_id,
            "prototype": k,
            "dataset": answer.get("dataset"),
            "data_root": answer.get("data_root"),
            "split": answer.get("split"),
            "epochs": epochs,
        }
        return json.dumps(out).encode()

    return _timeline(svc, req, pick, f"prototype:{k}")
