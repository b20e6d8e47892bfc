"""Explore: a checkpoint's UMAP map; hover a point to see its image, click or lasso to see many.

The map travels as columns (`GET …/embedding?format=columns`) and is drawn by WebGL, so it
stays interactive at 50,000 points; hover thumbnails come eagerly for small maps and near the
mouse for big ones (frontend/hover_map.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from frontend import figures, hover_map, widgets
from frontend.client import Client
from frontend.map_columns import MapColumns, columns_of
from frontend.pickers import (
    COLOUR_KEYS,
    DataChoice,
    checkpoint_label,
    choose_checkpoint_and_data,
    class_names,
    images_of,
)

COLOUR_NAMES = {
    "cluster": "cluster (argmax prototype)",
    "label": "label (ground truth)",
    "phi": "φ of its cluster (PCL)",
    "confidence": "confidence (max probability)",
}
MAX_GALLERY = 48  # images drawn for a selection; more would make the page slow to fill
NEIGHBOURS = 8
# Choices of the map's size. 5,000 was the one size before; 50,000 is what WebGL keeps fluid.
MAP_SIZES = (2000, 5000, 10000, 20000, 50000)
DEFAULT_MAP_SIZE = 5000
POINTS_QUERY = "points"  # ?points=N preselects a size (deep links, the benchmark)


def selected_panel(
    c: Client,
    ckpt: Mapping[str, Any],
    dataset: str,
    chosen: list[int],
    cols: MapColumns,
    names: list[str] | None,
    data: DataChoice,
    data_root: str | None = None,
    max_images: int | None = None,
) -> None:
    first = chosen[0]
    p = cols.point(first)
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
        f"nb:{ckpt['id']}:{first}{data.tag}:{max_images}",
        # Among the map's own images (its features are cached), not the whole split.
        lambda: c.neighbours(
            ckpt["id"], first, k=NEIGHBOURS, max_images=max_images, **data.params()
        ),
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


def map_size() -> int:
    """How many images the map holds at most: a select slider, ?points=N preselects it."""
    key = "explore_points"
    if key not in st.session_state:
        wanted = st.query_params.get(POINTS_QUERY)
        st.session_state[key] = (
            int(wanted)
            if wanted and wanted.isdigit() and int(wanted) in MAP_SIZES
            else DEFAULT_MAP_SIZE
        )
    size: int = st.select_slider(
        "Images on the map (at most)",
        options=MAP_SIZES,
        key=key,
        format_func=lambda n: f"{n:,}",
        help="The first N images of the split. Big maps take longer the first time (features "
        "and UMAP); drawn by WebGL, 50,000 points stay fluid.",
    )
    return size


def main() -> None:
    st.title("Explore")
    st.caption(
        "A 2-D UMAP map of a checkpoint's embeddings. Hover a point to see its image, index, "
        "label and cluster; click it to see its nearest images, or pick the box or lasso tool "
        "(the chart's tool bar) to see many at once."
    )
    c = widgets.require_backend()
    picked = choose_checkpoint_and_data(c, key="explore")
    if picked is None:
        return
    ckpt, data = picked
    size = map_size()
    answer = widgets.await_result(
        f"explore:{ckpt['id']}{data.tag}:{size}",
        lambda: c.embedding_columns(ckpt["id"], max_images=size, **data.params()),
        f"Computing the UMAP map of {checkpoint_label(ckpt)}",
    )
    if answer is None:
        return
    cols = columns_of(answer)
    if cols is None or not len(cols):
        st.warning("The backend returned an empty map.")
        return
    names = class_names(answer)
    dataset, root = images_of(answer, ckpt)
    available = [k for k in COLOUR_KEYS if cols.has(k)]
    colour = st.selectbox(
        "Colour by",
        available or ["cluster"],
        format_func=lambda k: COLOUR_NAMES.get(k, k),
        key="explore_colour",
    )
    left, right = st.columns([3, 2])
    with left:
        fig = figures.webgl_map_figure(cols, colour, label_names=names)
        map_key = f"explore_map_{ckpt['id']}"
        event = st.plotly_chart(
            fig,
            key=map_key,
            on_select="rerun",
            selection_mode=("points", "box", "lasso"),
        )
        st.caption(f"{len(cols)} images of `{dataset}`")
    chosen = figures.selected_indices(event)
    with right:
        if not chosen:
            st.info(
                "Click a point to see it and its nearest images here, or select many with the "
                "box or lasso tool above the map."
            )
        else:
            selected_panel(c, ckpt, dataset, chosen, cols, names, data, root, size)
    if len(chosen) > 1:
        st.subheader(f"Selection: {len(chosen)} images")
        if len(chosen) > MAX_GALLERY:
            st.caption(f"Showing the first {MAX_GALLERY}.")
        shown = chosen[:MAX_GALLERY]
        clusters = {i: cols.point(i).get("cluster") for i in shown}
        captions = [f"#{i} · c{clusters[i]}" for i in shown]
        widgets.image_grid(dataset, shown, captions=captions, columns=12, data_root=root)
    # Last, so the map and any selection are on screen while the thumbnails are fetched (once).
    indices = cols.index.tolist()
    hover_map.hover_previews(map_key, dataset, indices, data_root=root, cols=cols)


main()
