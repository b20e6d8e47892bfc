"""A sweep: a grid of one or two run fields, each cell an ordinary run with a step budget.

`SweepGrid` is the typed grid (an axis is a named run field from `models/config.FIELD_PATHS`
and its values), `cells` expands it row-major into `SweepCell`s, `cell_fields` gives a cell's
named fields (what `POST /runs` and the CLI's flags take), `cell_config` its validated
TrainConfig, and `summary_rows` / `summary_table` the table of the cells' results. Both doors
(`POST /sweeps`, `protoscope sweep`) read this one module, so they expand a grid identically.

Pure pydantic over plain values: the backend imports it without torch.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.config import FIELD_PATHS, METHOD_FIELDS, TrainConfig, apply_fields

Scalar = bool | int | float | str
# Fields that say *what* is trained or *how long*: the sweep fixes them for every cell (the
# budget is the sweep's own `max_steps`), so they cannot be an axis.
NOT_AXES = frozenset(
    {"method", "dataset", "data_root", "download", "device", "max_steps", "max_minutes", "epochs"}
)
# PCL's K list is a list, not one value: an axis of lists would be a grid of grids.
LIST_FIELDS = frozenset({"num_clusters"})
SWEEP_FIELDS: tuple[str, ...] = tuple(
    name for name in (*FIELD_PATHS, *METHOD_FIELDS) if name not in NOT_AXES | LIST_FIELDS
)
MAX_AXES = 2
MAX_VALUES = 8
# 8 × 8 = 64 runs is already an afternoon on a laptop; a larger grid is a typo more often
# than a plan, and each cell is a row in Runs.
MAX_CELLS = 32
MAX_STEPS_PER_CELL = 10**12  # the API cap of a run's max_steps (backend/schemas.API_CAPS)
# A cell's budget is its steps: epochs are set high enough never to end a cell first (the
# warm-up counts steps, models/train.py, so a high epoch count changes no schedule).
CELL_EPOCHS = 10_000
# The demo's grid (make demo --sweep, the page's preset): SwAV's Sinkhorn ε, from too sharp to
# too smooth, against a small and a large K; where it collapses is not known in advance.
DEMO_AXES: tuple[tuple[str, tuple[Scalar, ...]], ...] = (
    ("epsilon", (0.005, 0.02, 0.05, 0.2)),
    ("num_prototypes", (16, 128)),
)
DEMO_STEPS = 600


class SweepError(ValueError):
    """A grid that cannot be run; the message names the axis or cell and what to fix."""


class SweepAxis(BaseModel):
    """One axis: a run field and the values it takes, in the order they are drawn."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    field: str = Field(description="a run field, e.g. epsilon, num_prototypes, batch_size")
    values: list[Scalar] = Field(min_length=1, max_length=MAX_VALUES)

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value in NOT_AXES:
            raise ValueError(
                f"{value!r} is fixed for the whole sweep, not an axis (the budget is max_steps)"
            )
        if value not in SWEEP_FIELDS:
            known = ", ".join(SWEEP_FIELDS)
            raise ValueError(f"unknown field {value!r}; an axis is one of: {known}")
        return value

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[Scalar]) -> list[Scalar]:
        seen = [json.dumps(v) for v in values]
        dup = next((v for v, s in zip(values, seen, strict=True) if seen.count(s) > 1), None)
        if dup is not None:
            raise ValueError(f"value {dup!r} is given twice")
        return values


