"""Prototype galleries and image neighbours, by cosine similarity with faiss.

A prototype's gallery is the images whose embeddings lie nearest to it in the prototypes'
space (SwAV's projected z, PCL's query embedding); its usage is how many images the model
*predicts* for it (argmax), the same count the diagnostics use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.features import Features, load_inputs

DUPLICATE_COSINE = 0.99  # two prototypes this close are one prototype twice (swav issue #71)


def _unit(x: Tensor | np.ndarray) -> np.ndarray:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return np.ascontiguousarray(F.normalize(t, dim=1).numpy())


def nearest(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours of each query row among the base rows: (similarities, ids).

    Exact search (IndexFlatIP on unit rows): at the sizes this app maps (≤ 10⁵ images), exact
    is fast enough and leaves no recall question.
    """
    q, b = _unit(queries), _unit(base)
    k = min(k, b.shape[0])
    if k < 1 or q.shape[0] == 0:
        return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
    index = faiss.IndexFlatIP(b.shape[1])
    index.add(b)
    sims, ids = index.search(q, k)
    return sims, ids


def duplicate_of(prototypes: Tensor, threshold: float = DUPLICATE_COSINE) -> list[int | None]:
    """For each prototype, the lowest-numbered *other* prototype with cosine > threshold.

    Both members of a pair point at each other: either can be dropped, and a gallery page
    should show the twin whichever one the user opens.
    """
    p = torch.as_tensor(_unit(prototypes))
    sim = p @ p.t()
    sim.fill_diagonal_(-2.0)
    close = sim > threshold
    first = close.float().argmax(dim=1)  # argmax returns the first maximum: the lowest index
    return [int(j) if hit else None for j, hit in zip(first, close.any(dim=1), strict=True)]


def galleries_from(
    embeddings: Tensor,
    prototypes: Tensor,
    logits: Tensor | None,
    indices: Tensor,
    top_k: int = 16,
    phi: Tensor | None = None,
) -> list[dict[str, Any]]:
    """One entry per prototype, sorted by usage (most used first).

    embeddings (N, d) and prototypes (K, d) live in one space; logits (N, K) give the usage
    (argmax counts; nearest prototype by cosine when None); indices (N,) are data set indices.
    """
    k = prototypes.shape[0]
    assign = (
        logits.argmax(dim=1)
        if logits is not None
        else torch.as_tensor(nearest(embeddings.numpy(), prototypes.numpy(), 1)[1][:, 0])
    )
    usage = torch.bincount(assign.long(), minlength=k)
    sims, ids = nearest(prototypes.numpy(), embeddings.numpy(), top_k)
    dups = duplicate_of(prototypes)
    idx = indices.numpy()
    entries: list[dict[str, Any]] = [
        {
            "prototype": j,
            "usage": int(usage[j]),
            "phi": float(phi[j]) if phi is not None else None,
            "empty": bool(usage[j] == 0),
            "duplicate_of": dups[j],
            "images": [int(idx[i]) for i in ids[j]],
            "similarities": [float(s) for s in sims[j]],
        }
        for j in range(k)
    ]
    entries.sort(key=lambda e: (-e["usage"], e["prototype"]))
    return entries


def feature_space(feats: Features) -> Tensor:
    """The prototypes' space when there is one, else the (normalised) backbone features."""
    return feats.projected if feats.projected is not None else F.normalize(feats.backbone, dim=1)


def prototype_galleries(
    checkpoint: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    top_k: int = 16,
    max_images: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    feature_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Every prototype's top-k images, usage, φ (PCL), empty and duplicate flags.

    Raises ValueError when the model has no prototypes (the supervised baseline, or PCL before
    its first E-step).
    """
    if not 1 <= top_k <= 256:
        raise ValueError(f"top_k must be in [1, 256], got {top_k}")
    inputs = load_inputs(
        checkpoint, dataset, data_root, split, max_images, progress, cache_dir=feature_cache
    )
    feats = inputs.features
    if feats.prototypes is None or inputs.loaded.config.method == "supervised":
        raise ValueError(
            f"this {inputs.loaded.config.method} checkpoint has no prototypes "
            "(PCL gets them at its first E-step, after the warm-up)"
        )
    report = progress or (lambda f, m: None)
    report(0.8, "nearest images of every prototype")
    entries = galleries_from(
        feature_space(feats), feats.prototypes, feats.logits, feats.indices, top_k, feats.phi
    )
    report(1.0, "done")
    return {
        "prototypes": entries,
        "num_prototypes": len(entries),
        "num_images": feats.num_images,
        "dataset": inputs.data.name,
        "data_root": inputs.data.root,
        "split": split,
    }


def neighbours_from(
    embeddings: Tensor,
    prototypes: Tensor | None,
    indices: Tensor,
    index: int,
    k_images: int = 12,
    k_prototypes: int = 5,
) -> dict[str, Any]:
    """Nearest images (itself excluded) and nearest prototypes of the image `index`."""
    where = (indices == index).nonzero().flatten()
    if where.numel() == 0:
        raise IndexError(
            f"image {index} is not among the {indices.numel()} analysed images "
            f"(valid: {int(indices.min())}–{int(indices.max())})"
        )
    row = embeddings[int(where[0])].unsqueeze(0).numpy()
    sims, ids = nearest(row, embeddings.numpy(), k_images + 1)
    idx = indices.numpy()
    images = [
        {"index": int(idx[i]), "similarity": float(s)}
        for s, i in zip(sims[0], ids[0], strict=True)
        if int(idx[i]) != index
    ][:k_images]
    protos: list[dict[str, Any]] = []
    if prototypes is not None:
        ps, pi = nearest(row, prototypes.numpy(), k_prototypes)
        protos = [
            {"prototype": int(i), "similarity": float(s)} for s, i in zip(ps[0], pi[0], strict=True)
        ]
    return {"index": index, "images": images, "prototypes": protos}


def image_neighbours(
    checkpoint: str | Path,
    index: int,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    k_images: int = 12,
    k_prototypes: int = 5,
    max_images: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    feature_cache: str | Path | None = None,
) -> dict[str, Any]:
    """The image `index`'s nearest images and nearest prototypes under `checkpoint`."""
    if not 1 <= k_images <= 256 or not 1 <= k_prototypes <= 256:
        raise ValueError("k_images and k_prototypes must be in [1, 256]")
    if index < 0:
        raise IndexError(f"image index must be ≥ 0, got {index}")
    inputs = load_inputs(
        checkpoint, dataset, data_root, split, max_images, progress, cache_dir=feature_cache
    )
    feats = inputs.features
    protos = feats.prototypes if inputs.loaded.config.method != "supervised" else None
    space = feature_space(feats)
    out = neighbours_from(space, protos, feats.indices, index, k_images, k_prototypes)
    return {**out, "dataset": inputs.data.name, "data_root": inputs.data.root, "split": split}
