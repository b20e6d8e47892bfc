"""Prototype usage measured on the model's predictions (never on the balanced Sinkhorn codes)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def usage_counts(logits: Tensor) -> Tensor:
    """n_k = #{i: argmax_k logits[i] = k}, shape (K,), int64."""
    return torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1])


def entropy(p: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy in nats; 0 · ln 0 counts as 0."""
    return -(p * torch.log(p.clamp_min(1e-30))).sum(dim=dim)


def usage_summary(logits: Tensor, temperature: float) -> dict[str, float | list[int]]:
    """What a training step reports about how the batch spreads over the prototypes.

    logits: (B, K) scores against the prototypes; predictions are softmax(logits / temperature).
    """
    logits = logits.detach().float()
    k = logits.shape[1]
    counts = usage_counts(logits)
    freq = counts.float() / counts.sum().clamp_min(1)
    h_usage = float(entropy(freq))
    probs = torch.softmax(logits / temperature, dim=1)
    return {
        "usage": counts.tolist(),
        "usage_entropy": h_usage,
        "usage_entropy_norm": h_usage / math.log(k) if k > 1 else 0.0,
        "active_prototypes": int((counts > 0).sum()),
        "assignment_entropy": float(entropy(probs, dim=1).mean()),
    }
