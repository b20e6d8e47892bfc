"""Evaluation against labels: weighted kNN (InstDisc/DINO style) and clustering scores."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.config import KNN_K, KNN_T

# The one kNN of the product: weighted (k = 20, T = 0.07, cosine; InstDisc / DINO), the test
# images against the first `knn_bank_size` train images. The trainer's epoch-end evaluation and
# Diagnose both use it, so the Runs page and Diagnose agree on a checkpoint. Bounded because
# the bank is most of an analysis's cost on a large backbone: 10,000 ResNet-50 features at
# 96 px took over 8 minutes on 2 busy cores. A smaller bank also lowers the figure (on
# `shapes`, 5,000 instead of 10,000 read 2–4 points lower), so only ResNet-50 gets one.
# (k and T live with the run's configuration, models/config.py, whose knn_k / knn_t they default.)
KNN_BANK_IMAGES = 10_000
KNN_BANK_IMAGES_LARGE = 5_000
LARGE_BACKBONES = frozenset({"resnet50"})


def knn_bank_size(backbone: str) -> int:
    """How many train images (the first ones) the kNN bank of a model with `backbone` holds."""
    return KNN_BANK_IMAGES_LARGE if backbone in LARGE_BACKBONES else KNN_BANK_IMAGES


@torch.no_grad()
def weighted_knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    *,
    k: int = KNN_K,
    temperature: float = KNN_T,
    chunk: int = 1024,
) -> Tensor:
    """Labels predicted by a cosine kNN whose votes are weighted by exp(sim / T).

    bank: (N, d) features with labels (N,); queries: (M, d). Returns (M,) predictions.
    A plain chunked matmul + topk: exact, device-agnostic, and fast enough at these sizes.
    """
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, bank.shape[0])
    preds = []
    for start in range(0, queries.shape[0], chunk):
        sim = queries[start : start + chunk] @ bank.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = torch.exp(top_sim / temperature)
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def weighted_knn_top1(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    *,
    k: int = KNN_K,
    temperature: float = KNN_T,
) -> float:
    """Top-1 accuracy (0–1) of the weighted kNN classifier."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    pred = weighted_knn_predict(
        bank, bank_labels, queries, num_classes, k=k, temperature=temperature
    )
    return float((pred.cpu() == query_labels.cpu()).float().mean())


def _as_int_array(values: Tensor | np.ndarray | list[int]) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-d array of ids, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids of a, ids of b, counts): table[i, j] = images with a = ids_a[i] and b = ids_b[j].

    Ids may be any integers (they need not be contiguous); both orders are sorted. Shared by
    the label scores here and the cluster matching of models/compare.py.
    """
    from sklearn.metrics.cluster import contingency_matrix

    return np.unique(a), np.unique(b), contingency_matrix(a, b)


def paired_contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`contingency` of two assignments of the same images (row i of each is one image).

    Raises ValueError when they differ in length; no images give empty ids and a (0, 0) table.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"assignments differ in length: {a.shape} vs {b.shape}")
    if a.size == 0:
        none = np.zeros(0, dtype=np.int64)
        return none, none, np.zeros((0, 0), dtype=np.int64)
    return contingency(a, b)


def hungarian_accuracy(assignments: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose cluster maps to their class under the best one-to-one matching.

    The contingency table (clusters × classes) is rectangular when the counts differ;
    `linear_sum_assignment` then matches min(#clusters, #classes) pairs. With more clusters
    than classes (K = 128 prototypes on 10 classes) only the `#classes` best clusters get a
    class and every image in an unmatched cluster counts as an error, so an over-clustering
    model reads low here however pure its clusters are — `cluster_purity` is the
    many-to-one view of the same table.
    """
    from scipy.optimize import linear_sum_assignment  # lazy: keeps `train` start-up lean

    _, _, table = contingency(assignments, labels)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels))


def cluster_purity(assignments: np.ndarray, labels: np.ndarray) -> float:
    """Share of images in their cluster's majority class (many-to-one; 1.0 when K ≥ N)."""
    _, _, table = contingency(assignments, labels)
    return float(table.max(axis=1).sum() / len(labels))


def clustering_scores(
    assignments: Tensor | np.ndarray | list[int], labels: Tensor | np.ndarray | list[int]
) -> dict[str, float]:
    """Agreement of a clustering with class labels: NMI, AMI, ARI, cluster accuracy, purity.

    assignments: (N,) cluster ids (e.g. argmax of the prototype logits); labels: (N,) classes.
    Ids need not be contiguous. `cluster_accuracy` uses a one-to-one Hungarian matching, so
    with more clusters than classes the surplus clusters' images count as errors (see
    `hungarian_accuracy`); `cluster_purity` maps each cluster to its majority class instead.
    All values lie in [0, 1] except ARI and AMI, which are ≈ 0 for chance and can go negative.
    """
    # Imported here: scikit-learn adds a second to every `protoscope train` start otherwise.
    from sklearn.metrics import (
        adjusted_mutual_info_score,
        adjusted_rand_score,
        normalized_mutual_info_score,
    )

    pred = _as_int_array(assignments)
    true = _as_int_array(labels)
    if pred.shape != true.shape:
        raise ValueError(f"assignments {pred.shape} and labels {true.shape} differ in length")
    if pred.size == 0:
        raise ValueError("clustering_scores needs at least one image")
    return {
        "nmi": float(normalized_mutual_info_score(true, pred)),
        "ami": float(adjusted_mutual_info_score(true, pred)),
        "ari": float(adjusted_rand_score(true, pred)),
        "cluster_accuracy": hungarian_accuracy(pred, true),
        "cluster_purity": cluster_purity(pred, true),
    }
