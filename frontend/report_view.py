"""A diagnostics report drawn as a verdict, metric cards, the spectrum and the usage (Diagnose)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from frontend import figures


@dataclass(frozen=True)
class Card:
    """One metric card: where its value lives in the report and what healthy/collapsed mean."""

    title: str
    key: str
    fmt: Callable[[Any, Mapping[str, Any]], str]
    explain: Callable[[Mapping[str, Any]], str]


def _num(digits: int) -> Callable[[Any, Mapping[str, Any]], str]:
    return lambda v, _r: f"{v:.{digits}f}"


def _pct(v: Any, _r: Mapping[str, Any]) -> str:
    return f"{100 * v:.1f} %"


def _of_k(v: Any, r: Mapping[str, Any]) -> str:
    return f"{v} / {r.get('num_prototypes')}"


def _ln_k(r: Mapping[str, Any]) -> str:
    lk = r.get("ln_k")
    return f"{lk:.2f}" if isinstance(lk, (int, float)) else "ln K"


CARDS: list[Card] = [
    Card(
        "Active prototypes",
        "active_prototypes",
        _of_k,
        lambda r: (
            "Prototypes that win at least one image. Healthy: many of K. One-cluster collapse: 1–2."
        ),
    ),
    Card(
        "Usage entropy / ln K",
        "usage_entropy",
        _num(3),
        lambda r: (
            "How evenly images spread over prototypes. Healthy: well above 0.5. Collapsed: near 0."
        ),
    ),
    Card(
        "Effective clusters exp(H)",
        "effective_clusters",
        _num(1),
        lambda r: (
            "The number of equally used prototypes with the same entropy. Collapsed: about 1."
        ),
    ),
    Card(
        "Confidence: mean H(pᵢ)",
        "assignment_entropy",
        _num(3),
        lambda r: (
            f"Entropy of each image's prediction. Healthy: well below ln K = {_ln_k(r)}. "
            "Uniform collapse: ≈ ln K (flat predictions)."
        ),
    ),
    Card(
        "Diversity: H(mean p)",
        "mean_prediction_entropy",
        _num(3),
        lambda r: (
            f"Entropy of the average prediction. Healthy: close to ln K = {_ln_k(r)}. "
            "One-cluster collapse: ≈ 0."
        ),
    ),
    Card(
        "Mutual information",
        "mutual_information",
        _num(3),
        lambda r: (
            "Diversity − confidence: what a prediction tells about its image. "
            "Healthy: large. Any collapse: ≈ 0."
        ),
    ),
    Card(
        "Embedding std",
        "embedding_std",
        _num(4),
        lambda r: (
            f"Per-dimension std of normalised embeddings. Healthy: ≈ 1/√d = "
            f"{r.get('expected_std', 0):.4f}. Collapsed to a point: ≈ 0."
        ),
    ),
    Card(
        "Effective rank (RankMe)",
        "effective_rank",
        _num(1),
        lambda r: (
            f"How many directions the embeddings use, of d = {r.get('embedding_dim')}. "
            "Healthy: a sizeable fraction of d. Dimensional collapse: a handful."
        ),
    ),
    Card(
        "Max prototype cosine",
        "max_prototype_cosine",
        _num(3),
        lambda r: (
            f"Closest pair of prototypes; {r.get('num_duplicate_pairs') or 0} pair(s) "
            "above 0.99. Healthy: below 0.99. Duplicates: ≈ 1."
        ),
    ),
    Card(
        "Recent loss − ln K",
        "loss_gap_to_ln_k",
        _num(3),
        lambda r: (
            "Last training losses against the flat-prediction loss. Healthy: clearly "
            "negative. Uniform collapse: ≈ 0."
        ),
    ),
    Card(
        "kNN top-1",
        "knn_top1",
        _pct,
        lambda r: (
            "Weighted kNN (k = 20) on labels the model never saw. Healthy: far above "
            "chance. Collapsed: near chance."
        ),
    ),
    Card(
        "NMI (clusters vs labels)",
        "nmi",
        _num(3),
        lambda r: (
            "Agreement of the argmax clusters with the classes. Healthy: well above 0. "
            "Collapsed: ≈ 0."
        ),
    ),
    Card(
        "AMI",
        "ami",
        _num(3),
        lambda r: "NMI corrected for chance. Healthy: clearly above 0. Collapsed: ≈ 0.",
    ),
    Card(
        "ARI",
        "ari",
        _num(3),
        lambda r: "Pair-counting agreement, chance-corrected. Healthy: above 0. Collapsed: ≈ 0.",
    ),
    Card(
        "Cluster accuracy",
        "cluster_accuracy",
        _pct,
        lambda r: (
            "Accuracy after the best one-to-one match of clusters to classes "
            "(Hungarian). Collapsed: about one class's share."
        ),
    ),
]

VERDICT_STYLE: dict[str, Callable[..., Any]] = {
    "healthy": st.success,
    "partial collapse": st.warning,
}


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def show_report(report: Mapping[str, Any]) -> None:
    verdict = str(report.get("verdict", "unknown"))
    box = VERDICT_STYLE.get(verdict, st.error)
    box(f"**Verdict: {verdict}.** {report.get('reason', '')}")
    meta = [
        f"method **{report.get('method')}**",
        f"data **{report.get('dataset')}** ({report.get('split') or 'split ?'}, "
        f"{report.get('num_images')} images)",
    ]
    if report.get("epoch") is not None:
        meta.append(f"epoch {report['epoch']}")
    if report.get("embedding_space"):
        meta.append(f"{report['embedding_space']} embeddings")
    st.caption(" · ".join(meta))

    cards = [c for c in CARDS if _present(report.get(c.key))]
    per_row = 4
    for start in range(0, len(cards), per_row):
        cols = st.columns(per_row)
        for col, card in zip(cols, cards[start : start + per_row], strict=False):
            with col.container(border=True):
                st.metric(card.title, card.fmt(report[card.key], report))
                st.caption(card.explain(report))

    left, right = st.columns(2)
    with left:
        spectrum = report.get("eigen_spectrum") or []
        if spectrum:
            st.plotly_chart(figures.spectrum_figure(spectrum), key="diag_spectrum")
            st.caption(
                "Healthy: a slow decay over many dimensions. Dimensional collapse: a cliff after "
                "a few (Jing et al. 2021)."
            )
    with right:
        usage = report.get("usage") or []
        if usage:
            st.plotly_chart(figures.usage_histogram_figure(usage), key="diag_usage")
            st.caption(
                "Images per prototype (argmax of the predictions, never the balanced Sinkhorn "
                "codes). Red crosses mark empty prototypes."
            )
    clusterings = report.get("pcl_clusterings") or []
    if clusterings:
        st.subheader("PCL: φ against cluster size")
        cols = st.columns(min(3, len(clusterings)))
        for i, (col, cl) in enumerate(zip(cols, clusterings, strict=False)):
            with col:
                st.plotly_chart(
                    figures.phi_size_figure(
                        cl.get("phi") or [],
                        cl.get("cluster_sizes") or [],
                        title=f"K = {cl.get('num_clusters')}",
                    ),
                    key=f"diag_phi_{i}",
                )
    with st.expander("Full report (JSON)"):
        st.json(dict(report), expanded=False)
