"""Collapse diagnostics: one report per checkpoint × data set split (DESIGN.md §3).

The measurements are plain functions over tensors (embeddings z, prototype logits, prototypes,
recent losses) so each can be tested on inputs whose answer is known; `verdict` turns them into
one word and one sentence; `diagnose_checkpoint` is the single entry point the CLI and the
backend call. Usage is always measured on the model's *predictions* (argmax of the logits) —
never on Sinkhorn codes, which are balanced by construction and would hide every collapse.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from models.collapse_rules import (
    DUPLICATE_COSINE,
    LN_K_TOLERANCE,
    CollapseAlert,
    Verdict,
    early_note,
    ln_k_window,
    on_ln_k_line,
    training_log_alert,
    verdict,
)
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
    "verdict",
]

# Every threshold and the verdict itself live in models/collapse_rules.py, shared with the live
# alert of the Runs page.
MAX_LISTED_PAIRS = 1000  # a fully collapsed K = 3000 would list ~4.5 M pairs otherwise
RANKME_EPS = 1e-7  # Garrido et al. 2023, added to each normalised singular value


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


def loss_plateau(steps: Sequence[Mapping[str, Any]], num_prototypes: int) -> LossPlateau | None:
    """The ln K rule's window of step losses (collapse_rules.ln_k_window) against ln K; None
    without losses in it or with K < 2.

    Meaningful for SwAV's swapped-prediction loss only: PCL's InfoNCE + ProtoNCE has no ln K
    line.
    """
    window = [x for x in ln_k_window(steps) if math.isfinite(x)]
    if not window or num_prototypes < 2:
        return None
    mean = sum(window) / len(window)
    ln_k = math.log(num_prototypes)
    tol = LN_K_TOLERANCE * ln_k
    on_line = on_ln_k_line(window, num_prototypes)
    return LossPlateau(mean, ln_k, mean - ln_k, tol, on_line, len(window))


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
    has_protos = logits is not None and logits.ndim == 2 and logits.shape[1] > 0
    usage = prototype_usage(logits) if has_protos else None
    entropies = assignment_entropy(logits, temperature) if has_protos else None
    k = int(logits.shape[1]) if logits is not None and has_protos else None
    steps = list(recent_steps or [])
    plateau = loss_plateau(steps, k) if steps and k and method == "swav" else None
    alert: CollapseAlert | None = (
        training_log_alert(steps, method, k) if steps and has_protos else None
    )
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
    recent_steps: Sequence[Mapping[str, Any]] | None = None,
    progress: Callable[[float, str], None] | None = None,
    amp: str = "auto",
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The diagnostic report of `checkpoint` on the first `max_images` images of `split`.

    `dataset` / `data_root` override the data set the checkpoint was trained on. kNN top-1
    (k = 20, T = 0.07) is a fraction in [0, 1] (`weighted_knn_top1` returns one): the train
    split's backbone features (at most `knn_bank_size`) are the bank and the evaluated images the
    queries; for split="train" the bank is the train images after the evaluated ones, and kNN
    is None when none are left. The training-log rules read the step events the checkpoint
    records (written by models/train.py); `recent_steps` stands in for a file that records none
    (the backend passes the run's stored steps up to the checkpoint's).
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
    metrics = _measure(cfg, feats, loaded.recent_steps or recent_steps)
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


def _measure(
    config: TrainConfig, feats: Features, recent_steps: Sequence[Mapping[str, Any]] | None
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
        recent_steps,
        feats.labels,
        config.method,
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
