"""One feature computation per (checkpoint, images): the on-disk cache every analysis shares."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import models.data
import models.features
from models.diagnostics import diagnose_checkpoint
from models.embedding_map import embedding_map
from models.features import load_inputs
from models.galleries import prototype_galleries


class Counter:
    """Wraps extract_features and counts (and sizes) its calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, bool]] = []
        real = models.features.extract_features

        def counting(model: Any, images: Any, name: str, *a: Any, **kw: Any) -> Any:
            out = real(model, images, name, *a, **kw)
            self.calls.append((out.num_images, bool(kw.get("backbone_only"))))
            return out

        monkeypatch.setattr(models.features, "extract_features", counting)


def test_pages_on_one_checkpoint_share_one_feature_pass(
    swav_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counter(monkeypatch)
    cache = tmp_path / "features"
    first = diagnose_checkpoint(swav_checkpoint, max_images=300, cache_dir=cache)
    # The evaluated images and the kNN bank (backbone only), each computed once.
    assert counter.calls == [(300, False), (256, True)]
    # A second Diagnose, Explore's map and the galleries read those features from disk.
    second = diagnose_checkpoint(swav_checkpoint, max_images=300, cache_dir=cache)
    embedding_map(swav_checkpoint, max_images=300, cache_dir=tmp_path / "umap", feature_cache=cache)
    prototype_galleries(swav_checkpoint, max_images=300, feature_cache=cache)
    assert counter.calls == [(300, False), (256, True)]
    assert second["knn_top1"] == first["knn_top1"]
    assert second["usage"] == first["usage"] and second["verdict"] == first["verdict"]


def test_a_request_for_fewer_images_is_a_slice_and_for_more_a_new_pass(
    swav_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "features"
    # float32 throughout: with amp auto, a CPU with native bf16 may measure its way to bf16 for
    # one pass and float32 for another, and the values would differ by bf16's rounding.
    one = {"amp": "off"}
    fresh = load_inputs(swav_checkpoint, max_images=120, cache_dir=tmp_path / "other", **one)
    counter = Counter(monkeypatch)
    big = load_inputs(swav_checkpoint, max_images=200, cache_dir=cache, **one).features
    small = load_inputs(swav_checkpoint, max_images=120, cache_dir=cache, **one).features
    assert counter.calls == [(200, False)]
    assert small.num_images == 120 and torch.equal(small.backbone, big.backbone[:120])
    # The slice equals a pass over exactly those images (features do not depend on the batch).
    assert torch.allclose(small.backbone, fresh.features.backbone, atol=1e-5)
    assert torch.equal(small.logits, big.logits[:120])
    load_inputs(swav_checkpoint, max_images=400, cache_dir=cache)
    assert counter.calls == [(200, False), (400, False)]
    # "All images" is answered from an entry that holds the whole split.
    load_inputs(swav_checkpoint, max_images=None, cache_dir=cache)
    load_inputs(swav_checkpoint, max_images=None, cache_dir=cache)
    assert counter.calls[2:] == [(2000, False)]


def test_a_cached_knn_bank_needs_neither_the_train_images_nor_the_network(
    swav_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "features"
    first = diagnose_checkpoint(swav_checkpoint, max_images=100, cache_dir=cache)
    real = models.data.load_dataset

    def no_train(cfg: Any, split: str) -> Any:
        assert split != "train", "the train split was loaded although its features are cached"
        return real(cfg, split)

    monkeypatch.setattr(models.data, "load_dataset", no_train)
    again = diagnose_checkpoint(swav_checkpoint, max_images=100, cache_dir=cache)
    assert again["knn_top1"] == first["knn_top1"]


def test_the_cache_keys_on_the_checkpoints_bytes(
    swav_checkpoint: Path, swav_checkpoint_b: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "features"
    copy = tmp_path / "copy.pt"
    shutil.copy(swav_checkpoint, copy)
    counter = Counter(monkeypatch)
    a = load_inputs(swav_checkpoint, max_images=64, cache_dir=cache).features
    same = load_inputs(copy, max_images=64, cache_dir=cache).features  # same bytes, other path
    assert counter.calls == [(64, False)] and torch.equal(a.backbone, same.backbone)
    shutil.copy(swav_checkpoint_b, copy)  # rewritten in place: a new entry
    other = load_inputs(copy, max_images=64, cache_dir=cache).features
    assert len(counter.calls) == 2 and not torch.equal(a.backbone, other.backbone)
    # Another data set on the same checkpoint is another entry too.
    load_inputs(swav_checkpoint, dataset="digits", max_images=64, cache_dir=cache)
    assert len(counter.calls) == 3


def test_a_damaged_entry_is_recomputed(swav_checkpoint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "features"
    good = load_inputs(swav_checkpoint, max_images=50, cache_dir=cache).features
    (entry,) = cache.glob("features-*.npz")
    entry.write_bytes(b"not an npz file")
    again = load_inputs(swav_checkpoint, max_images=50, cache_dir=cache).features
    assert torch.allclose(again.backbone, good.backbone)
