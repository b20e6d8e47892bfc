"""Collapse diagnostics: one report per checkpoint × data set split (DESIGN.md §3).

The measurements are plain functions over tensors (embeddings z, prototype logits, prototypes,
recent losses) so each can be tested on inputs whose answer is known; `verdict` turns them into
one word and one sentence; `diagnose_checkpoint` is the single entry point the CLI and the
backend call. Usage is always measured on the model's *predictions* (argmax of the logits) —
never on Sinkhorn codes, which are balanced by construction and would hide every collapse.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from models.prototype_usage import entropy

if TYPE_CHECKING:  # the heavy modules are imported where they are used
    from models.config import TrainConfig
    from models.data import ImageSet
    from models.features import Features, Inputs
    from models.method import MethodModule

__all__ = [
    "AssignmentEntropy",
    "DiagnosticReport",
    "EmbeddingHealth",
    "LossPlateau",
    "PhiVsSize",
    "PrototypeRedundancy",
    "PrototypeUsage",
    "Verdict",
    "assignment_entropy",
    "cluster_assignments",
    "diagnose_checkpoint",
    "diagnose_tensors",
    "effective_rank",
    "eigen_spectrum",
    "embedding_health",
    "embedding_std",
    "loss_plateau",
    "phi_vs_size",
    "prototype_redundancy",
    "prototype_usage",
    "recent_losses_from_run",
    "verdict",
]

Verdict = Literal[
    "healthy",
    "partial collapse",
    "uniform collapse",
    "one-cluster collapse",
    "dimensional collapse",
]

# --- thresholds of the verdict ------------------------------------------------------------------
# Embeddings whose per-dim std is below this fraction of 1/√d have shrunk to (nearly) one point:
# SimSiam (§4.1) shows ≈ 0 for a collapsed and ≈ 1/√d for a healthy L2-normalised embedding, and
# a tenth of 1/√d is far below anything a working encoder produces.
COLLAPSED_STD_RATIO = 0.1
# At most this many prototypes receiving any image is one cluster (plus a stray or two): the
# equipartition=False ablation ends with 1–3 active prototypes of 128, a trained model uses tens.
ONE_CLUSTER_MAX_ACTIVE = 2
# exp(usage entropy) below this: one prototype takes almost every image even when a few others
# catch a handful (e.g. 97 % / 2 % / 1 % gives 1.17 effective clusters).
ONE_CLUSTER_MAX_EFFECTIVE_CLUSTERS = 1.5
# H(mean p) / ln K below this: the *average* prediction is itself nearly one-hot, i.e. every
# image is sent to the same prototype (DESIGN.md §3: one-cluster collapse is H(mean p) → 0).
ONE_CLUSTER_MAX_DIVERSITY = 0.1
# Mean per-sample entropy at or above this fraction of ln K means flat predictions
# (DESIGN.md §3: uniform collapse is mean H(p_i) → ln K); 0.95 leaves room for noise.
UNIFORM_MIN_CONFIDENCE = 0.95
# …and mutual information H(mean p) − mean H(p_i) at most this fraction of ln K: the predictions
# say nothing about which image they came from.
UNIFORM_MAX_MI = 0.05
# A checkpoint this many epochs old or younger that reads "uniform collapse" gets a note: runs
# start flat (seen on shapes: flat at epoch 1, healthy at epoch 2 with the default SwAV).
EARLY_EPOCHS = 2
# Recent SwAV losses within this fraction of ln K of ln K sit on the uniform-collapse line (the
# swapped-prediction loss against flat predictions is exactly ln K); a trained default run on
# `shapes` ends near 2.4 for ln 128 = 4.85, far outside ±3 %.
LN_K_TOLERANCE = 0.03
# RankMe below max(DIMENSIONAL_MIN_RANK, DIMENSIONAL_MAX_RANK_FRACTION · d) while the std is
# not ≈ 0: the embeddings spread, but along a handful of directions only (Jing et al. 2021).
# Measured on `shapes` (d = 64): default SwAV after 5 min 17.9; default PCL after 5 min 7.2 (its
# covariance has ~6 non-negligible eigenvalues), after 2 min 4.7 (3 of them) — read as
# dimensional collapse, which the spectrum bears out.
DIMENSIONAL_MAX_RANK_FRACTION = 0.1
DIMENSIONAL_MIN_RANK = 2.0
# Usage entropy below half of ln K means fewer than √K effective clusters (11 of K = 128): a
# scale-free line between "over-clusters as SwAV should" and "most prototypes are dead".
PARTIAL_MIN_USAGE_ENTROPY = 0.5
# Fewer than this fraction of the prototypes (of min(K, N)) receiving any image is partial
# collapse too. Deliberately lower than "half": K = 128 on a 10-class set legitimately leaves
# many prototypes idle, and a trained run using tens of them must read healthy. Measured on the
# 2000 test images of `shapes`: default SwAV (5 min) 122 of 128 active, usage entropy 0.91.
PARTIAL_MIN_ACTIVE_FRACTION = 0.15

# --- other constants ----------------------------------------------------------------------------
DUPLICATE_COSINE = 0.99  # prototypes this close are one prototype twice (SwAV issue #71)
MAX_LISTED_PAIRS = 1000  # a fully collapsed K = 3000 would list ~4.5 M pairs otherwise
RANKME_EPS = 1e-7  # Garrido et al. 2023, added to each normalised singular value
RECENT_LOSSES = 50  # step events read from a run folder for the ln K signature


# --- measurements -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrototypeUsage:
    """How the predictions (argmax of the logits) spread over the K prototypes."""

    counts: list[int]
    num_prototypes: int
    num_images: int
    active: int
    empty: int
    entropy: float  # nats, of counts / N
    entropy_norm: float  # entropy / ln K, in [0, 1]
    effective_clusters: float  # exp(entropy)


@dataclass(frozen=True)
class AssignmentEntropy:
    """Entropies of p = softmax(logits / T), in nats."""

    confidence: float  # mean_i H(p_i): ln K for flat predictions, 0 for one-hot ones
    diversity: float  # H(mean_i p_i): 0 when every image goes to the same prototype
    mutual_information: float  # diversity − confidence: what the prediction says about the image
    ln_k: float


@dataclass(frozen=True)
class EmbeddingHealth:
    """Spread of the L2-normalised embeddings z (N × d)."""

    dim: int
    std: float  # per-dim std of normalised z, averaged over dims (SimSiam §4.1)
    expected_std: float  # 1/√d, what an isotropic embedding gives
    effective_rank: float  # RankMe, in [1, min(N, d)]
    eigen_spectrum: list[float]  # eigenvalues of Cov(z), largest first


@dataclass(frozen=True)
class PrototypeRedundancy:
    max_cosine: float | None  # largest off-diagonal cosine; None with fewer than 2 prototypes
    duplicate_pairs: list[list[float]]  # [i, j, cosine] with cosine > threshold, i < j
    num_duplicate_pairs: int  # all such pairs (the list stops at MAX_LISTED_PAIRS)


@dataclass(frozen=True)
class LossPlateau:
    """Recent training losses against ln K, the loss of flat predictions."""

    mean_loss: float
    ln_k: float
    gap: float  # mean_loss − ln K
    tolerance: float  # in nats
    on_ln_k_line: bool
    num_losses: int


@dataclass(frozen=True)
class PhiVsSize:
    """PCL: each cluster's concentration φ next to its size, for one clustering."""

    num_clusters: int
    phi: list[float]
    cluster_sizes: list[int]  # images of the evaluated split whose nearest centroid it is
    train_sizes: list[int] | None  # training images k-means gave it (what φ was computed from)
    spearman: float | None  # rank correlation of φ and cluster_sizes; None when undefined


