"""models/timeline: the Procrustes chain, cluster flow, usage over epochs, and a real run's
timeline from its checkpoints (tiny runs trained here, real caches on disk)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from models.checkpoints import CheckpointError
from models.timeline import (
    TimelineCheckpoint,
    births_and_deaths,
    epoch_flow,
    flow_links,
    procrustes_chain,
    relabel_chain,
    run_timeline,
    usage_matrix,
)
from models.train import Trainer
from tests.support import tiny_run_config

IMAGES = 120  # images per map: enough for UMAP's neighbour graph, cheap on 2 cores


# --- pure pieces --------------------------------------------------------------------------------
def _turned(xy: np.ndarray, angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return scale * xy @ np.array([[c, -s], [s, c]]) + np.asarray(shift)


def test_procrustes_chain_undoes_turns_mirrors_and_scales() -> None:
    rng = np.random.default_rng(0)
    first = rng.normal(size=(200, 2))
    turned = _turned(first, 1.1, 3.0, (5.0, -2.0))
    mirrored = _turned(first * np.array([-1.0, 1.0]), -0.4, 0.2, (0.0, 9.0))
    redrawn = rng.normal(size=(200, 2))
    aligned, disparity = procrustes_chain([first, turned, mirrored, redrawn])
    assert np.array_equal(aligned[0], first)  # the chain stays in the first map's frame
    np.testing.assert_allclose(aligned[1], first, atol=1e-9)
    np.testing.assert_allclose(aligned[2], first, atol=1e-9)
    assert disparity[:3] == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
    assert disparity[3] > 0.9  # an unrelated map cannot be turned into the last one


def test_procrustes_chain_refuses_maps_of_other_images() -> None:
    with pytest.raises(ValueError, match="share one"):
        procrustes_chain([np.zeros((5, 2)), np.zeros((6, 2))])
    assert procrustes_chain([]) == ([], [])


def test_flow_finds_a_split_and_a_merge() -> None:
    # 100 images: cluster 0 (40) splits into 5 and 6; clusters 1 (40) and 2 (20) merge into 7.
    a = np.array([0] * 40 + [1] * 40 + [2] * 20)
    b = np.array([5] * 20 + [6] * 20 + [7] * 60)
    flow = epoch_flow(a, b)
    assert sorted(map(tuple, flow["links"])) == [(0, 5, 20), (0, 6, 20), (1, 7, 40), (2, 7, 20)]
    assert flow["splits"] == [{"cluster": 0, "into": [[5, 20], [6, 20]]}]
    assert flow["merges"] == [{"cluster": 7, "from": [[1, 40], [2, 20]]}]
    # Matched one-to-one: 0→5 or 0→6 (20) and 1→7 (40) survive; cluster 2 has no partner left.
    assert flow["agreement"] == pytest.approx(0.6)
    assert flow["dropped"] == 0


def test_flow_drops_hairlines_and_counts_them() -> None:
    a = np.array([0] * 99 + [1])
    b = np.array([0] * 99 + [0])
    links, dropped = flow_links(a, b, min_images=2)
    assert links == [(0, 0, 99)] and dropped == 1
    stable = epoch_flow(a, a)
    assert stable["splits"] == [] and stable["merges"] == [] and stable["agreement"] == 1.0


def test_relabel_chain_keeps_a_cluster_its_id() -> None:
    e0 = np.array([0, 0, 1, 1, 2, 2, -1])
    e1 = np.array([7, 7, 3, 3, 9, 9, 9])  # the same clusters under new names, one image moved
    e2 = np.array([3, 3, 3, 3, 4, 4, 8])  # 0 and 1 merged; a new cluster (8) appears
    r0, r1, r2 = relabel_chain([e0, e1, e2])
    assert np.array_equal(r0, e0)
    assert np.array_equal(r1, [0, 0, 1, 1, 2, 2, 2])
    assert r2[4] == r2[5] == 2  # cluster 4 is where 9 (= 2) went
    assert {int(r2[0]), int(r2[6])} & {0, 1}  # the merged one keeps one of its old ids
    assert int(r2[6]) >= 3 or int(r2[6]) in (0, 1)  # a new cluster never takes 2's id
    assert relabel_chain([]) == []


def test_usage_births_and_deaths() -> None:
    clusters = [np.array([0, 0, 1, -1]), np.array([0, 2, 2, 2]), np.array([1, 1, 2, 2])]
    usage = usage_matrix(clusters, 3)
    assert usage.tolist() == [[2, 1, 0], [1, 0, 3], [0, 2, 2]]
    born, died = births_and_deaths(usage)
    assert born == [(2, 1), (1, 2)]
    assert died == [(1, 1), (0, 2)]


# --- a real run ---------------------------------------------------------------------------------
def _run(root: Path, method: str) -> list[TimelineCheckpoint]:
    cfg = tiny_run_config(method, epochs=3, knn_every_steps=None, checkpoint_every_minutes=None)
    Trainer(cfg, root, progress=False).run()
    files = sorted((root / "checkpoints").glob("epoch_*.pt"))
    assert len(files) == 3
    return [TimelineCheckpoint(p, i + 1, float(i + 1), 8 * (i + 1)) for i, p in enumerate(files)]


@pytest.fixture(scope="module")
def swav_run(tmp_path_factory: pytest.TempPathFactory) -> list[TimelineCheckpoint]:
    return _run(tmp_path_factory.mktemp("timeline-swav"), "swav")


def _timeline(cks: list[TimelineCheckpoint], cache: Path, **kw: object) -> dict:
    return run_timeline(
        cks,
        cache / "timeline",
        cache / "umap",
        max_images=IMAGES,
        feature_cache=cache / "features",
        **kw,  # type: ignore[arg-type]
    )


def test_a_run_timeline_is_aligned_complete_and_cached(
    swav_run: list[TimelineCheckpoint], tmp_path: Path
) -> None:
    heard: list[tuple[float, str]] = []
    knn = {8: 0.25, 16: 0.5}  # step → kNN; the third checkpoint (step 24) reads step 16's
    out = _timeline(swav_run, tmp_path, knn_by_step=knn, progress=lambda f, m: heard.append((f, m)))
    assert out["method"] == "swav" and out["num_epochs"] == 3 and out["num_points"] == IMAGES
    assert out["index"] == list(range(IMAGES)) and len(out["label"]) == IMAGES
    assert out["cached_checkpoints"] == 0
    epochs = out["epochs"]
    assert [e["checkpoint_id"] for e in epochs] == [1, 2, 3]
    assert [e["knn_top1"] for e in epochs] == [0.25, 0.5, 0.5]
    assert [e["knn_step"] for e in epochs] == [8, 16, 16]
    k = out["num_prototypes"]
    assert k == 10  # every prototype has an id, used or not
    for e in epochs:
        assert len(e["x"]) == len(e["y"]) == len(e["cluster"]) == IMAGES
        assert sum(e["usage"]) == IMAGES and len(e["usage"]) == k
        assert e["active_prototypes"] == sum(1 for n in e["usage"] if n)
        assert e["verdict"] and e["reason"] and 0.0 <= e["disparity"] <= 1.0
    assert epochs[0]["disparity"] == 0.0
    assert [(f["source"], f["target"]) for f in out["flows"]] == [(0, 1), (1, 2)]
    for f, (e0, e1) in zip(out["flows"], pairwise(epochs), strict=True):
        # Every image flows somewhere: kept links and dropped hairlines add up to all of them.
        assert sum(n for *_, n in f["links"]) + f["dropped"] == IMAGES
        for a, b, n in f["links"]:
            assert n == sum(
                1 for ca, cb in zip(e0["cluster"], e1["cluster"], strict=True) if (ca, cb) == (a, b)
            )
    galleries = out["galleries"]
    assert set(galleries) == {str(i) for i in range(k)}
    assert all(len(per_epoch) == 3 for per_epoch in galleries.values())
    assert all(len(g) == 8 and set(g) <= set(range(IMAGES)) for g in galleries["0"])
    fractions = [f for f, _ in heard]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("checkpoint 3 of 3" in m for _, m in heard)

    again = _timeline(swav_run, tmp_path, knn_by_step=knn)
    assert again["cached_checkpoints"] == 3  # every frame read from its file
    assert [e["x"] for e in again["epochs"]] == [e["x"] for e in epochs]
    assert len(list((tmp_path / "timeline").glob("frame-*.npz"))) == 3
    # The maps are Explore's: one per checkpoint in the shared UMAP cache.
    assert len(list((tmp_path / "umap").glob("points-*.npz"))) == 3


def test_bad_requests_say_what_to_fix(swav_run: list[TimelineCheckpoint], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no checkpoints"):
        _timeline([], tmp_path)
    with pytest.raises(ValueError, match="top_k"):
        _timeline(swav_run, tmp_path, top_k=0)
    with pytest.raises(CheckpointError):
        _timeline([TimelineCheckpoint(tmp_path / "missing.pt")], tmp_path)


def test_a_pcl_timeline_renames_clusters_and_has_phi_against_size(tmp_path: Path) -> None:
    cks = _run(tmp_path / "run", "pcl")  # warm-up 1 epoch: E-steps behind epochs 2 and 3
    out = _timeline(cks, tmp_path / "cache")
    assert out["method"] == "pcl" and out["cluster_ids"] == "relabelled along the chain"
    first, *later = out["epochs"]
    assert first["pcl"] is None and set(first["cluster"]) == {-1}  # no prototypes yet
    for e in later:
        assert [c["num_clusters"] for c in e["pcl"]] == [8, 12]
        for c in e["pcl"]:
            assert len(c["phi"]) == len(c["cluster_sizes"]) == c["num_clusters"]
            assert sum(c["cluster_sizes"]) == IMAGES
    # Renamed along the chain: ids count the clusters ever used, each from 0.
    k = out["num_prototypes"]
    assert all(0 <= c < k for e in later for c in e["cluster"])
    assert [sum(e["usage"]) for e in out["epochs"]] == [0, IMAGES, IMAGES]
    # Every cluster used at epoch 2 is born there: the first E-step created it.
    assert sorted(kk for kk, t in out["born"] if t == 1) == sorted(set(later[0]["cluster"]))
