"""2-D maps: the pure pieces on inputs with known answers, then the cached entry point."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.checkpoints import CheckpointError, load_model
from models.disk_cache import load_arrays
from models.embedding_map import (
    cache_key,
    embedding_map,
    pca_reduce,
    point_metadata,
    umap_2d,
)
from models.train import Trainer
from tests.support import tiny_run_config

MAX_IMAGES = 200
MAX_FIT = 150  # below MAX_IMAGES, so the last points are placed by `transform`


# --- pure pieces -----------------------------------------------------------------------------
def test_pca_reduce_caps_dimensions_and_keeps_narrow_inputs() -> None:
    x = np.random.default_rng(0).normal(size=(80, 64))
    assert pca_reduce(x, max_dims=50).shape == (80, 50)
    assert pca_reduce(x[:10]).shape == (10, 10)  # no more components than points
    narrow = x[:, :5]
    assert np.array_equal(pca_reduce(narrow), narrow.astype(np.float32))


def test_point_metadata_on_known_logits() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    cluster, conf, phi = point_metadata(logits, torch.tensor([0.1, 0.2, 0.3]), temperature=0.5)
    assert cluster.tolist() == [0, 2]
    expected = torch.softmax(logits / 0.5, dim=1).max(dim=1).values.numpy()
    assert np.allclose(conf, expected)
    assert np.allclose(phi, [0.1, 0.3])
    _, _, no_phi = point_metadata(logits, None, temperature=1.0)
    assert np.isnan(no_phi).all()


def test_umap_2d_degenerate_inputs_do_not_call_umap() -> None:
    assert umap_2d(np.zeros((0, 5))).shape == (0, 2)
    assert umap_2d(np.eye(3, 5)).shape == (3, 2)  # too few points: principal components
    # A fully collapsed embedding is one point, not a random scatter.
    assert np.array_equal(umap_2d(np.ones((50, 8))), np.zeros((50, 2)))
    with pytest.raises(ValueError, match="NaN"):
        umap_2d(np.full((10, 4), np.nan))
    with pytest.raises(ValueError, match="max_fit"):
        umap_2d(np.zeros((10, 4)), max_fit=1)


def _blobs(n_per: int = 80, dims: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10.0, size=(3, dims))
    labels = np.repeat(np.arange(3), n_per)
    return centres[labels] + rng.normal(size=(labels.size, dims)), labels


def test_umap_2d_separates_blobs_places_the_rest_and_is_thread_safe() -> None:
    x, labels = _blobs()
    xy = umap_2d(x, max_fit=120, n_neighbors=10, seed=0)
    assert xy.shape == (240, 2) and np.isfinite(xy).all()
    # Every point's nearest other point on the map is from its own blob, including the 120
    # points that were not fitted but placed by `transform`.
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(axis=1)] == labels).mean() > 0.97
    # Seeded, and two threads at once (serialised by the lock) give the same map.
    results: list[np.ndarray] = []

    def run() -> None:
        results.append(umap_2d(x, max_fit=120, n_neighbors=10, seed=0))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and all(np.allclose(r, xy) for r in results)


def test_cache_key_covers_every_parameter() -> None:
    base: dict[str, Any] = {"dataset": None, "split": "test", "max_images": 200, "seed": 0}
    key = cache_key("abc", **base)
    assert key == cache_key("abc", **dict(reversed(list(base.items()))))  # order-free
    assert key != cache_key("abd", **base)
    for name, other in (("dataset", "digits"), ("split", "train"), ("max_images", 100)):
        assert key != cache_key("abc", **{**base, name: other})
    assert key != cache_key("abc", **{**base, "seed": 1})


# --- the entry point on real checkpoints -------------------------------------------------------
@pytest.fixture(scope="module")
def swav_maps(swav_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One cold and one cached map of the tiny SwAV run, with the progress reports and times."""
    cache = tmp_path_factory.mktemp("umap-cache")
    calls: list[tuple[float, str]] = []
    kwargs = {"max_images": MAX_IMAGES, "max_fit": MAX_FIT, "cache_dir": cache}
    first = embedding_map(swav_checkpoint, progress=lambda f, m: calls.append((f, m)), **kwargs)
    t0 = time.perf_counter()
    second = embedding_map(swav_checkpoint, **kwargs)
    cached_s = time.perf_counter() - t0
    return {
        "first": first,
        "second": second,
        "cached_s": cached_s,
        "calls": calls,
        "cache": cache,
        "kwargs": kwargs,
    }