def _ln(k: int) -> float:
    return math.log(k) if k > 1 else 0.0


def prototype_usage(logits: Tensor) -> PrototypeUsage:
    """Counts of argmax predictions per prototype and their entropy (logits: N × K)."""
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be (N, K) with K ≥ 1, got {tuple(logits.shape)}")
    n, k = logits.shape
    counts = torch.bincount(logits.argmax(dim=1), minlength=k)
    h = max(0.0, float(entropy(counts.double() / max(n, 1))))  # no "-0.0" for one cluster
    active = int((counts > 0).sum())
    return PrototypeUsage(
        counts=counts.tolist(),
        num_prototypes=k,
        num_images=n,
        active=active,
        empty=k - active,
        entropy=h,
        entropy_norm=h / _ln(k) if k > 1 else 0.0,
        effective_clusters=math.exp(h),
    )


def assignment_entropy(logits: Tensor, temperature: float = 1.0) -> AssignmentEntropy:
    """Confidence, diversity and their difference for p = softmax(logits / temperature)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # float64: H(mean p) − mean H(p_i) is a small difference of two numbers near ln K.
    p = torch.softmax(logits.double() / temperature, dim=1)
    confidence = float(entropy(p, dim=1).mean())
    diversity = float(entropy(p.mean(dim=0)))
    return AssignmentEntropy(
        confidence=confidence,
        diversity=diversity,
        mutual_information=max(0.0, diversity - confidence),  # ≥ 0 by concavity; clip rounding
        ln_k=_ln(logits.shape[1]),
    )


def embedding_std(z: Tensor) -> float:
    """Std over images of each dim of L2-normalised z, averaged over dims (≈ 1/√d healthy)."""
    if z.shape[0] < 2:
        return 0.0
    return float(F.normalize(z.double(), dim=1).std(dim=0).mean())


def effective_rank(z: Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of z.

    z is used as given (not centred), as in the paper; 1 for identical rows, ≈ d for isotropic
    Gaussian rows (N ≫ d).
    """
    sigma = torch.linalg.svdvals(z.double())
    if sigma.numel() == 0 or float(sigma.sum()) == 0.0:
        return 1.0
    p = sigma / sigma.sum() + RANKME_EPS
    return float(torch.exp(-(p * torch.log(p)).sum()))


