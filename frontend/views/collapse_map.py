"""Collapse map: start a sweep (a grid of runs), watch it fill in, read where SwAV collapses.

Each cell of the grid is an ordinary run (it shows on Runs); when it ends, the backend
diagnoses its last checkpoint and the cell takes that verdict. The map re-reads the sweep in a
fragment every REFRESH_S seconds while a cell is queued, training or being diagnosed, and stops
ticking once every cell has its answer. `?sweep=ID` opens a sweep directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import streamlit as st

from frontend import widgets
from frontend.client import BackendError, Client
from frontend.collapse_map_figures import cell_finished, cell_rows, cell_state, knn_map, verdict_map

REFRESH_S = 3.0
# The fields the form offers as axes (the backend accepts any run field, models/sweep.py).
AXIS_FIELDS = [
    "epsilon",
    "num_prototypes",
    "batch_size",
    "temperature",
    "equipartition",
    "lr",
    "queue_length",
    "sinkhorn_iterations",
    "freeze_prototypes_iters",
    "width",
    "seed",
]
NO_AXIS = "(none)"
# The demo preset: ε from too sharp to too smooth, against a small and a large K.
PRESET: dict[str, Any] = {
    "sweep_name": "demo: ε × K",
    "sweep_method": "swav",
    "sweep_dataset": "shapes",
    "sweep_x": "epsilon",
    "sweep_x_values": "0.005, 0.02, 0.05, 0.2",
    "sweep_y": "num_prototypes",
    "sweep_y_values": "16, 128",
    "sweep_steps": 600,
}


def parse_values(text: str) -> list[Any]:
    """'0.005, 0.02' → [0.005, 0.02]; numbers and true/false as such, anything else as text."""
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(json.loads(part))
        except json.JSONDecodeError:
            out.append(part)
    return out


def sweep_payload(state: Mapping[str, Any]) -> dict[str, Any]:
    """The POST /sweeps body from the form's values; ValueError saying what is missing."""
    axes = []
    for axis in ("sweep_x", "sweep_y"):
        field = state.get(axis)
        if not field or field == NO_AXIS:
            continue
        values = parse_values(str(state.get(f"{axis}_values") or ""))
        if not values:
            raise ValueError(f"give the values of {field}, separated by commas")
        axes.append({"field": field, "values": values})
    if not axes:
        raise ValueError("pick at least one axis")
    body: dict[str, Any] = {
        "method": state.get("sweep_method", "swav"),
        "dataset": state.get("sweep_dataset", "shapes"),
        "axes": axes,
        "max_steps": int(state.get("sweep_steps") or PRESET["sweep_steps"]),
    }
    if state.get("sweep_name"):
        body["name"] = state["sweep_name"]
    return body


def dataset_names(c: Client) -> list[str]:
    """The data sets the backend offers (GET /datasets); shapes and digits if it says none."""
    try:
        items = c.datasets()
    except BackendError:
        items = []
    names = [d["name"] if isinstance(d, Mapping) else str(d) for d in items or []]
    return names or ["shapes", "digits"]


def _use_preset() -> None:
    st.session_state.update(PRESET)


def start_form(c: Client) -> None:
    st.button(
        "Demo preset: ε × K",
        on_click=_use_preset,
        key="sweep_preset",
        help="SwAV on shapes, ε ∈ {0.005, 0.02, 0.05, 0.2} × K ∈ {16, 128}, 600 steps each",
    )
    # A default through session_state, not `value=`: the preset button sets it too.
    st.session_state.setdefault("sweep_steps", PRESET["sweep_steps"])
    with st.form("start_sweep", border=True):
        c1, c2, c3 = st.columns(3)
        c1.text_input("Name (optional)", key="sweep_name")
        c1.radio("Method", ["swav", "pcl"], horizontal=True, key="sweep_method")
        c1.selectbox("Data set", dataset_names(c), key="sweep_dataset")
        c2.selectbox("Axis 1 (x)", AXIS_FIELDS, key="sweep_x")
        c2.text_input("Values", key="sweep_x_values", placeholder="0.005, 0.02, 0.05, 0.2")
        c3.selectbox("Axis 2 (y)", [NO_AXIS, *AXIS_FIELDS], key="sweep_y")
        c3.text_input("Values", key="sweep_y_values", placeholder="16, 128")
        c1.number_input(
            "Budget per cell (steps)", min_value=1, max_value=1_000_000, key="sweep_steps"
        )
        submitted = st.form_submit_button("Start sweep", type="primary")
    if not submitted:
        return
    try:
        body = sweep_payload(st.session_state.to_dict())
    except ValueError as e:
        st.error(str(e), icon=":material/error:")
        return
    try:
        sweep = c.create_sweep(body)
    except BackendError as e:
        widgets.show_error(e)
        return
    st.session_state["_keep_sweep"] = sweep["id"]
    st.session_state.pop("sweep_pick", None)
    st.query_params["sweep"] = str(sweep["id"])
    st.success(f"Sweep {sweep['id']} started: {sweep['num_cells']} runs queued.")


