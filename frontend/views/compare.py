"""Compare: two checkpoints on the same data — aligned maps, matched clusters, metric deltas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from frontend import figures, widgets
from frontend.pickers import (
    checkpoint_label,
    choose_checkpoint,
    choose_data,
    points_of,
    progress_label,
)

TOP_MOVES = 15  # prototypes shown in the gained / lost chart


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else str(v)


def metric_rows(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Metric deltas as rows {metric, A, B, Δ} from `deltas`/`metrics` (dict or list)."""
    raw = answer.get("deltas") or answer.get("metric_deltas") or answer.get("metrics") or {}
    rows: list[dict[str, Any]] = []
    items = raw.items() if isinstance(raw, Mapping) else [(r.get("metric"), r) for r in raw]
    for name, val in items:
        if isinstance(val, Mapping):
            a, b = val.get("a"), val.get("b")
            d = val.get("delta")
            if d is None and isinstance(a, (int, float)) and isinstance(b, (int, float)):
                d = b - a
            rows.append({"metric": name, "A": _fmt(a), "B": _fmt(b), "Δ (B − A)": _fmt(d)})
        elif isinstance(val, (int, float)):
            rows.append({"metric": name, "A": "", "B": "", "Δ (B − A)": _fmt(val)})
    return rows


def moves_of(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cluster moves as {prototype, delta} from `gained`/`lost`.

    The backend's items are {cluster_a, cluster_b, images_a, images_b, change}: A's cluster,
    its matched B cluster (-1: none) and the change in images (B − A).
    """
    out: list[dict[str, Any]] = []
    for key, sign in (("gained", 1), ("lost", -1)):
        for item in answer.get(key) or answer.get(f"prototypes_{key}") or []:
            if not isinstance(item, Mapping):
                continue
            d = item.get("change", item.get("delta"))
            if d is None:
                d = sign * abs(int(item.get("count", item.get("images", 0)) or 0))
            ca = item.get("cluster_a", item.get("prototype", item.get("index")))
            cb = item.get("cluster_b")
            name = f"{ca}→{cb}" if cb is not None and cb != ca else str(ca)
            if cb is not None and int(cb) < 0:
                name = f"{ca}→none"
            out.append({"prototype": name, "delta": int(d)})
    return [m for m in out if m["delta"]]


def matching_rows(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Matched clusters as table rows from `matching` ([cluster A, cluster B, shared images])."""
    raw = answer.get("matching") or answer.get("matched_clusters") or answer.get("matches") or []
    rows: list[dict[str, Any]] = []
    for item in raw:
        if isinstance(item, Mapping):
            rows.append(dict(item))
        elif isinstance(item, (list, tuple)) and len(item) >= 2:
            row = {"cluster A": item[0], "cluster B": item[1]}
            if len(item) > 2:
                row["images in both"] = item[2]
            rows.append(row)
    # Hungarian matching pairs every cluster, also ones that share no image (or are empty on
    # these images): those rows said nothing and filled the table with zeros.
    rows = [r for r in rows if r.get("images in both", 1)]
    return sorted(rows, key=lambda r: -int(r.get("images in both") or 0))


def short_label(side: str, ckpt: Mapping[str, Any]) -> str:
    """A map title that fits above half the chart: side, id and training progress only (the
    pickers above show the full labels)."""
    return " · ".join([f"{side}: #{ckpt.get('id')}", *progress_label(ckpt)])


def main() -> None:
    st.title("Compare")
    st.caption(
        "Two checkpoints on the same images: their maps aligned, their clusters matched "
        "(Hungarian), how each metric moved, and which prototypes gained or lost images."
    )
    c = widgets.require_backend()
    left, right = st.columns(2)
    with left:
        a = choose_checkpoint(c, key="cmp_a", label="A", shared="compare_a")
    with right:
        b = choose_checkpoint(c, key="cmp_b", label="B", shared="compare_b", index=1)
    if a is None or b is None:
        return
    if a["id"] == b["id"]:
        st.info("A and B are the same checkpoint: everything will agree perfectly.")
    data = choose_data(c, a, key="cmp")  # both run on these images; by default A's
    if data is None:
        return
    answer = widgets.await_result(
        f"cmp:{a['id']}:{b['id']}{data.tag}",
        lambda: c.compare(a["id"], b["id"], **data.params()),
        f"Comparing {checkpoint_label(a)} with {checkpoint_label(b)}",
    )
    if not isinstance(answer, Mapping):
        return
    m = st.columns(4)
    for col, key, title, explain in (
        (m[0], "agreement", "Cluster agreement", "share of images in matched clusters"),
        (m[1], "nmi", "NMI", "normalised mutual information of the two assignments"),
        (m[2], "ari", "ARI", "adjusted Rand index of the two assignments"),
        (m[3], "disparity", "Map drift", "Procrustes disparity of the aligned maps (0 = same)"),
    ):
        if answer.get(key) is not None:
            col.metric(title, _fmt(answer[key]), help=explain)

    for warning in answer.get("warnings") or []:
        st.warning(str(warning))
    if answer.get("verdict_a") or answer.get("verdict_b"):
        st.caption(
            f"Diagnose verdicts: A **{answer.get('verdict_a') or '?'}** · "
            f"B **{answer.get('verdict_b') or '?'}**"
        )

    maps = answer.get("maps") or answer.get("aligned") or {}
    pa = points_of(maps.get("a") or answer.get("map_a") or {})
    pb = points_of(maps.get("b") or answer.get("map_b") or {})
    if pa and pb:
        st.subheader("Aligned maps")
        keys = [k for k in ("cluster", "label") if any(p.get(k) is not None for p in pa)]
        colour = st.radio("Colour by", keys or ["cluster"], horizontal=True, key="cmp_colour")
        st.plotly_chart(
            figures.aligned_maps_figure(pa, pb, colour, (short_label("A", a), short_label("B", b))),
            key="cmp_maps",
        )

    tables = [("Matched clusters", matching_rows(answer)), ("Metric deltas", metric_rows(answer))]
    for column, (title, rows) in zip(st.columns(2), tables, strict=True):
        with column:
            st.subheader(title)
            if rows:
                st.dataframe(rows, hide_index=True, width="stretch", height=320)
            else:
                st.caption(f"No {title.lower()} reported.")
    moves = moves_of(answer)
    if moves:
        st.subheader("Prototypes that gained or lost images")
        moves = sorted(moves, key=lambda m: -abs(m["delta"]))[:TOP_MOVES]
        st.plotly_chart(
            figures.delta_bar_figure(moves, f"Largest {len(moves)} changes"), key="cmp_moves"
        )


main()
