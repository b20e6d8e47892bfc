"""PCL (Li et al., ICLR 2021): a MoCo pair with a negatives queue, plus prototypes from k-means.

Each epoch after warm-up, the E-step clusters the key encoder's features of the whole training
set with faiss k-means, once per K, and measures how tight every cluster is (its concentration
φ). The M-step loss is InfoNCE against the queue plus ProtoNCE: each query is contrasted with
its own cluster's centroid against centroids of other clusters, every logit divided by that
centroid's φ, so tight clusters give sharp logits and loose ones soft logits.

Written from the paper and shared/ALGORITHMS.md, checked against salesforce/PCL. Where we differ
from the official code, and why:
- Negative prototypes are drawn without replacement from a tensor (the official
  `random.sample` on a set fails on Python ≥ 3.11); when fewer than r clusters are free, all
  of them are taken instead of raising. Candidates are all K clusters, not `max(id) + 1`.
- φ: when no cluster has two points (the official code would divide 0 by 0) or every distance
  is 0, every φ is τ.
- The official E-step halves feature rows with norm > 1.5: its `all_reduce(SUM)` counts the
  DistributedSampler's padded samples twice. Our trainer gathers shards and cuts them back to
  N, so every row is one unit vector and that step has nothing to correct; we omit it.
- faiss `min_points_per_centroid` is min(10, N // K), so small data sets cluster without
  faiss's "please provide more points" warning; large ones get the official 10.
- The k-means assignment search is redone against the final centroids, so stored
  assignments, distances and centroids always belong together.
- The loss math (both contrasts) runs in float32 even under autocast: logits are cosines
  divided by τ ≈ 0.2 or φ, where bf16's three significant digits would be visible.
- Shuffle-BN is done as MoCo does under torch.distributed. A single process has no ranks to
  shuffle across, so `bn_splits` > 1 stands in for them: queries go through the encoder in
  that many groups in order, keys in as many groups of a random permutation, so that, as on
  MoCo's GPUs, a key's BatchNorm statistics come from other images than its query's.
"""

from models.pcl.estep import (
    MAX_POINTS_PER_CENTROID,
    MIN_POINTS_PER_CENTROID,
    Clustering,
    concentration,
    run_kmeans,
)
from models.pcl.model import PCL, Encoder
from models.pcl.proto_nce import proto_nce_logits, sample_negatives

__all__ = [
    "MAX_POINTS_PER_CENTROID",
    "MIN_POINTS_PER_CENTROID",
    "PCL",
    "Clustering",
    "Encoder",
    "concentration",
    "proto_nce_logits",
    "run_kmeans",
    "sample_negatives",
]
