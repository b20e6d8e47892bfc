"""Checkpoints: atomic writes, weights_only reading, RNG round trip, official SwAV/PCL layouts."""

from __future__ import annotations

import builtins
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Deep equality of nested containers with exact tensor equality (dtype and values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b and type(a) is type(b), where


# --- atomic writes ------------------------------------------------------------------------------
@pytest.mark.parametrize("previous", [True, False])
def test_save_is_atomic_when_the_write_fails(tmp_path: Path, monkeypatch, previous: bool) -> None:
    path = tmp_path / "ck.pt"
    if previous:
        save_checkpoint(path, {"a": torch.ones(3)})
    before = path.read_bytes() if previous else None

    def broken_save(obj: object, f: Any, *a: object, **k: object) -> None:
        f.write(b"half a checkpoint")
        f.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"a": torch.zeros(3)})
    monkeypatch.undo()
    remaining = sorted(p.name for p in tmp_path.iterdir())
    if previous:
        assert path.read_bytes() == before
        assert remaining == ["ck.pt"]  # no temp file left behind
        assert torch.equal(load_checkpoint(path)["a"], torch.ones(3))
    else:
        assert remaining == []


def test_save_replaces_and_creates_folders(tmp_path: Path) -> None:
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(path, {"a": torch.ones(2)})
    save_checkpoint(path, {"a": torch.full((2,), 7.0)})
    assert torch.equal(load_checkpoint(path)["a"], torch.full((2,), 7.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    assert path.stat().st_mode & 0o444  # readable like any plain file, not a 0600 temp


@pytest.mark.parametrize(
    "bad",
    [np.zeros(3), np.float64(1.5), {"deep": [1, {"x": np.int64(2)}]}, object()],
    ids=["ndarray", "np_float", "nested_np_int", "object"],
)
def test_save_refuses_what_weights_only_cannot_read(tmp_path: Path, bad: Any) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"a": torch.ones(1)})
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"payload\['extra'\]"):
        save_checkpoint(path, {"a": torch.ones(1), "extra": bad})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


# --- our own format -----------------------------------------------------------------------------
def test_payload_round_trip_with_optimizer_and_rng(tmp_path: Path) -> None:
    cfg, model = small_swav()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for it in range(2):
        views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
        model(views, None, 200 + it, 0).loss.backward()
        opt.step()
        opt.zero_grad()
    rng = capture_rng_state()
    payload = make_payload(
        config=cfg,
        model_state=model.state_dict(),
        optimizer_state=opt.state_dict(),
        epoch=2,
        step=17,
        rng_state=rng,
        extra={"num_train": 10, "epoch_complete": False, "train_seconds": 1.25},
    )
    save_checkpoint(tmp_path / "c.pt", payload)
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["format"] == "protoscope" and back["version"] == 1
    assert back["epoch"] == 2 and back["step"] == 17
    assert TrainConfig.model_validate(back["config"]) == cfg
    assert_same(payload["model"], back["model"], "model")
    assert_same(payload["optimizer"], back["optimizer"], "optimizer")
    assert_same(payload["rng"], back["rng"], "rng")
    assert_same(payload["extra"], back["extra"], "extra")
    loaded = load_model(tmp_path / "c.pt")
    assert loaded.source == "protoscope" and loaded.epoch == 2 and loaded.step == 17
    assert loaded.config == cfg and loaded.payload["extra"]["num_train"] == 10
    assert not loaded.model.training
    assert_same(model.state_dict(), loaded.model.state_dict(), "loaded model")
    x = torch.randn(3, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.model.prototype_logits(x), model.prototype_logits(x))
    model.train()

    # The optimiser state is usable: training continues exactly like the original run.
    model2 = build_model(cfg, num_train=10)
    model2.load_state_dict(back["model"])
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.01)
    opt2.load_state_dict(back["optimizer"])
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    for m, o in ((model, opt), (model2, opt2)):
        m(views, None, 300, 0).loss.backward()
        o.step()
    for (name, p), p2 in zip(model.named_parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, p2), name