def eigen_spectrum(z: Tensor) -> list[float]:
    """Eigenvalues of the covariance of z (d values), largest first, rounding negatives to 0."""
    if z.shape[0] < 2:
        return [0.0] * int(z.shape[1])
    zc = z.double() - z.double().mean(dim=0, keepdim=True)
    cov = zc.t() @ zc / (z.shape[0] - 1)
    values = torch.linalg.eigvalsh(cov).clamp_min(0.0).flip(0)
    return values.tolist()


def embedding_health(z: Tensor) -> EmbeddingHealth:
    """Std, RankMe and covariance spectrum of the L2-normalised rows of z (N × d)."""
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"embeddings must be (N, d), got {tuple(z.shape)}")
    zn = F.normalize(z.double(), dim=1)
    d = int(z.shape[1])
    return EmbeddingHealth(
        dim=d,
        std=embedding_std(zn),
        expected_std=1.0 / math.sqrt(d),
        effective_rank=effective_rank(zn),
        eigen_spectrum=eigen_spectrum(zn),
    )


def prototype_redundancy(
    prototypes: Tensor, threshold: float = DUPLICATE_COSINE
) -> PrototypeRedundancy:
    """Largest cosine between two different prototypes and the pairs above `threshold`."""
    k = int(prototypes.shape[0])
    if k < 2:
        return PrototypeRedundancy(None, [], 0)
    c = F.normalize(prototypes.double(), dim=1)
    cos = c @ c.t()
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
    values = cos[upper]
    i, j = upper.nonzero(as_tuple=True)
    above = values > threshold
    order = values[above].argsort(descending=True)[:MAX_LISTED_PAIRS]
    pairs = [
        [int(a), int(b), float(v)]
        for a, b, v in zip(i[above][order], j[above][order], values[above][order], strict=True)
    ]
    return PrototypeRedundancy(float(values.max()), pairs, int(above.sum()))


