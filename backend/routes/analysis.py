"""Analyses of checkpoints: diagnostics, UMAP map, prototypes and galleries, neighbours, compare.

Each answer is computed by `models/` on the analysis pool (see backend/analysis_cache.py). While it
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

from backend.analysis_cache import AnalysisFailed, Progress, Ready
from backend.app_services import Services, get_services
from backend.schemas import ErrorOut, Pending

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


def answers(ok: str) -> dict[int | str, dict[str, Any]]:
    """An analysis route's documented answers: 200 (described as `ok`) and RESPONSES."""
    return {200: {"description": ok}, **RESPONSES}


def file_identity(path: FsPath) -> dict[str, Any]:
    """What makes a cached answer stale: the file's path, size and modification time."""
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached_answer(
    svc: Services,
    kind: str,
    identity: dict[str, Any],
    compute: Callable[[Progress], Any],
    pick: Callable[[bytes], bytes] | None = None,
    view: str | None = None,
) -> Response:
    return answer_of_job(svc, svc.analysis.key(kind, identity), compute, pick, view)


def answer_of_job(
    svc: Services,
    key: str,
    compute: Callable[[Progress], Any],
    pick: Callable[[bytes], bytes] | None = None,
    view: str | None = None,
) -> Response:
    """The cached answer (200), or 202 with the job's progress; the job's failure as its 4xx/5xx.

    `pick` cuts the answer down for this route; with a `view` name what it gives is kept in
    memory (AnalysisService.view), so asking again does not parse the whole answer again."""
    try:
        outcome = svc.analysis.get(key, compute, svc.settings.analysis_wait_s)
    except AnalysisFailed as e:
        raise HTTPException(e.status_code, e.message) from None
    if isinstance(outcome, Ready):
        body = outcome.body
        if pick is not None:
            body = svc.analysis.view(key, view, body, pick) if view else pick(body)
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


# What an analysis reads when the request names nothing: the checkpoint's own test split.
DEFAULT_IMAGES = Images(dataset=None, data_root=None, split="test")
DIAGNOSE_MAX_IMAGES = 2000  # the diagnostics route's default (a sweep cell's report shares it)


def images_query(
    dataset: str | None = Query(
        None, max_length=64, description="evaluate on this data set instead"
    ),
    data_root: str | None = Query(
        None, max_length=4096, description="its folder, inside the allowed roots"
    ),
    split: Split = Query(DEFAULT_IMAGES.split, description="the data set's train or test split"),
    svc: Services = Depends(get_services),
) -> Images:
    return Images(dataset, svc.data_root(data_root), split)


@dataclass(frozen=True)
class CheckpointImages:
    """One checkpoint and the images an analysis of it reads: what every route here is of."""

    checkpoint_id: int
    images: Images


def checkpoint_images(
    checkpoint_id: int = CheckpointId, images: Images = Depends(images_query)
) -> CheckpointImages:
    return CheckpointImages(checkpoint_id, images)


def feature_cache_dir(svc: Services) -> FsPath:
    """The features every analysis shares (models/features.py), under the data folder."""
    return svc.settings.data_path / "cache" / "features"


def umap_cache_dir(svc: Services) -> FsPath:
    return svc.settings.data_path / "cache" / "umap"


# models' analysis of one checkpoint: f(path, progress=…, feature_cache=…, dataset=…,
# data_root=…, split=…, **params) → a JSON-able dict.
Analysis = Callable[..., dict[str, Any]]


def checkpoint_job(
    svc: Services,
    kind: str,
    of: CheckpointImages,
    params: dict[str, Any],
    analysis: Callable[[], Analysis],
) -> tuple[str, Callable[[Progress], dict[str, Any]]]:
    """One analysis of one checkpoint as the analysis cache runs it: its key (the file's
    identity and every parameter) and its computation. `analysis` imports the models function
    lazily (the server starts without torch). 404 for an unknown checkpoint or a lost file."""
    checkpoint_id, images = of.checkpoint_id, of.images
    row, path = svc.checkpoint_path(checkpoint_id)
    args = {**images.data, "split": images.split, **params}

    def compute(progress: Progress) -> dict[str, Any]:
        out = analysis()(path, progress=progress, feature_cache=feature_cache_dir(svc), **args)
        return {**out, "checkpoint": row["path"], "checkpoint_id": checkpoint_id}

    return svc.analysis.key(kind, {"ckpt": file_identity(path), **args}), compute