def test_trainer_shaped_rng_payload_round_trips(tmp_path: Path) -> None:
    """The rng dict exactly as the brief describes the trainer's: tensors, lists, tuples, ints."""
    cfg, model = small_swav()
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": [torch.get_rng_state().clone(), torch.get_rng_state().clone()],
        "numpy": {"keys": torch.arange(624, dtype=torch.int64), "pos": 624, "list": [1, 2]},
        "python": (3, tuple(range(625)), None),
    }
    payload = make_payload(
        config=cfg,
        model_state=model.state_dict(),
        optimizer_state=None,
        epoch=0,
        step=0,
        rng_state=rng,
    )
    save_checkpoint(tmp_path / "r.pt", payload)
    back = load_checkpoint(tmp_path / "r.pt")
    assert back["optimizer"] is None and back["extra"] == {}
    assert_same(rng, back["rng"], "rng")
    assert back["rng"]["python"][1] == tuple(range(625))


def _draw() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, float, float]:
    return (
        torch.rand(5),
        torch.randn(3),
        np.random.randn(3),  # odd count: leaves a cached Gaussian behind
        random.random(),
        random.gauss(0.0, 1.0),
    )


def _same_draws(a: tuple, b: tuple) -> bool:
    return (
        torch.equal(a[0], b[0])
        and torch.equal(a[1], b[1])
        and np.array_equal(a[2], b[2])
        and a[3:] == b[3:]
    )


@pytest.mark.parametrize("through_file", [False, True])
def test_rng_capture_and_restore_is_exact(tmp_path: Path, through_file: bool) -> None:
    np.random.randn(1)  # a cached Gaussian in numpy's state ...
    random.gauss(0.0, 1.0)  # ... and in Python's (gauss_next): the float fields matter too
    state = capture_rng_state()
    assert set(state) == {"torch", "cuda", "numpy", "python"}
    if through_file:
        save_checkpoint(tmp_path / "rng.pt", {"rng": state})
        state = load_checkpoint(tmp_path / "rng.pt")["rng"]
    a = _draw()
    _draw()  # move every generator on
    restore_rng_state(state)
    b = _draw()
    assert _same_draws(a, b)
    restore_rng_state(state)  # the state is not consumed: restoring twice works
    assert _same_draws(a, _draw())


def test_malformed_rng_state_is_refused_and_changes_nothing() -> None:
    good = capture_rng_state()
    bad = {**good, "numpy": {**good["numpy"], "keys": torch.zeros(5, dtype=torch.int64)}}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with pytest.raises(CheckpointError, match="malformed RNG state"):
        restore_rng_state(bad)
    with pytest.raises(CheckpointError, match="malformed RNG state"):
        restore_rng_state({"torch": good["torch"]})
    assert torch.equal(torch.rand(3), expected)  # the torch state was not half-restored


def test_own_format_pcl_with_clusterings_round_trips(tmp_path: Path) -> None:
    from models.pcl import Clustering

    cfg = TrainConfig(
        method="pcl",
        width=4,
        pcl=PCLConfig(feat_dim=8, hidden_dim=16, queue_length=8, num_clusters=(3,)),
    )
    model = build_model(cfg, num_train=10).eval()
    centroids = F.normalize(torch.randn(3, 8), dim=1)
    model.clusterings = [
        Clustering(centroids, torch.arange(10) % 3, torch.rand(3) + 0.1, torch.tensor([4, 3, 3]))
    ]
    save_checkpoint(tmp_path / "pcl.pt", _own_payload(cfg, model, epoch=1, step=5))
    loaded = load_model(tmp_path / "pcl.pt")
    assert loaded.source == "protoscope" and loaded.config.method == "pcl"
    assert len(loaded.model.clusterings) == 1
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.model.encoder_q(x), model.encoder_q(x))
        assert torch.equal(loaded.model.prototype_logits(x), model.prototype_logits(x))
    assert torch.equal(loaded.model.queue, model.queue)


