"""Prototype galleries and image neighbours: hand-made vectors first, then real checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.checkpoints import load_model
from models.data import load_dataset
from models.features import extract_features
from models.galleries import (
    duplicate_of,
    galleries_from,
    image_neighbours,
    nearest,
    neighbours_from,
    prototype_galleries,
)
from models.train import Trainer
from tests.support import tiny_run_config

MAX_IMAGES = 200


# --- hand-made vectors -----------------------------------------------------------------------
def test_nearest_is_exact_cosine_and_clips_k() -> None:
    base = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # lengths must not matter
    sims, ids = nearest(np.array([[1.0, 0.1]]), base, k=5)
    assert ids[0].tolist() == [0, 2, 1]  # only 3 rows to return
    expected = (
        F.normalize(torch.tensor([[1.0, 0.1]]), dim=1)
        @ F.normalize(torch.tensor(base, dtype=torch.float32), dim=1).t()
    )
    assert np.allclose(sims[0], np.sort(expected.numpy()[0])[::-1], atol=1e-6)


def _toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 prototypes along the axes of R^4 (3 duplicates 0) and 5 images near 0 and 1."""
    protos = torch.eye(4)
    protos[3] = torch.tensor([1.0, 0.01, 0.0, 0.0])  # cosine 0.99995 with prototype 0
    emb = torch.tensor(
        [
            [1.0, 0.1, 0.0, 0.0],  # near 0 (and 3)
            [0.9, 0.0, 0.3, 0.0],  # near 0, less so
            [0.0, 1.0, 0.0, 0.0],  # exactly 1
            [0.0, 0.95, 0.05, 0.0],
            [0.0, 0.9, 0.0, 0.2],
        ]
    )
    logits = emb @ F.normalize(protos, dim=1).t()
    logits[:, 3] = -1.0  # the duplicate wins no argmax: it is empty
    return protos, emb, logits, torch.tensor([10, 11, 12, 13, 14])  # data set indices


def test_galleries_on_known_vectors() -> None:
    protos, emb, logits, idx = _toy()
    phi = torch.tensor([0.1, 0.2, 0.3, 0.4])
    entries = galleries_from(emb, protos, logits, idx, top_k=2, phi=phi)
    assert [e["prototype"] for e in entries] == [1, 0, 2, 3]  # usage 3, 2, 0, 0
    by_k = {e["prototype"]: e for e in entries}
    assert by_k[1]["usage"] == 3 and by_k[0]["usage"] == 2
    assert by_k[0]["images"] == [10, 11]  # data set indices, nearest first
    assert by_k[1]["images"] == [12, 13] and by_k[1]["similarities"][0] == pytest.approx(1.0)
    assert by_k[2]["images"][0] == 11  # the only image with a component along axis 2
    assert by_k[3]["images"] == [10, 11]  # the duplicate sees what prototype 0 sees
    assert all(e["similarities"] == sorted(e["similarities"], reverse=True) for e in entries)
    assert by_k[2]["phi"] == pytest.approx(0.3)
    json.dumps(entries)


def test_empty_and_duplicate_flags() -> None:
    protos, emb, logits, idx = _toy()
    by_k = {e["prototype"]: e for e in galleries_from(emb, protos, logits, idx, top_k=1)}
    assert [by_k[k]["empty"] for k in range(4)] == [False, False, True, True]
    assert by_k[3]["duplicate_of"] == 0 and by_k[0]["duplicate_of"] == 3
    assert by_k[1]["duplicate_of"] is None and by_k[2]["duplicate_of"] is None
    assert by_k[0]["phi"] is None  # no φ given: not PCL


def test_duplicate_of_threshold_and_lowest_partner() -> None:
    assert duplicate_of(torch.eye(3)) == [None, None, None]
    near = torch.tensor([[1.0, 0.0], [0.98, 0.199]])  # cosine 0.98: close, not a duplicate
    assert duplicate_of(near) == [None, None]
    triple = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.001], [1.0, -0.001]])
    assert duplicate_of(triple) == [2, None, 0, 0]  # the lowest-numbered twin


