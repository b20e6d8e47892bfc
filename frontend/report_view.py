"""A diagnostics report drawn as a verdict, metric cards, the spectrum and the usage (Diagnose)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from frontend import figures
from frontend.pickers import progress_label


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
        lambda r: "Prototypes that are the argmax of at least one evaluated image.",
    ),
    Card(
        "Usage entropy / ln K",
        "usage_entropy",
        _num(3),
        lambda r: "How evenly the images spread over the prototypes, 0 (one) to 1 (even).",
    ),
    Card(
        "Effective clusters exp(H)",
        "effective_clusters",
        _num(1),
        lambda r: "The number of equally used prototypes that would give the same entropy.",
    ),
    Card(
        "Confidence: mean H(pᵢ)",
        "assignment_entropy",
        _num(3),
        lambda r: f"Entropy of each image's prediction, 0 (one-hot) to ln K = {_ln_k(r)} (flat).",
    ),
    Card(
        "Diversity: H(mean p)",
        "mean_prediction_entropy",
        _num(3),
        lambda r: f"Entropy of the average prediction, 0 to ln K = {_ln_k(r)}.",
    ),
    Card(
        "Mutual information",
        "mutual_information",
        _num(3),
        lambda r: "Diversity − confidence: what a prediction tells about its image.",
    ),
    Card(
        "Embedding std",
        "embedding_std",
        _num(4),
        lambda r: "Per-dimension std of the L2-normalised embeddings (SimSiam §4.1).",
    ),
    Card(
        "Effective rank (RankMe)",
        "effective_rank",
        _num(1),
        lambda r: f"How many directions the embeddings use, of d = {r.get('embedding_dim')}.",
    ),
    Card(
        "Max prototype cosine",
        "max_prototype_cosine",
        _num(3),
        lambda r: "Cosine of the closest pair of prototypes.",
    ),
    Card(
        "Recent loss − ln K",
        "loss_gap_to_ln_k",
        _num(3),
        lambda r: (
            "The last training losses minus ln K, the loss of flat predictions. A lower loss "
            "can mean collapse: predicting one prototype confidently scores low too."
        ),
    ),
    Card(
        "kNN top-1",
        "knn_top1",
        _pct,
        lambda r: (
            f"Weighted kNN (k = 20): {r.get('num_images', '?')} {r.get('split') or 'test'} "
            "images against the first 10,000 train images (5,000 for ResNet-50), on labels "
            "the model never saw."
        ),
    ),
    Card(
        "NMI (clusters vs labels)",
        "nmi",
        _num(3),
        lambda r: "Agreement of the argmax clusters with the classes, 0 to 1.",
    ),
    Card(
        "AMI",
        "ami",
        _num(3),
        lambda r: "NMI corrected for chance.",
    ),
    Card(
        "ARI",
        "ari",
        _num(3),
        lambda r: "Pair-counting agreement of clusters and classes, chance-corrected.",
    ),
    Card(
        "Cluster accuracy",
        "cluster_accuracy",
        _pct,
        lambda r: "Accuracy after the best one-to-one match of clusters to classes (Hungarian).",
    ),
]

VERDICT_STYLE: dict[str, Callable[..., Any]] = {
    "healthy": st.success,
    "partial collapse": st.warning,
}


TONE_COLOUR = {"good": "green", "bad": "red"}

# The two plots under the cards: (report field, figure of its values, how to read it).
_PLOTS: list[tuple[str, Callable[[Any], go.Figure], str]] = [
    (
        "eigen_spectrum",
        figures.spectrum_figure,
        "Healthy: a slow decay over many dimensions. Dimensional collapse: a cliff after "
        "a few (Jing et al. 2021).",
    ),
    (
        "usage",
        figures.usage_histogram_figure,
        "Images per prototype (argmax of the predictions, never the balanced Sinkhorn "
        "codes). Red crosses mark empty prototypes.",
    ),
]


def card_reading(card: Card, report: Mapping[str, Any]) -> str:
    """The backend's reading of this card's value (what it says here), coloured by tone."""
    reading = (report.get("readings") or {}).get(card.key)
    if not isinstance(reading, Mapping) or not reading.get("text"):
        return ""
    colour = TONE_COLOUR.get(str(reading.get("tone")))
    text = str(reading["text"])
    return f":{colour}[**Here:** {text}]" if colour else f"**Here:** {text}"


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def show_report(report: Mapping[str, Any]) -> None:
    verdict = str(report.get("verdict", "unknown"))
    box = VERDICT_STYLE.get(verdict, st.error)
    box(f"**Verdict: {verdict}.** {report.get('reason', '')}")
    meta = [
        f"method **{report.get('method')}**",
        f"data **{report.get('dataset')}** ({report.get('split') or 'split ?'}, "
        f"{report.get('num_images'):,} images: every count below is of these)"
        if isinstance(report.get("num_images"), int)
        else f"data **{report.get('dataset')}**",
    ]
    progress = progress_label(report)
    if progress:
        meta.append(" · ".join(progress))
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
                reading = card_reading(card, report)
                if reading:
                    st.markdown(reading)

    for column, (field, draw, caption) in zip(st.columns(2), _PLOTS, strict=True):
        values = report.get(field) or []
        if values:
            with column:
                st.plotly_chart(draw(values), key=f"diag_{field}")
                st.caption(caption)
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