def _own_payload(
    cfg: TrainConfig | None = None,
    model: torch.nn.Module | None = None,
    epoch: int = 0,
    step: int = 1,
    **changes: Any,
) -> dict[str, Any]:
    """A protoscope checkpoint of `model` (default: a small SwAV), then `changes` on top."""
    if cfg is None or model is None:
        cfg, model = small_swav()
    payload = make_payload(
        config=cfg,
        model_state=model.state_dict(),
        optimizer_state=None,
        epoch=epoch,
        step=step,
        rng_state=capture_rng_state(),
        extra={"num_train": 10},
    )
    payload.update(changes)
    return payload


def test_own_format_mismatches_are_checkpoint_errors(tmp_path: Path) -> None:
    base = _own_payload()
    weights = dict(base["model"])
    del weights["projection_head.0.bias"]
    weights["prototypes.weight"] = torch.zeros(7, 8)
    weights["stray.weight"] = torch.zeros(1)
    cases = {
        "weights": (
            {"model": weights},
            ["projection_head.0.bias", "prototypes.weight (7, 8)", "stray.weight"],
        ),
        "config": ({"config": {**base["config"], "epochs": -3}}, ["config is invalid", "epochs"]),
        "version": ({"version": 99}, ["newer protoscope"]),
        "no_model": ({"model": None}, ["no model weights"]),
        "supervised_without_classes": (
            {"config": {**base["config"], "method": "supervised"}},
            ["cannot rebuild the model"],
        ),
    }
    for name, (change, needles) in cases.items():
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, {**base, **change})
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        msg = str(err.value)
        assert str(path) in msg, name
        for needle in needles:
            assert needle in msg, (name, needle, msg)


# --- hostile and broken files -------------------------------------------------------------------
class _Shell:
    """Unpickling this would run a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


class _Opener:
    """Unpickling this would call builtins.open(marker, "w"), which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (builtins.open, (str(self.marker), "w"))


def _write_evil(kind: str, path: Path, marker: Path) -> None:
    evil = _Shell(marker) if "shell" in kind else _Opener(marker)
    if kind.startswith("zip"):
        torch.save({"model": {"w": torch.ones(2)}, "x": evil}, path)
    else:
        path.write_bytes(pickle.dumps({"x": evil}))


def test_the_evil_pickles_really_would_run_code(tmp_path: Path) -> None:
    """Control: without weights_only, these files do create the marker (so the test has teeth)."""
    for kind in ("zip_open", "legacy_open"):
        marker = tmp_path / f"{kind}.marker"
        path = tmp_path / f"{kind}.pt"
        _write_evil(kind, path, marker)
        if kind.startswith("zip"):
            obj = torch.load(path, weights_only=False)
        else:
            obj = pickle.loads(path.read_bytes())
        obj["x"].close()
        assert marker.exists()


