"""Runs: create (→ a queued training process), list, inspect, stop, resume, poll metrics."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import ValidationError

from backend.app_services import Services, get_services
from backend.errors import train_config_errors
from backend.paths import NEEDS_ROOT, default_data_root
from backend.schemas import (
    API_CAPS,
    ErrorOut,
    MetricsPage,
    RunCreate,
    RunOut,
    RunStatus,
    range_text,
)
from backend.store import dumps
from backend.training_jobs import JobError
from models.config import FIELD_PATHS

router = APIRouter(tags=["runs"])

METRICS_PAGE_DEFAULT = 1000
METRICS_PAGE_MAX = 5000
# Ids, offsets and cursors end up as SQLite integers (64-bit): a larger number would not
# fit the query and fail with OverflowError (a 500) instead of a 422 naming the parameter.
MAX_ID = 2**62
RunId = Path(ge=1, le=MAX_ID, description="run id")


def build_config(body: RunCreate, svc: Services) -> dict[str, Any]:
    """The validated TrainConfig (as JSON) for a POST /runs body; 400/422 when it is not valid."""
    from models.config import TrainConfig, apply_fields, set_dotted

    tree: dict[str, Any] = copy.deepcopy(body.config or {})
    try:
        for key, value in (body.overrides or {}).items():
            set_dotted(tree, key, value)
        apply_fields(tree, body.model_dump(), body.method)
    except ValueError as e:  # a section on the way is a value: config {"data": 3}
        raise HTTPException(
            422, [{"loc": ["body", "config"], "msg": str(e), "type": "dict"}]
        ) from None
    data = tree.get("data") or {}
    # data.root may also come through `config`: every path is checked, whichever field set it.
    if isinstance(data.get("root"), str):
        data["root"] = svc.data_root(data["root"])
    elif body.dataset in NEEDS_ROOT:
        default = default_data_root(body.dataset, svc.settings.allowed_roots())
        if default is None:
            roots = ", ".join(str(r) for r in svc.settings.allowed_roots())
            raise HTTPException(
                400,
                f"data set {body.dataset!r} needs data_root: a folder inside the allowed data "
                f"folders ({roots}) holding it",
            )
        data["root"] = str(default)
    if body.dataset in NEEDS_ROOT and not data.get("download"):
        root = FsPath(data["root"])
        if not root.is_dir():
            raise HTTPException(
                400, f"data_root {svc.scrub(str(root))}: no such folder (set download to fetch)"
            )
    try:
        cfg = TrainConfig.model_validate(tree)
    except ValidationError as e:
        raise HTTPException(422, train_config_errors(e, body.method)) from None
    out = cfg.model_dump(mode="json")
    problems = check_caps(out)
    if problems:
        raise HTTPException(422, problems)
    return out


# Reachable only through `config` / `overrides`, with the same trouble as the named seed.
EXTRA_CAPS: dict[tuple[str, ...], float] = {("data", "seed"): 2**32 - 1}


def check_caps(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The API's upper bounds (schemas.API_CAPS), whichever of the fields, `config` or
    `overrides` set the value."""
    limits: list[tuple[tuple[str, ...], float, str | None]]
    limits = [(FIELD_PATHS[n], cap, n) for n, cap in API_CAPS.items()]
    limits += [(path, cap, None) for path, cap in EXTRA_CAPS.items()]
    out = []
    for path, cap, name in limits:
        node: Any = config
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, int | float) and not node <= cap:  # `not <=` also catches NaN
            label = name or ".".join(path)
            allowed = f"{label} ≤ {cap}"
            out.append(
                {
                    "loc": ["body", name] if name else ["body", "config", *path],
                    "msg": f"Input should be less than or equal to {cap} (allowed: {allowed})",
                    "type": "less_than_equal",
                    "allowed": range_text(RunCreate, name) if name else allowed,
                }
            )
    return out


def run_out(svc: Services, run: dict[str, Any], latest: int | None = None) -> RunOut:
    if latest is None:
        latest = svc.store.latest_checkpoint_id(run["id"])
    return RunOut.from_row(run, latest)


