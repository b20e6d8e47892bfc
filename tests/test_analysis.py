"""Maps, galleries and comparisons: known answers on hand-made vectors, then real checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.compare import compare_checkpoints, gained_lost, match_clusters, procrustes_align
from models.embedding_map import embedding_map, umap_2d
from models.galleries import (
    duplicate_of,
    galleries_from,
    image_neighbours,
    neighbours_from,
    prototype_galleries,
)


# --- matching and alignment ------------------------------------------------------------------
def test_permuted_clustering_agrees_fully_after_matching() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 7, size=500)
    perm = rng.permutation(7) + 100  # other ids, other order
    pairs, agreement = match_clusters(a, perm[a])
    assert agreement == 1.0
    assert {(ca, cb) for ca, cb, _ in pairs} == {(k, int(perm[k])) for k in range(7)}


def test_matching_counts_disagreement_and_unequal_k() -> None:
    a = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    b = np.array([5, 5, 6, 6, 6, 6, 6, 6])  # B merged A's 1 and 2, split A's 0
    pairs, agreement = match_clusters(a, b)
    assert agreement == pytest.approx((2 + 3) / 8)  # 0→5 (2 shared) and 1→6 (3 shared)
    gained, lost = gained_lost(a, b, pairs)
    assert [g["cluster_a"] for g in gained] == [1]  # 3 images in A, its partner holds 6
    assert {c["cluster_a"]: c["change"] for c in lost} == {2: -2, 0: -1}


def test_procrustes_undoes_rotation_scale_and_shift() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 2))
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    b = 3.0 * a @ rot + np.array([10.0, -4.0])
    aligned, disparity = procrustes_align(a, b)
    assert disparity < 1e-10
    assert np.allclose(aligned, a, atol=1e-6)
    _, noisy = procrustes_align(a, rng.normal(size=(200, 2)))
    assert noisy > 0.5  # unrelated maps do not align


# --- galleries -------------------------------------------------------------------------------
def test_galleries_on_known_vectors() -> None:
    protos = torch.eye(4)  # 4 prototypes along the axes of R^4
    protos[3] = protos[0] * 1.0001  # prototype 3 duplicates prototype 0
    emb = torch.tensor(
        [[1.0, 0.1, 0, 0], [0.9, 0, 0.1, 0], [0, 1, 0, 0], [0, 0.95, 0.05, 0], [0, 0.9, 0, 0.1]]
    )
    idx = torch.tensor([10, 11, 12, 13, 14])  # data set indices, not positions
    logits = emb @ torch.nn.functional.normalize(protos, dim=1).t()
    logits[:, 3] = -1  # the duplicate wins no argmax
    phi = torch.tensor([0.1, 0.2, 0.3, 0.4])
    entries = galleries_from(emb, protos, logits, idx, top_k=2, phi=phi)
    by_k = {e["prototype"]: e for e in entries}
    assert [e["prototype"] for e in entries][:2] == [1, 0]  # sorted by usage: 3 images, 2
    assert by_k[1]["usage"] == 3 and by_k[0]["usage"] == 2
    assert by_k[0]["images"] == [10, 11] and by_k[1]["images"][0] == 12
    assert by_k[2]["empty"] and by_k[2]["usage"] == 0 and by_k[2]["phi"] == pytest.approx(0.3)
    assert by_k[3]["duplicate_of"] == 0 and by_k[0]["duplicate_of"] == 3
    assert duplicate_of(torch.eye(3)) == [None, None, None]


def test_neighbours_exclude_the_image_and_use_dataset_indices() -> None:
    emb = torch.tensor([[1.0, 0], [0.99, 0.1], [0, 1], [-1, 0]])
    idx = torch.tensor([7, 3, 9, 4])
    out = neighbours_from(emb, torch.eye(2), idx, index=7, k_images=2, k_prototypes=1)
    assert [n["index"] for n in out["images"]] == [3, 9]
    assert out["prototypes"][0]["prototype"] == 0
    with pytest.raises(IndexError, match="not among"):
        neighbours_from(emb, None, idx, index=5)


# --- real checkpoints --------------------------------------------------------------------------
def test_umap_keeps_indices_and_cache_is_fast_and_equal(
    swav_checkpoint: Path, tmp_path: Path
) -> None:
    kwargs = {"max_images": 150, "max_fit": 100, "cache_dir": tmp_path}
    first = embedding_map(swav_checkpoint, **kwargs)
    assert not first["cached"] and first["num_points"] == 150
    assert [p["index"] for p in first["points"]] == list(range(150))
    assert all(p["cluster"] is not None and 0 <= p["confidence"] <= 1 for p in first["points"])
    assert all(p["label"] is not None for p in first["points"])
    t0 = time.perf_counter()
    second = embedding_map(swav_checkpoint, **kwargs)
    cached_s = time.perf_counter() - t0
    assert second["cached"] and second["points"] == first["points"]
    assert cached_s < 1.0 < first["seconds"] or cached_s < first["seconds"] / 5
    other = embedding_map(swav_checkpoint, **{**kwargs, "seed": 1})
    assert not other["cached"]  # every parameter is part of the key
    json.dumps(first)  # JSON-able as served


def test_umap_2d_small_inputs() -> None:
    assert umap_2d(np.zeros((0, 5))).shape == (0, 2)
    assert umap_2d(np.eye(3, 5)).shape == (3, 2)


def test_galleries_and_neighbours_on_a_real_pcl_checkpoint(pcl_checkpoint: Path) -> None:
    out = prototype_galleries(pcl_checkpoint, top_k=4, max_images=120)
    protos = out["prototypes"]
    assert out["num_images"] == 120 and len(protos) == 8  # the first clustering's K
    assert sum(p["usage"] for p in protos) == 120
    assert all(p["phi"] is not None and len(p["images"]) == 4 for p in protos)
    assert [p["usage"] for p in protos] == sorted((p["usage"] for p in protos), reverse=True)
    nb = image_neighbours(pcl_checkpoint, 5, k_images=3, k_prototypes=2, max_images=120)
    assert len(nb["images"]) == 3 and 5 not in [n["index"] for n in nb["images"]]
    with pytest.raises(IndexError):
        image_neighbours(pcl_checkpoint, 500, max_images=120)


def test_checkpoint_compared_with_itself(swav_checkpoint: Path, tmp_path: Path) -> None:
    out = compare_checkpoints(swav_checkpoint, swav_checkpoint, max_images=120, cache_dir=tmp_path)
    assert out["agreement"] == 1.0 and out["nmi"] == pytest.approx(1.0)
    assert out["disparity"] == pytest.approx(0.0, abs=1e-9)
    assert out["gained"] == [] and out["lost"] == []
    assert all(abs(d["delta"]) < 1e-9 for d in out["metric_deltas"].values())
    assert [p["index"] for p in out["map_b"]] == [p["index"] for p in out["map_a"]]


def test_two_runs_differ(swav_checkpoint: Path, swav_checkpoint_b: Path, tmp_path: Path) -> None:
    out = compare_checkpoints(
        swav_checkpoint, swav_checkpoint_b, max_images=120, cache_dir=tmp_path
    )
    assert 0 <= out["agreement"] < 1 and out["disparity"] > 0
    assert sum(m[2] for m in out["matching"]) == round(out["agreement"] * 120)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "models.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_compare_cli(swav_checkpoint: Path, tmp_path: Path) -> None:
    missing = _cli("compare", str(tmp_path / "nope.pt"), str(swav_checkpoint))
    assert missing.returncode == 2 and "no such checkpoint" in missing.stderr
    assert "Traceback" not in missing.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    bad = _cli("compare", str(junk), str(swav_checkpoint))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.strip()