def sweep_label(s: Mapping[str, Any]) -> str:
    axes = " × ".join(a["field"] for a in s["grid"]["axes"])
    name = s.get("name") or axes
    return f"#{s['id']} {name} — {s['num_finished']}/{s['num_cells']} done"


def progress(sweep: Mapping[str, Any]) -> None:
    cells = sweep.get("cells") or []
    total = max(1, len(cells))
    done = sum(cell_finished(c) for c in cells)
    judged = sum(1 for c in cells if cell_finished(c) and c.get("verdict_source") == "diagnostics")
    st.progress(
        done / total,
        text=f"{done} / {len(cells)} cells trained · {judged} diagnosed · "
        f"{sweep['max_parallel']} at once · {sweep['grid']['max_steps']} steps each",
    )


def needs_refresh(sweep: Mapping[str, Any]) -> bool:
    """A cell still queued, training or waiting for its report: keep polling."""
    return any(
        not cell_finished(c)
        or cell_state(c) == "diagnosing"
        or (c.get("diagnosis") or {}).get("status") == "running"
        for c in sweep["cells"]
    )


def draw(c: Client, sweep: Mapping[str, Any]) -> None:
    progress(sweep)
    # One above the other: a cell's text (state and kNN) needs the width of a full row.
    st.plotly_chart(verdict_map(sweep), key="collapse_verdict_map", width="stretch")
    st.plotly_chart(knn_map(sweep), key="collapse_knn_map", width="stretch")
    st.caption(
        "A finished cell's verdict is the Diagnose report of its last checkpoint; "
        "'(live)' marks the collapse alert of a cell still training, '(steps)' that of a cell "
        "without a report (yet). Open a cell's run or report below or from the table."
    )
    st.dataframe(
        cell_rows(sweep),
        hide_index=True,
        width="stretch",
        column_config={
            "run": st.column_config.LinkColumn("Run", display_text=r"run=(\d+)"),
            "diagnose": st.column_config.LinkColumn("Diagnose", display_text=r"checkpoint=(\d+)"),
            "why": st.column_config.TextColumn("Why", width="large"),
        },
    )
    open_cell(sweep)
    if needs_refresh(sweep) and st.button("Stop this sweep", key="sweep_stop"):
        with widgets.backend_errors(stop=False):
            c.stop_sweep(sweep["id"])
            st.rerun(scope="app")


def open_cell(sweep: Mapping[str, Any]) -> None:
    """A cell's run (Runs, live charts) and its report (Diagnose), as links in this tab."""
    cells = {c["cell"]: c for c in sweep["cells"]}
    left, mid, right = st.columns([3, 1, 1], vertical_alignment="bottom")
    chosen = left.selectbox(
        "Open a cell",
        list(cells),
        format_func=lambda i: (
            f"cell {i}: "
            + ", ".join(f"{k} = {v}" for k, v in cells[i]["coords"].items())
            + f" — {cell_state(cells[i])}"
        ),
        key="sweep_cell",
    )
    cell = cells[chosen]
    mid.page_link(
        "views/runs.py",
        label=f"Run {cell['run_id']}",
        icon=":material/directions_run:",
        query_params={"run": str(cell["run_id"])},
    )
    if cell.get("checkpoint_id") is not None:
        right.page_link(
            "views/diagnose.py",
            label="Diagnose",
            icon=":material/monitor_heart:",
            query_params={"checkpoint": str(cell["checkpoint_id"])},
        )
    else:
        right.caption("no checkpoint yet")


def live_map(c: Client, sweep_id: int, active: bool) -> None:
    """The map in a fragment that re-reads the sweep while it is active (never `while True`)."""

    def body() -> None:
        try:
            sweep = c.sweep(sweep_id)
        except BackendError as e:
            widgets.show_error(e)
            return
        draw(c, sweep)
        if active and not needs_refresh(sweep):
            st.rerun(scope="app")  # all answered: redraw once without the timer

    st.fragment(run_every=REFRESH_S if active else None)(body)()


def main() -> None:
    st.title("Collapse map")
    st.caption(
        "Which settings collapse on my data? A sweep trains one run per cell of a grid "
        "(e.g. Sinkhorn ε × number of prototypes K) and colours each cell by its verdict."
    )
    c = widgets.require_backend()
    with widgets.backend_errors():
        sweeps = c.sweeps()
    with st.expander("Start a sweep", expanded=not sweeps, icon=":material/add:"):
        start_form(c)
        with widgets.backend_errors():
            sweeps = c.sweeps()
    if not sweeps:
        st.info("No sweeps yet: start one above (the demo preset needs no numbers).")
        return
    chosen = widgets.pick_row("Sweep", sweeps, sweep_label, key="sweep_pick", shared="sweep")
    if chosen is None:
        return
    with widgets.backend_errors():
        first = c.sweep(chosen["id"])
    live_map(c, int(chosen["id"]), needs_refresh(first))


main()