def loss_plateau(
    losses: Sequence[float], num_prototypes: int, tolerance: float = LN_K_TOLERANCE
) -> LossPlateau | None:
    """Mean of the recent losses against ln K; None without finite losses or with K < 2.

    `tolerance` is relative to ln K. Meaningful for SwAV's swapped-prediction loss only: PCL's
    InfoNCE + ProtoNCE has no ln K line.
    """
    finite = [float(x) for x in losses if math.isfinite(float(x))]
    if not finite or num_prototypes < 2:
        return None
    mean = sum(finite) / len(finite)
    ln_k = math.log(num_prototypes)
    tol = tolerance * ln_k
    return LossPlateau(mean, ln_k, mean - ln_k, tol, abs(mean - ln_k) <= tol, len(finite))


def cluster_assignments(z: Tensor, centroids: Tensor) -> Tensor:
    """Index of the most similar centroid (cosine) for each row of z: (N,) int64."""
    return (F.normalize(z.float(), dim=1) @ F.normalize(centroids.float(), dim=1).t()).argmax(1)


def _spearman(a: list[float], b: list[int]) -> float | None:
    from scipy.stats import spearmanr  # lazy: scipy.stats is slow to import

    if len(a) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input (fixed φ) → nan, reported as None
        rho = float(spearmanr(a, b).statistic)
    return rho if math.isfinite(rho) else None


def phi_vs_size(phi: Tensor, assignments: Tensor, train_sizes: Tensor | None = None) -> PhiVsSize:
    """φ of each cluster of one clustering against its size on the evaluated images."""
    k = int(phi.shape[0])
    sizes = torch.bincount(assignments.long().cpu(), minlength=k)[:k]
    phi_list = [float(x) for x in phi.float().cpu()]
    return PhiVsSize(
        num_clusters=k,
        phi=phi_list,
        cluster_sizes=sizes.tolist(),
        train_sizes=train_sizes.long().tolist() if train_sizes is not None else None,
        spearman=_spearman(phi_list, sizes.tolist()),
    )


# --- verdict ------------------------------------------------------------------------------------
def verdict(
    embedding: EmbeddingHealth,
    usage: PrototypeUsage | None = None,
    assignment: AssignmentEntropy | None = None,
    plateau: LossPlateau | None = None,
) -> tuple[Verdict, str]:
    """One word and one sentence naming the numbers behind it.

    Checked in order, the first that applies wins: flat predictions (uniform), embeddings
    shrunk to a point (one-cluster), one prototype taking everything (one-cluster), SwAV losses
    on the ln K line (uniform), few embedding directions (dimensional), many dead prototypes
    (partial), else healthy. Flat predictions come first because that is DESIGN.md's definition
    of uniform collapse (mean H(p_i) → ln K) and their argmax lands on whichever prototype is
    marginally ahead, which mimics one cluster; the equipartition=False ablation shows both (a
    point embedding whose predictions are flat), and the reason names the std too. Without
    prototypes (`usage` None) only the embedding is judged.
    """
    ratio = embedding.std / embedding.expected_std
    std_text = f"embedding std {embedding.std:.4f} vs 1/√d = {embedding.expected_std:.4f}"
    if assignment is not None and assignment.ln_k > 0:
        conf, mi = assignment.confidence / assignment.ln_k, assignment.mutual_information
        if conf >= UNIFORM_MIN_CONFIDENCE and mi <= UNIFORM_MAX_MI * assignment.ln_k:
            return "uniform collapse", (
                f"Predictions are flat: mean per-sample entropy {assignment.confidence:.3f} nats "
                f"= {conf:.3f}·ln K (ln K = {assignment.ln_k:.3f}) with mutual information "
                f"{mi:.3f} nats ({std_text})."
            )
    if ratio < COLLAPSED_STD_RATIO:
        return "one-cluster collapse", (
            f"The embeddings have shrunk to a point: {std_text} "
            f"(ratio {ratio:.3f} < {COLLAPSED_STD_RATIO})."
        )
    if usage is not None and usage.num_prototypes > 1:
        reason = _one_cluster_reason(usage, assignment)
        if reason:
            return "one-cluster collapse", reason
    if plateau is not None and plateau.on_ln_k_line:
        return "uniform collapse", (
            f"The last {plateau.num_losses} losses average {plateau.mean_loss:.3f}, within "
            f"{plateau.tolerance:.3f} of ln K = {plateau.ln_k:.3f}: the loss sits on the "
            "uniform-prediction line."
        )
    rank_floor = max(DIMENSIONAL_MIN_RANK, DIMENSIONAL_MAX_RANK_FRACTION * embedding.dim)
    if embedding.effective_rank < rank_floor:
        return "dimensional collapse", (
            f"Effective rank {embedding.effective_rank:.2f} of d = {embedding.dim} is below "
            f"{rank_floor:.1f} while the {std_text} is not collapsed."
        )
    if usage is not None and usage.num_prototypes > 1:
        possible = min(usage.num_prototypes, usage.num_images)
        used = usage.active / max(possible, 1)
        if usage.entropy_norm < PARTIAL_MIN_USAGE_ENTROPY or used < PARTIAL_MIN_ACTIVE_FRACTION:
            return "partial collapse", (
                f"Only {usage.active} of {usage.num_prototypes} prototypes are used "
                f"({usage.effective_clusters:.1f} effective clusters, usage entropy "
                f"{usage.entropy_norm:.2f}·ln K; healthy needs ≥ {PARTIAL_MIN_USAGE_ENTROPY} and "
                f"≥ {PARTIAL_MIN_ACTIVE_FRACTION:.0%} active)."
            )
    return "healthy", _healthy_reason(embedding, usage, std_text)


