"""Checkpoints: our own atomic format, and import of the official SwAV and PCL releases.

A checkpoint is untrusted input: it is only ever read with `torch.load(weights_only=True)`, which
refuses any pickle that would build objects other than tensors and plain containers.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from models.config import PCLConfig, SwAVConfig, TrainConfig

FORMAT = "protoscope"
VERSION = 1
Format = Literal["protoscope", "swav_official", "pcl_official"]


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit; the message says what is wrong."""


# --- writing and reading ----------------------------------------------------------------------
def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: temp file in the same folder, fsync, rename over `path`.

    A crash or a full disk mid-write leaves the previous file at `path` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; any problem becomes a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: the file holds objects other than tensors and plain containers "
            f"(a pickle that could run code); only weights are accepted ({str(e)[:200]})"
        ) from e
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        KeyError,
        AttributeError,
        TypeError,
        IndexError,
    ) as e:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {str(e)[:200]}"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(state).__name__}")
    return state


# --- our own format ---------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """Every RNG the trainer draws from, as weights_only-safe tensors and lists."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": [py[0], list(py[1]), py[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def make_payload(
    *,
    config: TrainConfig,
    model_state: dict[str, Tensor],
    optimizer_state: dict[str, Any] | None,
    epoch: int,
    step: int,
    rng_state: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config.model_dump(mode="json"),
        "model": model_state,
        "optimizer": optimizer_state,
        "epoch": epoch,
        "step": step,
        "rng": rng_state,
        "extra": extra or {},
    }


# --- official layouts -------------------------------------------------------------------------
def _strip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def _inner_state(state: dict[str, Any]) -> dict[str, Any]:
    inner = state.get("state_dict", state)
    if not isinstance(inner, dict):
        raise CheckpointError("'state_dict' is not a dict of tensors")
    return _strip(inner, "module.")


def detect_format(state: dict[str, Any]) -> Format:
    """Which layout a loaded checkpoint has; CheckpointError for anything else."""
    if state.get("format") == FORMAT:
        return "protoscope"
    inner = _inner_state(state)
    keys = set(inner)
    if any(k.startswith("encoder_q.") for k in keys):
        return "pcl_official"
    has_protos = "prototypes.weight" in keys or "prototypes.prototypes0.weight" in keys
    if has_protos and "projection_head.0.weight" in keys and "conv1.weight" in keys:
        return "swav_official"
    sample = ", ".join(sorted(keys)[:5])
    raise CheckpointError(
        "unrecognised checkpoint layout: expected a protoscope checkpoint, an official SwAV "
        "release (module.conv1.weight, module.projection_head.*, module.prototypes.weight) or "
        f"an official PCL release (module.encoder_q.*); found keys like: {sample}"
    )


