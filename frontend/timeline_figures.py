"""Plotly figures of a run's timeline (the answer of GET /runs/{id}/timeline): the animated
map with a slider and a play button, prototype usage over epochs, the cluster-flow Sankey,
kNN and the verdict per epoch, and PCL's φ against size over epochs.

Plain dicts in, figures out: no Streamlit, no HTTP, so each is unit-testable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from frontend.pickers import progress_label

Timeline = Mapping[str, Any]

# The same cluster id gets the same colour on the map, the usage chart and the Sankey.
# The greys are left out: grey means "no cluster".
NONE_GREY = "lightgrey"
PALETTE: list[str] = [
    c
    for c in (*qualitative.Plotly, *qualitative.D3, *qualitative.Set3)
    if c not in ("#7F7F7F", "rgb(217,217,217)")
]
HEALTHY = "#2ca02c"
COLLAPSED = "#d62728"
# Usage chart: at most this many prototypes (the most used over the run) as rows.
MAX_USAGE_ROWS = 120
# Sankey: at most this many links (the largest); a wider one is unreadable and slow.
MAX_SANKEY_LINKS = 400
FRAME_MS = 600  # one epoch per this many milliseconds when playing


def cluster_colour(cluster: int | None) -> str:
    return (
        PALETTE[cluster % len(PALETTE)] if isinstance(cluster, int) and cluster >= 0 else NONE_GREY
    )


def epoch_label(epoch: Mapping[str, Any]) -> str:
    """ "epoch 3" (fractional when mid-epoch) or "step 120": the checkpoint pickers' own words
    (pickers.progress_label), so a checkpoint reads the same on every page."""
    return (progress_label(epoch) or [f"step {epoch.get('step')}"])[0]


def epoch_labels(timeline: Timeline) -> list[str]:
    """One unique label per epoch (a suffix tells two checkpoints of one epoch apart)."""
    out: list[str] = []
    for e in timeline.get("epochs", []):
        label = epoch_label(e)
        out.append(label if label not in out else f"{label} (#{e.get('checkpoint_id')})")
    return out


# --- the map ----------------------------------------------------------------------------------
def _colours(
    timeline: Timeline, epoch: Mapping[str, Any], colour_by: str
) -> tuple[list[Any], dict[str, Any]]:
    """(marker colours of every point, extra marker settings) at one epoch."""
    if colour_by in ("cluster", "label"):
        values = epoch["cluster"] if colour_by == "cluster" else (timeline.get("label") or [])
        if not values:
            values = [None] * len(epoch["x"])
        return [cluster_colour(v) for v in values], {}
    values = epoch.get(colour_by) or [None] * len(epoch["x"])
    lo, hi = _range(timeline, colour_by)
    settings = {
        "colorscale": "Viridis",
        "cmin": lo,
        "cmax": hi,
        "showscale": True,
        "colorbar": {"title": colour_by, "thickness": 12},
    }
    return [v if v is not None else float("nan") for v in values], settings


def _range(timeline: Timeline, key: str) -> tuple[float, float]:
    """Min and max of a per-point value over every epoch: one colour scale for all frames."""
    values = [v for e in timeline["epochs"] for v in (e.get(key) or []) if v is not None]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    return (lo, hi) if hi > lo else (lo, lo + 1e-6)


def _map_trace(
    timeline: Timeline, t: int, colour_by: str, names: Sequence[str] | None
) -> go.Scatter:
    epoch = timeline["epochs"][t]
    index = timeline["index"]
    labels = timeline.get("label") or [None] * len(index)
    colours, settings = _colours(timeline, epoch, colour_by)

    def label_text(v: Any) -> str:
        if isinstance(v, int) and names and 0 <= v < len(names):
            return f"{v}: {names[v]}"
        return "–" if v is None else str(v)

    conf = epoch.get("confidence") or [None] * len(index)
    return go.Scatter(
        x=epoch["x"],
        y=epoch["y"],
        # Object constancy: a point is its image, whatever its position in the arrays.
        ids=[str(i) for i in index],
        mode="markers",
        marker={"size": 5, "color": colours, **settings},
        customdata=[
            [i, label_text(lab), c, f"{cf:.2f}" if isinstance(cf, float) else "–"]
            for i, lab, c, cf in zip(index, labels, epoch["cluster"], conf, strict=True)
        ],
        hovertemplate="image %{customdata[0]}<br>label %{customdata[1]}<br>"
        "cluster %{customdata[2]}<br>confidence %{customdata[3]}<extra></extra>",
        showlegend=False,
    )


# The map's axes span this central share of an epoch's points: a few far outliers (a
# collapsing run throws some) would otherwise shrink the map to a corner.
AXIS_QUANTILES = (0.002, 0.998)


def _axis_range(values: Sequence[float | None]) -> list[float]:
    """An epoch's axis range. Each frame zooms to its own map (the aligned maps share an
    orientation, not an extent: an early map sprawls, a trained one is tight), and the zoom is
    animated with the points."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if not v.size:
        return [-1.0, 1.0]
    lo, hi = (float(q) for q in np.quantile(v, AXIS_QUANTILES))
    pad = 0.08 * (hi - lo or 1.0)
    return [lo - pad, hi + pad]


