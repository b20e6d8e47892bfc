"""The collapse map's figures: a sweep's cells as a grid of verdicts, and a grid of kNN.

Input is the `GET /sweeps/{id}` answer as JSON (cells with `position`, `status`, `verdict`,
`knn_top1`, …); the first axis runs along x, the second (if any) along y. The page judges
nothing: a cell's state is the backend's verdict, or where the cell's run is when it has none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

Sweep = Mapping[str, Any]
Cell = Mapping[str, Any]

# Every state a cell can be drawn in, in legend order, with its colour: the verdicts
# (models/collapse_rules.py) from healthy to the worst collapse, then the states of a cell
# that has no verdict yet. Categorical colours, not a scale: "uniform" is not "more" than
# "dimensional".
STATES: tuple[tuple[str, str], ...] = (
    ("healthy", "#2e9d5b"),
    ("partial collapse", "#e8b53a"),
    ("dimensional collapse", "#e07b28"),
    ("uniform collapse", "#8e5cc8"),
    ("one-cluster collapse", "#d1343a"),
    ("diagnosing", "#9ecae1"),
    ("running", "#c7d7e8"),
    ("queued", "#e4e4e4"),
    ("no verdict", "#6b6b6b"),
)
STATE_INDEX = {name: i for i, (name, _) in enumerate(STATES)}
SHORT = {
    "healthy": "healthy",
    "partial collapse": "partial",
    "dimensional collapse": "dimensional",
    "uniform collapse": "uniform",
    "one-cluster collapse": "one-cluster",
}


def cell_state(cell: Cell) -> str:
    """The state the map draws: the verdict when there is one, else where the run is."""
    verdict = cell.get("verdict")
    if verdict in STATE_INDEX:
        return str(verdict)
    status = cell.get("status")
    if status in ("queued", "running"):
        return str(status)
    if (cell.get("diagnosis") or {}).get("status") == "running":
        return "diagnosing"
    if (
        status == "completed"
        and cell.get("checkpoint_id") is not None
        and not cell.get("diagnosis")
    ):
        return "diagnosing"  # the report is asked for on the next poll
    return "no verdict"


def cell_finished(cell: Cell) -> bool:
    return cell.get("status") not in ("queued", "running")


def axes_of(sweep: Sweep) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]] | None]:
    """(x field, x values) and (y field, y values) or None for a one-axis sweep."""
    axes = [(str(a["field"]), list(a["values"])) for a in sweep["grid"]["axes"]]
    return axes[0], (axes[1] if len(axes) > 1 else None)


def _grid(sweep: Sweep, value: Any) -> list[list[Any]]:
    """A rows × columns matrix of `value(cell)`, placed by each cell's position."""
    (_, xs), y = axes_of(sweep)
    rows = len(y[1]) if y else 1
    out: list[list[Any]] = [[None] * len(xs) for _ in range(rows)]
    for cell in sweep.get("cells") or []:
        pos = list(cell["position"])
        col, row = pos[0], (pos[1] if len(pos) > 1 else 0)
        out[row][col] = value(cell)
    return out


def _pct(x: Any) -> str:
    return f"{100 * x:.1f} %" if isinstance(x, int | float) else "–"


def _hover(cell: Cell) -> str:
    coords = ", ".join(f"{k} = {v}" for k, v in (cell.get("coords") or {}).items())
    lines = [
        f"<b>cell {cell['cell']}</b>: {coords}",
        f"run {cell['run_id']} · {cell.get('status')} · step {cell.get('step') or 0}",
        f"state: {cell_state(cell)}"
        + (" (the training steps' alert)" if cell.get("verdict_source") == "training log" else ""),
        f"kNN top-1: {_pct(cell.get('knn_top1'))}",
    ]
    if isinstance(cell.get("loss"), int | float):
        lines.append(f"last loss: {cell['loss']:.3f}")
    return "<br>".join(lines)


