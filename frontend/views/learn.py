"""Learn: a Sinkhorn playground and a φ explainer, both pure numpy, no backend needed."""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from frontend import figures, learn_demos

EPSILONS = [0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0]
MAX_TOY_CLUSTERS = 4


def sinkhorn_playground() -> None:
    st.markdown(
        "SwAV never compares two views' features directly. For one view it computes a **code**: "
        "a soft assignment of every image in the batch to the K prototypes, and it trains the "
        "other view to **predict** that code (the *swapped prediction*). The codes solve a small "
        "optimal-transport problem: each prototype must receive an **equal share** of the batch "
        "(the *equipartition* constraint) and ε decides how sharp the codes may be. "
        "**Sinkhorn-Knopp** finds them by normalising rows and columns in turn, a few times."
    )
    c1, c2, c3 = st.columns(3)
    kind = c1.radio("Scores", learn_demos.SCORE_KINDS, key="learn_kind", horizontal=False)
    batch = c2.slider("Images in the batch (B)", 4, 24, 10, key="learn_b")
    k = c2.slider("Prototypes (K)", 2, 12, 5, key="learn_k")
    seed = c3.number_input("Seed", 0, 10_000, 0, key="learn_seed")
    epsilon = c1.select_slider("ε (entropy weight)", EPSILONS, value=0.05, key="learn_eps")
    iters = c3.slider("Sinkhorn iterations", 0, 30, 3, key="learn_iters")
    tau = c2.select_slider(
        "τ (softmax temperature)", [0.05, 0.1, 0.2, 0.5, 1.0], value=0.1, key="learn_tau"
    )

    scores = learn_demos.example_scores(kind, batch, k, seed=int(seed))
    probs = learn_demos.softmax(scores, tau)
    codes = learn_demos.sinkhorn(scores, epsilon, iters)
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            figures.matrix_heatmap(probs, f"Predictions: softmax(scores / {tau})", zmax=1.0),
            key="learn_softmax",
        )
    with right:
        st.plotly_chart(
            figures.matrix_heatmap(codes, f"Sinkhorn codes (ε = {epsilon}, {iters} it.)", zmax=1),
            key="learn_codes",
        )
    share = batch / k
    col_soft = probs.sum(axis=0)
    col_codes = codes.sum(axis=0)
    m1, m2, m3 = st.columns(3)
    m1.metric("Equal share per prototype B/K", f"{share:.2f}")
    m2.metric("Softmax: busiest prototype gets", f"{col_soft.max():.2f} images")
    m3.metric("Codes: busiest prototype gets", f"{col_codes.max():.2f} images")
    st.caption(
        "Numbers right of each matrix are its row sums, numbers below it its column sums. "
        "Every row of both matrices sums to 1 (one image's assignment). Only the codes also make "
        "every column sum close to B/K. Choose *one favourite prototype*: the softmax sends the "
        "whole batch to p0, the codes still spread it — that is why SwAV with equipartition "
        "switched off (targets = the softmax itself) collapses onto one prototype. Lower ε makes "
        "the codes harder (closer to one 1 per row); more iterations make the columns more equal. "
        "This demo works in log space, so even ε = 0.001 (exp(1000) in the plain formula) is fine."
    )


def _toy_controls() -> tuple[list[float], list[int]]:
    n = st.columns(3)[0].slider("Clusters", 2, MAX_TOY_CLUSTERS, 3, key="phi_n")
    spreads: list[float] = []
    sizes: list[int] = []
    cols = st.columns(n)
    defaults = [(0.4, 40), (1.0, 40), (0.4, 5), (0.7, 20)]
    for c, col in enumerate(cols):
        with col:
            st.markdown(f"**Cluster {c}**")
            spreads.append(
                st.slider("spread", 0.05, 2.0, defaults[c][0], 0.05, key=f"phi_spread_{c}")
            )
            sizes.append(st.slider("points Z", 2, 200, defaults[c][1], key=f"phi_size_{c}"))
    return spreads, sizes


