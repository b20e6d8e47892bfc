"""Timeline: watch a run learn — every checkpoint on one aligned map, with a slider and Play,
prototype usage over epochs (click one to see its images at each epoch), the cluster flow
between epochs (Sankey), kNN and the verdict per epoch, and PCL's φ against size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from frontend import timeline_figures as tf
from frontend import widgets
from frontend.client import Client
from frontend.pickers import COLOUR_KEYS, choose_data, list_checkpoints, list_runs

COLOUR_NAMES = {
    "cluster": "cluster (argmax prototype)",
    "label": "label (ground truth)",
    "phi": "φ of its cluster (PCL)",
    "confidence": "confidence (max probability)",
}
GALLERY_IMAGES = 8  # images per epoch in a prototype's gallery
DEFAULT_IMAGES = 2000  # the whole shapes test split; Explore's maps of it are shared
MIN_IMAGES, MAX_IMAGES = 50, 20_000


def run_label(run: Mapping[str, Any], checkpoints: int) -> str:
    parts = [f"#{run.get('id')}"]
    if run.get("name"):
        parts.append(str(run["name"]))
    parts += [str(run.get("method") or "?"), str(run.get("dataset") or "?")]
    if run.get("status"):
        parts.append(str(run["status"]))
    parts.append(f"{checkpoints} checkpoint{'s' if checkpoints != 1 else ''}")
    return " · ".join(parts)


def choose_run(c: Client) -> tuple[dict[str, Any], int] | None:
    """A run that has checkpoints (?run=ID preselects), and how many it has."""
    counts: dict[int, int] = {}
    for ck in list_checkpoints(c):
        if isinstance(ck.get("run_id"), int):
            counts[ck["run_id"]] = counts.get(ck["run_id"], 0) + 1
    runs = {r["id"]: r for r in list_runs(c) if counts.get(r.get("id", -1))}
    if not runs:
        st.info(
            "No run with checkpoints yet. Start one on the **Runs** page: a checkpoint is "
            "written after every epoch, and each becomes a step of the timeline."
        )
        return None
    chosen = widgets.pick(
        "Run",
        list(runs),
        lambda i: run_label(runs[i], counts[i]),
        key="tl_run",
        shared="timeline_run",
        query_param="run",
    )
    if not isinstance(chosen, int) or chosen not in runs:
        return None
    return runs[chosen], counts[chosen]


def _epoch_summary(answer: Mapping[str, Any], t: int, labels: list[str]) -> None:
    e = answer["epochs"][t]
    cols = [*st.columns(2), *st.columns(2)]
    knn = e.get("knn_top1")
    cols[0].metric("kNN top-1", f"{100 * knn:.1f} %" if isinstance(knn, int | float) else "–")
    cols[1].metric("Active prototypes", str(e.get("active_prototypes", "–")))
    flows = answer.get("flows") or []
    if t < len(flows):
        cols[2].metric(
            "Kept clusters",
            f"{100 * flows[t]['agreement']:.0f} %",
            help=f"images whose cluster is matched (Hungarian) to their cluster at {labels[t + 1]}",
        )
    cols[3].metric(
        "Map moved",
        f"{e.get('disparity', 0.0):.2f}",
        help="Procrustes disparity against the "
        "previous epoch's map after alignment (0: only turned, 1: redrawn)",
    )
    verdict = e.get("verdict") or "?"
    icon = ":material/check_circle:" if verdict == "healthy" else ":material/warning:"
    st.markdown(f"{icon} **{labels[t]}: {verdict}.** {e.get('reason') or ''}")


def _gallery(
    c: Client, run_id: int, n_ckpts: int, k: int, params: Mapping[str, Any], labels: list[str]
) -> None:
    """Prototype k's nearest images at every epoch, a row per epoch."""
    key = ":".join(f"{n}={v}" for n, v in sorted(params.items()))
    answer = widgets.await_result(
        f"tlg:{run_id}:{n_ckpts}:{k}:{key}",
        lambda: c.timeline_gallery(run_id, k, **params),
        f"Images of prototype {k}",
    )
    if not isinstance(answer, Mapping):
        return
    dataset = str(answer.get("dataset") or "shapes")
    root = answer.get("data_root") if isinstance(answer.get("data_root"), str) else None
    for label, e in zip(labels, answer.get("epochs") or [], strict=False):
        images = list(e.get("images") or [])[:GALLERY_IMAGES]
        st.caption(f"{label} · {e.get('usage', 0)} images predicted")
        if images:
            widgets.image_grid(dataset, images, columns=GALLERY_IMAGES, data_root=root)


def _images_per_map() -> int:
    """How many images (the first of the split) each epoch's map holds; ?images=N presets."""
    preset = st.query_params.get("images")
    default = int(preset) if preset and preset.isdigit() else DEFAULT_IMAGES
    with st.expander("Images per map", expanded=False):
        return int(
            st.number_input(
                "The first N images of the split",
                min_value=MIN_IMAGES,
                max_value=MAX_IMAGES,
                value=min(MAX_IMAGES, max(MIN_IMAGES, default)),
                step=500,
                key="tl_images",
                help="Fewer images compute faster; each map and its alignment use the same "
                "images at every epoch.",
            )
        )


