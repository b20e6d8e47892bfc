"""The charts of a run's live view, drawn from its accumulated events (Runs page)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import streamlit as st

from frontend import figures, run_events


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def draw_live(
    events: list[dict[str, Any]], run: Mapping[str, Any], alert: Mapping[str, Any] | None = None
) -> None:
    """The live view; `alert` is the backend's collapse alert of the latest metrics page."""
    cfg = run_events.run_config(events) or run.get("config") or {}
    method = cfg.get("method") or run.get("method")
    k = run_events.num_prototypes(events)
    # ln K is the swapped-prediction loss of flat predictions: a SwAV reference only.
    k_line = k if method == "swav" else None
    if alert and alert.get("message"):
        st.error(f"**Collapse!** {alert['message']}", icon=":material/warning:")
    end = run_events.last_end(events)
    if end is not None:
        if end.get("status") == "failed":
            st.error(f"The run failed: {end.get('reason') or 'no reason given'}")
        else:
            why = f" — {end['reason']}" if end.get("reason") else ""
            st.info(f"Run ended: {end.get('status')}{why}")
    steps = run_events.of_type(events, "step")
    if not steps:
        st.info("Waiting for the first training step… (data set and model are being prepared)")
        return
    last = steps[-1]
    m = st.columns(6)
    m[0].metric("Step", f"{last.get('step')}")
    m[1].metric(
        "Epochs done",
        run_events.epochs_done_text(events, last),
        help="Epochs of training so far, fractional: the checkpoints' labels count the same way.",
    )
    m[2].metric(
        "Loss",
        _fmt(last.get("loss")),
        help=f"ln K = {math.log(k_line):.3f}: the loss of flat predictions" if k_line else None,
    )
    m[3].metric(
        "Active prototypes (last batch)",
        f"{_fmt(last.get('active_prototypes'))} / {k or '–'}",
        help=f"Prototypes that are the argmax of at least one image of the last batch "
        f"({cfg.get('batch_size', '?')} images), not of the test set (Diagnose counts those).",
    )
    knn_events = [
        e for e in events if e.get("type") in ("knn", "epoch") and e.get("knn_top1") is not None
    ]
    knn = [e["knn_top1"] for e in knn_events]
    m[4].metric(
        "kNN top-1",
        f"{100 * knn[-1]:.1f} %" if knn else "–",
        help=run_events.knn_sets_text(knn_events[-1]) if knn_events else None,
    )
    m[5].metric(
        "Crops / s",
        _fmt(last.get("crops_per_s"), 0) if last.get("crops_per_s") else "–",
        help="Training speed: augmented crops through the network per second (every image "
        "of a batch gives one crop per view, e.g. 2 for SwAV's two large crops).",
    )
    precision = run_events.precision_text(events)
    if precision:
        st.caption(precision)

    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.loss_figure(events, k_line), key="live_loss")
    with right:
        if any(e.get("active_prototypes") is not None for e in steps):
            st.plotly_chart(figures.activity_figure(events, k), key="live_activity")
        else:
            st.caption("No prototype usage yet (PCL reports it after its first E-step).")
    if any(isinstance(e.get("usage"), list) for e in steps):
        st.plotly_chart(figures.usage_heatmap(events), key="live_usage")
        if method == "pcl":
            st.caption(
                "PCL's prototypes are the centroids of a fresh k-means every epoch (the first "
                "clustering is shown), so a row's number means a different cluster each epoch."
            )
    left, right = st.columns(2)
    with left:
        if knn:
            st.plotly_chart(figures.knn_figure(events), key="live_knn")
        else:
            st.caption("kNN accuracy appears after the first hundred steps.")
    phis = figures.latest_phi(events)
    if phis:
        with right:
            choice = st.selectbox(
                "Clustering",
                list(range(len(phis))),
                format_func=lambda i: f"K = {phis[i]['k']}",
                key="live_phi_k",
            )
            sel = phis[choice]
            st.caption(f"φ from the E-step of epoch {int(sel['epoch'] or 0) + 1}")
        a, b = st.columns(2)
        with a:
            st.plotly_chart(
                figures.phi_bar_figure(sel["phi"], sel["sizes"], f"φ per cluster (K = {sel['k']})"),
                key="live_phi_bar",
            )
        with b:
            st.plotly_chart(figures.phi_size_figure(sel["phi"], sel["sizes"]), key="live_phi_size")