def _load_strict(model: torch.nn.Module, state: dict[str, Tensor], ignore: set[str]) -> None:
    """load_state_dict, but mismatches become one CheckpointError listing every key."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and k not in ignore)
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:20]) + (f" … (+{len(items) - 20})" if len(items) > 20 else "")
            problems.append(f"{title} keys: {shown}")
    if problems:
        raise CheckpointError("checkpoint does not match the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)


@dataclass
class LoadedModel:
    model: Any  # MethodModule
    config: TrainConfig
    source: Format
    epoch: int | None = None
    step: int | None = None
    notes: list[str] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)


def _shape(inner: dict[str, Any], key: str) -> tuple[int, ...]:
    if key not in inner:
        raise CheckpointError(f"missing key {key!r} needed to infer the model's size")
    return tuple(inner[key].shape)


def _load_swav_official(inner: dict[str, Any]) -> LoadedModel:
    from models.build import build_model

    notes = []
    if "prototypes.weight" not in inner:
        heads = sorted(k for k in inner if k.startswith("prototypes.prototypes"))
        notes.append(f"multi-head prototypes ({len(heads)} heads): using head 0")
        head0 = inner["prototypes.prototypes0.weight"]
        inner = {k: v for k, v in inner.items() if not k.startswith("prototypes.prototypes")}
        inner["prototypes.weight"] = head0
    if "projection_head.3.weight" not in inner:
        raise CheckpointError(
            "unsupported SwAV variant: expected a projection head "
            "Linear-BatchNorm-ReLU-Linear (projection_head.0/1/3)"
        )
    hidden = _shape(inner, "projection_head.0.weight")[0]
    feat = _shape(inner, "projection_head.3.weight")[0]
    k = _shape(inner, "prototypes.weight")[0]
    cfg = TrainConfig(
        method="swav",
        backbone="resnet50",
        data={"image_size": 224},
        swav=SwAVConfig(num_prototypes=k, hidden_dim=hidden, feat_dim=feat),
    )
    model = build_model(cfg, num_train=1)
    mapped = {
        (key if key.startswith(("projection_head.", "prototypes.")) else f"backbone.{key}"): v
        for key, v in inner.items()
    }
    _load_strict(model, mapped, ignore={"queue"})
    return LoadedModel(model, cfg, "swav_official", notes=notes)


def _load_pcl_official(state: dict[str, Any], inner: dict[str, Any]) -> LoadedModel:
    from models.build import build_model

    q = {k[len("encoder_q.") :]: v for k, v in inner.items() if k.startswith("encoder_q.")}
    mlp = "fc.2.weight" in q
    if mlp:
        hidden = _shape(q, "fc.0.weight")[0]
        feat = _shape(q, "fc.2.weight")[0]
    else:
        feat = _shape(q, "fc.weight")[0]
        hidden = 2048
    queue_len = int(inner["queue"].shape[1]) if "queue" in inner else 16384
    cfg = TrainConfig(
        method="pcl",
        backbone="resnet50",
        data={"image_size": 224},
        pcl=PCLConfig(feat_dim=feat, hidden_dim=hidden, mlp=mlp, queue_length=queue_len),
    )
    model = build_model(cfg, num_train=1)

    def head_key(k: str) -> str:
        if k.startswith("fc."):
            rest = k[3:]
            return "head." + (rest if mlp else f"0.{rest}")
        return f"backbone.{k}"

    mapped: dict[str, Tensor] = {}
    for enc in ("encoder_q", "encoder_k"):
        src = {k[len(enc) + 1 :]: v for k, v in inner.items() if k.startswith(f"{enc}.")} or q
        mapped.update({f"{enc}.{head_key(k)}": v for k, v in src.items()})
    for key in ("queue", "queue_ptr"):
        if key in inner:
            mapped[key] = inner[key]
    own = set(model.state_dict())
    ignore = {k for k in own if not k.startswith(("encoder_q.", "encoder_k."))}
    _load_strict(model, mapped, ignore=ignore)
    epoch = state.get("epoch") if isinstance(state.get("epoch"), int) else None
    return LoadedModel(model, cfg, "pcl_official", epoch=epoch)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Any accepted checkpoint → a ready model (eval mode) with its config."""
    from pydantic import ValidationError

    from models.build import build_model

    state = load_checkpoint(path, map_location)
    fmt = detect_format(state)
    if fmt == "protoscope":
        try:
            cfg = TrainConfig.model_validate(state["config"])
        except (ValidationError, KeyError) as e:
            raise CheckpointError(f"{path}: the stored config is invalid: {e}") from e
        extra = state.get("extra") or {}
        model = build_model(cfg, int(extra.get("num_train") or 1), extra.get("num_classes"))
        if not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{path}: no model weights in the checkpoint")
        _load_strict(model, state["model"], ignore=set())
        loaded = LoadedModel(model, cfg, fmt, state.get("epoch"), state.get("step"), payload=state)
    elif fmt == "swav_official":
        loaded = _load_swav_official(_inner_state(state))
    else:
        loaded = _load_pcl_official(state, _inner_state(state))
    loaded.model.eval()
    return loaded
