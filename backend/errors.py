"""Error answers: always JSON `{"detail": ...}`, never a traceback.

422s name the field and, where the field has bounds, the allowed range; anything unexpected
becomes a 500 whose message names the exception type and points at the server log (where the
traceback goes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from backend.schemas import RunCreate, range_text
from models.config import FIELD_PATHS, METHOD_FIELDS

log = logging.getLogger("protoscope.api")


def _error_item(loc: Sequence[Any], msg: str, kind: str, allowed: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"loc": list(loc), "msg": msg, "type": kind}
    if allowed:
        item["msg"] = f"{msg} (allowed: {allowed})"
        item["allowed"] = allowed
    return item


def _request_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's validation errors, with the allowed range of bounded RunCreate fields."""
    out = []
    for err in errors:
        loc = list(err.get("loc", ()))
        allowed = None
        if len(loc) == 2 and loc[0] == "body" and loc[1] in RunCreate.model_fields:
            allowed = range_text(RunCreate, str(loc[1]))
        out.append(_error_item(loc, str(err.get("msg", "")), str(err.get("type", "")), allowed))
    return out


def _model_at(path: Sequence[Any]) -> tuple[type[BaseModel], str] | None:
    """The (model class, field name) a TrainConfig error location points at."""
    from models.config import TrainConfig

    model: type[BaseModel] = TrainConfig
    for i, part in enumerate(path):
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        if i == len(path) - 1:
            return model, str(part)
        sub = field.annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        model = sub
    return None


def train_config_errors(err: ValidationError, method: str) -> list[dict[str, Any]]:
    """TrainConfig errors, located at the POST /runs field that set the value."""
    reverse = {v: k for k, v in FIELD_PATHS.items()}
    for name in METHOD_FIELDS:
        reverse[(method, name)] = name
    out = []
    for e in err.errors():
        path = tuple(str(x) for x in e["loc"])
        field = reverse.get(path)
        loc = ["body", field] if field else ["body", "config", *path]
        found = _model_at(path)
        allowed = (
            range_text(found[0], found[1], field or ".".join(map(str, path))) if found else None
        )
        out.append(_error_item(loc, e["msg"], e["type"], allowed))
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _request_errors(exc.errors())})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            status_code=500,
            content={
                "detail": f"internal error ({type(exc).__name__}) while answering "
                f"{request.method} {request.url.path}; the server log has the details"
            },
        )
