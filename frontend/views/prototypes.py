"""Prototypes sorted by usage, each with its nearest images; empty and duplicate ones marked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from frontend import widgets
from frontend.client import Client
from frontend.pickers import (
    DataChoice,
    checkpoint_analysis,
    images_of,
)

PER_PAGE = 8  # prototypes per page: each costs one gallery request and TOP_K thumbnails
TOP_K = 8
FILTERS = ("all", "used", "empty", "duplicates")


def prototypes_of(answer: Any) -> list[dict[str, Any]]:
    """The prototype rows from the answer: a list, or a dict holding it under `prototypes`."""
    items = answer.get("prototypes") if isinstance(answer, Mapping) else answer
    rows = [dict(p) for p in items or [] if isinstance(p, Mapping)]
    for i, p in enumerate(rows):
        p.setdefault("prototype", p.get("index", p.get("id", i)))
        p["usage"] = int(p.get("usage") or p.get("count") or 0)
        # The backend sends one prototype number or null; 0 is a prototype, so no `or` here.
        dup = p.get("duplicate_of")
        if dup is None:
            dup = p.get("duplicates")
        p["duplicate_of"] = [] if dup is None else [dup] if isinstance(dup, int) else list(dup)
        p["empty"] = bool(p.get("empty", p["usage"] == 0))
    return rows


def gallery_indices(answer: Any) -> list[int]:
    """Image indices of a gallery answer (a list, or `images`/`indices`, items int or dict)."""
    items = answer
    if isinstance(answer, Mapping):
        items = answer.get("images") or answer.get("indices") or answer.get("nearest") or []
    return [int(i["index"]) if isinstance(i, Mapping) else int(i) for i in items or []]


def _badges(p: Mapping[str, Any]) -> str:
    out = []
    if p["empty"]:
        out.append(":red-background[EMPTY]")
    if p["duplicate_of"]:
        others = ", ".join(str(d) for d in p["duplicate_of"])
        out.append(f":orange-background[DUPLICATE of {others}]")
    return " ".join(out)


def prototype_row(
    c: Client,
    ckpt: Mapping[str, Any],
    dataset: str,
    p: Mapping[str, Any],
    total: int,
    data: DataChoice,
    data_root: str | None = None,
) -> None:
    k = int(p["prototype"])
    with st.container(border=True):
        info, images = st.columns([1, 4])
        with info:
            st.markdown(f"**Prototype {k}** {_badges(p)}")
            share = f" ({100 * p['usage'] / total:.1f} %)" if total else ""
            st.caption(f"{p['usage']} images{share}")
            if p.get("phi") is not None:
                st.caption(f"φ = {float(p['phi']):.4f}")
        with images:
            inline = p.get("images") or p.get("nearest")
            if inline:
                indices = gallery_indices(inline)
            else:
                answer = widgets.await_result(
                    f"gal:{ckpt['id']}:{k}{data.tag}",
                    lambda: c.gallery(ckpt["id"], k, top_k=TOP_K, **data.params()),
                    f"Nearest images of prototype {k}",
                )
                indices = gallery_indices(answer) if answer is not None else []
            widgets.image_grid(dataset, indices[:TOP_K], columns=TOP_K, data_root=data_root)


def main() -> None:
    st.title("Prototypes")
    st.caption(
        "Each prototype with the images nearest to it (cosine), how many images it wins "
        "(argmax of the predictions) and, for PCL, its concentration φ."
    )
    c = widgets.require_backend()
    got = checkpoint_analysis(c, "proto", c.prototypes, "Measuring the prototypes of")
    if got is None:
        return
    ckpt, data, answer = got
    rows = prototypes_of(answer)
    if not rows:
        st.info("This checkpoint has no prototypes (a supervised model, or PCL before its E-step).")
        return
    dataset, root = images_of(answer, ckpt)
    total = sum(p["usage"] for p in rows)
    n_empty = sum(p["empty"] for p in rows)
    n_dup = sum(bool(p["duplicate_of"]) for p in rows)
    m = st.columns(4)
    m[0].metric("Prototypes K", len(rows))
    m[1].metric("Used", len(rows) - n_empty)
    m[2].metric("Empty", n_empty, help="No image has it as its argmax prediction.")
    m[3].metric("In a duplicate pair", n_dup, help="Cosine > 0.99 with another prototype.")

    f1, f2 = st.columns([2, 1])
    shown_filter = f1.radio("Show", FILTERS, horizontal=True, key="proto_filter")
    keep = {
        "all": rows,
        "used": [p for p in rows if not p["empty"]],
        "empty": [p for p in rows if p["empty"]],
        "duplicates": [p for p in rows if p["duplicate_of"]],
    }[shown_filter]
    keep = sorted(keep, key=lambda p: (-p["usage"], int(p["prototype"])))
    pages = max(1, (len(keep) + PER_PAGE - 1) // PER_PAGE)
    page = f2.number_input(f"Page (of {pages})", 1, pages, 1, key="proto_page")
    if not keep:
        st.info(f"No {shown_filter} prototypes.")
        return
    for p in keep[(page - 1) * PER_PAGE : page * PER_PAGE]:
        prototype_row(c, ckpt, dataset, p, total, data, root)


main()