def _of_checkpoint(
    svc: Services,
    kind: str,
    of: CheckpointImages,
    params: dict[str, Any],
    analysis: Callable[[], Analysis],
    pick: Callable[[bytes], bytes] | None = None,
    view: str | None = None,
) -> Response:
    """Answer one analysis of one checkpoint, computed on the analysis pool and cached."""
    key, compute = checkpoint_job(svc, kind, of, params, analysis)
    return answer_of_job(svc, key, compute, pick, view)


def diagnose_analysis(svc: Services, row: dict[str, Any]) -> Callable[[], Analysis]:
    """The Diagnose report of the checkpoint `row` (the diagnostics route's and a sweep
    cell's: one computation under one key, so either finds the other's report)."""

    def analysis() -> Analysis:
        from models.diagnostics import diagnose_checkpoint

        def run(path: FsPath, feature_cache: FsPath, **kw: Any) -> dict[str, Any]:
            # For a file that records no training log (written before checkpoints did), the
            # run's stored steps up to the checkpoint's stand in. Read here, when the report is
            # computed, not on every poll of a cached or running one.
            run_id = row.get("run_id")
            steps = svc.store.recent_steps(run_id, row["step"]) if run_id else None
            return diagnose_checkpoint(path, cache_dir=feature_cache, recent_steps=steps, **kw)

        return run

    return analysis


@router.get(
    "/checkpoints/{checkpoint_id}/diagnostics",
    summary="Collapse diagnostics and the verdict",
    responses=answers("models.diagnostics.DiagnosticReport"),
)
def diagnostics(
    of: CheckpointImages = Depends(checkpoint_images),
    max_images: int = Query(DIAGNOSE_MAX_IMAGES, ge=1, le=MAX_IMAGES),
    svc: Services = Depends(get_services),
) -> Response:
    row, _ = svc.checkpoint_path(of.checkpoint_id)
    params = {"max_images": max_images}
    analysis = diagnose_analysis(svc, row)
    return _of_checkpoint(svc, "diagnostics", of, params, analysis)


@router.get(
    "/checkpoints/{checkpoint_id}/embedding",
    summary="2-D UMAP map of the embeddings",
    description="format=points (the default): one JSON object per point. format=columns: one "
    "JSON array per field, `{columns: {index: [...], x: [...], y: [...], label, cluster, "
    "confidence, phi}}` (floats rounded to 4 decimals), less than half the bytes of a large map. "
    "`offset` / `limit` return a page of the rows (`num_points` stays the map's total).",
    responses=answers(
        "{points: [{index, x, y, label, cluster, …}], …} or "
        "{columns: {index: [...], x: [...], …}, …}"
    ),
)
def embedding(
    of: CheckpointImages = Depends(checkpoint_images),
    max_images: int = Query(5000, ge=1, le=MAX_IMAGES),
    max_fit: int = Query(5000, ge=2, le=MAX_IMAGES),
    n_neighbors: int = Query(15, ge=2, le=200),
    min_dist: float = Query(0.1, ge=0.0, le=1.0),
    seed: int = Query(0, ge=0, le=2**31 - 1),
    format: Literal["points", "columns"] = Query(
        "points", description="points: an object per point; columns: an array per field"
    ),
    offset: int = Query(0, ge=0, le=MAX_IMAGES, description="first row of the page"),
    limit: int | None = Query(None, ge=1, le=MAX_IMAGES, description="rows in the page"),
    svc: Services = Depends(get_services),
) -> Response:
    params = {
        "max_images": max_images,
        "max_fit": max_fit,
        "n_neighbors": n_neighbors,
        "min_dist": min_dist,
        "seed": seed,
        "layout": format,
    }

    def analysis() -> Analysis:
        from models.embedding_map import embedding_map

        return lambda path, **kw: embedding_map(path, cache_dir=umap_cache_dir(svc), **kw)

    def page(body: bytes) -> bytes:
        # One cached answer per map; a page is cut from it here (cheap next to the map itself).
        answer = json.loads(body)
        end = None if limit is None else offset + limit
        if "columns" in answer:
            answer["columns"] = {k: v[offset:end] for k, v in answer["columns"].items()}
        else:
            answer["points"] = answer["points"][offset:end]
        return json.dumps({**answer, "offset": offset, "limit": limit}).encode()

    paged = offset > 0 or limit is not None
    pick = page if paged else None
    view = f"page:{offset}:{limit}"
    return _of_checkpoint(svc, "embedding", of, params, analysis, pick, view)


