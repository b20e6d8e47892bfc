"""Plotly figures from plain dicts and lists: no Streamlit, no HTTP, so each is unit-testable.

Inputs are the trainer's event dicts (models/train.py field names) and the backend's JSON
answers after the pages have picked out the lists they need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from frontend.map_columns import NONE_INT, MapColumns
from frontend.run_events import Event, of_type

# Long runs log thousands of steps; a heatmap wider than this is binned (mean per bin) so the
# browser stays responsive and each column is still visible.
MAX_HEATMAP_COLUMNS = 300
# Colour by category with a legend up to this many categories; beyond it one trace, no legend.
MAX_LEGEND_CATEGORIES = 30
PALETTE: list[str] = list(qualitative.Plotly) + list(qualitative.D3) + list(qualitative.Set3)

COLLAPSE_RED = "#d62728"
MAX_TICK_LABELS = 40  # categorical axes with more ticks than this hide their labels


def _layout(fig: go.Figure, title: str, height: int = 320) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left"},
        height=height,
        margin={"l": 50, "r": 20, "t": 50, "b": 70},
        # Legend well below the x-axis title (above the plot it hides plotly's toolbar).
        legend={"orientation": "h", "y": -0.28, "yanchor": "top", "x": 0},
    )
    return fig


# --- live training ----------------------------------------------------------------------------
def loss_figure(events: Sequence[Event], num_prototypes: int | None) -> go.Figure:
    """Training loss per step with the ln K line: the loss of flat (uniform) predictions.

    A SwAV loss that settles on this line is the signature of uniform collapse. PCL's parts
    (InfoNCE, ProtoNCE) are drawn too when the step events carry them.
    """
    steps = [e for e in of_type(events, "step") if e.get("loss") is not None]
    x = [e.get("step") for e in steps]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[e["loss"] for e in steps], mode="lines", name="loss"))
    for key, name in (("loss_infonce", "InfoNCE"), ("loss_protonce", "ProtoNCE")):
        ys = [e.get(key) for e in steps]
        if any(v is not None for v in ys):
            fig.add_trace(go.Scatter(x=x, y=ys, mode="lines", name=name, line={"width": 1}))
    if num_prototypes and num_prototypes > 1:
        ln_k = math.log(num_prototypes)
        # Labelled at the left edge, above the line, with a background: on the right it sat
        # under the loss curve of a collapsing run (which runs along the line).
        fig.add_hline(
            y=ln_k,
            line={"dash": "dash", "color": COLLAPSE_RED},
            annotation_text=f"ln K = {ln_k:.3f} (flat predictions)",
            annotation_position="top left",
            annotation_bgcolor="rgba(255,255,255,0.85)",
            annotation_font_color=COLLAPSE_RED,
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss")
    return _layout(fig, "Loss")


def usage_matrix(
    events: Sequence[Event], max_columns: int = MAX_HEATMAP_COLUMNS
) -> tuple[list[int], list[list[float]]]:
    """Prototype × step usage counts from the step events' `usage` lists.

    Returns (step of each column, rows = prototypes). With more steps than `max_columns`,
    consecutive steps are averaged into bins and each column is labelled by its last step.
    """
    steps = [e for e in of_type(events, "step") if isinstance(e.get("usage"), list)]
    if not steps:
        return [], []
    k = max(len(e["usage"]) for e in steps)
    cols = [[float(c) for c in e["usage"]] + [0.0] * (k - len(e["usage"])) for e in steps]
    xs = [int(e.get("step") or i) for i, e in enumerate(steps)]
    if len(cols) > max_columns:
        size = math.ceil(len(cols) / max_columns)
        binned, bx = [], []
        for start in range(0, len(cols), size):
            chunk = cols[start : start + size]
            binned.append([sum(c[j] for c in chunk) / len(chunk) for j in range(k)])
            bx.append(xs[min(start + size, len(xs)) - 1])
        cols, xs = binned, bx
    rows = [[col[j] for col in cols] for j in range(k)]
    return xs, rows


def usage_heatmap(events: Sequence[Event], max_columns: int = MAX_HEATMAP_COLUMNS) -> go.Figure:
    """How many images of each batch each prototype wins (argmax of the predictions), over time.

    A healthy run shows many lit rows; one-cluster collapse shows a single bright row.
    """
    xs, rows = usage_matrix(events, max_columns)
    fig = go.Figure(
        go.Heatmap(
            z=rows,
            x=xs,
            y=list(range(len(rows))),
            colorscale="Viridis",
            colorbar={"title": "images"},
            hovertemplate="step %{x}<br>prototype %{y}<br>%{z:.1f} images<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="prototype")
    return _layout(fig, "Prototype usage per step (argmax of predictions)", height=360)


def activity_figure(events: Sequence[Event], num_prototypes: int | None = None) -> go.Figure:
    """Active prototypes (left axis) and usage entropy (right axis, with ln K its maximum)."""
    steps = [e for e in of_type(events, "step") if e.get("active_prototypes") is not None]
    x = [e.get("step") for e in steps]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(x=x, y=[e["active_prototypes"] for e in steps], name="active prototypes"),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[e.get("usage_entropy") for e in steps],
            name="usage entropy (nats)",
            line={"dash": "dot"},
        ),
        secondary_y=True,
    )
    fig.update_yaxes(title_text="active prototypes", rangemode="tozero", secondary_y=False)
    top = math.log(num_prototypes) if num_prototypes and num_prototypes > 1 else None
    fig.update_yaxes(
        title_text="usage entropy",
        range=[0, top * 1.05] if top else None,
        secondary_y=True,
    )
    fig.update_xaxes(title_text="step")
    return _layout(fig, "Active prototypes and usage entropy")


def _epochs_done(e: Event, steps_per_epoch: int | None) -> float:
    """Epochs of training behind an event: its own field, else from its step, else its epoch."""
    if isinstance(e.get("epochs_done"), int | float):
        return float(e["epochs_done"])
    if steps_per_epoch and isinstance(e.get("step"), int):
        return e["step"] / steps_per_epoch
    return float(e.get("epoch", 0)) + (0.0 if e.get("partial") else 1.0)


def _knn_trace(evs: Sequence[Event], spe: int | None, name: str, labels: bool) -> go.Scatter:
    """One kNN curve over epochs done; its values written on it only while they do not crowd."""
    values = [100 * float(e["knn_top1"]) for e in evs]
    labels = labels and len(evs) <= 8
    return go.Scatter(
        x=[_epochs_done(e, spe) for e in evs],
        y=values,
        mode="lines+markers+text" if labels else "lines+markers",
        text=[f"{v:.1f}" for v in values] if labels else None,
        textposition="top center",
        marker={"size": 4 if not labels else 6},
        name=f"{name}: {_sets_text(evs[-1].get('knn_queries'), evs[-1].get('knn_bank'))}",
    )


def knn_figure(events: Sequence[Event]) -> go.Figure:
    """Weighted kNN top-1 over training: the quick kNN every few steps (a fixed subset) and the
    full one at each epoch's end, each labelled with the images it used."""
    starts = of_type(events, "start")
    spe = starts[-1].get("steps_per_epoch") if starts else None
    fig = go.Figure()
    quick = [e for e in of_type(events, "knn") if e.get("knn_top1") is not None]
    if quick:
        fig.add_trace(_knn_trace(quick, spe, f"every {_step_gap(quick)} steps", labels=False))
    full = [e for e in of_type(events, "epoch") if e.get("knn_top1") is not None]
    if full:
        fig.add_trace(_knn_trace(full, spe, "epoch end", labels=True))
    fig.update_xaxes(title_text="epochs of training", rangemode="tozero")
    fig.update_yaxes(title_text="kNN top-1 (%)", range=[0, 100])
    return _layout(fig, "kNN accuracy (weighted, k = 20)")