def test_usage_without_logits_is_the_nearest_prototype() -> None:
    protos, emb, _, idx = _toy()
    by_k = {e["prototype"]: e for e in galleries_from(emb, protos[:3], None, idx, top_k=1)}
    assert [by_k[k]["usage"] for k in range(3)] == [2, 3, 0]


def test_neighbours_exclude_the_image_and_use_dataset_indices() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    idx = torch.tensor([7, 3, 9, 4])
    out = neighbours_from(emb, torch.eye(2), idx, index=7, k_images=2, k_prototypes=2)
    assert [n["index"] for n in out["images"]] == [3, 9]
    assert out["images"][0]["similarity"] > out["images"][1]["similarity"]
    assert [p["prototype"] for p in out["prototypes"]] == [0, 1]
    assert out["prototypes"][0]["similarity"] == pytest.approx(1.0)
    with pytest.raises(IndexError, match="not among the 4 analysed images"):
        neighbours_from(emb, None, idx, index=5)


# --- real checkpoints --------------------------------------------------------------------------
def test_pcl_galleries_usage_phi_and_neighbours(pcl_checkpoint: Path) -> None:
    out = prototype_galleries(pcl_checkpoint, top_k=4, max_images=MAX_IMAGES)
    protos = out["prototypes"]
    assert out["num_images"] == MAX_IMAGES and len(protos) == 8  # the first clustering's K
    assert sum(p["usage"] for p in protos) == MAX_IMAGES
    assert [p["usage"] for p in protos] == sorted((p["usage"] for p in protos), reverse=True)
    phi = load_model(pcl_checkpoint).model.prototype_phi()
    for p in protos:
        assert p["phi"] == pytest.approx(float(phi[p["prototype"]]), rel=1e-6)
        assert len(p["images"]) == 4 and all(0 <= i < MAX_IMAGES for i in p["images"])
        assert p["empty"] == (p["usage"] == 0)
    nb = image_neighbours(pcl_checkpoint, 5, k_images=3, k_prototypes=2, max_images=MAX_IMAGES)
    assert len(nb["images"]) == 3 and 5 not in [n["index"] for n in nb["images"]]
    assert len(nb["prototypes"]) == 2
    with pytest.raises(IndexError, match=f"not among the {MAX_IMAGES}"):
        image_neighbours(pcl_checkpoint, 500, max_images=MAX_IMAGES)
    with pytest.raises(IndexError, match="≥ 0"):
        image_neighbours(pcl_checkpoint, -1, max_images=MAX_IMAGES)


def test_swav_gallery_matches_a_brute_force_search(swav_checkpoint: Path) -> None:
    out = prototype_galleries(swav_checkpoint, top_k=3, max_images=MAX_IMAGES)
    loaded = load_model(swav_checkpoint)
    images = load_dataset(loaded.config.data, "test")
    feats = extract_features(loaded.model, images, "shapes", max_images=MAX_IMAGES)
    assert feats.projected is not None and feats.prototypes is not None
    sims = F.normalize(feats.prototypes, dim=1) @ F.normalize(feats.projected, dim=1).t()
    usage = torch.bincount(feats.logits.argmax(dim=1), minlength=sims.shape[0])
    assert len(out["prototypes"]) == 10
    for p in out["prototypes"]:
        k = p["prototype"]
        assert p["images"] == sims[k].topk(3).indices.tolist()
        assert p["usage"] == int(usage[k]) and p["phi"] is None


def test_supervised_checkpoint_has_no_galleries(tmp_path: Path) -> None:
    Trainer(tiny_run_config("supervised", epochs=1), tmp_path).run()
    with pytest.raises(ValueError, match="no prototypes"):
        prototype_galleries(tmp_path / "checkpoints" / "last.pt", max_images=50)
    # Neighbours still work: in the backbone space, without prototypes.
    nb = image_neighbours(tmp_path / "checkpoints" / "last.pt", 0, k_images=2, max_images=50)
    assert len(nb["images"]) == 2 and nb["prototypes"] == []
