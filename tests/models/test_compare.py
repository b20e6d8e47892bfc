"""Checkpoint comparison: matching, alignment and deltas with known answers, then real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.checkpoints import CheckpointError
from models.compare import (
    compare_checkpoints,
    compare_clusterings,
    gained_lost,
    kmeans_assignments,
    match_clusters,
    metric_deltas,
    procrustes_align,
)
from models.train import Trainer
from tests.support import tiny_run_config

MAX_IMAGES = 200


# --- known answers ---------------------------------------------------------------------------
def test_permuted_clustering_agrees_fully_after_matching() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 7, size=500)
    perm = rng.permutation(7) + 100  # other ids, other order
    pairs, agreement = match_clusters(a, perm[a])
    assert agreement == 1.0
    assert {(ca, cb) for ca, cb, _ in pairs} == {(k, int(perm[k])) for k in range(7)}
    summary = compare_clusterings(a, perm[a])
    assert summary["nmi"] == pytest.approx(1.0) and summary["ari"] == pytest.approx(1.0)
    assert summary["gained"] == [] and summary["lost"] == []


def test_matching_with_unequal_k_counts_disagreement() -> None:
    a = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    b = np.array([5, 5, 6, 6, 6, 6, 6, 6])  # B merged A's 1 and 2, split A's 0
    pairs, agreement = match_clusters(a, b)
    assert agreement == pytest.approx((2 + 3) / 8)  # 1→6 (3 shared), 0→5 (2 shared)
    assert pairs == [(1, 6, 3), (0, 5, 2)]
    gained, lost = gained_lost(a, b, pairs)
    assert [(g["cluster_a"], g["change"]) for g in gained] == [(1, 3)]  # 3 in A, partner 6
    assert [(c["cluster_a"], c["cluster_b"], c["change"]) for c in lost] == [
        (2, -1, -2),  # no partner: lost everything
        (0, 5, -1),
    ]
    with pytest.raises(ValueError, match="differ in length"):
        match_clusters(a, b[:-1])


def test_procrustes_undoes_rotation_reflection_scale_and_shift() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 2))
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    mirror = np.array([[1.0, 0.0], [0.0, -1.0]])
    b = 3.0 * a @ rot @ mirror + np.array([10.0, -4.0])
    aligned, disparity = procrustes_align(a, b)
    assert disparity < 1e-10 and np.allclose(aligned, a, atol=1e-6)
    _, noisy = procrustes_align(a, rng.normal(size=(200, 2)))
    assert noisy > 0.5  # unrelated maps do not align
    assert procrustes_align(np.zeros((5, 2)), np.zeros((5, 2)))[1] == 0.0


def test_metric_deltas_take_shared_numeric_scalars_only() -> None:
    ra = {"nmi": 0.5, "active": 10, "verdict": "healthy", "ok": True, "usage": [1, 2], "x": None}
    rb = {"nmi": 0.75, "active": 7, "verdict": "partial collapse", "ok": False, "only_b": 1.0}
    assert metric_deltas(ra, rb) == {
        "active": {"a": 10.0, "b": 7.0, "delta": -3.0},
        "nmi": {"a": 0.5, "b": 0.75, "delta": 0.25},
    }


def test_kmeans_recovers_separated_groups() -> None:
    rng = np.random.default_rng(2)
    centres = np.eye(4, 16) * 10.0
    truth = np.repeat(np.arange(4), 50)
    x = centres[truth] + rng.normal(scale=0.1, size=(200, 16))
    assert match_clusters(kmeans_assignments(x, 4), truth)[1] == 1.0
    assert kmeans_assignments(x[:3], 4).tolist() == [0, 0, 0]  # too few points to split


# --- real checkpoints --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def supervised_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("supervised")
    Trainer(tiny_run_config("supervised", epochs=1), root).run()
    return root / "checkpoints" / "last.pt"


def _compare(a: Path, b: Path, cache: Path) -> dict[str, Any]:
    return compare_checkpoints(a, b, max_images=MAX_IMAGES, cache_dir=cache)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$PROTOSCOPE_CACHE for this module: maps land in its umap/ folder."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def self_comparison(swav_checkpoint: Path, cache_root: Path) -> dict[str, Any]:
    return _compare(swav_checkpoint, swav_checkpoint, cache_root / "umap")


def test_checkpoint_compared_with_itself(self_comparison: dict[str, Any]) -> None:
    out = self_comparison
    assert out["agreement"] == 1.0 and out["nmi"] == pytest.approx(1.0)
    assert out["ari"] == pytest.approx(1.0)
    assert out["disparity"] == pytest.approx(0.0, abs=1e-9)
    assert out["gained"] == [] and out["lost"] == [] and out["warnings"] == []
    assert out["metric_deltas"] and all(d["delta"] == 0 for d in out["metric_deltas"].values())
    assert {"knn_top1", "usage_entropy", "effective_rank"} <= out["metric_deltas"].keys()
    assert out["clustering_a"] == out["clustering_b"] == "prototypes"
    indices = [p["index"] for p in out["map_a"]]
    assert indices == [p["index"] for p in out["map_b"]] == list(range(MAX_IMAGES))
    xy_a = np.array([(p["x"], p["y"]) for p in out["map_a"]])
    assert np.allclose(xy_a, [(p["x"], p["y"]) for p in out["map_b"]], atol=1e-6)
    json.dumps(out)


def test_two_runs_differ(swav_checkpoint: Path, swav_checkpoint_b: Path, tmp_path: Path) -> None:
    out = _compare(swav_checkpoint, swav_checkpoint_b, tmp_path)
    assert 0.0 <= out["agreement"] < 1.0 and 0.0 < out["disparity"] <= 1.0
    assert sum(m[2] for m in out["matching"]) == round(out["agreement"] * MAX_IMAGES)
    assert out["num_images"] == MAX_IMAGES and out["verdict_a"] and out["verdict_b"]
    reverse = _compare(swav_checkpoint_b, swav_checkpoint, tmp_path)
    assert reverse["agreement"] == pytest.approx(out["agreement"])  # symmetric, maps cached
    assert reverse["nmi"] == pytest.approx(out["nmi"])


def test_different_numbers_of_prototypes(
    swav_checkpoint: Path, pcl_checkpoint: Path, tmp_path: Path
) -> None:
    out = _compare(swav_checkpoint, pcl_checkpoint, tmp_path)  # K = 10 against K = 8
    assert out["num_clusters_a"] <= 10 and out["num_clusters_b"] <= 8
    assert len(out["matching"]) <= min(out["num_clusters_a"], out["num_clusters_b"])
    assert 0.0 < out["agreement"] <= 1.0


def test_models_without_prototypes_are_compared_by_kmeans(
    supervised_checkpoint: Path, swav_checkpoint: Path, tmp_path: Path
) -> None:
    same = _compare(supervised_checkpoint, supervised_checkpoint, tmp_path)
    assert same["clustering_a"] == same["clustering_b"] == "kmeans"
    assert same["num_clusters_a"] == 10  # the data set's classes
    assert same["agreement"] == 1.0 and same["disparity"] == pytest.approx(0.0, abs=1e-9)
    mixed = _compare(swav_checkpoint, supervised_checkpoint, tmp_path)
    assert (mixed["clustering_a"], mixed["clustering_b"]) == ("prototypes", "kmeans")


def test_missing_checkpoint_raises(swav_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such"):
        _compare(swav_checkpoint, tmp_path / "nope.pt", tmp_path)


# --- the command line --------------------------------------------------------------------------
def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROTOSCOPE_CACHE": str(cache)}  # never the user's cache
    return subprocess.run(
        [sys.executable, "-m", "protoscope", "compare", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_compare_cli_prints_json(
    swav_checkpoint: Path, cache_root: Path, self_comparison: dict[str, Any]
) -> None:
    # The same comparison as `self_comparison`, whose maps are in the cache: the subprocess
    # reads them instead of paying numba's compilation again (the maps are tested above).
    ckpt = str(swav_checkpoint)
    done = _cli(ckpt, ckpt, "--max-images", str(MAX_IMAGES), cache=cache_root)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["agreement"] == 1.0 and out["nmi"] == pytest.approx(1.0)
    assert out["disparity"] == pytest.approx(0.0, abs=1e-9)
    assert out["num_images"] == MAX_IMAGES and "map_a" not in out and "map_b" not in out
    assert out["matching"] == self_comparison["matching"]


def test_compare_cli_errors_are_one_line(swav_checkpoint: Path, tmp_path: Path) -> None:
    missing = _cli(str(tmp_path / "nope.pt"), str(swav_checkpoint), cache=tmp_path)
    assert missing.returncode == 2 and "no such checkpoint" in missing.stderr
    assert "Traceback" not in missing.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    bad = _cli(str(swav_checkpoint), str(junk), cache=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "junk.pt" in bad.stderr