HOSTILE = [
    "zip_shell",
    "zip_open",
    "legacy_shell",
    "legacy_open",
    "truncated",
    "random",
    "empty",
    "dir",
    "missing",
    "not_a_dict",
    "plain_pickle",
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_or_broken_files_are_refused(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned.marker"
    path = tmp_path / "bad.pt"
    if "shell" in kind or "open" in kind:
        _write_evil(kind, path, marker)
    elif kind == "truncated":
        torch.save({"w": torch.randn(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "dir":
        path.mkdir()
    elif kind == "not_a_dict":
        torch.save([torch.ones(1)], path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"x": 1}))
    for loader in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError) as err:
            loader(path)
        msg = str(err.value)
        assert str(path) in msg
        assert "Traceback" not in msg and len(msg) < 1000
        assert not marker.exists(), "loading must never run code from the file"
    if "shell" in kind or "open" in kind:
        assert "refused" in msg
    if kind.startswith("zip"):  # the zip format's pickle is read far enough to name the global
        assert ("system" if "shell" in kind else "open") in msg
    if kind == "missing":
        assert "no such file" in msg
    if kind == "dir":
        assert "directory" in msg


# --- layout detection ---------------------------------------------------------------------------
def test_detect_format() -> None:
    t = torch.zeros(1)
    swav = {"conv1.weight": t, "projection_head.0.weight": t, "prototypes.weight": t}
    assert detect_format({"format": "protoscope", "version": 1}) == "protoscope"
    assert detect_format(swav) == "swav_official"
    assert detect_format({f"module.{k}": v for k, v in swav.items()}) == "swav_official"
    assert detect_format({"state_dict": {f"module.{k}": v for k, v in swav.items()}}) == (
        "swav_official"
    )
    multi = {k: v for k, v in swav.items() if k != "prototypes.weight"}
    multi["module.prototypes.prototypes0.weight"] = t
    assert detect_format(multi) == "swav_official"
    assert detect_format({"state_dict": {"module.encoder_q.conv1.weight": t}}) == "pcl_official"
    assert detect_format({"encoder_q.conv1.weight": t}) == "pcl_official"


@pytest.mark.parametrize(
    "state",
    [
        {"weights": torch.ones(2)},
        {"state_dict": {"module.conv1.weight": torch.ones(1)}},  # a plain ResNet, no SwAV head
        {"format": "other", "model": {}},
        {"state_dict": [1, 2]},
    ],
)
def test_unknown_layout_is_refused(state: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError) as err:
        detect_format(state)
    msg = str(err.value)
    assert "protoscope" in msg and "SwAV" in msg and "PCL" in msg  # says what is accepted


def test_single_linear_swav_head_is_reported_as_unsupported(tmp_path: Path) -> None:
    t = torch.zeros(1)
    state = {"module.conv1.weight": t, "module.projection_head.weight": t}
    state["module.prototypes.weight"] = t
    with pytest.raises(CheckpointError, match="unsupported SwAV variant"):
        detect_format(state)
    torch.save(state, tmp_path / "lin.pt")
    with pytest.raises(CheckpointError, match="unsupported SwAV variant"):
        load_model(tmp_path / "lin.pt")


def test_unknown_layout_file_is_refused_with_its_path(tmp_path: Path) -> None:
    torch.save({"weights": torch.ones(2)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout") as err:
        load_model(tmp_path / "x.pt")
    assert str(tmp_path / "x.pt") in str(err.value)


# --- official SwAV ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def swav_r50() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TrainConfig(
        method="swav",
        backbone="resnet50",
        swav=SwAVConfig(num_prototypes=30, hidden_dim=64, feat_dim=16),
    )
    model = build_model(cfg, num_train=1)
    # Non-trivial BN statistics and affine parameters, so a wrong mapping shows in the outputs.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def official_swav_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our SwAV weights renamed to the released layout: module. + torchvision names."""
    out = {}
    for k, v in model.state_dict().items():
        if k == "queue":  # the released checkpoints have no queue
            continue
        name = k[len("backbone.") :] if k.startswith("backbone.") else k
        out[f"module.{name}"] = v.clone()
    return out


@pytest.mark.parametrize("wrapped", [False, True])
def test_official_swav_checkpoint_loads_and_matches(
    tmp_path: Path, swav_r50: torch.nn.Module, wrapped: bool
) -> None:
    state = official_swav_state(swav_r50)
    assert "module.conv1.weight" in state and "module.layer4.2.bn3.running_var" in state
    assert "module.projection_head.3.weight" in state and "module.prototypes.weight" in state
    if wrapped:  # main_swav.py's own training checkpoint; also drop the BN counters
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        state = {"epoch": 5, "state_dict": state}
    path = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save(state, path)
    loaded = load_model(path)
    assert loaded.source == "swav_official"
    assert loaded.epoch == (5 if wrapped else None) and loaded.step is None
    s = loaded.config.swav
    assert (s.num_prototypes, s.hidden_dim, s.feat_dim) == (30, 64, 16)
    assert loaded.config.backbone == "resnet50" and loaded.config.method == "swav"
    assert not loaded.model.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            loaded.model.prototype_logits(x), swav_r50.prototype_logits(x), atol=1e-5
        )
        assert torch.allclose(loaded.model.embed(x), swav_r50.embed(x), atol=1e-5)


def test_official_swav_multihead_takes_head_zero(tmp_path: Path, swav_r50: torch.nn.Module) -> None:
    state = official_swav_state(swav_r50)
    head0 = state.pop("module.prototypes.weight")
    state["module.prototypes.prototypes0.weight"] = head0
    state["module.prototypes.prototypes1.weight"] = torch.randn(50, 16)
    torch.save({"state_dict": state}, tmp_path / "mh.pt")
    with pytest.warns(UserWarning, match="using head 0"):
        loaded = load_model(tmp_path / "mh.pt")
    assert torch.equal(loaded.model.prototypes.weight, head0)
    assert loaded.config.swav.num_prototypes == 30
    assert loaded.payload["prototype_head"] == 0 and loaded.payload["num_prototype_heads"] == 2
    assert any("head 0" in n for n in loaded.notes)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            loaded.model.prototype_logits(x), swav_r50.prototype_logits(x), atol=1e-5
        )


def test_official_swav_mismatch_lists_keys(tmp_path: Path, swav_r50: torch.nn.Module) -> None:
    state = official_swav_state(swav_r50)
    del state["module.layer3.1.conv2.weight"]
    state["module.bn1.weight"] = torch.ones(7)
    state["module.fc.weight"] = torch.ones(10, 2048)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pt")
    msg = str(err.value)
    assert "1 missing keys: backbone.layer3.1.conv2.weight" in msg
    assert "backbone.bn1.weight (7,) (model: (64,))" in msg
    assert "1 unexpected keys: backbone.fc.weight" in msg


def test_official_swav_many_missing_keys_are_capped(
    tmp_path: Path, swav_r50: torch.nn.Module
) -> None:
    state = official_swav_state(swav_r50)
    dropped = [k for k in state if k.startswith("module.layer4.")]
    for k in dropped:
        del state[k]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pt")
    msg = str(err.value)
    missing = [k for k in dropped if not k.endswith("num_batches_tracked")]
    assert f"{len(missing)} missing keys" in msg and f"and {len(missing) - 20} more" in msg


def test_official_swav_size_problems_are_explained(tmp_path: Path) -> None:
    """Caught from the shapes alone, before any ResNet-50 is built."""
    t = torch.zeros
    base = {
        "module.conv1.weight": t(64, 3, 7, 7),
        "module.projection_head.0.weight": t(64, 2048),
        "module.projection_head.1.running_mean": t(64),
        "module.projection_head.3.weight": t(16, 64),
        "module.prototypes.weight": t(30, 16),
    }
    cases = {
        "wide": ({"module.projection_head.0.weight": t(64, 4096)}, "only the standard ResNet-50"),
        "protos": ({"module.prototypes.weight": t(30, 8)}, "outputs 16-d embeddings"),
        "limits": ({"module.prototypes.weight": t(1, 16)}, "swav.num_prototypes"),
        "no_bn": ({"module.projection_head.1.running_mean": None}, "unsupported SwAV variant"),
    }
    for name, (change, needle) in cases.items():
        state = {k: v for k, v in {**base, **change}.items() if v is not None}
        torch.save(state, tmp_path / f"{name}.pt")
        with pytest.raises(CheckpointError, match=needle):
            load_model(tmp_path / f"{name}.pt")


# --- official PCL -------------------------------------------------------------------------------
def official_pcl_state(src: torch.nn.Module, mlp: bool, with_k: bool = True) -> dict[str, Any]:
    """A PCL model's weights in salesforce/PCL's layout (module.encoder_q.fc…, module.queue)."""
    state: dict[str, torch.Tensor] = {}
    for k, v in src.state_dict().items():
        for enc in ("encoder_q", "encoder_k"):
            if enc == "encoder_k" and not with_k:
                continue
            if k.startswith(f"{enc}.backbone."):
                state[f"module.{enc}.{k[len(enc) + len('.backbone.') :]}"] = v.clone()
            elif k.startswith(f"{enc}.head."):
                rest = k[len(enc) + len(".head.") :]
                state[f"module.{enc}.fc.{rest if mlp else rest[len('0.') :]}"] = v.clone()
    state["module.queue"] = src.queue.clone()
    state["module.queue_ptr"] = torch.tensor([5])
    return {"epoch": 200, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}}}


