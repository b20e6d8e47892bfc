"""Sweeps: a grid of ordinary runs (models/sweep.py), and the collapse map of their results.

`POST /sweeps` turns every cell into a `POST /runs` body and validates it exactly as that route
does (`build_config`), then stores the sweep and its queued runs in one transaction; the job
manager starts them like any run, at most `JobManager.slots` at once (≤ the cores).

`GET /sweeps/{id}` reads each cell's run. A finished cell's verdict is the Diagnose report of
its newest checkpoint, asked of the analysis cache under the very key `GET
/checkpoints/{id}/diagnostics` uses with its defaults, so the cell's Diagnose link opens the
same, already computed report. Asking never waits: a report not ready yet is started on the
analysis pool (a few threads, so the cost stays bounded however many cells finish at once) and
the cell says how far it got. A running cell shows only the live collapse alert of its steps.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import ValidationError

from backend.analysis_cache import AnalysisFailed, Ready
from backend.app_services import Services, get_services
from backend.routes.analysis import (
    DEFAULT_IMAGES,
    DIAGNOSE_MAX_IMAGES,
    CheckpointImages,
    checkpoint_job,
    diagnose_analysis,
)
from backend.routes.runs import build_config, collapse_alert
from backend.schemas import (
    ErrorOut,
    RunCreate,
    SweepCellOut,
    SweepCreate,
    SweepDiagnosis,
    SweepOut,
    _utc,
)
from backend.store import TERMINAL_STATUSES
from backend.training_jobs import JobError
from models.sweep import SweepGrid, cell_fields, cells

router = APIRouter(tags=["sweeps"])

SweepId = Path(ge=1, le=2**62, description="sweep id")


def _prefixed(detail: Any, prefix: str) -> Any:
    """An HTTPException detail (a message or a list of {loc, msg}) naming the cell first."""
    if isinstance(detail, list):
        return [{**d, "msg": f"{prefix}: {d.get('msg', '')}"} for d in detail]
    return f"{prefix}: {detail}"


def _cell_runs(body: SweepCreate, svc: Services) -> list[dict[str, Any]]:
    """Every cell as the run POST /runs would create; 4xx naming the first cell that fails."""
    grid = SweepGrid.model_validate(body.model_dump(exclude={"name", "config"}))
    label = body.name or f"sweep {' × '.join(a.field for a in grid.axes)}"
    out = []
    for cell in cells(grid):
        where = f"cell {cell.index} ({cell.label})"
        try:
            run = RunCreate.model_validate(
                {**cell_fields(grid, cell), "name": f"{label}: {cell.label}", "config": body.config}
            )
        except ValidationError as e:
            errors = [
                {"loc": ["body", *e_["loc"]], "msg": f"{where}: {e_['msg']}", "type": e_["type"]}
                for e_ in e.errors(include_url=False, include_input=False, include_context=False)
            ]
            raise HTTPException(422, errors) from None
        try:
            config = build_config(run, svc)
        except HTTPException as e:
            raise HTTPException(e.status_code, _prefixed(e.detail, where)) from None
        out.append(
            {
                "cell": cell.index,
                "position": list(cell.position),
                "coords": cell.coords,
                "name": run.name,
                "method": config["method"],
                "dataset": config["data"]["name"],
                "config": config,
                "request": run.model_dump(mode="json", exclude_none=True),
            }
        )
    return out


VERDICT_FIELDS = ("verdict", "reason", "knn_top1")  # what a cell shows of its report


def _verdict_of(body: bytes) -> bytes:
    report = json.loads(body)
    return json.dumps({k: report.get(k) for k in VERDICT_FIELDS}).encode()


def _diagnosis(svc: Services, checkpoint_id: int) -> dict[str, Any] | SweepDiagnosis:
    """The verdict of the newest checkpoint's Diagnose report, or how far its computation got
    (never waits); "failed" with the reason when it cannot be computed (its file is gone, say).

    The very job of GET /checkpoints/{id}/diagnostics with its default parameters
    (`checkpoint_job`, `diagnose_analysis`): one key, one report.
    """
    try:
        row = svc.checkpoint_row(checkpoint_id)
        key, compute = checkpoint_job(
            svc,
            "diagnostics",
            CheckpointImages(checkpoint_id, DEFAULT_IMAGES),  # the Diagnose page's default
            {"max_images": DIAGNOSE_MAX_IMAGES},
            diagnose_analysis(svc, row),
        )
        outcome = svc.analysis.get(key, compute, 0.0)
    except HTTPException as e:  # the checkpoint or its file is gone
        return SweepDiagnosis(status="failed", progress=0.0, message=str(e.detail))
    except AnalysisFailed as e:
        return SweepDiagnosis(status="failed", progress=0.0, message=e.message)
    if isinstance(outcome, Ready):
        # Polled every few seconds: the three fields are cut from the report once, not per GET.
        verdict: dict[str, Any] = json.loads(
            svc.analysis.view(key, "verdict", outcome.body, _verdict_of)
        )
        return verdict
    return SweepDiagnosis(status="running", progress=outcome.progress, message=outcome.message)


def diagnose_ended_cell(svc: Services) -> Callable[[int], None]:
    """For JobManager.on_ended: when a sweep cell's training process ends, start the Diagnose
    report of its newest checkpoint on the analysis pool (never waits; the report is cached
    under the diagnostics route's own key, where GET /sweeps/{id} then finds it ready)."""

    def ended(run_id: int) -> None:
        if svc.store.is_sweep_cell(run_id):
            checkpoint_id = svc.store.latest_checkpoint_id(run_id)
            if checkpoint_id is not None:
                _diagnosis(svc, checkpoint_id)

    return ended


def _cell_out(svc: Services, cell: dict[str, Any], diagnose: bool) -> SweepCellOut:
    # The store's cell row carries the fields' own names; the verdict comes below.
    unknown = dict.fromkeys(("verdict", "verdict_reason", "verdict_source"))
    out = SweepCellOut.model_validate({**cell, "reason": cell["reason"] or "", **unknown})
    finished = cell["status"] in TERMINAL_STATUSES
    if finished and diagnose and cell["checkpoint_id"] is not None:
        report = _diagnosis(svc, int(cell["checkpoint_id"]))
        if isinstance(report, dict):
            out.verdict, out.verdict_reason = report.get("verdict"), report.get("reason")
            out.verdict_source = "diagnostics"
            if report.get("knn_top1") is not None:
                out.knn_top1 = report["knn_top1"]
            return out
        out.diagnosis = report
    if not finished or out.diagnosis is not None or cell["checkpoint_id"] is None:
        # Until a report is in (or for a cell that ended before its first checkpoint), the
        # steps' own alert (the Runs page's) says what they show.
        run = svc.store.get_run(cell["run_id"])
        alert = collapse_alert(svc, run) if run is not None else None
        if alert is not None:
            out.verdict = f"{alert['kind']} collapse"
            out.verdict_reason, out.verdict_source = alert["message"], "training log"
    return out


def _sweep_out(
    svc: Services, sweep: dict[str, Any], cells_: list[SweepCellOut] | None, counts: tuple[int, int]
) -> SweepOut:
    return SweepOut(
        id=sweep["id"],
        name=sweep["name"],
        created_at=_utc(sweep["created_at"]),
        grid=sweep["grid"],
        num_cells=counts[0],
        num_finished=counts[1],
        max_parallel=svc.jobs.slots,
        cells=cells_,
    )


@router.post(
    "/sweeps",
    status_code=201,
    response_model=SweepOut,
    summary="Start a sweep: one queued run per cell of a grid",
    description="Each cell is an ordinary run (on Runs, stoppable, resumable) with the grid's "
    "`max_steps` as its budget; at most `max_parallel` train at once. An axis is a run field "
    "of POST /runs (e.g. epsilon, num_prototypes, batch_size, temperature, equipartition).",
    responses={
        400: {"model": ErrorOut, "description": "a data set folder is missing or not allowed"},
        422: {"model": ErrorOut, "description": "a bad grid or cell value, named"},
    },
)
def create_sweep(body: SweepCreate, svc: Services = Depends(get_services)) -> SweepOut:
    runs = _cell_runs(body, svc)
    grid = body.model_dump(mode="json", exclude={"name", "config"})
    if body.config:
        grid["config"] = body.config
    sweep_id = svc.store.create_sweep(body.name, grid, runs)
    svc.jobs.submitted()
    return get_sweep(sweep_id, diagnose=False, svc=svc)


@router.get("/sweeps", response_model=list[SweepOut], summary="All sweeps, newest first")
def list_sweeps(
    limit: int = Query(200, ge=1, le=1000), svc: Services = Depends(get_services)
) -> list[SweepOut]:
    return [
        _sweep_out(svc, s, None, (int(s["num_cells"]), s["num_finished"]))
        for s in svc.store.list_sweeps(limit)
    ]


@router.get(
    "/sweeps/{sweep_id}",
    response_model=SweepOut,
    summary="One sweep with every cell: run, status, kNN, verdict",
    description="A finished cell's verdict comes from the Diagnose report of its newest "
    "checkpoint; asking starts the reports not computed yet (`diagnosis` shows their "
    "progress) unless `diagnose=false`.",
    responses={404: {"model": ErrorOut}},
)
def get_sweep(
    sweep_id: int = SweepId,
    diagnose: bool = Query(True, description="start the Diagnose reports of finished cells"),
    svc: Services = Depends(get_services),
) -> SweepOut:
    sweep = svc.sweep_row(sweep_id)
    rows = svc.store.sweep_cells(sweep_id)
    out = [_cell_out(svc, row, diagnose) for row in rows]
    done = sum(1 for c in out if c.status in TERMINAL_STATUSES)
    return _sweep_out(svc, sweep, out, (len(out), done))


@router.post(
    "/sweeps/{sweep_id}/stop",
    response_model=SweepOut,
    summary="Stop every cell that has not ended",
    responses={404: {"model": ErrorOut}},
)
def stop_sweep(sweep_id: int = SweepId, svc: Services = Depends(get_services)) -> SweepOut:
    svc.sweep_row(sweep_id)
    # Queued cells first: stopping a running one frees a slot a queued one would take.
    rows = sorted(svc.store.sweep_cells(sweep_id), key=lambda r: r["status"] != "queued")
    for row in rows:
        if row["status"] in ("queued", "running"):
            with contextlib.suppress(JobError):  # it ended meanwhile
                svc.jobs.stop(int(row["run_id"]))
    return get_sweep(sweep_id, diagnose=False, svc=svc)