def _start_epoch(n: int) -> int:
    """Where the epoch slider starts: the last checkpoint, or the N-th with ?epoch=N."""
    wanted = st.query_params.get("epoch")
    if wanted and wanted.isdigit() and 1 <= int(wanted) <= n:
        return int(wanted) - 1
    return n - 1


def main() -> None:
    st.title("Timeline")
    st.caption(
        "Watch a run learn: each checkpoint's map, aligned onto the one before (Procrustes), so "
        "the same points keep their place unless their neighbourhood changed. Press ▶ Play or "
        "drag the slider under the map."
    )
    c = widgets.require_backend()
    got = choose_run(c)
    if got is None:
        return
    run, n_ckpts = got
    data = choose_data(c, {"dataset": run.get("dataset")}, key="tl")
    if data is None:
        return
    run_id = int(run["id"])
    images = _images_per_map()
    params: dict[str, Any] = {**data.params(), "max_images": images}
    result_key = f"tl:{run_id}:{n_ckpts}:{images}{data.tag}"
    answer = widgets.await_result(
        result_key,
        lambda: c.timeline(run_id, **params),
        f"Mapping and aligning the checkpoints of run #{run_id}",
    )
    if not isinstance(answer, Mapping) or not answer.get("epochs"):
        return
    labels = tf.epoch_labels(answer)
    names = answer.get("classes") if isinstance(answer.get("classes"), list) else None
    epochs = answer["epochs"]
    available = [
        k
        for k in COLOUR_KEYS
        if (k == "label" and answer.get("label"))
        or any(v is not None for e in epochs for v in (e.get(k) or [])[:50])
    ]
    top = st.columns([2, 3])
    colour = top[0].selectbox(
        "Colour by",
        available or ["cluster"],
        format_func=lambda k: COLOUR_NAMES.get(k, k),
        key="tl_colour",
    )
    t = 0
    if len(labels) > 1:
        t = top[1].select_slider(
            "Epoch (the map starts here; the panels below follow it)",
            options=list(range(len(labels))),
            value=_start_epoch(len(labels)),
            format_func=lambda i: labels[i],
            key=f"tl_epoch_{run_id}",
        )
    st.caption(
        f"{answer.get('num_points')} images of `{answer.get('dataset')}` "
        f"({answer.get('split')}) · {len(labels)} checkpoints · cluster ids: "
        f"{answer.get('cluster_ids')}"
    )
    left, right = st.columns([3, 2])
    with left:
        # About a second to build at 2,000 images × 10 epochs: not again for a click elsewhere.
        shown = (result_key, colour, t)
        fig = widgets.remembered(
            "tl_map", shown, lambda: tf.timeline_map_figure(answer, colour, t, names)
        )
        st.plotly_chart(fig, key="tl_map")
    with right:
        _epoch_summary(answer, t, labels)
        st.plotly_chart(tf.knn_verdict_figure(answer, t), key="tl_knn")

    st.subheader("Prototypes over epochs")
    chosen_key = f"tl_proto_{run_id}"
    event = st.plotly_chart(
        tf.usage_figure(answer, st.session_state.get(chosen_key)),
        key=f"tl_usage_{run_id}",
        on_select="rerun",
        selection_mode="points",
    )
    clicked = tf.clicked_prototype(event)
    if clicked is not None:
        st.session_state[chosen_key] = clicked
    born, died = answer.get("born") or [], answer.get("died") or []
    st.caption(
        f"{len(born)} births (▲: no image at the epoch before) and {len(died)} deaths (✕) of "
        "prototypes over the run."
    )
    k = st.session_state.get(chosen_key)
    if k is None:
        st.info("Click a square of the usage chart to see that prototype's images at each epoch.")
    else:
        st.markdown(f"**Prototype {k}: its nearest images at each epoch**")
        _gallery(c, run_id, n_ckpts, int(k), params, labels)

    st.subheader("Cluster flow")
    first, last = 0, len(labels) - 1
    if len(labels) > 2:
        first, last = st.select_slider(
            "Epochs shown",
            options=list(range(len(labels))),
            value=(0, len(labels) - 1),
            format_func=lambda i: labels[i],
            key=f"tl_flow_{run_id}",
        )
    if last > first:
        st.plotly_chart(tf.sankey_figure(answer, first, last), key="tl_sankey")
        rows = tf.flow_events(answer)
        if rows:
            with st.expander(f"Splits and merges ({len(rows)})"):
                st.dataframe(rows, hide_index=True, width="stretch")
    else:
        st.caption("Pick two or more epochs to see how the clusters flowed.")

    phi = tf.pcl_phi_figure(answer)
    if phi is not None:
        st.subheader("PCL: the E-step's clusters over epochs")
        st.plotly_chart(phi, key="tl_pcl")


main()
