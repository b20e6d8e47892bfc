"""Pickers and labels several pages share (checkpoints, runs), over the backend's JSON."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from frontend import widgets
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
    with widgets.backend_errors():
        return _items(c.checkpoints(), "checkpoints", "items")


def runs_of(answer: Any) -> list[dict[str, Any]]:
    """The runs of a GET /runs answer."""
    return _items(answer, "runs", "items")


def list_runs(c: Client) -> list[dict[str, Any]]:
    with widgets.backend_errors():
        return runs_of(c.runs())


def checkpoint_label(ckpt: Mapping[str, Any]) -> str:
    parts = [f"#{ckpt.get('id')}"]
    name = ckpt.get("name") or ckpt.get("run_name") or ckpt.get("filename")
    if name:
        parts.append(str(name))
    for key in ("method", "dataset"):
        if ckpt.get(key):
            parts.append(str(ckpt[key]))
    if ckpt.get("recipe") == "paper":  # cpu is the default: named only when it is not
        parts.append("paper recipe")
    parts.extend(progress_label(ckpt))
    return " · ".join(parts)


def progress_label(ckpt: Mapping[str, Any]) -> list[str]:
    """["epoch 0.4", "step 60"]: epochs of training behind a checkpoint (fractional when the
    backend knows it) and its step; the one vocabulary of every page."""
    out = []
    done = ckpt.get("epochs_done")
    if isinstance(done, int | float):
        out.append(f"epoch {done:g}" if float(done).is_integer() else f"epoch {done:.1f}")
    elif ckpt.get("epoch") is not None:
        out.append(f"epoch {ckpt['epoch']}")
    if ckpt.get("step") is not None:
        out.append(f"step {ckpt['step']}")
    return out


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
    ids = [ck["id"] for ck in ckpts]
    # A default other than the first, unless the URL (?shared=ID) already names a checkpoint.
    wanted = st.query_params.get(shared)
    if index and f"_keep_{shared}" not in st.session_state and wanted not in [str(i) for i in ids]:
        st.session_state[f"_keep_{shared}"] = ids[min(index, len(ids) - 1)]
    return widgets.pick_row(label, ckpts, checkpoint_label, key=key, shared=shared)


@dataclass(frozen=True)
class DataChoice:
    """The images an analysis runs on: the checkpoint's own (both None) or another set."""

    dataset: str | None = None
    data_root: str | None = None

    def params(self) -> dict[str, str]:
        """Query parameters for the analysis endpoints (none for the checkpoint's own data)."""
        pairs = (("dataset", self.dataset), ("data_root", self.data_root))
        return {k: v for k, v in pairs if v}

    @property
    def tag(self) -> str:
        """A suffix for result keys: the same checkpoint on other images is another answer."""
        return f"@{self.dataset}:{self.data_root or ''}" if self.dataset else ""


OWN_DATA = "(own)"


def choose_data(c: Client, ckpt: Mapping[str, Any], key: str) -> DataChoice | None:
    """Which images to analyse `ckpt` on; None while a folder the set needs is still missing.

    A run's checkpoint defaults to the images it was trained on. An imported official one
    names none (it is analysed on `shapes` at its own image size) — the reason this exists:
    pick CIFAR-10, STL-10 or an image folder that lies on the server.
    """
    own = ckpt.get("dataset")
    own_text = f"its own ({own})" if own else "none stored: shapes"
    with widgets.backend_errors():
        listed = _items(c.datasets(), "datasets")
    by_name = {str(d["name"]): d for d in listed if "name" in d}
    current = st.session_state.get(f"{key}_data", OWN_DATA)
    shown = own_text if current == OWN_DATA or current not in by_name else str(current)
    with st.expander(f"Analysed on: {shown}", expanded=False):
        name = st.selectbox(
            "Data set",
            [OWN_DATA, *by_name],
            format_func=lambda n: (
                f"the checkpoint's own ({own or 'shapes'})"
                if n == OWN_DATA
                else f"{n} — {by_name[n].get('description', '')}"
            ),
            key=f"{key}_data",
            help="Analyse the checkpoint on other images, e.g. an official SwAV checkpoint "
            "on CIFAR-10. Sets on disk need their folder on the server.",
        )
        if name == OWN_DATA:
            return DataChoice()
        info = by_name[name]
        if not info.get("needs_root"):
            return DataChoice(name)
        root = st.text_input(
            "Folder on the server",
            value=str(info.get("default_root") or ""),
            key=f"{key}_root_{name}",
            help="Inside the server's data folders (its datasets/ folder by default); the "
            "backend refuses any other path.",
        ).strip()
        if not root:
            st.info(f"`{name}` is read from a folder: give it above.")
            return None
        return DataChoice(name, root)


def choose_checkpoint_and_data(c: Client, key: str) -> tuple[dict[str, Any], DataChoice] | None:
    """Pick a checkpoint, then the images to analyse it on: (checkpoint, images), or None while
    either is missing.

    The widgets are keyed `{key}_ckpt` and `{key}` (`{key}_data`, …): the keys the analysis
    pages gave them before this helper, so the session state they keep is read as before.
    """
    ckpt = choose_checkpoint(c, key=f"{key}_ckpt")
    if ckpt is None:
        return None
    data = choose_data(c, ckpt, key=key)
    return None if data is None else (ckpt, data)


def checkpoint_analysis(
    c: Client, key: str, fetch: Callable[..., Any], doing: str
) -> tuple[Mapping[str, Any], DataChoice, Any] | None:
    """Pick a checkpoint and its images, then wait for one analysis of them (progress shown):
    (checkpoint, images, answer), or None while any of the three is missing.

    `fetch(checkpoint_id, **params)` asks the backend; `doing` ("Computing the map of") names
    the work in the progress line, followed by the checkpoint's label.
    """
    chosen = choose_checkpoint_and_data(c, key)
    if chosen is None:
        return None
    ckpt, data = chosen
    answer = widgets.await_result(
        f"{key}:{ckpt['id']}{data.tag}",
        lambda: fetch(ckpt["id"], **data.params()),
        f"{doing} {checkpoint_label(ckpt)}",
    )
    return None if answer is None else (ckpt, data, answer)


def images_of(answer: Any, ckpt: Mapping[str, Any]) -> tuple[str, str | None]:
    """The data set and folder an analysis answer's image indices point into.

    The answer names what the backend actually read (the checkpoint's own data, or the
    "Analysed on" choice); the folder matters for cifar10 / stl10 / imagefolder, whose images
    the server cannot find without it.
    """
    named = answer.get("dataset") if isinstance(answer, Mapping) else None
    root = answer.get("data_root") if isinstance(answer, Mapping) else None
    return str(named or dataset_of(ckpt)), root if isinstance(root, str) else None


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
