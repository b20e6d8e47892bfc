"""ProtoNCE: a query against its cluster's centroid and sampled negative centroids, every logit
divided by that centroid's φ."""

from __future__ import annotations

import torch
from torch import Tensor

from models.config import Positives
from models.pcl.estep import Clustering


def sample_negatives(
    positives: Tensor,
    num_clusters: int,
    num_negatives: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Clusters positive for no sample in the batch, drawn without replacement.

    Args:
        positives: (B,) the cluster of each sample in the batch.
        num_clusters: K.
        num_negatives: r; when fewer clusters are free, all of them are returned.
        generator: a CPU generator, or None for torch's global RNG (which the trainer seeds
            and checkpoints, so a resumed run draws the same negatives).

    Returns:
        (min(r, free),) int64 cluster ids on the device of `positives`, in random order.
    """
    free = torch.ones(num_clusters, dtype=torch.bool, device=positives.device)
    free[positives] = False
    candidates = free.nonzero().squeeze(1)
    take = min(num_negatives, candidates.numel())
    order = torch.randperm(candidates.numel(), generator=generator)[:take]
    return candidates[order.to(candidates.device)]


def proto_nce_logits(
    q: Tensor,
    index: Tensor,
    clustering: Clustering,
    num_negatives: int,
    generator: torch.Generator | None = None,
    positives: Positives = "cluster",
) -> tuple[Tensor, Tensor]:
    """Logits and targets of one clustering's prototype contrast.

    Args:
        q: (B, d) L2-normalised queries.
        index: (B,) the data set indices of the batch (to look up their clusters).
        clustering: the E-step's result for one K.
        num_negatives: r negative centroids (fewer when fewer clusters are free).
        generator: for the negatives; see `sample_negatives`.
        positives: "sample" (the official code): one positive column per sample, its own
            cluster's centroid, so the batch's columns repeat a centroid as often as its cluster
            occurs; "cluster": one column per distinct cluster of the batch.

    Returns:
        logits (B, P + r'): q @ [positives; negatives]ᵀ, column j divided by the φ of its
        centroid, P = B ("sample") or the number of distinct clusters ("cluster"); targets (B,)
        = the column of each sample's own positive.

    With "sample", two samples of one cluster get identical columns and each must beat the
    other's copy of its own centroid — harmless when K ≫ B (ImageNet), but with K ≈ B (small
    data sets) many columns are duplicates and the contrast fights itself. "cluster" removes
    that; with K ≫ B (no cluster twice in a batch) the two forms coincide.
    """
    assignments = clustering.assignments
    own = assignments[index.to(assignments.device)].to(q.device)
    negatives = sample_negatives(own, clustering.num_clusters, num_negatives, generator)
    if positives == "sample":
        columns, targets = own, torch.arange(own.numel(), device=q.device)
    else:
        columns, targets = torch.unique(own, return_inverse=True)
    ids = torch.cat([columns, negatives.to(q.device)])
    centroids = clustering.centroids.to(q.device, q.dtype)[ids]
    phi = clustering.phi.to(q.device, q.dtype)[ids]
    logits = (q @ centroids.t()) / phi  # broadcasting divides column j by φ of centroid j
    return logits, targets
