"""Checkpoints: atomic writes, weights_only reading, RNG round trip, official SwAV/PCL layouts."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from models.build import build_model
from models.checkpoints import (
    CheckpointError,
    capture_rng_state,
    detect_format,
    load_checkpoint,
    load_model,
    make_payload,
    restore_rng_state,
    save_checkpoint,
)
from models.config import PCLConfig, SwAVConfig, TrainConfig


def small_swav() -> tuple[TrainConfig, torch.nn.Module]:
    cfg = TrainConfig(
        method="swav", width=4, swav=SwAVConfig(num_prototypes=6, hidden_dim=16, feat_dim=8)
    )
    return cfg, build_model(cfg, num_train=10)


def test_save_is_atomic_when_the_write_fails(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"a": torch.ones(3)})
    before = path.read_bytes()

    def broken_save(obj: object, f: object, *a: object, **k: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"a": torch.zeros(3)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]  # no temp file left


def test_payload_round_trip_with_optimizer_and_rng(tmp_path: Path) -> None:
    cfg, model = small_swav()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    model(views, None, 200, 0).loss.backward()
    opt.step()
    payload = make_payload(
        config=cfg,
        model_state=model.state_dict(),
        optimizer_state=opt.state_dict(),
        epoch=2,
        step=17,
        rng_state=capture_rng_state(),
        extra={"num_train": 10},
    )
    save_checkpoint(tmp_path / "c.pt", payload)
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["epoch"] == 2 and back["step"] == 17 and back["format"] == "protoscope"
    for k, v in model.state_dict().items():
        assert torch.equal(v, back["model"][k]), k
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.01)
    opt2.load_state_dict(back["optimizer"])
    loaded = load_model(tmp_path / "c.pt")
    assert loaded.source == "protoscope" and loaded.step == 17
    x = torch.randn(3, 3, 16, 16)
    model.eval()
    assert torch.allclose(loaded.model.prototype_logits(x), model.prototype_logits(x))


def test_rng_capture_and_restore_is_exact() -> None:
    state = capture_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/protoscope_pwned_marker",))


@pytest.mark.parametrize("kind", ["pickle", "truncated", "random", "empty", "dir", "missing"])
def test_hostile_or_broken_files_are_refused(tmp_path: Path, kind: str) -> None:
    marker = Path("/tmp/protoscope_pwned_marker")
    marker.unlink(missing_ok=True)
    path = tmp_path / "bad.pt"
    if kind == "pickle":
        torch.save({"model": _Evil()}, path)
    elif kind == "truncated":
        torch.save({"w": torch.randn(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "dir":
        path.mkdir()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert not marker.exists(), "loading must never run code from the file"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.pt"
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


# --- official layouts ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def swav_r50() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TrainConfig(
        method="swav",
        backbone="resnet50",
        swav=SwAVConfig(num_prototypes=30, hidden_dim=64, feat_dim=16),
    )
    model = build_model(cfg, num_train=1)
    # Non-trivial BN statistics so a wrong mapping would show in the outputs.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def official_swav_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our SwAV weights renamed to the released layout: module. + torchvision names."""
    out = {}
    for k, v in model.state_dict().items():
        if k == "queue":
            continue
        name = k[len("backbone.") :] if k.startswith("backbone.") else k
        out[f"module.{name}"] = v.clone()
    return out


def test_official_swav_checkpoint_loads_and_matches(tmp_path: Path, swav_r50) -> None:
    state = official_swav_state(swav_r50)
    assert "module.conv1.weight" in state and "module.layer4.2.bn3.running_var" in state
    path = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save(state, path)
    loaded = load_model(path)
    assert loaded.source == "swav_official"
    assert loaded.config.swav.num_prototypes == 30 and loaded.config.swav.feat_dim == 16
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            loaded.model.prototype_logits(x), swav_r50.prototype_logits(x), atol=1e-5
        )


def test_official_swav_multihead_takes_head_zero(tmp_path: Path, swav_r50) -> None:
    state = official_swav_state(swav_r50)
    head0 = state.pop("module.prototypes.weight")
    state["module.prototypes.prototypes0.weight"] = head0
    state["module.prototypes.prototypes1.weight"] = torch.randn(50, 16)
    torch.save({"state_dict": state}, tmp_path / "mh.pt")
    loaded = load_model(tmp_path / "mh.pt")
    assert torch.equal(loaded.model.prototypes.weight, head0)
    assert any("head 0" in n for n in loaded.notes)


def test_official_swav_mismatch_lists_keys(tmp_path: Path, swav_r50) -> None:
    state = official_swav_state(swav_r50)
    del state["module.layer3.1.conv2.weight"]
    state["module.bn1.weight"] = torch.ones(7)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pt")
    msg = str(err.value)
    assert "backbone.layer3.1.conv2.weight" in msg and "backbone.bn1.weight" in msg


@pytest.mark.parametrize("mlp", [True, False])
def test_official_pcl_checkpoint_loads(tmp_path: Path, mlp: bool) -> None:
    torch.manual_seed(1)
    cfg = TrainConfig(
        method="pcl",
        backbone="resnet50",
        pcl=PCLConfig(mlp=mlp, hidden_dim=2048, feat_dim=32, queue_length=64, num_clusters=(2,)),
    )
    src = build_model(cfg, num_train=1).eval()
    state: dict[str, torch.Tensor] = {}
    for k, v in src.state_dict().items():
        for enc in ("encoder_q", "encoder_k"):
            if k.startswith(f"{enc}.backbone."):
                state[f"module.{enc}.{k[len(enc) + 10 :]}"] = v
            elif k.startswith(f"{enc}.head."):
                rest = k[len(enc) + 6 :]
                state[f"module.{enc}.fc.{rest if mlp else rest[2:]}"] = v
    state["module.queue"] = src.queue.clone()
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    assert ("module.encoder_q.fc.2.weight" in state) == mlp
    assert ("module.encoder_q.fc.weight" in state) == (not mlp)
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state}, tmp_path / "pcl.pth.tar")
    loaded = load_model(tmp_path / "pcl.pth.tar")
    assert loaded.source == "pcl_official" and loaded.epoch == 200
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encoder_q(x), src.encoder_q(x), atol=1e-5)


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        detect_format({"weights": torch.ones(2)})