def _sets_text(queries: Any, bank: Any) -> str:
    """ "1,000 test vs 2,000 train images", with what is known (older runs did not say)."""
    q = f"{queries:,} test" if isinstance(queries, int) else "test"
    b = f"{bank:,} train images" if isinstance(bank, int) else "train images"
    return f"{q} vs {b}"


def _step_gap(events: Sequence[Event]) -> int | str:
    steps = [e["step"] for e in events if isinstance(e.get("step"), int)]
    return steps[1] - steps[0] if len(steps) > 1 else (steps[0] if steps else "?")


def latest_phi(events: Sequence[Event]) -> list[dict[str, Any]]:
    """φ and sizes of each clustering from the newest epoch event that has them (PCL)."""
    for e in reversed(of_type(events, "epoch")):
        phi, sizes = e.get("phi"), e.get("cluster_sizes")
        if phi and sizes:
            ks = e.get("num_clusters") or [len(p) for p in phi]
            return [
                {"k": int(k), "phi": list(p), "sizes": list(s), "epoch": e.get("epoch")}
                for k, p, s in zip(ks, phi, sizes, strict=False)
            ]
    return []


def phi_bar_figure(phi: Sequence[float], sizes: Sequence[int], title: str = "") -> go.Figure:
    """φ of every cluster, sorted from tight (small φ, sharp logits) to loose."""
    order = sorted(range(len(phi)), key=lambda i: phi[i])
    fig = go.Figure(
        go.Bar(
            x=[str(i) for i in order],
            y=[phi[i] for i in order],
            customdata=[sizes[i] if i < len(sizes) else None for i in order],
            hovertemplate="cluster %{x}<br>φ = %{y:.4f}<br>%{customdata} images<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="cluster (sorted by φ)", type="category", showticklabels=False)
    fig.update_yaxes(title_text="φ")
    return _layout(fig, title or "Concentration φ per cluster")


def phi_size_figure(phi: Sequence[float], sizes: Sequence[int], title: str = "") -> go.Figure:
    """φ against cluster size: the ln(Z + α) term keeps small clusters from looking too tight."""
    fig = go.Figure(
        go.Scatter(
            x=list(sizes),
            y=list(phi),
            mode="markers",
            customdata=list(range(len(phi))),
            hovertemplate="cluster %{customdata}<br>%{x} images<br>φ = %{y:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="cluster size Z (images)", type="log")
    fig.update_yaxes(title_text="φ")
    return _layout(fig, title or "φ against cluster size")


# --- maps -------------------------------------------------------------------------------------
def _marker_size(n: int) -> int:
    """Smaller dots on bigger maps: at 50,000 points 6-px dots would cover one another."""
    return 6 if n <= 5000 else 4 if n <= 20000 else 3


# Up to this many points a map's coordinates travel as JSON lists, beyond it as typed binary
# arrays. Lists keep the chart's `data` plain arrays for whatever reads it in the page (with
# typed arrays it holds {dtype, bdata} specs, and only plotly's `_fullData` has the numbers),
# and cost < 0.05 s to build at 10,000 points; at 50,000 they would add ~0.2 s to every rerun.
LIST_COORDS_POINTS = 10_000


def _coords(values: np.ndarray, n: int) -> np.ndarray | list[float]:
    if n > LIST_COORDS_POINTS:
        return values
    rounded: list[float] = np.round(values.astype(np.float64), 4).tolist()
    return rounded


def webgl_map_figure(
    cols: MapColumns,
    color_by: str,
    label_names: Sequence[str] | None = None,
    title: str = "",
    height: int = 560,
) -> go.Figure:
    """A 2-D map drawn by WebGL (Scattergl), for any number of points up to 50,000 and beyond.

    Built from numpy columns, which plotly sends to the browser as typed binary arrays rather
    than JSON lists. Each point's customdata is [data set index, label, cluster] (−1: none);
    selection reads customdata[0], never a position. Categories get a trace each and a legend
    (up to MAX_LEGEND_CATEGORIES); numbers a colour bar.
    """
    values = cols.values(color_by)
    custom = np.stack([cols.index, cols.label, cols.cluster], axis=1).astype(np.int32)
    hover = (
        "image %{customdata[0]}<br>label %{customdata[1]}<br>cluster %{customdata[2]}"
        "<extra></extra>"
    )
    size = _marker_size(len(cols))
    fig = go.Figure()
    if values.dtype.kind == "i":
        categories = np.unique(values[values != NONE_INT])
        if len(categories) <= MAX_LEGEND_CATEGORIES:

            def name_of(v: int) -> str:
                if color_by == "label" and label_names and 0 <= v < len(label_names):
                    return f"{v}: {label_names[v]}"
                return f"{color_by} {v}"

            groups = [
                (name_of(int(c)), values == c, PALETTE[i % len(PALETTE)])
                for i, c in enumerate(categories)
            ]
            if (values == NONE_INT).any():
                groups.append(("none", values == NONE_INT, "lightgrey"))
            for name, member, colour in groups:
                fig.add_trace(
                    go.Scattergl(
                        x=_coords(cols.x[member], len(cols)),
                        y=_coords(cols.y[member], len(cols)),
                        mode="markers",
                        name=name,
                        marker={"size": size, "color": colour},
                        customdata=custom[member],
                        hovertemplate=hover,
                    )
                )
        else:
            # Too many categories for a legend: one trace, each category a colour of a cycle.
            # Colours go as numbers through a stepwise colour scale, which plotly ships as a
            # typed array (a list of 50,000 colour strings would take it a second to check).
            steps = [*PALETTE, "lightgrey"]
            rank = np.searchsorted(categories, values) % len(PALETTE)
            rank[values == NONE_INT] = len(PALETTE)
            scale = [
                [edge, colour]
                for i, colour in enumerate(steps)
                for edge in (i / len(steps), (i + 1) / len(steps))
            ]
            marker = {
                "size": size,
                "color": rank.astype(np.float32),
                "colorscale": scale,
                "cmin": -0.5,
                "cmax": len(steps) - 0.5,
                "showscale": False,
            }
            fig.add_trace(
                go.Scattergl(
                    x=_coords(cols.x, len(cols)),
                    y=_coords(cols.y, len(cols)),
                    mode="markers",
                    marker=marker,
                    customdata=custom,
                    hovertemplate=hover,
                    showlegend=False,
                )
            )
    else:
        fig.add_trace(
            go.Scattergl(
                x=_coords(cols.x, len(cols)),
                y=_coords(cols.y, len(cols)),
                mode="markers",
                marker={
                    "size": size,
                    "color": values,
                    "colorscale": "Viridis",
                    "colorbar": {"title": color_by},
                    "showscale": True,
                },
                customdata=custom,
                hovertemplate=hover.replace(
                    "<extra>", f"<br>{color_by} %{{marker.color:.3f}}<extra>"
                ),
                showlegend=False,
            )
        )
    fig.update_xaxes(showticklabels=False, title_text="UMAP 1")
    fig.update_yaxes(showticklabels=False, title_text="UMAP 2", scaleanchor="x", scaleratio=1)
    _layout(fig, title, height=height)
    # Zoom, not lasso, by default: Streamlit turns click-to-select off while the drag mode is
    # box or lasso, and a click on one point is the first thing people try. Box and lasso are in
    # the chart's tool bar.
    fig.update_layout(dragmode="zoom", legend={"orientation": "v", "y": 1, "x": 1.02})
    return fig


def selected_indices(selection: Any) -> list[int]:
    """Data set indices of the selected points, read from each point's customdata.

    `selection` is what `st.plotly_chart(..., on_select="rerun")` returns (an attribute/dict
    hybrid) or its `selection` part. Point positions are per trace and change with the colouring,
    so they are never used.
    """
    if selection is None:
        return []
    inner = selection.get("selection", selection) if isinstance(selection, Mapping) else selection
    if not isinstance(inner, Mapping) and hasattr(inner, "selection"):
        inner = inner.selection
    points = inner.get("points", []) if isinstance(inner, Mapping) else []
    out: list[int] = []
    seen: set[int] = set()
    for p in points or []:
        cd = p.get("customdata") if isinstance(p, Mapping) else None
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        elif isinstance(cd, Mapping):
            # A row of a typed (binary) customdata array reaches Python as JSON.stringify
            # writes a typed array: {"0": index, "1": …}.
            cd = cd.get("0")
        if cd is None:
            continue
        idx = int(cd)
        if idx not in seen:
            seen.add(idx)
            out.append(idx)
    return out


# --- diagnostics ------------------------------------------------------------------------------
def spectrum_figure(eigenvalues: Sequence[float]) -> go.Figure:
    """Sorted eigenvalues of the embeddings' covariance on a log axis.

    A healthy embedding decays slowly; dimensional collapse shows a cliff after a few dims.
    """
    vals = sorted((float(v) for v in eigenvalues), reverse=True)
    floor = 1e-12  # log axes cannot show 0; such dims are fully collapsed anyway
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(vals) + 1)),
            y=[max(v, floor) for v in vals],
            mode="lines+markers",
            name="eigenvalue",
        )
    )
    fig.update_xaxes(title_text="dimension (sorted)")
    fig.update_yaxes(title_text="eigenvalue of Cov(z)", type="log", exponentformat="power")
    return _layout(fig, "Eigen-spectrum of the embeddings")


