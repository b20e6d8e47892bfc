"""Who went where between two epochs: links of a Sankey, splits, merges, stable colours.

Inputs are (N,) cluster ids of the same images at two epochs (row i = one image); -1 means
"no cluster" (a model without prototypes yet) and is a cluster like any other here, so images
that gain a cluster are seen arriving from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.compare import match_clusters
from models.evaluate import paired_contingency

# A part of a cluster counts in a split or merge when it holds at least this share of the
# cluster it left (and MIN_PART_SHARE of all images): a few stray images are drift, not a split.
PART_SHARE = 0.25
MIN_PART_SHARE = 0.01
# Links smaller than this share of all images are dropped from the Sankey (they would be
# hairlines) and summed up instead in `dropped`.
MIN_LINK_SHARE = 0.005

Link = tuple[int, int, int]


def flow_links(a: np.ndarray, b: np.ndarray, min_images: int = 1) -> tuple[list[Link], int]:
    """([(cluster at t, cluster at t + 1, images)], images in dropped links), largest first.

    A link is kept when it carries at least `min_images` images.
    """
    va, vb, table = paired_contingency(a, b)
    if table.size == 0:
        return [], 0
    rows, cols = np.nonzero(table)
    counts = np.asarray(table[rows, cols]).ravel()
    keep = counts >= max(1, min_images)
    links = [
        (int(va[r]), int(vb[c]), int(n))
        for r, c, n in zip(rows[keep], cols[keep], counts[keep], strict=True)
    ]
    links.sort(key=lambda link: (-link[2], link[0], link[1]))
    return links, int(counts[~keep].sum())


def splits_and_merges(
    links: Sequence[Link], sizes_a: dict[int, int], num_images: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(splits, merges) read off the links of one step.

    A split: a cluster at t with ≥ 2 parts, each ≥ PART_SHARE of it, in different clusters at
    t + 1. A merge: a cluster at t + 1 receiving such parts from ≥ 2 clusters at t.
    """
    floor = MIN_PART_SHARE * num_images
    parts = [
        (ca, cb, n) for ca, cb, n in links if n >= PART_SHARE * sizes_a.get(ca, 0) and n >= floor
    ]
    into: dict[int, list[list[int]]] = {}
    came: dict[int, list[list[int]]] = {}
    for ca, cb, n in parts:
        into.setdefault(ca, []).append([cb, n])
        came.setdefault(cb, []).append([ca, n])
    splits = [{"cluster": ca, "into": v} for ca, v in sorted(into.items()) if len(v) >= 2]
    merges = [{"cluster": cb, "from": v} for cb, v in sorted(came.items()) if len(v) >= 2]
    return splits, merges


def epoch_flow(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Links (for the Sankey), splits, merges, and how much of the clustering survived.

    `agreement` is the share of images whose cluster is Hungarian-matched to their next one
    (models/compare.py); `nmi` their normalised mutual information.
    """
    from sklearn.metrics import normalized_mutual_info_score

    a, b = np.asarray(a), np.asarray(b)
    n = int(a.size)
    links, dropped = flow_links(a, b, int(np.ceil(MIN_LINK_SHARE * n)))
    ids, counts = np.unique(a, return_counts=True)
    sizes_a = {int(i): int(c) for i, c in zip(ids, counts, strict=True)}
    splits, merges = splits_and_merges(links, sizes_a, n)
    _, agreement = match_clusters(a, b)
    return {
        "links": [list(link) for link in links],
        "dropped": dropped,
        "splits": splits,
        "merges": merges,
        "agreement": agreement,
        "nmi": float(normalized_mutual_info_score(a, b)) if n else 1.0,
    }


def relabel_chain(clusters: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Cluster ids renamed so a cluster keeps its id (its colour) from epoch to epoch.

    For clusterings whose ids mean nothing across epochs (PCL's k-means, re-run at every
    E-step): epoch t's clusters are Hungarian-matched to epoch t − 1's renamed ones and take
    their ids; an unmatched cluster gets an id never used before. -1 (no cluster) stays -1.
    Epoch 0 keeps its own ids.
    """
    if not clusters:
        return []
    out = [np.asarray(clusters[0], dtype=np.int64).copy()]
    next_id = int(out[0].max(initial=-1)) + 1
    for c in clusters[1:]:
        c = np.asarray(c, dtype=np.int64)
        prev = out[-1]
        pairs, _ = match_clusters(c, prev)
        rename = {cur: old for cur, old, shared in pairs if shared > 0 and cur >= 0 and old >= 0}
        renamed = np.full_like(c, -1)
        for cur in np.unique(c):
            if cur < 0:
                continue
            if int(cur) not in rename:
                rename[int(cur)] = next_id
                next_id += 1
            renamed[c == cur] = rename[int(cur)]
        out.append(renamed)
    return out
