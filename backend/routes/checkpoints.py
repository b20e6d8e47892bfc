"""Checkpoints: those the runs wrote, and uploads of official SwAV/PCL or protoscope files."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path as FsPath
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from backend.app_services import Services, get_services
from backend.schemas import CheckpointOut, ErrorOut
from backend.uploads import UploadError, UploadTooLarge, receive_upload

router = APIRouter(tags=["checkpoints"])

UPLOADS = "uploads"


def _checkpoint_info(path: FsPath) -> dict[str, Any]:
    """Load the file as a model (weights_only); CheckpointError when it is not usable."""
    from models.checkpoints import load_model

    loaded = load_model(path, "cpu")
    cfg = loaded.config
    return {
        "source": loaded.source,
        "method": cfg.method,
        # Official checkpoints carry no data set: their config's is only a placeholder.
        "dataset": cfg.data.name if loaded.source == "protoscope" else None,
        "epoch": loaded.epochs_done,
        "step": loaded.step,
        "partial": not loaded.epoch_complete,
        "num_prototypes": cfg.swav.num_prototypes if cfg.method == "swav" else None,
    }


@router.get("/checkpoints", response_model=list[CheckpointOut], summary="All checkpoints")
def list_checkpoints(
    run_id: int | None = Query(None, ge=1, le=2**62, description="only this run's"),
    limit: int = Query(1000, ge=1, le=10_000),
    svc: Services = Depends(get_services),
) -> list[CheckpointOut]:
    return [CheckpointOut.from_row(r) for r in svc.store.list_checkpoints(run_id, limit)]


@router.get(
    "/checkpoints/{checkpoint_id}",
    response_model=CheckpointOut,
    summary="One checkpoint",
    responses={404: {"model": ErrorOut}},
)
def get_checkpoint(
    checkpoint_id: int = Path(ge=1, le=2**62), svc: Services = Depends(get_services)
) -> CheckpointOut:
    return CheckpointOut.from_row(svc.checkpoint_row(checkpoint_id))


@router.post(
    "/checkpoints",
    status_code=201,
    response_model=CheckpointOut,
    summary="Upload a checkpoint",
    description="multipart/form-data with the file in the field `file` (and an optional "
    "`name`). Accepted: protoscope checkpoints and the official SwAV and PCL releases. The file "
    "is read with torch.load(weights_only=True) and must build a model before it is kept; "
    "anything else is refused and nothing is written.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "name": {"type": "string", "maxLength": 120},
                        },
                    }
                }
            },
        }
    },
    responses={
        400: {"model": ErrorOut, "description": "malformed, truncated or pickle-carrying file"},
        413: {"model": ErrorOut, "description": "larger than PROTOSCOPE_MAX_UPLOAD_BYTES"},
        415: {"model": ErrorOut, "description": "not multipart/form-data"},
    },
)
async def upload_checkpoint(
    request: Request, svc: Services = Depends(get_services)
) -> CheckpointOut:
    limit = svc.settings.max_upload_bytes
    folder = svc.settings.data_path / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    key = uuid.uuid4().hex
    # Dot-prefixed and inside the data dir: the final rename is atomic on the same file system.
    tmp = folder / f".incoming-{key}.part"
    try:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPException(
                415, "send the checkpoint as multipart/form-data in a field named 'file'"
            )
        try:
            upload = await receive_upload(request, tmp, limit)
        except UploadTooLarge as e:
            raise HTTPException(413, str(e)) from None
        except UploadError as e:
            raise HTTPException(400, str(e)) from None
        from models.checkpoints import CheckpointError

        try:
            # Loading builds the model (a ResNet-50 for official files): seconds of CPU.
            info = await anyio.to_thread.run_sync(_checkpoint_info, tmp)
        except CheckpointError as e:
            message = str(e).replace(str(tmp), upload.filename)
            raise HTTPException(400, f"not a usable checkpoint: {svc.scrub(message)}") from None
        except (MemoryError, RuntimeError, ValueError, TypeError, KeyError) as e:
            raise HTTPException(
                400, f"not a usable checkpoint: {type(e).__name__}: {svc.scrub(str(e))[:300]}"
            ) from None
        final = folder / f"{key}.pt"
        os.replace(tmp, final)
        name = (upload.fields.get("name") or "").strip()[:120] or upload.filename
        try:
            row = await anyio.to_thread.run_sync(
                svc.store.add_checkpoint,
                {
                    **info,
                    "run_id": None,
                    "kind": "upload",
                    "path": f"{UPLOADS}/{final.name}",
                    "name": name,
                    "filename": upload.filename,
                    "size_bytes": upload.size,
                },
            )
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        return CheckpointOut.from_row(row)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