def usage_histogram_figure(usage: Sequence[int | float]) -> go.Figure:
    """Images per prototype, most used first, with the equal-share line N/K for reference."""
    order = sorted(range(len(usage)), key=lambda i: -usage[i])
    total = float(sum(usage))
    fig = go.Figure(
        go.Bar(
            x=[str(i) for i in order],
            y=[usage[i] for i in order],
            name="images",
            hovertemplate="prototype %{x}<br>%{y} images<extra></extra>",
        )
    )
    empty = [str(i) for i in order if usage[i] == 0]
    if empty:  # a bar of height 0 is invisible: mark empty prototypes with a red cross
        fig.add_trace(
            go.Scatter(
                x=empty,
                y=[0] * len(empty),
                mode="markers",
                name="empty",
                marker={"symbol": "x", "color": COLLAPSE_RED, "size": 8},
                hovertemplate="prototype %{x}: empty<extra></extra>",
            )
        )
    if usage:
        fig.add_hline(
            y=total / len(usage),
            line={"dash": "dash", "color": "grey"},
            annotation_text="equal share N/K",
            annotation_position="top right",
        )
    # With more than a few dozen bars the prototype numbers overlap into a smear: the hover
    # names each bar instead.
    fig.update_xaxes(
        title_text="prototype (sorted by usage; hover for its number)",
        type="category",
        showticklabels=len(usage) <= MAX_TICK_LABELS,
    )
    fig.update_yaxes(title_text="images")
    return _layout(fig, "Prototype usage")


