"""Analyses of checkpoints: diagnostics, UMAP map, prototypes and galleries, neighbours, compare.

Each answer is computed by `models/` on the analysis pool (see backend/analysis.py). While it
is computed the route answers 202 with `{"status": "running", "progress", "message"}`; ask
again (the `Retry-After` header says when). Results are cached by the checkpoint file's
identity and every parameter, in memory and as JSON files under `<data dir>/cache/analysis`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse

from backend.analysis import AnalysisFailed, Progress, Ready
from backend.schemas import ErrorOut, Pending
from backend.services import Services, get_services

router = APIRouter(tags=["analysis"])

CheckpointId = Path(ge=1, le=2**62, description="checkpoint id (GET /checkpoints)")
Split = Literal["train", "test"]
MAX_IMAGES = 100_000

RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": Pending, "description": "still computing: ask again"},
    400: {"model": ErrorOut, "description": "unusable checkpoint, data set or parameters"},
    404: {"model": ErrorOut, "description": "unknown checkpoint (or image, prototype)"},
    500: {"model": ErrorOut, "description": "the computation failed"},
}


def _identity(path: FsPath) -> dict[str, Any]:
    """What makes a cached answer stale: the file's path, size and modification time."""
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _answer(
    svc: Services,
    kind: str,
    identity: dict[str, Any],
    compute: Callable[[Progress], Any],
    pick: Callable[[bytes], bytes] | None = None,
) -> Response:
    key = svc.analysis.key(kind, identity)
    try:
        outcome = svc.analysis.get(key, compute, svc.settings.analysis_wait_s)
    except AnalysisFailed as e:
        raise HTTPException(e.status_code, e.message) from None
    if isinstance(outcome, Ready):
        body = pick(outcome.body) if pick is not None else outcome.body
        return Response(body, media_type="application/json")
    pending = Pending(status="running", progress=outcome.progress, message=outcome.message)
    return JSONResponse(pending.model_dump(), status_code=202, headers={"Retry-After": "1"})


@dataclass(frozen=True)
class Images:
    """Which images an analysis reads: the query parameters every analysis route shares."""

    dataset: str | None  # None: the data set the checkpoint was trained on
    data_root: str | None  # checked to lie inside the allowed data roots
    split: Split

    @property
    def data(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "data_root": self.data_root}


def images_query(
    dataset: str | None = Query(
        None, max_length=64, description="evaluate on this data set instead"
    ),
    data_root: str | None = Query(
        None, max_length=4096, description="its folder, inside the allowed roots"
    ),
    split: Split = Query("test", description="the data set's train or test split"),
    svc: Services = Depends(get_services),
) -> Images:
    return Images(dataset, svc.data_root(data_root), split)


def _feature_cache(svc: Services) -> FsPath:
    """The features every analysis shares (models/features.py), under the data folder."""
    return svc.settings.data_path / "cache" / "features"


@router.get(
    "/checkpoints/{checkpoint_id}/diagnostics",
    summary="Collapse diagnostics and the verdict",
    responses={200: {"description": "models.diagnostics.DiagnosticReport"}, **RESPONSES},
)
def diagnostics(
    checkpoint_id: int = CheckpointId,
    images: Images = Depends(images_query),
    max_images: int = Query(2000, ge=1, le=MAX_IMAGES),
    svc: Services = Depends(get_services),
) -> Response:
    row, path = svc.checkpoint_path(checkpoint_id)
    data, split = images.data, images.split
    # For a file that records no training log (written before checkpoints did), the run's
    # stored steps up to the checkpoint's stand in.
    steps = svc.store.recent_steps(row["run_id"], row["step"]) if row.get("run_id") else None

    def compute(progress: Progress) -> dict[str, Any]:
        from models.diagnostics import diagnose_checkpoint

        report = diagnose_checkpoint(
            path,
            split=split,
            max_images=max_images,
            recent_steps=steps,
            progress=progress,
            cache_dir=_feature_cache(svc),
            **data,
        )
        return {**report, "checkpoint": row["path"], "checkpoint_id": checkpoint_id}

    ident = {"ckpt": _identity(path), "split": split, "max_images": max_images, **data}
    return _answer(svc, "diagnostics", ident, compute)


@router.get(
    "/checkpoints/{checkpoint_id}/embedding",
    summary="2-D UMAP map of the embeddings",
    responses={
        200: {"description": "{points: [{index, x, y, label, cluster, …}], …}"},
        **RESPONSES,
    },
)
def embedding(
    checkpoint_id: int = CheckpointId,
    images: Images = Depends(images_query),
    max_images: int = Query(5000, ge=1, le=MAX_IMAGES),
    max_fit: int = Query(5000, ge=2, le=MAX_IMAGES),
    n_neighbors: int = Query(15, ge=2, le=200),
    min_dist: float = Query(0.1, ge=0.0, le=1.0),
    seed: int = Query(0, ge=0, le=2**31 - 1),
    svc: Services = Depends(get_services),
) -> Response:
    _, path = svc.checkpoint_path(checkpoint_id)
    data, split = images.data, images.split
    params = {
        "split": split,
        "max_images": max_images,
        "max_fit": max_fit,
        "n_neighbors": n_neighbors,
        "min_dist": min_dist,
        "seed": seed,
    }

    def compute(progress: Progress) -> dict[str, Any]:
        from models.embedding_map import embedding_map

        cache = svc.settings.data_path / "cache" / "umap"
        out = embedding_map(
            path,
            cache_dir=cache,
            progress=progress,
            feature_cache=_feature_cache(svc),
            **data,
            **params,
        )
        return {**out, "checkpoint_id": checkpoint_id}

    return _answer(svc, "embedding", {"ckpt": _identity(path), **params, **data}, compute)


