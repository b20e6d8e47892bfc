"""Request and response schemas of the HTTP API (they are what OpenAPI documents).

The bounds of `RunCreate` are read from `models.config`, the single place that defines them, so
the API, the CLI and the trainer can never disagree about what is allowed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.store import RESUMABLE_STATUSES
from models.config import (
    DataConfig,
    OptimConfig,
    PCLConfig,
    SwAVConfig,
    TrainConfig,
)
from models.sweep import SweepGrid

RunStatus = Literal["queued", "running", "completed", "stopped", "failed", "interrupted"]


def bounds(model: type[BaseModel], field: str) -> dict[str, Any]:
    """The ge/gt/le/lt constraints of `model.field`, as Field keyword arguments."""
    out: dict[str, Any] = {}
    for meta in model.model_fields[field].metadata:
        for name in ("ge", "gt", "le", "lt"):
            value = getattr(meta, name, None)
            if value is not None:
                out[name] = value
    return out


def range_text(model: type[BaseModel], field: str, label: str | None = None) -> str | None:
    """'0.005 ≤ epsilon ≤ 10.0' from the field's constraints; None when it has none."""
    b = bounds(model, field)
    if not b:
        return None
    name = label or field
    low = f"{b['ge']} ≤ " if "ge" in b else (f"{b['gt']} < " if "gt" in b else "")
    high = f" ≤ {b['le']}" if "le" in b else (f" < {b['lt']}" if "lt" in b else "")
    return f"{low}{name}{high}"


# Upper bounds the API adds where the training config has none: without them 2**63 or 1e308
# (or Infinity, which Python's JSON parser accepts) passed validation and broke later — a
# seed ≥ 2**32 made every run fail in np.random.seed, an infinite budget made the run's own
# answer unserialisable (a 500). Checked on the final config too (see `check_caps`), so
# `config` and `overrides` cannot get around them.
API_CAPS: dict[str, float] = {
    "num_train": 2**31 - 1,
    "seed": 2**32 - 1,
    "max_minutes": 10_000_000.0,
    "max_steps": 10**12,
    "freeze_prototypes_iters": 10**12,
    "warmup_epochs": 10_000,
}


def _b(model: type[BaseModel], field: str, description: str, name: str | None = None) -> Any:
    """An optional request field carrying the training config's bounds and a description."""
    b = bounds(model, field)
    cap = API_CAPS.get(name or field)
    if cap is not None and "le" not in b and "lt" not in b:
        b["le"] = cap
    return Field(None, description=description, **b)