# --- compare ----------------------------------------------------------------------------------
def aligned_maps_figure(
    points_a: Sequence[Mapping[str, Any]],
    points_b: Sequence[Mapping[str, Any]],
    color_by: str = "cluster",
    titles: tuple[str, str] = ("A", "B"),
) -> go.Figure:
    """Two aligned maps side by side, sharing axes, coloured by the same key."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=titles,
        shared_xaxes=True,
        shared_yaxes=True,
        horizontal_spacing=0.04,
    )
    for col, pts in ((1, points_a), (2, points_b)):
        values = [p.get(color_by) for p in pts]
        cats = sorted({v for v in values if v is not None}, key=str)
        rank = {c: i for i, c in enumerate(cats)}
        fig.add_trace(
            go.Scatter(
                x=[p["x"] for p in pts],
                y=[p["y"] for p in pts],
                mode="markers",
                marker={
                    "size": 5,
                    "color": [
                        PALETTE[rank[v] % len(PALETTE)] if v is not None else "lightgrey"
                        for v in values
                    ],
                },
                customdata=[[int(p["index"]), p.get(color_by)] for p in pts],
                hovertemplate=f"image %{{customdata[0]}}<br>{color_by} %{{customdata[1]}}"
                "<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig = _layout(fig, "", height=460)
    fig.update_layout(margin={"t": 40})  # room for the subplot titles (no figure title)
    return fig


def delta_bar_figure(changes: Sequence[Mapping[str, Any]], title: str) -> go.Figure:
    """Images gained (+) or lost (−) per prototype from A to B; `changes`: {prototype, delta}."""
    items = sorted(changes, key=lambda c: c["delta"])
    fig = go.Figure(
        go.Bar(
            x=[str(c["prototype"]) for c in items],
            y=[c["delta"] for c in items],
            marker={"color": ["#2ca02c" if c["delta"] > 0 else COLLAPSE_RED for c in items]},
            hovertemplate="prototype %{x}<br>%{y:+} images<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="prototype", type="category")
    fig.update_yaxes(title_text="images B − A")
    return _layout(fig, title)


# --- learn ------------------------------------------------------------------------------------
def matrix_heatmap(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    title: str,
    zmax: float | None = None,
    show_sums: bool = True,
) -> go.Figure:
    """A B × K matrix as a heatmap with each row's and each column's sum printed beside it.

    Rows are samples, columns prototypes. For Sinkhorn codes every row sums to 1 and every
    column to about B/K; the softmax only guarantees the rows.
    """
    rows = [list(map(float, r)) for r in matrix]
    b = len(rows)
    k = len(rows[0]) if rows else 0
    row_sums = [sum(r) for r in rows]
    col_sums = [sum(rows[i][j] for i in range(b)) for j in range(k)]
    fig = go.Figure(
        go.Heatmap(
            z=rows,
            x=[f"p{j}" for j in range(k)],
            y=[f"x{i}" for i in range(b)],
            colorscale="Blues",
            zmin=0,
            zmax=zmax,
            hovertemplate="sample %{y}<br>prototype %{x}<br>%{z:.3f}<extra></extra>",
            colorbar={"x": 1.12},
        )
    )
    if show_sums:
        # Annotations outside the plot area: row sums on the right, column sums underneath.
        for i, s in enumerate(row_sums):
            fig.add_annotation(
                x=1.0,
                xref="paper",
                xanchor="left",
                y=f"x{i}",
                yref="y",
                text=f"{s:.2f}",
                showarrow=False,
                font={"size": 10},
            )
        for j, s in enumerate(col_sums):
            fig.add_annotation(
                x=f"p{j}",
                xref="x",
                y=0.0,
                yref="paper",
                yanchor="top",
                text=f"{s:.2f}",
                showarrow=False,
                font={"size": 10},
                textangle=-90 if k > 12 else 0,
            )
    fig.update_yaxes(autorange="reversed", title_text="sample")
    fig.update_xaxes(side="top", title_text="")
    fig.update_layout(
        title={"text": title, "x": 0.0, "y": 0.98, "yanchor": "top"},
        height=max(260, 24 * b + 150),
        margin={"l": 60, "r": 90, "t": 80, "b": 50},
    )
    return fig


def toy_clusters_figure(
    points: Sequence[Sequence[float]],
    assignments: Sequence[int],
    centroids: Sequence[Sequence[float]],
    phi: Sequence[float],
) -> go.Figure:
    """The φ explainer's 2-D toy: points coloured by cluster, centroids as crosses with φ."""
    fig = go.Figure()
    for c, centre in enumerate(centroids):
        member = [p for p, a in zip(points, assignments, strict=True) if a == c]
        if not member:  # a cluster number the user skipped in the data editor
            continue
        color = PALETTE[c % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in member],
                y=[p[1] for p in member],
                mode="markers",
                marker={"size": 7, "color": color, "opacity": 0.7},
                name=f"cluster {c}: Z = {len(member)}, φ = {phi[c]:.3f}",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[centre[0]],
                y=[centre[1]],
                mode="markers+text",
                marker={"size": 16, "symbol": "x", "color": color, "line": {"width": 2}},
                text=[f"φ={phi[c]:.2f}"],
                textposition="top center",
                showlegend=False,
            )
        )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _layout(fig, "Toy clustering", height=460)
