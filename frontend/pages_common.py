"""Pickers and labels several pages share (checkpoints, runs), over the backend's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from frontend import ui
from frontend.client import Client

# Per-point values the map can be coloured by (the embedding answer may carry each).
COLOUR_KEYS = ("cluster", "label", "phi", "confidence")


def _items(answer: Any, *names: str) -> list[dict[str, Any]]:
    """A list answer, or the list under one of `names` when the backend wraps it."""
    if isinstance(answer, list):
        return [dict(a) for a in answer if isinstance(a, Mapping)]
    if isinstance(answer, Mapping):
        for name in names:
            if isinstance(answer.get(name), list):
                return [dict(a) for a in answer[name] if isinstance(a, Mapping)]
    return []


def list_checkpoints(c: Client) -> list[dict[str, Any]]:
    with ui.backend_errors():
        return _items(c.checkpoints(), "checkpoints", "items")


def list_runs(c: Client) -> list[dict[str, Any]]:
    with ui.backend_errors():
        return _items(c.runs(), "runs", "items")


def checkpoint_label(ckpt: Mapping[str, Any]) -> str:
    parts = [f"#{ckpt.get('id')}"]
    name = ckpt.get("name") or ckpt.get("run_name") or ckpt.get("filename")
    if name:
        parts.append(str(name))
    for key in ("method", "dataset"):
        if ckpt.get(key):
            parts.append(str(ckpt[key]))
    if ckpt.get("epoch") is not None:
        parts.append(f"epoch {ckpt['epoch']}")
    return " · ".join(parts)


def choose_checkpoint(
    c: Client, key: str, label: str = "Checkpoint", shared: str = "checkpoint", index: int = 0
) -> dict[str, Any] | None:
    """A checkpoint selectbox shared by the analysis pages (?checkpoint=ID preselects)."""
    ckpts = list_checkpoints(c)
    if not ckpts:
        st.info(
            "No checkpoints yet. Start a run on the **Runs** page (a checkpoint is written after "
            "every epoch) or import one there (**Import a checkpoint**)."
        )
        return None
    by_id = {ck["id"]: ck for ck in ckpts}
    ids = list(by_id)
    # A default other than the first, unless the URL (?shared=ID) already names a checkpoint.
    wanted = st.query_params.get(shared)
    if index and f"_keep_{shared}" not in st.session_state and wanted not in [str(i) for i in ids]:
        st.session_state[f"_keep_{shared}"] = ids[min(index, len(ids) - 1)]
    chosen = ui.pick(
        label,
        ids,
        lambda i: checkpoint_label(by_id[i]),
        key=key,
        shared=shared,
        query_param=shared,
    )
    return by_id.get(chosen)


def dataset_of(ckpt: Mapping[str, Any]) -> str:
    """The data set a checkpoint was trained on (images for galleries come from it)."""
    ds = ckpt.get("dataset")
    if isinstance(ds, Mapping):
        return str(ds.get("name", "shapes"))
    return str(ds or "shapes")


def points_of(answer: Any) -> list[dict[str, Any]]:
    """Map points as dicts {index, x, y, …}: a list of them (compare's `map_a`), or the
    embedding answer {points: [{index, x, y, label, cluster, confidence, phi}]} (or columns)."""
    if isinstance(answer, list):
        return [dict(p) for p in answer if isinstance(p, Mapping) and "index" in p]
    if not isinstance(answer, Mapping):
        return []
    pts = answer.get("points")
    if isinstance(pts, list):
        return [dict(p) for p in pts if isinstance(p, Mapping) and "index" in p]
    cols = pts if isinstance(pts, Mapping) else answer
    index = cols.get("index") or cols.get("indices")
    xs, ys = cols.get("x"), cols.get("y")
    coords = cols.get("coords") or cols.get("xy")
    if (xs is None or ys is None) and isinstance(coords, list):
        xs = [c[0] for c in coords]
        ys = [c[1] for c in coords]
    if not isinstance(index, list) or xs is None or ys is None:
        return []
    out = []
    for i, idx in enumerate(index):
        p: dict[str, Any] = {"index": int(idx), "x": float(xs[i]), "y": float(ys[i])}
        for key in (*COLOUR_KEYS, "labels", "clusters"):
            vals = cols.get(key)
            if isinstance(vals, list) and i < len(vals):
                p[key.rstrip("s") if key in ("labels", "clusters") else key] = vals[i]
        out.append(p)
    return out


def class_names(answer: Any) -> list[str] | None:
    if isinstance(answer, Mapping):
        names = answer.get("classes") or answer.get("label_names")
        if isinstance(names, list):
            return [str(n) for n in names]
    return None
