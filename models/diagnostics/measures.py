"""The measurements of collapse: plain functions over tensors (embeddings z, prototype logits,
prototypes, recent step events) whose answer can be checked on inputs where it is known. Usage
is always measured on the model's *predictions* (argmax of the logits), never on Sinkhorn
codes, which are balanced by construction and would hide every collapse."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.collapse_rules import (
    DUPLICATE_COSINE,
    LN_K_TOLERANCE,
    ln_k_window,
    on_ln_k_line,
)
from models.prototype_usage import entropy

if TYPE_CHECKING:  # the heavy modules are imported where they are used
    pass

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
