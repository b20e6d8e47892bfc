"""Data sets and their images (PNG thumbnails)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from backend.app_services import Services, get_services
from backend.images import NATIVE_SIZE, to_png
from backend.paths import NEEDS_ROOT, default_data_root
from backend.schemas import DatasetOut, ErrorOut

router = APIRouter(tags=["datasets"])


@router.get("/datasets", response_model=list[DatasetOut], summary="The data sets runs can use")
def list_datasets(svc: Services = Depends(get_services)) -> list[DatasetOut]:
    from models.data import DATASETS

    roots = svc.settings.allowed_roots()
    out = []
    for name, description in DATASETS.items():
        default = default_data_root(name, roots)
        out.append(
            DatasetOut(
                name=name,
                description=description,
                needs_root=name in NEEDS_ROOT,
                default_root=str(default) if default else None,
            )
        )
    return out


@router.get(
    "/datasets/{name}/images/{index}",
    response_class=Response,
    summary="One image of a data set split, as PNG",
    description="The index is the data set index every analysis reports (test split by "
    "default, as the analyses use). `size` scales the image to size × size pixels.",
    responses={
        200: {"content": {"image/png": {}}, "description": "the image"},
        400: {"model": ErrorOut, "description": "data set cannot be loaded / bad data_root"},
        404: {"model": ErrorOut, "description": "unknown data set or index out of range"},
    },
)
def dataset_image(
    name: str = Path(max_length=64),
    index: int = Path(ge=0, le=10_000_000),
    split: Literal["train", "test"] = "test",
    size: int | None = Query(None, ge=8, le=512, description="thumbnail side in pixels"),
    data_root: str | None = Query(None, max_length=4096),
    image_size: int | None = Query(None, ge=8, le=256, description="load the set at this side"),
    num_train: int | None = Query(
        None, ge=16, le=2**31 - 1, description="as the run's num_train (train split)"
    ),
    seed: int = Query(0, ge=0, le=2**31 - 1, description="as the run's data.seed"),
    svc: Services = Depends(get_services),
) -> Response:
    from models.config import DataConfig
    from models.data import DATASETS, DatasetError

    if name not in DATASETS:
        raise HTTPException(404, f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    root = svc.data_root(data_root)
    if root is None:
        default = default_data_root(name, svc.settings.allowed_roots())
        root = str(default) if default else None
    cfg = DataConfig(
        name=name,
        root=root,
        image_size=image_size or NATIVE_SIZE.get(name, 32),
        num_train=num_train,
        seed=seed,
    )
    try:
        images = svc.images.split(cfg, split)
    except DatasetError as e:
        raise HTTPException(400, svc.scrub(str(e))) from None
    if index >= len(images):
        raise HTTPException(
            404,
            f"image {index} is out of range: the {split} split of {name} has "
            f"{len(images)} images (0–{len(images) - 1})",
        )
    return Response(
        to_png(images.images[index], size),
        media_type="image/png",
        # Generated and bundled sets never change; a page full of thumbnails loads once.
        headers={"Cache-Control": "private, max-age=3600"},
    )