def test_every_point_keeps_its_dataset_index_and_metadata(swav_maps: dict[str, Any]) -> None:
    first = swav_maps["first"]
    assert first["num_points"] == MAX_IMAGES and first["dataset"] == "shapes"
    assert [p["index"] for p in first["points"]] == list(range(MAX_IMAGES))
    assert first["classes"] is not None and len(first["classes"]) == 10
    for p in first["points"]:
        assert p["label"] in range(10) and p["cluster"] in range(10)
        assert 0.0 < p["confidence"] <= 1.0 and p["phi"] is None  # φ is PCL's
        assert np.isfinite([p["x"], p["y"]]).all()
    assert first["params"]["max_fit"] == MAX_FIT and first["params"]["split"] == "test"
    json.loads(json.dumps(first))  # served as JSON as it is


def test_second_call_is_cached_identical_and_much_faster(swav_maps: dict[str, Any]) -> None:
    first, second = swav_maps["first"], swav_maps["second"]
    assert not first["cached"] and second["cached"]
    assert second["points"] == first["points"]
    assert swav_maps["cached_s"] < first["seconds"] / 5 and swav_maps["cached_s"] < 2.0


def test_cache_is_plain_npz_and_a_damaged_entry_is_recomputed(
    swav_checkpoint: Path, swav_maps: dict[str, Any]
) -> None:
    # One entry by request and one by the images it maps (which Compare shares).
    (request,) = swav_maps["cache"].glob("map-*.npz")
    (canonical,) = swav_maps["cache"].glob("points-*.npz")
    for f in (request, canonical):
        arrays = load_arrays(f)  # allow_pickle=False inside
        assert arrays is not None and arrays["xy"].shape == (MAX_IMAGES, 2)
    request.write_bytes(b"not an npz file")
    again = embedding_map(swav_checkpoint, **swav_maps["kwargs"])
    assert again["cached"]  # from the map of these images, not recomputed
    request.write_bytes(b"not an npz file")
    canonical.write_bytes(b"not an npz file either")
    again = embedding_map(swav_checkpoint, **swav_maps["kwargs"])
    assert not again["cached"]
    assert again["points"] == swav_maps["first"]["points"]  # seeded: the same map


def test_cache_follows_content_and_parameters(
    swav_checkpoint: Path, swav_maps: dict[str, Any], tmp_path: Path
) -> None:
    kwargs = swav_maps["kwargs"]
    copy = tmp_path / "same-bytes.pt"
    shutil.copyfile(swav_checkpoint, copy)
    assert embedding_map(copy, **kwargs)["cached"]  # keyed by content, not by path
    changed = embedding_map(swav_checkpoint, **{**kwargs, "n_neighbors": 5})
    assert not changed["cached"]
    assert changed["points"] != swav_maps["first"]["points"]


def test_progress_is_reported_from_0_to_1(swav_maps: dict[str, Any]) -> None:
    fractions = [f for f, _ in swav_maps["calls"]]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and all(isinstance(m, str) for _, m in swav_maps["calls"])


def test_pcl_points_carry_the_phi_of_their_cluster(pcl_checkpoint: Path, tmp_path: Path) -> None:
    out = embedding_map(pcl_checkpoint, max_images=MAX_IMAGES, cache_dir=tmp_path)
    phi = load_model(pcl_checkpoint).model.prototype_phi()
    assert phi is not None
    for p in out["points"]:
        assert p["cluster"] in range(phi.shape[0])
        assert p["phi"] == pytest.approx(float(phi[p["cluster"]]), rel=1e-6)


def test_supervised_points_carry_the_predicted_class(tmp_path: Path) -> None:
    Trainer(tiny_run_config("supervised", epochs=1), tmp_path / "run").run()
    out = embedding_map(
        tmp_path / "run" / "checkpoints" / "last.pt", max_images=60, cache_dir=tmp_path
    )
    for p in out["points"]:  # the classifier's class at temperature 1, no φ
        assert p["cluster"] in range(10) and 0.0 < p["confidence"] <= 1.0 and p["phi"] is None


def test_bad_arguments_fail_clearly(swav_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        embedding_map(tmp_path / "missing.pt", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="n_neighbors"):
        embedding_map(swav_checkpoint, n_neighbors=1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="max_images"):
        embedding_map(swav_checkpoint, max_images=0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        embedding_map(swav_checkpoint, split="val", max_images=10, cache_dir=tmp_path)