def _one_cluster_reason(usage: PrototypeUsage, assignment: AssignmentEntropy | None) -> str:
    """The one-cluster sentence, or "" when usage does not look like one cluster."""
    possible = min(usage.num_prototypes, usage.num_images)
    # With only a few prototypes (or images) two active ones can be a genuine split.
    max_active = max(1, min(ONE_CLUSTER_MAX_ACTIVE, possible // 4))
    diversity = (
        assignment.diversity / assignment.ln_k
        if assignment is not None and assignment.ln_k > 0
        else None
    )
    if (
        usage.active <= max_active
        or usage.effective_clusters < ONE_CLUSTER_MAX_EFFECTIVE_CLUSTERS
        or (diversity is not None and diversity < ONE_CLUSTER_MAX_DIVERSITY)
    ):
        div_text = f", H(mean p) = {diversity:.3f}·ln K" if diversity is not None else ""
        return (
            f"{usage.active} of {usage.num_prototypes} prototypes receive any image "
            f"({usage.effective_clusters:.2f} effective clusters, usage entropy "
            f"{usage.entropy_norm:.3f}·ln K{div_text})."
        )
    return ""


def _healthy_reason(embedding: EmbeddingHealth, usage: PrototypeUsage | None, std_text: str) -> str:
    rank_text = f"effective rank {embedding.effective_rank:.1f} of d = {embedding.dim}"
    if usage is None:
        return f"No prototypes to judge; the embedding is spread: {std_text}, {rank_text}."
    return (
        f"{usage.active} of {usage.num_prototypes} prototypes used "
        f"({usage.effective_clusters:.1f} effective clusters, usage entropy "
        f"{usage.entropy_norm:.2f}·ln K), {rank_text}, {std_text}."
    )


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


def diagnose_tensors(
    z: Tensor,
    logits: Tensor | None = None,
    temperature: float = 1.0,
    prototypes: Tensor | None = None,
    recent_losses: Sequence[float] | None = None,
    labels: Tensor | None = None,
) -> dict[str, Any]:
    """All the measurements and the verdict for embeddings z (N × d) and optional logits.

    Returns the metric fields of `DiagnosticReport` (no checkpoint or data set context).
    `recent_losses` are compared with ln K (pass them for SwAV only).
    """
    health = embedding_health(z)
    has_protos = logits is not None and logits.ndim == 2 and logits.shape[1] > 0
    usage = prototype_usage(logits) if has_protos else None
    entropies = assignment_entropy(logits, temperature) if has_protos else None
    k = int(logits.shape[1]) if has_protos else None
    plateau = loss_plateau(recent_losses, k) if recent_losses and k else None
    word, reason = verdict(health, usage, entropies, plateau)
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
    if prototypes is not None and has_protos:
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


# --- from a checkpoint --------------------------------------------------------------------------
def recent_losses_from_run(
    checkpoint: Path, up_to_step: int | None = None, limit: int = RECENT_LOSSES
) -> list[float] | None:
    """The last `limit` step losses of the run folder `checkpoint` sits in (RUN/checkpoints/).

    Only steps ≤ `up_to_step` count, so an epoch checkpoint is judged on the losses that led to
    it, not on later ones. None when there is no run folder or no step event.
    """
    events = checkpoint.parent.parent / "events.jsonl"
    if checkpoint.parent.name != "checkpoints" or not events.is_file():
        return None
    recent: deque[float] = deque(maxlen=limit)
    with events.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash must not hide the others
            if not isinstance(event, dict) or event.get("type") != "step":
                continue
            loss, step = event.get("loss"), event.get("step")
            if not isinstance(loss, int | float):
                continue
            if up_to_step is not None and isinstance(step, int) and step > up_to_step:
                continue
            recent.append(float(loss))
    return list(recent) or None


def _pcl_clusterings(model: MethodModule, projected: Tensor | None) -> list[PhiVsSize] | None:
    """φ vs size for every clustering of a PCL model, sized on the evaluated images."""
    clusterings = getattr(model, "clusterings", None)
    if not clusterings or projected is None:
        return None
    return [
        phi_vs_size(
            c.phi.detach().cpu(),
            cluster_assignments(projected, c.centroids.detach().cpu()),
            c.sizes.detach().cpu(),
        )
        for c in clusterings
    ]


def diagnose_checkpoint(
    checkpoint: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    max_images: int | None = 2000,
    recent_losses: list[float] | None = None,
    progress: Callable[[float, str], None] | None = None,
    amp: str = "auto",
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The diagnostic report of `checkpoint` on the first `max_images` images of `split`.

    `dataset` / `data_root` override the data set the checkpoint was trained on. kNN top-1
    (k = 20, T = 0.07) is a fraction in [0, 1] (`weighted_knn_top1` returns one): the train
    split's backbone features (at most `knn_bank_size`) are the bank and the evaluated images the
    queries; for split="train" the bank is the train images after the evaluated ones, and kNN
    is None when none are left. Without `recent_losses` a checkpoint in RUN/checkpoints/ reads
    the last RECENT_LOSSES step losses of RUN/events.jsonl (SwAV only: PCL has no ln K line).
    `progress(fraction, message)` is called with fractions from 0 to 1.

    Raises CheckpointError for an unusable checkpoint, DatasetError for unusable data and
    ValueError for bad arguments. Returns `DiagnosticReport.model_dump()`.
    """
    from models.features import load_inputs

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be ≥ 1 or None, got {max_images}")
    path = Path(checkpoint)
    report(0.0, "loading checkpoint")
    # Steps and their share of the bar: features of the evaluated images 0–50 %, the kNN
    # bank 50–90 %, the measurements the rest.
    inputs = load_inputs(
        path, dataset, data_root, split, max_images, lambda f, m: report(0.5 * f, m), amp, cache_dir
    )
    loaded, data_cfg, feats = inputs.loaded, inputs.data, inputs.features
    cfg = loaded.config
    knn = _knn_top1(inputs, split, amp, cache_dir, lambda f, m: report(0.5 + 0.4 * f, m))
    report(0.9, "measuring")
    if recent_losses is None and cfg.method == "swav":
        recent_losses = recent_losses_from_run(path, loaded.step)
    metrics = _measure(cfg, feats, recent_losses)
    epochs_done = loaded.epochs_done
    metrics["reason"] += early_note(metrics["verdict"], loaded.source, epochs_done)
    pcl = _pcl_clusterings(loaded.model, feats.projected)
    out = DiagnosticReport(
        **metrics,
        method=cfg.method,
        checkpoint=str(path),
        source=loaded.source,
        epoch=epochs_done,
        epochs_done=loaded.epochs_fraction,
        step=loaded.step,
        dataset=data_cfg.name,
        split=split,
        phi=pcl[0].phi if pcl else None,
        cluster_sizes=pcl[0].cluster_sizes if pcl else None,
        pcl_clusterings=[asdict(p) for p in pcl] if pcl else None,
        num_classes=len(inputs.images.classes) if inputs.images.classes else None,
        knn_top1=knn,
    ).model_dump()
    out = {k: _finite(v) if isinstance(v, float) else v for k, v in out.items()}
    from models.metric_readings import readings  # it reads this module's thresholds

    out["readings"] = readings(out)
    report(1.0, "done")
    return out


def early_note(word: str, source: str, epochs_done: int | None) -> str:
    """A sentence to add to an early checkpoint's "uniform collapse" reason, else ""."""
    # Every SwAV run starts on the ln K line (random prototypes, frozen for the first
    # iterations): this early, flat predictions do not yet tell a collapsed run from a healthy
    # one, and a teacher comparing epoch 1 with epoch 30 should hear that.
    if word != "uniform collapse" or source != "protoscope" or epochs_done is None:
        return ""
    if epochs_done > EARLY_EPOCHS:
        return ""
    return (
        f" This checkpoint is from epoch {epochs_done}: every run starts with flat predictions "
        "and a healthy one leaves the ln K line within a few epochs, so judge a later "
        "checkpoint before calling the run collapsed."
    )


def _measure(
    config: TrainConfig, feats: Features, recent_losses: Sequence[float] | None
) -> dict[str, Any]:
    """`diagnose_tensors` on a model's features, choosing the space and what applies."""
    space: Literal["projected", "backbone"] = "projected"
    z = feats.projected
    if z is None:
        space, z = "backbone", F.normalize(feats.backbone, dim=1)
    # The supervised baseline's "prototype logits" are its classifier's class scores: not
    # prototypes, so its report has no prototype metrics and is judged on the embedding.
    has_protos = config.method != "supervised"
    metrics = diagnose_tensors(
        z,
        feats.logits if has_protos else None,
        config.prediction_temperature,
        feats.prototypes if has_protos else None,
        recent_losses if config.method == "swav" else None,  # only SwAV's loss has a ln K line
        feats.labels,
    )
    return {**metrics, "embedding_space": space}


def _knn_top1(
    inputs: Inputs,
    split: str,
    amp: str,
    cache_dir: str | Path | None,
    report: Callable[[float, str], None],
) -> float | None:
    """Weighted kNN top-1 (fraction) of the evaluated images against a bank of train images.

    The bank is the first `knn_bank_size` train images, backbone features only (the one thing
    kNN reads), from the shared feature cache when an earlier analysis computed them. When the
    queries come from the train split they are its first images, and a query must not find
    itself in the bank, so the bank then starts after them. None without labels or without
    bank images.
    """
    from models.data import load_dataset
    from models.evaluate import KNN_K, KNN_T, knn_bank_size, weighted_knn_top1
    from models.features import FeatureKey, cached_features

    queries = inputs.features
    if queries.labels is None:
        return None
    skip = queries.num_images if split == "train" else 0

    def train_images() -> ImageSet:
        if split == "train":
            return inputs.images
        report(0.0, f"loading {inputs.data.name} (train) for the kNN bank")
        return load_dataset(inputs.data, "train")

    key = FeatureKey(inputs.loaded_path, inputs.data, "train", inputs.input_side, amp)
    bank = cached_features(
        key,
        train_images,
        lambda: inputs.loaded.model,
        skip + knn_bank_size(inputs.loaded.config.backbone),
        cache_dir,
        report,
        backbone_only=True,
        what="kNN bank",
    )
    if bank.labels is None or bank.num_images <= skip:
        return None
    return weighted_knn_top1(
        bank.backbone[skip:], bank.labels[skip:], queries.backbone, queries.labels, KNN_K, KNN_T
    )