def phi_explainer() -> None:
    st.markdown(
        "PCL clusters the embeddings (k-means) and uses each centroid as a **prototype**. Its "
        "ProtoNCE loss divides the similarity to each prototype by that cluster's own "
        "**concentration φ** instead of one global temperature: φ is the average distance of "
        "the members to their centroid, damped by ln(Z + α) so that a cluster with few points "
        "does not look deceptively tight. A loose cluster gets a **large φ** (softer logits); a "
        "tight one a **small φ** (sharper logits) — the paper argues this balances how tightly "
        "different clusters are pulled together."
    )
    st.latex(r"\phi_c = \frac{\sum_{v \in c} \lVert v - c \rVert}{Z_c \, \ln(Z_c + \alpha)}")
    spreads, sizes = _toy_controls()
    points, labels = learn_demos.make_toy_points(spreads, sizes, seed=0)
    with st.expander("Move or add points by hand"):
        st.caption("Edit x, y or the cluster of any point, or add rows at the bottom.")
        edited = st.data_editor(
            {"x": points[:, 0].round(3), "y": points[:, 1].round(3), "cluster": labels},
            num_rows="dynamic",
            key=f"phi_editor_{hash((tuple(spreads), tuple(sizes)))}",
            width="stretch",
        )
    table = _as_points(edited)
    if table is not None:
        points, labels = table
    toy = learn_demos.concentration(points, labels)
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(
            figures.toy_clusters_figure(
                points.tolist(), labels.tolist(), toy.centroids.tolist(), toy.phi.tolist()
            ),
            key="phi_toy",
        )
    with right:
        rows = []
        for c in range(len(toy.phi)):
            member = points[labels == c]
            dist = np.linalg.norm(member - toy.centroids[c], axis=1) if len(member) else []
            rows.append(
                {
                    "cluster": c,
                    "Z": int(toy.sizes[c]),
                    "mean ‖v − c‖": float(np.mean(dist)) if len(member) else None,
                    "ln(Z + α)": math.log(toy.sizes[c] + learn_demos.PCL_ALPHA),
                    "φ": float(toy.phi[c]),
                }
            )
        st.dataframe(rows, hide_index=True, width="stretch")
        st.caption(
            "Try it: give two clusters the same spread but very different Z — the small one "
            "gets the larger φ because ln(Z + α) is small. Widen a cluster — its φ grows in "
            "proportion. In training, PCL then clips φ to its 10th–90th percentile and rescales "
            "it so the mean φ equals the temperature τ."
        )


def _as_points(edited: object) -> tuple[np.ndarray, np.ndarray] | None:
    """The data editor's table as (points, labels); rows with missing values are skipped."""
    try:
        xs = list(edited["x"])  # type: ignore[index]
        ys = list(edited["y"])  # type: ignore[index]
        cs = list(edited["cluster"])  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    keep = [
        (float(x), float(y), int(c))
        for x, y, c in zip(xs, ys, cs, strict=False)
        if x is not None and y is not None and c is not None and not _nan(x, y, c) and c >= 0
    ]
    if not keep:
        return None
    pts = np.array([[x, y] for x, y, _ in keep])
    lab = np.array([c for _, _, c in keep], dtype=np.int64)
    return pts, lab


def _nan(*values: object) -> bool:
    return any(isinstance(v, float) and math.isnan(v) for v in values)


def main() -> None:
    st.title("Learn")
    st.caption("Two small interactive demos of the ideas behind SwAV and PCL (pure numpy).")
    # Bound to the URL (?tab=…) so a link or a screenshot can open the φ explainer directly.
    tab_s, tab_p = st.tabs(
        ["Sinkhorn playground (SwAV)", "Concentration φ (PCL)"], key="tab", bind="query-params"
    )
    with tab_s:
        sinkhorn_playground()
    with tab_p:
        phi_explainer()


main()