def timeline_map_figure(
    timeline: Timeline,
    colour_by: str = "cluster",
    start: int = 0,
    label_names: Sequence[str] | None = None,
    height: int = 620,
) -> go.Figure:
    """The aligned maps as one animation: a frame per epoch, a slider and Play / Pause.

    Colour scales are fixed over the frames; each frame zooms to its own map. Each point's
    customdata[0] is its data set index.
    """
    epochs = timeline.get("epochs") or []
    if not epochs:
        return go.Figure()
    labels = epoch_labels(timeline)
    start = min(max(0, start), len(epochs) - 1)
    frames = [
        go.Frame(
            data=[_map_trace(timeline, t, colour_by, label_names)],
            name=labels[t],
            layout={
                "title": {"text": _map_title(epochs[t], labels[t])},
                "xaxis": {"range": _axis_range(epochs[t]["x"])},
                "yaxis": {"range": _axis_range(epochs[t]["y"])},
            },
        )
        for t in range(len(epochs))
    ]
    fig = go.Figure(data=frames[start].data, frames=frames)
    # Play always replays the whole run from its first epoch: the page usually opens at the
    # last one, where "from the current frame" would play nothing.
    play = {"frame": {"duration": FRAME_MS, "redraw": False}, "fromcurrent": False}
    play["transition"] = {"duration": FRAME_MS // 2, "easing": "cubic-in-out"}
    still = {"frame": {"duration": 0, "redraw": False}, "mode": "immediate"}
    fig.update_layout(
        title={"text": _map_title(epochs[start], labels[start]), "x": 0.0},
        height=height,
        margin={"l": 20, "r": 20, "t": 50, "b": 90},
        xaxis={"range": _axis_range(epochs[start]["x"]), "showticklabels": False, "title": ""},
        yaxis={"range": _axis_range(epochs[start]["y"]), "showticklabels": False, "title": ""},
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": 0.0,
                "xanchor": "left",
                "yanchor": "top",
                "pad": {"t": 45, "r": 10},
                "showactive": False,
                "buttons": [
                    {"label": "▶ Play", "method": "animate", "args": [None, play]},
                    {"label": "❚❚ Pause", "method": "animate", "args": [[None], still]},
                ],
            }
        ],
        sliders=[
            {
                "active": start,
                "x": 0.2,
                "y": 0.0,
                "len": 0.8,
                "yanchor": "top",
                "pad": {"t": 30},
                "currentvalue": {"visible": False},
                "steps": [
                    {
                        "label": label,
                        "method": "animate",
                        "args": [[label], {**still, "transition": {"duration": 0}}],
                    }
                    for label in labels
                ],
            }
        ],
    )
    return fig