@router.post(
    "/runs",
    status_code=201,
    response_model=RunOut,
    summary="Start a training run",
    description="Queues the run; it starts in its own process as soon as a slot is free "
    "(PROTOSCOPE_MAX_CONCURRENT_RUNS). Follow it with GET /runs/{id}/events.",
    responses={
        400: {"model": ErrorOut, "description": "data_root outside the allowed folders"},
        422: {"model": ErrorOut, "description": "a field out of range (named, with the range)"},
    },
)
def create_run(body: RunCreate, svc: Services = Depends(get_services)) -> RunOut:
    config = build_config(body, svc)
    run = svc.store.create_run(
        name=body.name,
        method=config["method"],
        dataset=config["data"]["name"],
        config=config,
        request=body.model_dump(mode="json", exclude_none=True),
    )
    svc.jobs.submitted()
    return run_out(svc, svc.run_row(run["id"]))


@router.get("/runs", response_model=list[RunOut], summary="All runs, newest first")
def list_runs(
    status: RunStatus | None = None,
    limit: int = Query(200, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_ID),
    svc: Services = Depends(get_services),
) -> list[RunOut]:
    latest = svc.store.latest_checkpoint_ids()
    runs = svc.store.list_runs(limit=limit, offset=offset, status=status)
    return [RunOut.from_row(r, latest.get(r["id"])) for r in runs]


@router.get(
    "/runs/{run_id}",
    response_model=RunOut,
    summary="One run",
    responses={404: {"model": ErrorOut}},
)
def get_run(run_id: int = RunId, svc: Services = Depends(get_services)) -> RunOut:
    return run_out(svc, svc.run_row(run_id))


@router.post(
    "/runs/{run_id}/stop",
    response_model=RunOut,
    summary="Stop a run",
    description="A queued run stops at once; a running one saves a checkpoint and ends "
    "`stopped` within a few seconds (its `end` event says so).",
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut, "description": "finished"}},
)
def stop_run(run_id: int = RunId, svc: Services = Depends(get_services)) -> RunOut:
    return _job_action(svc, svc.jobs.stop, run_id)


@router.post(
    "/runs/{run_id}/resume",
    response_model=RunOut,
    summary="Resume a stopped, interrupted or failed run",
    description="Queues the run again; it continues exactly from its last checkpoint (or "
    "starts over when it never wrote one).",
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut, "description": "not resumable"}},
)
def resume_run(run_id: int = RunId, svc: Services = Depends(get_services)) -> RunOut:
    return _job_action(svc, svc.jobs.resume, run_id)


def _job_action(svc: Services, action: Callable[[int], dict[str, Any]], run_id: int) -> RunOut:
    """Stop or resume: the run as it is afterwards, or the job manager's refusal as its 4xx."""
    try:
        return run_out(svc, action(run_id))
    except JobError as e:
        raise HTTPException(e.status_code, e.message) from None


def collapse_alert(svc: Services, run: dict[str, Any]) -> dict[str, str] | None:
    """The collapse the run's latest steps show (models/collapse_rules.py), None while healthy:
    the Runs page shows what this says and judges nothing itself."""
    from models.collapse_rules import (
        RECENT_STEPS,
        configured_num_prototypes,
        training_log_alert,
    )

    config = run.get("config") or {}
    steps = svc.store.recent_steps(run["id"], limit=RECENT_STEPS)
    alert = training_log_alert(steps, config.get("method"), configured_num_prototypes(config))
    return alert.as_dict() if alert is not None else None


@router.get(
    "/runs/{run_id}/metrics",
    response_model=MetricsPage,
    summary="The run's events as JSON, for polling",
    description="Events with id > `since`, oldest first, at most `limit`. Pass the answer's "
    "`next` as `since` to get what follows; `more` says the page was full. `alert` is the "
    "collapse the run's latest steps show ({kind, message}), null while they look healthy.",
    responses={404: {"model": ErrorOut}},
)
def run_metrics(
    run_id: int = RunId,
    since: int = Query(0, ge=0, le=MAX_ID, description="the last event id already seen"),
    limit: int = Query(METRICS_PAGE_DEFAULT, ge=1, le=METRICS_PAGE_MAX),
    types: list[Literal["start", "step", "epoch", "checkpoint", "end"]] | None = Query(
        None, alias="type", description="only these event types (repeat the parameter)"
    ),
    svc: Services = Depends(get_services),
) -> Response:
    run = svc.run_row(run_id)
    rows = svc.store.events_after(run_id, since, limit + 1, types)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = rows[-1][0] if rows else since
    # The stored JSON is spliced in as is: no decode/encode of thousands of events per poll.
    head = dumps(
        {
            "run_id": run_id,
            "status": run["status"],
            "next": cursor,
            "more": more,
            "alert": collapse_alert(svc, run),
        }
    )
    body = f'{head[:-1]},"events":[{",".join(r[2] for r in rows)}]}}'
    return Response(body, media_type="application/json")