def _galleries() -> Analysis:
    from models.galleries import prototype_galleries

    return prototype_galleries


TopK = Query(16, ge=1, le=256, description="images per prototype")
MaxImagesAll = Query(None, ge=1, le=MAX_IMAGES, description="the first N images (default all)")


@router.get(
    "/checkpoints/{checkpoint_id}/prototypes",
    summary="Every prototype: usage, φ, empty/duplicate flags, nearest images",
    responses=answers("{prototypes: [{prototype, usage, images, …}], …}"),
)
def prototypes(
    of: CheckpointImages = Depends(checkpoint_images),
    top_k: int = TopK,
    max_images: int | None = MaxImagesAll,
    svc: Services = Depends(get_services),
) -> Response:
    params = {"top_k": top_k, "max_images": max_images}
    return _of_checkpoint(svc, "prototypes", of, params, _galleries)


@router.get(
    "/checkpoints/{checkpoint_id}/prototypes/{k}/gallery",
    summary="The images nearest to prototype k",
    responses=answers("{prototype, usage, images, similarities, …}"),
)
def gallery(
    k: int = Path(ge=0, le=100_000, description="prototype number"),
    of: CheckpointImages = Depends(checkpoint_images),
    top_k: int = TopK,
    max_images: int | None = MaxImagesAll,
    svc: Services = Depends(get_services),
) -> Response:
    def pick(body: bytes) -> bytes:
        answer = json.loads(body)
        for entry in answer.get("prototypes", []):
            if entry.get("prototype") == k:
                extra = {
                    "checkpoint_id": of.checkpoint_id,
                    "dataset": answer.get("dataset"),
                    "data_root": answer.get("data_root"),
                }
                return json.dumps({**entry, **extra, "split": of.images.split}).encode()
        n = answer.get("num_prototypes", len(answer.get("prototypes", [])))
        raise HTTPException(404, f"no prototype {k}: this checkpoint has {n} (0–{n - 1})")

    # Shares the cached galleries of /prototypes with the same parameters.
    params = {"top_k": top_k, "max_images": max_images}
    view = f"prototype:{k}:{of.checkpoint_id}"
    return _of_checkpoint(svc, "prototypes", of, params, _galleries, pick, view)


@router.get(
    "/checkpoints/{checkpoint_id}/images/{index}/neighbours",
    summary="An image's nearest images and nearest prototypes",
    responses=answers("{index, images: [{index, similarity}], prototypes}"),
)
def neighbours(
    index: int = Path(ge=0, le=10_000_000, description="data set index"),
    of: CheckpointImages = Depends(checkpoint_images),
    k: int = Query(12, ge=1, le=256, description="nearest images"),
    k_prototypes: int = Query(5, ge=1, le=256),
    max_images: int | None = MaxImagesAll,
    svc: Services = Depends(get_services),
) -> Response:
    params = {"index": index, "k_images": k, "k_prototypes": k_prototypes, "max_images": max_images}

    def analysis() -> Analysis:
        from models.galleries import image_neighbours

        return image_neighbours

    return _of_checkpoint(svc, "neighbours", of, params, analysis)


@router.get(
    "/compare",
    summary="Two checkpoints on the same images",
    description="Cluster agreement (Hungarian matching), NMI, ARI, prototypes that gained or "
    "lost images, metric deltas and Procrustes-aligned maps.",
    responses=answers("models.compare.compare_checkpoints"),
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
    data = images.data

    def compute(progress: Progress) -> dict[str, Any]:
        from models.compare import compare_checkpoints

        out = compare_checkpoints(
            path_a,
            path_b,
            split=images.split,
            max_images=max_images,
            cache_dir=umap_cache_dir(svc),
            progress=progress,
            feature_cache=feature_cache_dir(svc),
            **data,
        )
        ids = {"a": row_a["path"], "b": row_b["path"], "a_id": a, "b_id": b}
        return {**out, **ids}

    ident = {
        "a": file_identity(path_a),
        "b": file_identity(path_b),
        "split": images.split,
        "max_images": max_images,
        **data,
    }
    return cached_answer(svc, "compare", ident, compute)