class RunCreate(BaseModel):
    """A training run. Unset fields take the defaults of `models/config.py`."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"method": "swav", "dataset": "shapes", "epochs": 10, "epsilon": 0.02},
                {"method": "swav", "dataset": "shapes", "equipartition": False, "max_minutes": 5},
                {"method": "pcl", "dataset": "digits", "num_clusters": [10, 20], "epochs": 20},
            ]
        },
    )

    name: str | None = Field(None, max_length=120, description="a label for people")
    method: Literal["swav", "pcl", "supervised"] = Field(..., description="what to train")
    recipe: Literal["cpu", "paper"] | None = Field(
        None,
        description="defaults to start from: cpu (tuned for minutes on a CPU, the default) or "
        "paper (the official code's hyper-parameters); fields set here still win",
    )
    dataset: str = Field(
        "shapes",
        min_length=1,
        max_length=64,
        description="shapes | digits | cifar10 | stl10 | imagefolder (see GET /datasets)",
    )
    data_root: str | None = Field(
        None,
        max_length=4096,
        description="folder of cifar10 / stl10 / imagefolder data, inside the allowed data "
        "roots (relative paths are taken relative to the first); default: "
        "<data dir>/datasets/<dataset> when that exists",
    )
    download: bool | None = Field(None, description="let torchvision fetch cifar10/stl10")
    image_size: int | None = _b(DataConfig, "image_size", "image side in pixels")
    num_train: int | None = _b(DataConfig, "num_train", "use at most this many training images")
    backbone: Literal["small_cnn", "resnet18", "resnet50"] | None = None
    width: int | None = _b(TrainConfig, "width", "base channel width of small_cnn")
    epochs: int | None = _b(TrainConfig, "epochs", "epochs to train")
    batch_size: int | None = _b(TrainConfig, "batch_size", "images per step")
    lr: float | None = _b(OptimConfig, "lr", "peak learning rate")
    optimizer: Literal["sgd", "adamw", "lars"] | None = None
    seed: int | None = _b(TrainConfig, "seed", "random seed")
    max_minutes: float | None = _b(TrainConfig, "max_minutes", "stop after this much training")
    max_steps: int | None = _b(TrainConfig, "max_steps", "stop after this many steps")
    device: Literal["auto", "cpu", "cuda"] | None = None
    amp: Literal["auto", "on", "off"] | bool | None = Field(
        None,
        description="precision: auto (reduced only where this machine runs it faster, the "
        "default), on (bf16 autocast on CPU, bf16/fp16 on CUDA), off (float32); true/false "
        "mean on/off",
    )
    # SwAV
    num_prototypes: int | None = _b(SwAVConfig, "num_prototypes", "SwAV: prototypes K")
    epsilon: float | None = _b(SwAVConfig, "epsilon", "SwAV: Sinkhorn entropy ε")
    temperature: float | None = _b(SwAVConfig, "temperature", "SwAV τ, or PCL's mean φ")
    queue_length: int | None = _b(
        SwAVConfig, "queue_length", "SwAV: assignment queue; PCL: negatives (≥ 2)"
    )
    equipartition: bool | None = Field(
        None, description="SwAV: false = targets are the softmax, not Sinkhorn (collapses)"
    )
    freeze_prototypes_iters: int | None = _b(
        SwAVConfig, "freeze_prototypes_iters", "SwAV: steps with frozen prototypes"
    )
    sinkhorn_iterations: int | None = _b(SwAVConfig, "sinkhorn_iterations", "SwAV: iterations")
    # PCL
    num_clusters: list[int] | None = Field(
        None, min_length=1, max_length=10, description="PCL: K of every clustering, each ≥ 2"
    )
    fixed_phi: bool | None = Field(None, description="PCL ablation: φ = τ for every cluster")
    warmup_epochs: int | None = _b(PCLConfig, "warmup_epochs", "PCL: epochs of InfoNCE only")
    config: dict[str, Any] | None = Field(
        None,
        description="any further TrainConfig fields as a partial tree, e.g. "
        '{"augment": {"num_small": 2}}; `overrides` and the named fields take precedence',
    )
    overrides: dict[str, Any] | None = Field(
        None,
        max_length=200,
        description="TrainConfig fields by dotted name, as the CLI's --set, e.g. "
        '{"swav.hidden_dim": 32, "augment.num_small": 2}; applied after `config`, before the '
        "named fields above",
    )

    @field_validator("overrides")
    @classmethod
    def _dotted(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key in value or {}:
            parts = key.split(".")
            if not all(p.isidentifier() for p in parts) or len(parts) > 4:
                raise ValueError(f"{key!r} is not a dotted TrainConfig name like 'swav.epsilon'")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from models.data import DATASETS  # imports torch: only when a run is created

        if value not in DATASETS:
            raise ValueError(f"unknown data set {value!r}; choose one of: {', '.join(DATASETS)}")
        return value

    @field_validator("num_clusters")
    @classmethod
    def _clusters(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(not 2 <= k <= 100_000 for k in value):
            raise ValueError("every K must satisfy 2 ≤ K ≤ 100000")
        return value


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


class RunOut(BaseModel):
    """A run as the API shows it."""

    id: int
    name: str | None
    method: str
    dataset: str
    status: RunStatus
    reason: str = Field(description="why it ended the way it did (empty while it runs)")
    step: int | None = Field(description="last step reported")
    epoch: int | None = Field(description="epoch of the last step (from 0)")
    pid: int | None = Field(description="its training process while running")
    starts: int = Field(description="how many times a training process was started for it")
    exit_code: int | None
    resumable: bool = Field(description="POST /runs/{id}/resume would continue it")
    latest_checkpoint_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    config: dict[str, Any] = Field(description="the full TrainConfig")
    request: dict[str, Any] = Field(description="the POST /runs body it was created from")

    @classmethod
    def from_row(cls, run: dict[str, Any], latest_checkpoint_id: int | None) -> RunOut:
        """From the store's row, whose columns carry the fields' own names."""
        status = run["status"]
        return cls.model_validate(
            {
                **run,
                "reason": run["reason"] or "",
                "pid": run["pid"] if status == "running" else None,
                "resumable": status in RESUMABLE_STATUSES,
                "latest_checkpoint_id": latest_checkpoint_id,
                **{k: _utc(run[k]) for k in ("created_at", "started_at", "finished_at")},
            }
        )


class Event(BaseModel):
    """One event of the log: the trainer's fields, flattened, plus `id` and `run_id`."""

    model_config = ConfigDict(extra="allow")

    id: int = Field(description="global, strictly increasing; also the SSE id")
    run_id: int
    type: str = Field(description="start | step | epoch | checkpoint | end")