def _map_title(epoch: Mapping[str, Any], label: str) -> str:
    parts = [label]
    if isinstance(epoch.get("knn_top1"), int | float):
        parts.append(f"kNN {100 * epoch['knn_top1']:.1f} %")
    if epoch.get("verdict"):
        parts.append(str(epoch["verdict"]))
    if isinstance(epoch.get("active_prototypes"), int):
        parts.append(f"{epoch['active_prototypes']} active prototypes")
    return " · ".join(parts)


# --- prototype usage --------------------------------------------------------------------------
def usage_rows(timeline: Timeline, most: int = MAX_USAGE_ROWS) -> list[int]:
    """The prototypes drawn: used at some epoch, the most used over the run first (≤ most)."""
    totals: dict[int, int] = {}
    for e in timeline.get("epochs", []):
        for k, n in enumerate(e.get("usage") or []):
            if n:
                totals[k] = totals.get(k, 0) + int(n)
    ranked = sorted(totals, key=lambda k: (-totals[k], k))[:most]
    return sorted(ranked)


def usage_figure(timeline: Timeline, selected: int | None = None, height: int = 0) -> go.Figure:
    """Usage per (epoch, prototype) as squares (click one: customdata[0] is the prototype),
    with births (▲) and deaths (✕) marked."""
    epochs = timeline.get("epochs") or []
    labels = epoch_labels(timeline)
    rows = usage_rows(timeline)
    xs, ys, counts, custom = [], [], [], []
    for t, e in enumerate(epochs):
        usage = e.get("usage") or []
        for k in rows:
            n = int(usage[k]) if k < len(usage) else 0
            xs.append(labels[t])
            ys.append(str(k))
            counts.append(n)
            custom.append([k, n])
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            marker={
                "symbol": "square",
                "size": 14 if len(rows) <= 30 else 8,
                "color": counts,
                # Unused (0) a pale grey, any use at all visibly blue.
                "colorscale": [[0.0, "#f2f2f2"], [1e-6, "#c6dbef"], [1.0, "#08306b"]],
                "cmin": 0,
                "showscale": True,
                "colorbar": {"title": "images", "thickness": 12},
                "line": {"width": 0.5, "color": "#bbb"},
            },
            customdata=custom,
            hovertemplate="prototype %{customdata[0]}<br>%{x}: %{customdata[1]} images"
            "<extra></extra>",
            name="usage",
            showlegend=False,
        )
    )
    shown = set(rows)
    for key, symbol, colour, name in (
        ("born", "triangle-up", HEALTHY, "born"),
        ("died", "x", COLLAPSED, "died"),
    ):
        marks = [(k, t) for k, t in timeline.get(key) or [] if k in shown]
        if marks:
            fig.add_trace(
                go.Scatter(
                    x=[labels[t] for _, t in marks],
                    y=[str(k) for k, _ in marks],
                    mode="markers",
                    marker={"symbol": symbol, "size": 7, "color": colour},
                    name=name,
                    customdata=[[k, None] for k, _ in marks],
                    hovertemplate=f"prototype %{{y}} {name} at %{{x}}<extra></extra>",
                )
            )
    if selected is not None and selected in shown:
        fig.add_hline(y=str(selected), line={"color": "#ff7f0e", "width": 2, "dash": "dot"})
    fig.update_layout(
        title={"text": "Prototype usage per epoch (click a square: its images)", "x": 0.0},
        height=height or max(260, min(900, 60 + 18 * len(rows))),
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        xaxis={"type": "category", "categoryorder": "array", "categoryarray": labels},
        yaxis={
            "type": "category",
            "title": "prototype",
            "categoryorder": "array",
            "categoryarray": [str(k) for k in rows],
        },
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
    )
    return fig


