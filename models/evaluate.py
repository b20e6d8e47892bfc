"""Evaluation against labels: weighted kNN (InstDisc/DINO style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def weighted_knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
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
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (0–1) of the weighted kNN classifier."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    pred = weighted_knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return float((pred.cpu() == query_labels.cpu()).float().mean())