def _galleries(
    svc: Services,
    checkpoint_id: int,
    images: Images,
    top_k: int,
    max_images: int | None,
) -> tuple[dict[str, Any], Callable[[Progress], Any]]:
    _, path = svc.checkpoint_path(checkpoint_id)
    data, split = images.data, images.split
    params = {"split": split, "top_k": top_k, "max_images": max_images}

    def compute(progress: Progress) -> dict[str, Any]:
        from models.galleries import prototype_galleries

        out = prototype_galleries(
            path,
            progress=progress,
            feature_cache=_feature_cache(svc),
            **data,
            **params,  # type: ignore[arg-type]
        )
        return {**out, "checkpoint_id": checkpoint_id}

    return {"ckpt": _identity(path), **params, **data}, compute


TopK = Query(16, ge=1, le=256, description="images per prototype")
MaxImagesAll = Query(None, ge=1, le=MAX_IMAGES, description="the first N images (default all)")


@router.get(
    "/checkpoints/{checkpoint_id}/prototypes",
    summary="Every prototype: usage, φ, empty/duplicate flags, nearest images",
    responses={
        200: {"description": "{prototypes: [{prototype, usage, images, …}], …}"},
        **RESPONSES,
    },
)
def prototypes(
    checkpoint_id: int = CheckpointId,
    images: Images = Depends(images_query),
    top_k: int = TopK,
    max_images: int | None = MaxImagesAll,
    svc: Services = Depends(get_services),
) -> Response:
    ident, compute = _galleries(svc, checkpoint_id, images, top_k, max_images)
    return _answer(svc, "prototypes", ident, compute)


@router.get(
    "/checkpoints/{checkpoint_id}/prototypes/{k}/gallery",
    summary="The images nearest to prototype k",
    responses={200: {"description": "{prototype, usage, images, similarities, …}"}, **RESPONSES},
)
def gallery(
    checkpoint_id: int = CheckpointId,
    k: int = Path(ge=0, le=100_000, description="prototype number"),
    images: Images = Depends(images_query),
    top_k: int = TopK,
    max_images: int | None = MaxImagesAll,
    svc: Services = Depends(get_services),
) -> Response:
    # Shares the cached galleries of /prototypes with the same parameters.
    ident, compute = _galleries(svc, checkpoint_id, images, top_k, max_images)

    def pick(body: bytes) -> bytes:
        answer = json.loads(body)
        for entry in answer.get("prototypes", []):
            if entry.get("prototype") == k:
                extra = {
                    "checkpoint_id": checkpoint_id,
                    "dataset": answer.get("dataset"),
                    "data_root": answer.get("data_root"),
                }
                return json.dumps({**entry, **extra, "split": images.split}).encode()
        n = answer.get("num_prototypes", len(answer.get("prototypes", [])))
        raise HTTPException(404, f"no prototype {k}: this checkpoint has {n} (0–{n - 1})")

    return _answer(svc, "prototypes", ident, compute, pick)


@router.get(
    "/checkpoints/{checkpoint_id}/images/{index}/neighbours",
    summary="An image's nearest images and nearest prototypes",
    responses={
        200: {"description": "{index, images: [{index, similarity}], prototypes}"},
        **RESPONSES,
    },
)
def neighbours(
    checkpoint_id: int = CheckpointId,
    index: int = Path(ge=0, le=10_000_000, description="data set index"),
    images: Images = Depends(images_query),
    k: int = Query(12, ge=1, le=256, description="nearest images"),
    k_prototypes: int = Query(5, ge=1, le=256),
    max_images: int | None = MaxImagesAll,
    svc: Services = Depends(get_services),
) -> Response:
    _, path = svc.checkpoint_path(checkpoint_id)
    data, split = images.data, images.split
    params = {"split": split, "k_images": k, "k_prototypes": k_prototypes, "max_images": max_images}

    def compute(progress: Progress) -> dict[str, Any]:
        from models.galleries import image_neighbours

        out = image_neighbours(
            path,
            index,
            progress=progress,
            feature_cache=_feature_cache(svc),
            **data,
            **params,  # type: ignore[arg-type]
        )
        return {**out, "checkpoint_id": checkpoint_id}

    ident = {"ckpt": _identity(path), "index": index, **params, **data}
    return _answer(svc, "neighbours", ident, compute)


@router.get(
    "/compare",
    summary="Two checkpoints on the same images",
    description="Cluster agreement (Hungarian matching), NMI, ARI, prototypes that gained or "
    "lost images, metric deltas and Procrustes-aligned maps.",
    responses={200: {"description": "models.compare.compare_checkpoints"}, **RESPONSES},
)
def compare(
    a: int = Query(..., ge=1, le=2**62, description="checkpoint id A"),
    b: int = Query(..., ge=1, le=2**62, description="checkpoint id B"),
    images: Images = Depends(images_query),
    max_images: int = Query(2000, ge=1, le=MAX_IMAGES),
    svc: Services = Depends(get_services),
) -> Response:
    row_a, path_a = svc.checkpoint_path(a)
    row_b, path_b = svc.checkpoint_path(b)
    data, split = images.data, images.split

    def compute(progress: Progress) -> dict[str, Any]:
        from models.compare import compare_checkpoints

        cache = svc.settings.data_path / "cache" / "umap"
        out = compare_checkpoints(
            path_a,
            path_b,
            split=split,
            max_images=max_images,
            cache_dir=cache,
            progress=progress,
            feature_cache=_feature_cache(svc),
            **data,
        )
        ids = {"a": row_a["path"], "b": row_b["path"], "a_id": a, "b_id": b}
        return {**out, **ids}

    ident = {
        "a": _identity(path_a),
        "b": _identity(path_b),
        "split": split,
        "max_images": max_images,
        **data,
    }
    return _answer(svc, "compare", ident, compute)
