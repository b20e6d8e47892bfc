"""The diagnostic report: every measurement and the verdict (models/collapse_rules.py) of one
set of embeddings, as one JSON-able model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict
from torch import Tensor

from models.collapse_rules import (
    CollapseAlert,
    Verdict,
    training_log_alert,
    verdict,
)
from models.diagnostics.measures import (
    assignment_entropy,
    embedding_health,
    loss_plateau,
    prototype_redundancy,
    prototype_usage,
)

if TYPE_CHECKING:  # the heavy modules are imported where they are used
    pass


# --- the report ---------------------------------------------------------------------------------
class DiagnosticReport(BaseModel):
    """Everything `diagnose_checkpoint` returns; every field is JSON-serialisable.

    Prototype fields are None for a model without prototypes (the supervised baseline, PCL
    before its first E-step); label fields are None for unlabelled data; PCL fields for the
    other methods; loss fields when no recent losses are known or the method is not SwAV.
    """

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    reason: str
    method: str
    checkpoint: str | None = None
    source: str | None = None
    epoch: int | None = None  # epochs completed when it was written (from 1)
    epochs_done: float | None = None  # the same, fractional (0.4), when the file records it
    step: int | None = None
    dataset: str | None = None
    split: str | None = None
    num_images: int
    # prototype usage (predictions, never Sinkhorn codes)
    num_prototypes: int | None = None
    ln_k: float | None = None
    usage: list[int] | None = None
    active_prototypes: int | None = None
    empty_prototypes: int | None = None
    usage_entropy: float | None = None  # normalised by ln K, in [0, 1]
    usage_entropy_nats: float | None = None
    effective_clusters: float | None = None
    # assignment entropy of softmax(logits / temperature), nats
    temperature: float | None = None
    assignment_entropy: float | None = None  # mean_i H(p_i), confidence
    mean_prediction_entropy: float | None = None  # H(mean_i p_i), diversity
    mutual_information: float | None = None
    # embedding health
    embedding_space: Literal["projected", "backbone"] | None = None
    embedding_dim: int
    embedding_std: float
    expected_std: float
    effective_rank: float
    eigen_spectrum: list[float]
    # prototype redundancy
    max_prototype_cosine: float | None = None
    duplicate_pairs: list[list[float]] | None = None
    num_duplicate_pairs: int | None = None
    # the ln K signature
    recent_loss_mean: float | None = None
    loss_gap_to_ln_k: float | None = None
    loss_on_ln_k_line: bool | None = None
    num_recent_losses: int | None = None
    # PCL
    phi: list[float] | None = None
    cluster_sizes: list[int] | None = None
    pcl_clusterings: list[dict[str, Any]] | None = None
    # against labels
    num_classes: int | None = None
    knn_top1: float | None = None  # fraction in [0, 1]
    nmi: float | None = None
    ami: float | None = None
    ari: float | None = None
    cluster_accuracy: float | None = None
    cluster_purity: float | None = None
    # what each number says about this checkpoint (models/metric_readings.py)
    readings: dict[str, dict[str, str]] | None = None


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def json_value(value: Any) -> Any:
    """`value`, but None for a float that is NaN or infinite (not JSON; a measure that does
    not apply)."""
    return _finite(value) if isinstance(value, float) else value


def diagnose_tensors(
    z: Tensor,
    logits: Tensor | None = None,
    temperature: float = 1.0,
    prototypes: Tensor | None = None,
    recent_steps: Sequence[Mapping[str, Any]] | None = None,
    labels: Tensor | None = None,
    method: str = "swav",
) -> dict[str, Any]:
    """All the measurements and the verdict for embeddings z (N × d) and optional logits.

    Returns the metric fields of `DiagnosticReport` (no checkpoint or data set context).
    `recent_steps` are the step events that led to the checkpoint, oldest first: the verdict
    reads them with the live alert's own rules (models/collapse_rules.py), and for SwAV their
    losses are compared with ln K.
    """
    health = embedding_health(z)
    if logits is not None and not (logits.ndim == 2 and logits.shape[1] > 0):
        logits = None  # no prototypes to judge
    usage = prototype_usage(logits) if logits is not None else None
    entropies = assignment_entropy(logits, temperature) if logits is not None else None
    k = int(logits.shape[1]) if logits is not None else None
    steps = list(recent_steps or [])
    plateau = loss_plateau(steps, k) if steps and k and method == "swav" else None
    alert: CollapseAlert | None = training_log_alert(steps, method, k) if steps and k else None
    word, reason = verdict(health, usage, entropies, alert)
    out: dict[str, Any] = {
        "verdict": word,
        "reason": reason,
        "num_images": int(z.shape[0]),
        "embedding_dim": health.dim,
        "embedding_std": health.std,
        "expected_std": health.expected_std,
        "effective_rank": health.effective_rank,
        "eigen_spectrum": health.eigen_spectrum,
    }
    if usage is not None and entropies is not None:
        out.update(
            num_prototypes=usage.num_prototypes,
            ln_k=entropies.ln_k,
            usage=usage.counts,
            active_prototypes=usage.active,
            empty_prototypes=usage.empty,
            usage_entropy=usage.entropy_norm,
            usage_entropy_nats=usage.entropy,
            effective_clusters=usage.effective_clusters,
            temperature=temperature,
            assignment_entropy=entropies.confidence,
            mean_prediction_entropy=entropies.diversity,
            mutual_information=entropies.mutual_information,
        )
    if prototypes is not None and logits is not None:
        red = prototype_redundancy(prototypes)
        out.update(
            max_prototype_cosine=red.max_cosine,
            duplicate_pairs=red.duplicate_pairs,
            num_duplicate_pairs=red.num_duplicate_pairs,
        )
    if plateau is not None:
        out.update(
            recent_loss_mean=plateau.mean_loss,
            loss_gap_to_ln_k=plateau.gap,
            loss_on_ln_k_line=plateau.on_ln_k_line,
            num_recent_losses=plateau.num_losses,
        )
    if labels is not None and usage is not None and logits is not None:
        from models.evaluate import clustering_scores

        out.update(clustering_scores(logits.argmax(dim=1), labels))
    return out