class CollapseAlertOut(BaseModel):
    kind: Literal["one-cluster", "uniform"]
    message: str = Field(description="what the steps show, naming the numbers")


class MetricsPage(BaseModel):
    run_id: int
    status: RunStatus
    events: list[Event]
    next: int = Field(description="pass as ?since= to get what follows")
    more: bool = Field(description="true when the page was full: ask again right away")
    alert: CollapseAlertOut | None = Field(
        None, description="the collapse the run's latest steps show; null while healthy"
    )


class CheckpointOut(BaseModel):
    id: int
    kind: Literal["run", "upload"]
    run_id: int | None
    run_name: str | None
    recipe: str | None = Field(None, description="cpu | paper: the run's recipe (None: upload)")
    name: str | None
    filename: str | None
    path: str = Field(description="relative to the server's data dir")
    method: str | None
    dataset: str | None
    source: str | None = Field(description="protoscope | swav_official | pcl_official")
    epoch: int | None = Field(description="whole epochs completed when it was written")
    step: int | None
    epochs_done: float | None = Field(
        None, description="epochs of training behind it, fractional (0.4: 40 % of the first)"
    )
    partial: bool = Field(description="written mid-epoch (on a clock, a stop, a budget)")
    num_prototypes: int | None
    size_bytes: int | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CheckpointOut:
        return cls(**{**row, "created_at": _utc(row["created_at"])})


class DatasetOut(BaseModel):
    name: str
    description: str
    needs_root: bool = Field(description="needs a data_root folder")
    default_root: str | None = Field(description="used when a run gives no data_root")


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    runs: dict[str, int] = Field(description="runs per status")
    max_concurrent_runs: int
    token_required: bool


class Pending(BaseModel):
    """202: the analysis is still being computed; ask again in a moment."""

    status: Literal["running"]
    progress: float = Field(ge=0.0, le=1.0)
    message: str


class ErrorOut(BaseModel):
    detail: Any = Field(description="a message, or (422) a list of {loc, msg, type}")


# --- sweeps ---------------------------------------------------------------------------------
class SweepCreate(SweepGrid):
    """A grid of runs: one or two axes (a run field and its values), a step budget per cell.

    Each cell becomes an ordinary run (queued like any other, listed on Runs). `fields` are
    named run fields every cell shares (as in POST /runs); `config` a partial TrainConfig tree
    every cell starts from.
    """

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "name": "ε × K",
                    "method": "swav",
                    "dataset": "shapes",
                    "axes": [
                        {"field": "epsilon", "values": [0.005, 0.02, 0.05, 0.2]},
                        {"field": "num_prototypes", "values": [16, 128]},
                    ],
                    "max_steps": 200,
                }
            ]
        },
    )

    name: str | None = Field(None, max_length=120, description="a label for people")
    config: dict[str, Any] | None = Field(None, description="partial TrainConfig for every cell")


class SweepDiagnosis(BaseModel):
    """The cell's Diagnose report while it is computed."""

    status: Literal["running", "failed"]
    progress: float = Field(ge=0.0, le=1.0)
    message: str


class SweepCellOut(BaseModel):
    cell: int = Field(description="row-major index in the grid")
    position: list[int] = Field(description="index along each axis")
    coords: dict[str, Any] = Field(description="{field: value} of this cell")
    run_id: int
    run_name: str | None
    status: RunStatus
    reason: str
    step: int | None
    loss: float | None = Field(description="the last step's loss")
    knn_top1: float | None = Field(
        description="kNN top-1 in [0, 1]: the Diagnose report's once known, else the run's last"
    )
    checkpoint_id: int | None = Field(description="the run's newest checkpoint")
    verdict: str | None = Field(
        description="healthy | partial / uniform / one-cluster / dimensional collapse; null "
        "while unknown"
    )
    verdict_reason: str | None
    verdict_source: Literal["diagnostics", "training log"] | None = Field(
        description="diagnostics: the Diagnose report of the newest checkpoint of a finished "
        "cell; training log: the live alert of a running cell (only collapses)"
    )
    diagnosis: SweepDiagnosis | None = Field(
        None, description="the report is still being computed (or failed)"
    )


class SweepOut(BaseModel):
    id: int
    name: str | None
    created_at: datetime
    grid: dict[str, Any] = Field(description="the grid it was created from (models.sweep)")
    num_cells: int
    num_finished: int = Field(description="cells whose run has ended")
    max_parallel: int = Field(description="cells (runs) that train at once on this server")
    cells: list[SweepCellOut] | None = Field(None, description="only in GET /sweeps/{id}")