def clicked_prototype(selection: Any) -> int | None:
    """The prototype of the square clicked on `usage_figure` (Streamlit's selection state)."""
    try:
        points = selection["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for p in points or []:
        data = p.get("customdata") if isinstance(p, Mapping) else None
        if isinstance(data, Sequence) and data and isinstance(data[0], int | float):
            return int(data[0])
    return None


# --- cluster flow ------------------------------------------------------------------------------
def sankey_figure(
    timeline: Timeline, first: int = 0, last: int | None = None, height: int = 520
) -> go.Figure:
    """Matched clusters from epoch to epoch: a node per (epoch, cluster), a link per set of
    images that went from one to the other. Splits fan out, merges fan in."""
    epochs = timeline.get("epochs") or []
    labels = epoch_labels(timeline)
    last = len(epochs) - 1 if last is None else min(last, len(epochs) - 1)
    flows = [f for f in timeline.get("flows") or [] if first <= f["source"] and f["target"] <= last]
    links = [(f["source"], a, b, n) for f in flows for a, b, n in f["links"]]
    links = sorted(links, key=lambda link: -link[3])[:MAX_SANKEY_LINKS]
    nodes: dict[tuple[int, int], int] = {}
    for t, a, b, _ in links:
        for key in ((t, a), (t + 1, b)):
            nodes.setdefault(key, len(nodes))
    ordered = sorted(nodes, key=lambda key: nodes[key])
    span = max(1, last - first)
    ys = _node_heights(ordered, links)
    fig = go.Figure(
        go.Sankey(
            arrangement="snap",
            node={
                "label": [f"c{c}" if c >= 0 else "none" for _, c in ordered],
                "customdata": [labels[t] for t, _ in ordered],
                "hovertemplate": "%{customdata} · %{label}: %{value} images<extra></extra>",
                "color": [cluster_colour(c) for _, c in ordered],
                # Columns are epochs, fixed: a node without a kept incoming link would
                # otherwise be drawn in the first column.
                "x": [0.001 + 0.998 * (t - first) / span for t, _ in ordered],
                "y": [ys[key] for key in ordered],
                "pad": 4,
                "thickness": 14,
            },
            link={
                "source": [nodes[(t, a)] for t, a, _, _ in links],
                "target": [nodes[(t + 1, b)] for t, _, b, _ in links],
                "value": [n for *_, n in links],
                "color": [_fade(cluster_colour(a)) for _, a, _, _ in links],
                "customdata": [[labels[t], labels[t + 1]] for t, *_ in links],
                "hovertemplate": "%{customdata[0]} %{source.label} → %{customdata[1]} "
                "%{target.label}: %{value} images<extra></extra>",
            },
        )
    )
    for t in range(first, last + 1):
        fig.add_annotation(
            x=(t - first) / span,
            y=1.0,
            xref="paper",
            yref="paper",
            yanchor="bottom",
            text=labels[t].replace("epoch ", "e"),
            showarrow=False,
            font={"size": 10},
        )
    fig.update_layout(
        title={"text": "Cluster flow between consecutive epochs", "x": 0.0},
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def _node_heights(
    ordered: Sequence[tuple[int, int]], links: Sequence[tuple[int, int, int, int]]
) -> dict[tuple[int, int], float]:
    """Each node's vertical centre in [0, 1]: stacked by cluster id within its epoch, sized
    by the images through it, so a stable cluster is a straight band."""
    size: dict[tuple[int, int], int] = {}
    for t, a, b, n in links:
        for key in ((t, a), (t + 1, b)):
            size[key] = size.get(key, 0) + n
    out: dict[tuple[int, int], float] = {}
    for t in sorted({key[0] for key in ordered}):
        column = sorted((key for key in ordered if key[0] == t), key=lambda key: key[1])
        # Links are counted on both ends of a middle node: halve to compare columns fairly.
        total = sum(size[key] for key in column) or 1
        below = 0.0
        for key in column:
            out[key] = 0.01 + 0.98 * (below + size[key] / 2) / total
            below += size[key]
    return out


def _fade(colour: str, alpha: float = 0.35) -> str:
    if colour.startswith("#") and len(colour) == 7:
        r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
        return f"rgba({r},{g},{b},{alpha})"
    if colour.startswith("rgb(") and colour.endswith(")"):
        return f"rgba({colour[4:-1]},{alpha})"
    return f"rgba(180,180,180,{alpha})"


def flow_events(timeline: Timeline) -> list[dict[str, Any]]:
    """Table rows: every split and merge, epoch by epoch."""
    labels = epoch_labels(timeline)
    rows: list[dict[str, Any]] = []
    for f in timeline.get("flows") or []:
        step = f"{labels[f['source']]} → {labels[f['target']]}"
        for s in f.get("splits") or []:
            parts = ", ".join(f"c{c} ({n})" for c, n in s["into"])
            rows.append({"when": step, "what": "split", "cluster": s["cluster"], "parts": parts})
        for m in f.get("merges") or []:
            parts = ", ".join(f"c{c} ({n})" for c, n in m["from"])
            rows.append({"when": step, "what": "merge", "cluster": m["cluster"], "parts": parts})
    return rows


# --- kNN and the verdict --------------------------------------------------------------------------
def knn_verdict_figure(
    timeline: Timeline, current: int | None = None, height: int = 360
) -> go.Figure:
    """kNN top-1 and active prototypes per epoch; each marker coloured by that epoch's verdict."""
    epochs = timeline.get("epochs") or []
    labels = epoch_labels(timeline)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=("kNN top-1 (%)", "active prototypes"),
    )
    colours = [HEALTHY if e.get("verdict") == "healthy" else COLLAPSED for e in epochs]
    text = [f"{e.get('verdict') or '?'}: {e.get('reason') or ''}" for e in epochs]
    knn = [
        100 * e["knn_top1"] if isinstance(e.get("knn_top1"), int | float) else None for e in epochs
    ]
    active = [e.get("active_prototypes") for e in epochs]
    for row, values, name in ((1, knn, "kNN top-1"), (2, active, "active prototypes")):
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=values,
                mode="lines+markers",
                name=name,
                line={"color": "#888"},
                marker={"size": 10, "color": colours},
                text=text,
                hovertemplate="%{x}: %{y}<br>%{text}<extra></extra>",
                showlegend=False,
            ),
            row=row,
            col=1,
        )
    if current is not None and 0 <= current < len(labels):
        for row in (1, 2):
            fig.add_vline(x=current, line={"color": "#ff7f0e", "dash": "dot"}, row=row, col=1)
    fig.update_layout(
        title={"text": "Per epoch (green: healthy, red: a collapse)", "x": 0.0},
        height=height,
        margin={"l": 50, "r": 20, "t": 70, "b": 40},
    )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    return fig