@pytest.mark.parametrize("mlp", [True, False], ids=["v2_mlp", "v1_linear"])
def test_official_pcl_checkpoint_loads(tmp_path: Path, mlp: bool) -> None:
    torch.manual_seed(1)
    cfg = TrainConfig(
        method="pcl",
        backbone="resnet50",
        pcl=PCLConfig(
            mlp=mlp, head_bn=False, hidden_dim=64, feat_dim=32, queue_length=48, num_clusters=(2,)
        ),
    )
    src = build_model(cfg, num_train=1).eval()
    with torch.no_grad():  # a key encoder that differs from the query encoder
        for p in src.encoder_k.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ckpt = official_pcl_state(src, mlp)
    inner = ckpt["state_dict"]
    assert ("module.encoder_q.fc.2.weight" in inner) == mlp
    assert ("module.encoder_q.fc.weight" in inner) == (not mlp)
    torch.save(ckpt, tmp_path / "pcl.pth.tar")
    loaded = load_model(tmp_path / "pcl.pth.tar")
    assert loaded.source == "pcl_official" and loaded.epoch == 200
    assert loaded.payload["arch"] == "resnet50"
    p = loaded.config.pcl
    assert (p.mlp, p.feat_dim, p.queue_length) == (mlp, 32, 48)
    assert p.hidden_dim == (64 if mlp else 2048)
    assert torch.equal(loaded.model.queue, src.queue)
    assert int(loaded.model.queue_ptr) == 5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encoder_q(x), src.encoder_q(x), atol=1e-5)
        assert torch.allclose(loaded.model.encoder_k(x), src.encoder_k(x), atol=1e-5)
        assert torch.allclose(loaded.model.embed(x), src.embed(x), atol=1e-5)


