"""Explore: a checkpoint's UMAP map; hover a point to see its image, click or lasso to see many."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from frontend import figures, hover_map, widgets
from frontend.client import Client
from frontend.pickers import (
    COLOUR_KEYS,
    DataChoice,
    checkpoint_analysis,
    class_names,
    images_of,
    points_of,
)

COLOUR_NAMES = {
    "cluster": "cluster (argmax prototype)",
    "label": "label (ground truth)",
    "phi": "φ of its cluster (PCL)",
    "confidence": "confidence (max probability)",
}
MAX_GALLERY = 48  # images drawn for a selection; more would make the page slow to fill
NEIGHBOURS = 8


def selected_panel(
    c: Client,
    ckpt: Mapping[str, Any],
    dataset: str,
    chosen: list[int],
    by_index: Mapping[int, Mapping[str, Any]],
    names: list[str] | None,
    data: DataChoice,
    data_root: str | None = None,
) -> None:
    first = chosen[0]
    p = by_index.get(first, {})
    picture = widgets.image_bytes(dataset, first, size=160, data_root=data_root)
    if picture is not None:
        st.image(picture, width=160)
    label = p.get("label")
    label_text = f"{label}: {names[label]}" if names and isinstance(label, int) else str(label)
    st.markdown(
        f"**Image {first}** · label {label_text} · cluster {p.get('cluster')}"
        + (f" · confidence {p['confidence']:.2f}" if isinstance(p.get("confidence"), float) else "")
    )
    answer = widgets.await_result(
        f"nb:{ckpt['id']}:{first}{data.tag}",
        lambda: c.neighbours(ckpt["id"], first, k=NEIGHBOURS, **data.params()),
        "Finding its nearest images",
    )
    indices = _neighbour_indices(answer)
    if indices:
        st.caption("Nearest images in the embedding")
        widgets.image_grid(dataset, indices[:NEIGHBOURS], columns=4, data_root=data_root)


def _neighbour_indices(answer: Any) -> list[int]:
    if not isinstance(answer, Mapping):
        return []
    for key in ("images", "neighbours", "nearest_images", "indices"):
        items = answer.get(key)
        if isinstance(items, list):
            return [int(i["index"]) if isinstance(i, Mapping) else int(i) for i in items]
    return []


def main() -> None:
    st.title("Explore")
    st.caption(
        "A 2-D UMAP map of a checkpoint's embeddings. Hover a point to see its image, index, "
        "label and cluster; click it to see its nearest images, or pick the box or lasso tool "
        "(the chart's tool bar) to see many at once."
    )
    c = widgets.require_backend()
    got = checkpoint_analysis(c, "explore", c.embedding, "Computing the UMAP map of")
    if got is None:
        return
    ckpt, data, answer = got
    points = points_of(answer)
    if not points:
        st.warning("The backend returned an empty map.")
        return
    names = class_names(answer)
    dataset, root = images_of(answer, ckpt)
    available = [k for k in COLOUR_KEYS if any(p.get(k) is not None for p in points)]
    colour = st.selectbox(
        "Colour by",
        available or ["cluster"],
        format_func=lambda k: COLOUR_NAMES.get(k, k),
        key="explore_colour",
    )
    left, right = st.columns([3, 2])
    with left:
        fig = figures.embedding_figure(points, colour, label_names=names)
        map_key = f"explore_map_{ckpt['id']}"
        event = st.plotly_chart(
            fig,
            key=map_key,
            on_select="rerun",
            selection_mode=("points", "box", "lasso"),
        )
        st.caption(f"{len(points)} images of `{dataset}`")
    chosen = figures.selected_indices(event)
    by_index = {p["index"]: p for p in points}
    with right:
        if not chosen:
            st.info(
                "Click a point to see it and its nearest images here, or select many with the "
                "box or lasso tool above the map."
            )
        else:
            selected_panel(c, ckpt, dataset, chosen, by_index, names, data, root)
    if len(chosen) > 1:
        st.subheader(f"Selection: {len(chosen)} images")
        if len(chosen) > MAX_GALLERY:
            st.caption(f"Showing the first {MAX_GALLERY}.")
        shown = chosen[:MAX_GALLERY]
        captions = [f"#{i} · c{by_index.get(i, {}).get('cluster')}" for i in shown]
        widgets.image_grid(dataset, shown, captions=captions, columns=12, data_root=root)
    # Last, so the map and any selection are on screen while the thumbnails are fetched (once).
    hover_map.hover_previews(map_key, dataset, [p["index"] for p in points], data_root=root)


main()