# --- PCL ------------------------------------------------------------------------------------------
def pcl_phi_figure(timeline: Timeline, height: int = 380) -> go.Figure | None:
    """φ against cluster size for each of PCL's clusterings (a panel per K), coloured by epoch.

    None when no epoch has an E-step behind it (SwAV, or PCL still in its warm-up).
    """
    epochs = timeline.get("epochs") or []
    labels = epoch_labels(timeline)
    with_pcl = [(t, e["pcl"]) for t, e in enumerate(epochs) if e.get("pcl")]
    if not with_pcl:
        return None
    ks = sorted({c["num_clusters"] for _, pcl in with_pcl for c in pcl})
    fig = make_subplots(rows=1, cols=len(ks), subplot_titles=[f"K = {k}" for k in ks])
    colours = sample_colorscale(
        "Viridis", [t / max(1, len(epochs) - 1) for t in range(len(epochs))]
    )
    for t, pcl in with_pcl:
        for c in pcl:
            col = ks.index(c["num_clusters"]) + 1
            fig.add_trace(
                go.Scatter(
                    x=c["cluster_sizes"],
                    y=c["phi"],
                    mode="markers",
                    marker={"size": 6, "color": colours[t], "opacity": 0.8},
                    name=labels[t],
                    legendgroup=labels[t],
                    showlegend=col == 1,
                    hovertemplate=f"{labels[t]}<br>size %{{x}}<br>φ %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="images in the cluster (evaluated split)")
    fig.update_yaxes(title_text="φ (concentration)", col=1)
    fig.update_layout(
        title={"text": "PCL: φ against cluster size over epochs (small φ = tight)", "x": 0.0},
        height=height,
        margin={"l": 50, "r": 20, "t": 70, "b": 40},
    )
    return fig