def test_official_pcl_without_key_encoder_copies_the_query_encoder(tmp_path: Path) -> None:
    torch.manual_seed(2)
    cfg = TrainConfig(
        method="pcl",
        backbone="resnet50",
        pcl=PCLConfig(mlp=False, feat_dim=16, queue_length=8, num_clusters=(2,)),
    )
    src = build_model(cfg, num_train=1).eval()
    ckpt = official_pcl_state(src, mlp=False, with_k=False)
    del ckpt["state_dict"]["module.queue"], ckpt["state_dict"]["module.queue_ptr"]
    ckpt["state_dict"]["module.encoder_q.layer1.0.conv1.weight"] = torch.zeros(3)
    torch.save(ckpt, tmp_path / "bad.pth.tar")
    with pytest.raises(CheckpointError, match=r"encoder_q\.backbone\.layer1\.0\.conv1\.weight"):
        load_model(tmp_path / "bad.pth.tar")

    ckpt = official_pcl_state(src, mlp=False, with_k=False)
    del ckpt["state_dict"]["module.queue"], ckpt["state_dict"]["module.queue_ptr"]
    torch.save(ckpt, tmp_path / "q_only.pth.tar")
    loaded = load_model(tmp_path / "q_only.pth.tar")
    assert any("copy of encoder_q" in n for n in loaded.notes)
    assert any("no queue" in n for n in loaded.notes)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encoder_k(x), src.encoder_q(x), atol=1e-5)