class SweepGrid(BaseModel):
    """What a sweep trains: one method on one data set, one or two axes, a budget per cell."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Literal["swav", "pcl", "supervised"] = "swav"
    dataset: str = Field("shapes", min_length=1, max_length=64)
    axes: list[SweepAxis] = Field(min_length=1, max_length=MAX_AXES)
    max_steps: int = Field(DEMO_STEPS, ge=1, le=MAX_STEPS_PER_CELL, description="steps per cell")
    # Named run fields every cell shares (e.g. {"batch_size": 32}); an axis wins over them.
    fields: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> SweepGrid:
        names = [a.field for a in self.axes]
        if len(set(names)) != len(names):
            raise ValueError(f"axis {names[0]!r} is given twice; use two different fields")
        n = num_cells(self)
        if n > MAX_CELLS:
            raise ValueError(f"{n} cells is more than {MAX_CELLS}; use fewer values per axis")
        for name in names:
            section = FIELD_PATHS.get(name, ("",))[0]
            if section in ("swav", "pcl") and section != self.method:
                # Set, it would change nothing: every cell would be the same run.
                raise ValueError(
                    f"axis {name!r} is a {section.upper() if section == 'pcl' else 'SwAV'} "
                    f"field: a {self.method} run ignores it"
                )
        unknown = sorted(set(self.fields) - set(FIELD_PATHS) - set(METHOD_FIELDS))
        if unknown:
            raise ValueError(f"unknown run field(s) in fields: {', '.join(unknown)}")
        return self


class SweepCell(BaseModel):
    """One cell: its place in the grid (row-major over the axes) and its axis values."""

    index: int
    position: tuple[int, ...] = Field(description="index along each axis")
    coords: dict[str, Scalar]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.coords.items())


def num_cells(grid: SweepGrid) -> int:
    n = 1
    for axis in grid.axes:
        n *= len(axis.values)
    return n


def cells(grid: SweepGrid) -> list[SweepCell]:
    """Every cell, row-major: the last axis varies fastest."""
    ranges = [range(len(a.values)) for a in grid.axes]
    out = []
    for i, position in enumerate(itertools.product(*ranges)):
        coords = {a.field: a.values[p] for a, p in zip(grid.axes, position, strict=True)}
        out.append(SweepCell(index=i, position=position, coords=coords))
    return out


def cell_fields(grid: SweepGrid, cell: SweepCell) -> dict[str, Any]:
    """The named run fields of a cell: the shared fields, the budget, then its coordinates."""
    out: dict[str, Any] = {"epochs": CELL_EPOCHS, **grid.fields}
    out |= {"method": grid.method, "dataset": grid.dataset, "max_steps": grid.max_steps}
    out |= cell.coords
    return out


def _error_text(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "config"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def cell_config(
    grid: SweepGrid, cell: SweepCell, base: Mapping[str, Any] | None = None
) -> TrainConfig:
    """The cell's TrainConfig: `base` (a partial config tree), then the cell's fields.

    Raises SweepError naming the cell when a value is out of range for its field.
    """
    tree: dict[str, Any] = json.loads(json.dumps(dict(base or {})))  # a deep copy
    apply_fields(tree, cell_fields(grid, cell), grid.method)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as e:
        raise SweepError(f"cell {cell.index} ({cell.label}): {_error_text(e)}") from None


def validate_grid(payload: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> SweepGrid:
    """A SweepGrid whose every cell is a valid TrainConfig; SweepError with what to fix."""
    try:
        grid = SweepGrid.model_validate(dict(payload))
    except ValidationError as e:
        raise SweepError(_error_text(e)) from None
    for cell in cells(grid):
        cell_config(grid, cell, base)
    return grid


def parse_axis(text: str) -> SweepAxis:
    """`epsilon=0.005,0.02` → an axis; values are JSON where they parse (numbers, true)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip() or not raw.strip():
        raise SweepError(f"--grid {text!r}: expected FIELD=V1,V2,… e.g. epsilon=0.005,0.05")
    values: list[Scalar] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            raise SweepError(f"--grid {text!r}: an empty value")
        try:
            value = json.loads(part)
        except json.JSONDecodeError:
            value = part
        if not isinstance(value, bool | int | float | str):
            raise SweepError(f"--grid {text!r}: {part!r} is not a single value")
        values.append(value)
    try:
        return SweepAxis(field=name.strip(), values=values)
    except ValidationError as e:
        raise SweepError(f"--grid {text!r}: {_error_text(e)}") from None


def demo_grid(max_steps: int = DEMO_STEPS) -> SweepGrid:
    """The demo's ε × K grid on shapes."""
    axes = [SweepAxis(field=f, values=list(v)) for f, v in DEMO_AXES]
    return SweepGrid(method="swav", dataset="shapes", axes=axes, max_steps=max_steps)


# --- the summary ------------------------------------------------------------------------------
SUMMARY_COLUMNS = ("cell", "status", "step", "final_loss", "knn_top1", "verdict")


def summary_rows(grid: SweepGrid, results: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell, in grid order: its coordinates, then what `results[cell]` says
    (missing cells read `pending`)."""
    rows = []
    for cell in cells(grid):
        got = results.get(cell.index, {})
        row: dict[str, Any] = {"cell": cell.index, **cell.coords}
        row["status"] = got.get("status", "pending")
        for col in SUMMARY_COLUMNS[2:]:
            row[col] = got.get(col)
        rows.append(row)
    return rows


def _cell_text(value: Any, column: str) -> str:
    if value is None:
        return "–"
    if column == "knn_top1" and isinstance(value, float):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a plain aligned text table (what the CLI prints)."""
    if not rows:
        return ""
    columns = list(rows[0])
    text = [[_cell_text(r.get(c), c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in text]
    return "\n".join(line.rstrip() for line in lines)