def _cell_text(cell: Cell) -> str:
    state = cell_state(cell)
    word = SHORT.get(state, state)
    if cell.get("verdict_source") == "training log":  # the steps' alert, not a report
        word += " (steps)" if cell_finished(cell) else " (live)"
    knn = cell.get("knn_top1")
    return f"{word}<br>{_pct(knn)}" if isinstance(knn, int | float) else word


def _axis_labels(values: Sequence[Any]) -> list[str]:
    return [str(v) for v in values]


def _layout(fig: go.Figure, sweep: Sweep, title: str) -> go.Figure:
    (xf, _), y = axes_of(sweep)
    rows = len(y[1]) if y else 1
    fig.update_layout(
        title=title,
        height=max(260, 110 + 90 * rows),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": xf, "type": "category", "side": "bottom"},
        yaxis={"title": y[0] if y else "", "type": "category", "showticklabels": bool(y)},
    )
    return fig


def verdict_map(sweep: Sweep) -> go.Figure:
    """Each cell coloured by its state (categorical), its text the state and the kNN."""
    (_, xs), y = axes_of(sweep)
    ys = _axis_labels(y[1]) if y else [""]
    n = len(STATES)
    # A stepped scale: code i fills [i/n, (i+1)/n] with one flat colour.
    scale: list[list[Any]] = []
    for i, (_, colour) in enumerate(STATES):
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    z = _grid(sweep, lambda c: STATE_INDEX[cell_state(c)] + 0.5)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=_axis_labels(xs),
            y=ys,
            zmin=0,
            zmax=n,
            colorscale=scale,
            text=_grid(sweep, _cell_text),
            texttemplate="%{text}",
            textfont={"size": 13},
            customdata=_grid(sweep, _hover),
            hovertemplate="%{customdata}<extra></extra>",
            xgap=3,
            ygap=3,
            colorbar={
                "tickvals": [i + 0.5 for i in range(n)],
                "ticktext": [name for name, _ in STATES],
                "title": "",
                "len": 1.0,
            },
        )
    )
    return _layout(fig, sweep, "Verdict per cell")


def knn_map(sweep: Sweep) -> go.Figure:
    """Each cell's kNN top-1 (%) on a sequential scale; empty while a cell has none."""
    (_, xs), y = axes_of(sweep)
    ys = _axis_labels(y[1]) if y else [""]

    def knn(c: Cell) -> float | None:
        v = c.get("knn_top1")
        return 100 * float(v) if isinstance(v, int | float) else None

    fig = go.Figure(
        go.Heatmap(
            z=_grid(sweep, knn),
            x=_axis_labels(xs),
            y=ys,
            zmin=0,
            zmax=100,
            colorscale="Viridis",
            text=_grid(sweep, lambda c: _pct(c.get("knn_top1"))),
            texttemplate="%{text}",
            customdata=_grid(sweep, _hover),
            hovertemplate="%{customdata}<extra></extra>",
            xgap=3,
            ygap=3,
            colorbar={"title": "kNN %", "ticksuffix": " %"},
        )
    )
    return _layout(fig, sweep, "kNN top-1 per cell")


def cell_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One table row per cell, with the links the page's table turns into buttons."""
    rows = []
    for cell in sweep.get("cells") or []:
        row: dict[str, Any] = {"cell": cell["cell"], **(cell.get("coords") or {})}
        row["state"] = cell_state(cell)
        row["status"] = cell.get("status")
        row["step"] = cell.get("step")
        row["kNN %"] = (
            round(100 * cell["knn_top1"], 1)
            if isinstance(cell.get("knn_top1"), int | float)
            else None
        )
        row["loss"] = cell.get("loss")
        row["run"] = f"/runs?run={cell['run_id']}"
        ck = cell.get("checkpoint_id")
        row["diagnose"] = f"/diagnose?checkpoint={ck}" if ck is not None else None
        row["why"] = cell.get("verdict_reason") or (cell.get("diagnosis") or {}).get("message")
        rows.append(row)
    return rows
