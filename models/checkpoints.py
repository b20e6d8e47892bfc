"""Checkpoints: our own atomic format, and import of the official SwAV and PCL releases.

A checkpoint is untrusted input. It is only ever read with `torch.load(weights_only=True)`,
which refuses any pickle that would build objects other than tensors and plain containers, so
loading a file never runs code from it; every problem with a file surfaces as a
`CheckpointError` whose message names the file and what was wrong.

Three layouts are accepted (see shared/ALGORITHMS.md for the official ones):

- ``protoscope``: our own, written by `save_checkpoint(make_payload(...))`: the run's config,
  the model and optimiser states, epoch, step, every RNG state and free-form `extra`.
- ``swav_official``: a released SwAV checkpoint (``swav_800ep_pretrain.pth.tar`` …): a bare
  state dict (or ``{"state_dict": ...}``) with the DDP prefix ``module.``, torchvision ResNet-50
  names for the backbone, ``projection_head.0/1/3`` and ``prototypes.weight`` (or
  ``prototypes.prototypes{i}.weight`` for multi-head variants, of which head 0 is taken).
- ``pcl_official``: a released PCL (or MoCo) checkpoint ``{"epoch", "arch", "state_dict",
  "optimizer"}`` with ``module.encoder_q.*``, ``module.encoder_k.*``, ``module.queue`` and
  ``module.queue_ptr``; the ``fc`` head becomes our ``head``.

Imports are strict: every parameter and buffer of the model must come from the file with the
right shape (only our SwAV queue, PCL's queue and clusterings, and BatchNorm's
``num_batches_tracked`` may be absent), and nothing in the file may go unused.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import random
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from models.config import TrainConfig

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "LoadedModel",
    "capture_rng_state",
    "detect_format",
    "load_checkpoint",
    "load_model",
    "make_payload",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT = "protoscope"
VERSION = 1
Format = Literal["protoscope", "swav_official", "pcl_official"]

ACCEPTED_LAYOUTS = (
    "a protoscope checkpoint (format='protoscope'), "
    "an official SwAV release (a state dict with [module.]conv1.weight, "
    "[module.]projection_head.0.weight and [module.]prototypes.weight or "
    "prototypes.prototypes0.weight, optionally under 'state_dict'), "
    "or an official PCL/MoCo release ({'state_dict': {'module.encoder_q.…', …}})"
)
_RESNET50_DIM = 2048  # the pooled feature width every official release uses
_SHOW = 20  # how many offending keys a mismatch message lists


class CheckpointError(ValueError):
    """A checkpoint cannot be written, read or used; the message says what is wrong."""


# --- writing ------------------------------------------------------------------------------------
def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = _current_umask()

# What `torch.load(weights_only=True)` rebuilds without extra allow-listing.
_SAFE_LEAVES: tuple[type, ...] = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    torch.dtype,
    torch.device,
    torch.Size,
)
_SAFE_TENSORS: tuple[type, ...] = (Tensor, nn.Parameter)
_SAFE_MAPPINGS: tuple[type, ...] = (dict, collections.OrderedDict)
_SAFE_SEQUENCES: tuple[type, ...] = (list, tuple, set)


def _check_loadable(obj: Any, where: str) -> None:
    """Refuse, before writing, anything a weights_only load would refuse later.

    A payload holding e.g. a numpy array or a numpy scalar saves without complaint but can never
    be read back safely; catching it here names the offending entry instead of breaking a
    resume days later.
    """
    kind = type(obj)
    if kind in _SAFE_LEAVES or kind in _SAFE_TENSORS:
        return
    if kind in _SAFE_MAPPINGS:
        for key, value in obj.items():
            if type(key) not in _SAFE_LEAVES:
                raise CheckpointError(
                    f"cannot save: {where} has a key of type {type(key).__name__} "
                    f"({key!r}), which torch.load(weights_only=True) refuses"
                )
            _check_loadable(value, f"{where}[{key!r}]")
        return
    if kind in _SAFE_SEQUENCES:
        for i, value in enumerate(obj):
            _check_loadable(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"cannot save: {where} is a {kind.__module__}.{kind.__qualname__}, which "
        "torch.load(weights_only=True) refuses; store tensors, dicts, lists, tuples, str, "
        "int, float, bool or None"
    )


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, and only then
    renamed over `path` (`os.replace`, atomic on POSIX). A crash, an exception or a full disk
    mid-write leaves the previous file at `path` byte-identical, and the temporary file is
    removed. Raises CheckpointError, before touching the disk, when the payload holds anything
    `torch.load(weights_only=True)` could not read back.
    """
    path = Path(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"cannot save {path}: the payload must be a dict")
    _check_loadable(payload, "payload")
    if path.is_dir():
        raise CheckpointError(f"cannot save {path}: it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, kept on disk on purpose
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with tmp as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        # NamedTemporaryFile creates the file 0600; give it the mode a plain open() would.
        os.chmod(tmp.name, 0o666 & ~_UMASK)
        os.replace(tmp.name, path)
    except BaseException as e:
        written = _size_or_none(tmp.name)
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        if isinstance(e, RuntimeError):
            # torch's zip writer reports a short write (a full disk, a file-size limit) as
            # "[enforce fail at inline_container.cc:…] unexpected pos …": say what happened.
            raise CheckpointError(
                f"cannot save {path}: writing failed after {written} bytes — is the disk full? "
                f"({_free_space(path.parent)}); the previous checkpoint is untouched "
                f"[{_first_line(e, 200)}]"
            ) from None
        raise
    _fsync_dir(path.parent)


def _size_or_none(name: str) -> int | None:
    try:
        return os.stat(name).st_size
    except OSError:
        return None


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free} bytes free"
    except OSError:
        return "free space unknown"


# --- reading ------------------------------------------------------------------------------------
def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return (line[:limit] + "…") if len(line) > limit else line


# A zip checkpoint may declare at most this much more uncompressed data than the file holds.
# torch.save stores its records uncompressed, so a genuine file declares about its own size;
# torch.load would otherwise allocate and inflate whatever the archive declares (a 1 MB upload
# expanding to gigabytes of memory) before it could notice anything was wrong.
ZIP_SLACK_BYTES = 64 * 2**20
ZIP_MAX_RATIO = 4


def _refuse_zip_bomb(path: Path, size: int) -> None:
    """CheckpointError when a zip archive declares far more data than the file contains."""
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy (pickle) format, or not a checkpoint at all: torch.load decides
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # a damaged archive: torch.load reports it as corrupt
    declared = sum(max(i.file_size, 0) for i in infos)
    if declared > max(ZIP_MAX_RATIO * size, size + ZIP_SLACK_BYTES):
        biggest = max(infos, key=lambda i: i.file_size)
        raise CheckpointError(
            f"{path}: refused: the archive declares {declared} bytes of content in a "
            f"{size}-byte file ({biggest.filename!r}: {biggest.file_size} bytes from "
            f"{biggest.compress_size}); a checkpoint's records are stored uncompressed, so this "
            "looks like a zip bomb — nothing was decompressed"
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file with `torch.load(weights_only=True)` and nothing else.

    A missing path, a directory, an empty, truncated or corrupt file, random bytes, a plain
    pickle and a pickle that needs non-allow-listed globals (e.g. ``os.system``) all raise
    CheckpointError naming `path`; no code from the file is ever executed.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot access the file: {e.strerror or e}") from None
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    _refuse_zip_bomb(path, st.st_size)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", text, re.IGNORECASE)
        what = f" (it needs {found.group(1)})" if found else ""
        if found or "Weights only load failed" in text:
            raise CheckpointError(
                f"{path}: refused: the file holds objects other than tensors and plain "
                f"containers{what}; only weights are accepted, nothing in it was executed"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or not a checkpoint at all): "
            f"{_first_line(e)}"
        ) from None
    except MemoryError:
        raise CheckpointError(f"{path}: too large to load into memory") from None
    except Exception as e:  # zip, EOF, magic-number, storage errors: all mean "corrupt"
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{type(e).__name__}: {_first_line(e)}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: expected a dict (a state dict or a checkpoint), found {type(state).__name__}"
        )
    return state


# --- RNG states ---------------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """Every global RNG the trainer draws from, as weights_only-safe tensors and lists.

    {"torch": ByteTensor, "cuda": [ByteTensor per device] ([] without CUDA),
     "numpy": {"kind": str, "keys": int64 tensor (624,), "pos": int, "has_gauss": int,
               "cached": float}, "python": [version, [625 ints], gauss_next (float | None)]}
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": [int(version), [int(x) for x in internal], gauss_next],
    }


def _byte_tensor(value: Any, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a uint8 tensor, got {type(value).__name__}")
    return value.detach().to("cpu", torch.uint8)


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what `capture_rng_state` returned (also after a save/load round trip).

    Tensors may sit on any device (a checkpoint loaded with map_location="cuda"). The state is
    checked completely before anything is set, so a malformed one changes no RNG; it raises
    CheckpointError. CUDA states are restored for min(saved, present) devices.
    """
    try:
        torch_state = _byte_tensor(state["torch"], "rng['torch']")
        cuda_states = [_byte_tensor(s, "rng['cuda'][i]") for s in state.get("cuda") or []]
        n = state["numpy"]
        keys = n["keys"]
        keys = keys.detach().cpu().numpy() if isinstance(keys, Tensor) else np.asarray(keys)
        if keys.shape != (624,):
            raise ValueError(f"numpy keys must have 624 entries, got shape {keys.shape}")
        np_state = (
            str(n.get("kind", "MT19937")),
            keys.astype(np.int64).astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached"]),
        )
        version, internal, gauss_next = state["python"]
        py_state = (
            int(version),
            tuple(int(x) for x in internal),
            None if gauss_next is None else float(gauss_next),
        )
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"malformed RNG state in the checkpoint: {e}") from None
    try:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"malformed RNG state in the checkpoint: {e}") from None
    if cuda_states and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(cuda_states) != count:
            warnings.warn(
                f"the checkpoint holds CUDA RNG states for {len(cuda_states)} devices, this "
                f"machine has {count}; restoring the first {min(count, len(cuda_states))}",
                stacklevel=2,
            )
        for i, s in enumerate(cuda_states[:count]):
            torch.cuda.set_rng_state(s, i)


# --- our own format -----------------------------------------------------------------------------
def make_payload(
    *,
    config: TrainConfig,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any] | None,
    epoch: int,
    step: int,
    rng_state: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A protoscope checkpoint: plain containers and tensors only (weights_only-loadable).

    `extra` carries what `load_model` needs to rebuild the model (``num_train`` for PCL,
    ``num_classes`` for the supervised baseline) and whatever else the trainer keeps.
    """
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config.model_dump(mode="json"),
        "model": model_state,
        "optimizer": optimizer_state,
        "epoch": int(epoch),
        "step": int(step),
        "rng": rng_state,
        "extra": dict(extra or {}),
    }


# --- layout detection ---------------------------------------------------------------------------
def _inner_state(state: dict[str, Any]) -> dict[str, Any]:
    """The weights of an official checkpoint: ["state_dict"] when present, "module." stripped."""
    inner = state.get("state_dict", state)
    if not isinstance(inner, dict):
        raise CheckpointError(
            f"'state_dict' is a {type(inner).__name__}, not a dict of tensors; accepted "
            f"layouts: {ACCEPTED_LAYOUTS}"
        )
    return {
        (k[len("module.") :] if isinstance(k, str) and k.startswith("module.") else k): v
        for k, v in inner.items()
    }


def _sample(keys: list[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", … ({len(keys)} keys)" if len(keys) > n else "") if shown else "(none)"


def detect_format(state: dict[str, Any]) -> Format:
    """Which accepted layout a loaded checkpoint has; CheckpointError for anything else."""
    if not isinstance(state, dict):
        raise CheckpointError(
            f"expected a dict, found {type(state).__name__}; accepted layouts: {ACCEPTED_LAYOUTS}"
        )
    if state.get("format") == FORMAT:
        return "protoscope"
    inner = _inner_state(state)
    keys = {k for k in inner if isinstance(k, str)}
    if any(k.startswith("encoder_q.") for k in keys):
        return "pcl_official"
    has_protos = "prototypes.weight" in keys or "prototypes.prototypes0.weight" in keys
    if has_protos and "conv1.weight" in keys:
        if "projection_head.0.weight" in keys:
            return "swav_official"
        if "projection_head.weight" in keys:
            raise CheckpointError(
                "unsupported SwAV variant: its projection head is a single Linear layer "
                "(hidden_mlp=0: projection_head.weight); protoscope's SwAV needs the "
                "Linear-BatchNorm-ReLU-Linear head (projection_head.0/1/3)"
            )
    raise CheckpointError(
        f"unrecognised checkpoint layout; accepted: {ACCEPTED_LAYOUTS}. "
        f"Found top-level keys: {_sample(sorted(map(str, state)))}"
        + (f"; weights: {_sample(sorted(keys))}" if "state_dict" in state else "")
    )


# --- strict loading -----------------------------------------------------------------------------
def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    more = f" … and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"{len(items)} {title}: {shown}{more}"


def _load_strict(
    model: nn.Module, state: dict[str, Any], optional: Callable[[str], bool] = lambda k: False
) -> None:
    """load_state_dict, with every mismatch reported at once in one CheckpointError.

    Missing keys (other than those `optional` allows), unexpected keys, values that are not
    tensors and shape mismatches are listed (the first 20 of each, plus the count).
    """
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not optional(k))
    unexpected = sorted(str(k) for k in state if k not in own)
    not_tensor, wrong_shape = [], []
    for k, v in state.items():
        if k not in own or not isinstance(own[k], Tensor):  # e.g. PCL's `_extra_state`
            continue
        if not isinstance(v, Tensor):
            not_tensor.append(f"{k} ({type(v).__name__})")
        elif tuple(v.shape) != tuple(own[k].shape):
            wrong_shape.append(f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})")
    problems = [
        _listing(title, items)
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("keys with the wrong shape", sorted(wrong_shape)),
            ("keys that are not tensors", sorted(not_tensor)),
        )
        if items
    ]
    if problems:
        raise CheckpointError("the weights do not fit the model: " + "; ".join(problems))
    try:
        model.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"the weights do not fit the model: {_first_line(e)}") from None


def _optional_official(k: str) -> bool:
    """Buffers an official checkpoint may lack: BN counters, our queues, PCL's clusterings."""
    return k.endswith(("num_batches_tracked", "_extra_state")) or k in {"queue", "queue_ptr"}


@dataclass
class LoadedModel:
    """A model ready for inference (eval mode) and what it was built from.

    payload: for `protoscope`, the whole loaded checkpoint; for the official layouts, the
    checkpoint's metadata without its weights (e.g. "epoch", "arch") plus "import_notes" and,
    for multi-head SwAV, "prototype_head" (always 0) and "num_prototype_heads".
    """

    model: nn.Module  # a MethodModule
    config: TrainConfig
    source: Format
    epoch: int | None = None
    step: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def _extra(self) -> dict[str, Any]:
        """What our trainer wrote beside the weights ({} for official files)."""
        extra = self.payload.get("extra")
        return extra if isinstance(extra, dict) else {}

    @property
    def epoch_complete(self) -> bool:
        """False for our mid-epoch checkpoints (a stop or a time budget); official ones are."""
        extra = self._extra
        return self.source != "protoscope" or bool(extra.get("epoch_complete", True))

    @property
    def epochs_done(self) -> int | None:
        """Epochs completed when the file was written, as people count them (from 1).

        Ours store the 0-based index of the epoch being trained (complete or not); the official
        releases store `epoch + 1` already.
        """
        if self.epoch is None or self.source != "protoscope":
            return self.epoch
        return self.epoch + 1 if self.epoch_complete else self.epoch

    @property
    def epochs_fraction(self) -> float | None:
        """Epochs of training behind the file, fractional (0.4), when it records them; else
        the whole epochs of `epochs_done`."""
        extra = self._extra
        done = extra.get("epochs_done")
        if isinstance(done, int | float) and not isinstance(done, bool):
            return float(done)
        return None if self.epochs_done is None else float(self.epochs_done)

    @property
    def recent_steps(self) -> list[dict[str, Any]] | None:
        """The step events (step, loss, active prototypes) that led to the file, oldest first,
        as our trainer records them; None for official files and older ones of ours."""
        extra = self._extra
        steps = extra.get("recent_steps")
        if not isinstance(steps, list):
            return None
        return [s for s in steps if isinstance(s, dict)] or None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _shape(inner: dict[str, Any], key: str, ndim: int) -> tuple[int, ...]:
    value = inner.get(key)
    if not isinstance(value, Tensor):
        raise CheckpointError(f"missing tensor {key!r}, needed to infer the model's size")
    if value.dim() != ndim:
        raise CheckpointError(f"{key!r} has shape {tuple(value.shape)}, expected {ndim} dims")
    return tuple(value.shape)


def _config(**kwargs: Any) -> TrainConfig:
    try:
        return TrainConfig(**kwargs)
    except ValidationError as e:
        where = ", ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise CheckpointError(
            f"the checkpoint's sizes are outside protoscope's limits ({where})"
        ) from None


def _metadata(state: dict[str, Any]) -> dict[str, Any]:
    """An official checkpoint's small top-level entries (epoch, arch …), not its weights."""
    keep = (type(None), bool, int, float, str)
    return {k: v for k, v in state.items() if isinstance(k, str) and type(v) in keep}


def _check_backbone_width(in_dim: int, key: str) -> None:
    if in_dim != _RESNET50_DIM:
        raise CheckpointError(
            f"{key} takes {in_dim}-d backbone features; only the standard ResNet-50 "
            f"({_RESNET50_DIM}-d) is supported (not the wide w2/w4/w5 variants)"
        )


# --- official SwAV ------------------------------------------------------------------------------
_HEAD_KEY = re.compile(r"prototypes\.prototypes(\d+)\.weight")


def _load_swav_official(state: dict[str, Any]) -> LoadedModel:
    from models.build import build_model

    inner = _inner_state(state)
    notes: list[str] = []
    payload = {**_metadata(state), "format": "swav_official"}
    if "prototypes.weight" not in inner:
        heads = sorted(
            (int(m.group(1)), k) for k in inner if isinstance(k, str) and (m := _HEAD_KEY.match(k))
        )
        sizes = [int(inner[k].shape[0]) for _, k in heads if isinstance(inner[k], Tensor)]
        note = (
            f"multi-head prototypes ({len(heads)} heads of sizes {sizes}): using head 0 "
            "(prototypes.prototypes0.weight); the other heads are dropped"
        )
        notes.append(note)
        warnings.warn(note, stacklevel=3)
        payload.update(prototype_head=0, num_prototype_heads=len(heads))
        head0 = inner["prototypes.prototypes0.weight"]
        inner = {k: v for k, v in inner.items() if not (isinstance(k, str) and _HEAD_KEY.match(k))}
        inner["prototypes.weight"] = head0
    if "projection_head.3.weight" not in inner or "projection_head.1.running_mean" not in inner:
        found = sorted(k for k in inner if isinstance(k, str) and k.startswith("projection_head"))
        raise CheckpointError(
            "unsupported SwAV variant: expected the projection head "
            "Linear-BatchNorm-ReLU-Linear (projection_head.0/1/3); found "
            f"{_sample(found, 10)}"
        )
    hidden, in_dim = _shape(inner, "projection_head.0.weight", 2)
    _check_backbone_width(in_dim, "projection_head.0.weight")
    feat_dim = _shape(inner, "projection_head.3.weight", 2)[0]
    num_prototypes, proto_dim = _shape(inner, "prototypes.weight", 2)
    if proto_dim != feat_dim:
        raise CheckpointError(
            f"prototypes.weight is {num_prototypes}×{proto_dim} but the projection head "
            f"outputs {feat_dim}-d embeddings"
        )
    cfg = _config(
        method="swav",
        backbone="resnet50",
        data={"image_size": 224},
        # ε = 0.05 is the official default the released models were trained with.
        swav={
            "num_prototypes": num_prototypes,
            "hidden_dim": hidden,
            "feat_dim": feat_dim,
            "epsilon": 0.05,
        },
    )
    model = build_model(cfg, num_train=1)
    own_names = ("projection_head.", "prototypes.")
    mapped = {(k if str(k).startswith(own_names) else f"backbone.{k}"): v for k, v in inner.items()}
    _load_strict(model, mapped, _optional_official)
    payload["import_notes"] = notes
    epoch = _int_or_none(state.get("epoch"))
    return LoadedModel(model, cfg, "swav_official", epoch, None, payload, notes)


# --- official PCL -------------------------------------------------------------------------------
def _load_pcl_official(state: dict[str, Any]) -> LoadedModel:
    from models.build import build_model

    inner = _inner_state(state)
    notes: list[str] = []
    payload = {**_metadata(state), "format": "pcl_official"}
    q = {k[len("encoder_q.") :]: v for k, v in inner.items() if str(k).startswith("encoder_q.")}
    k_enc = {k[len("encoder_k.") :]: v for k, v in inner.items() if str(k).startswith("encoder_k.")}
    if "fc.0.weight" in q or "fc.2.weight" in q:
        mlp = True
        hidden, in_dim = _shape(q, "fc.0.weight", 2)
        feat_dim = _shape(q, "fc.2.weight", 2)[0]
        key = "encoder_q.fc.0.weight"
    elif "fc.weight" in q:
        mlp = False
        feat_dim, in_dim = _shape(q, "fc.weight", 2)
        hidden = in_dim  # unused without the MLP
        key = "encoder_q.fc.weight"
    else:
        raise CheckpointError(
            "PCL checkpoint without a projection head: expected encoder_q.fc.weight (v1, "
            "linear) or encoder_q.fc.0/fc.2 (v2, MLP); found "
            f"{_sample(sorted(k for k in q if k.startswith('fc')), 10)}"
        )
    _check_backbone_width(in_dim, key)
    queue = inner.get("queue")
    if isinstance(queue, Tensor):
        if queue.dim() != 2 or queue.shape[0] != feat_dim:
            raise CheckpointError(
                f"queue has shape {tuple(queue.shape)}, expected ({feat_dim}, queue_length)"
            )
        queue_length = int(queue.shape[1])
    else:
        queue_length = 16384
        notes.append(f"no queue in the checkpoint: a fresh random queue of {queue_length} keys")
    cfg = _config(
        method="pcl",
        backbone="resnet50",
        data={"image_size": 224},
        pcl={
            "feat_dim": feat_dim,
            "hidden_dim": hidden,
            "mlp": mlp,
            "head_bn": False,  # the official head is Linear-ReLU-Linear
            "queue_length": queue_length,
            "momentum": 0.999,  # the official value
        },
    )
    model = build_model(cfg, num_train=1)

    def rename(name: str) -> str:
        if name.startswith("fc."):
            rest = name[len("fc.") :]
            return "head." + (rest if mlp else f"0.{rest}")
        return f"backbone.{name}"

    if not k_enc:
        notes.append("no encoder_k in the checkpoint: the key encoder is a copy of encoder_q")
    mapped: dict[str, Any] = {}
    for enc, weights in (("encoder_q", q), ("encoder_k", k_enc or q)):
        mapped.update({f"{enc}.{rename(str(k))}": v for k, v in weights.items()})
    for k, v in inner.items():  # queue, queue_ptr; anything else is reported as unexpected
        if not str(k).startswith(("encoder_q.", "encoder_k.")):
            mapped[k] = v
    _load_strict(model, mapped, _optional_official)
    payload["import_notes"] = notes
    epoch = _int_or_none(state.get("epoch"))
    return LoadedModel(model, cfg, "pcl_official", epoch, None, payload, notes)


# --- protoscope ---------------------------------------------------------------------------------
def _load_protoscope(state: dict[str, Any]) -> LoadedModel:
    from models.build import build_model

    version = state.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"invalid protoscope checkpoint version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"written by a newer protoscope (format version {version}); this one reads "
            f"version {VERSION}"
        )
    if not isinstance(state.get("config"), dict):
        raise CheckpointError("the checkpoint holds no config")
    stored = state["config"]
    try:
        cfg = TrainConfig.model_validate(stored)
    except ValidationError as e:
        raise CheckpointError(f"the stored config is invalid: {e}") from None
    extra = state.get("extra") or {}
    if not isinstance(extra, dict):
        raise CheckpointError("the checkpoint's 'extra' is not a dict")
    num_train = extra.get("num_train") or 1
    num_classes = extra.get("num_classes")
    if not isinstance(num_train, int) or not isinstance(num_classes, int | None):
        raise CheckpointError("extra['num_train'] / extra['num_classes'] must be integers")
    try:
        model = build_model(cfg, num_train=num_train, num_classes=num_classes)
    except ValueError as e:
        raise CheckpointError(f"cannot rebuild the model from the stored config: {e}") from None
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise CheckpointError("the checkpoint holds no model weights ('model')")
    _load_strict(model, weights)
    epoch, step = _int_or_none(state.get("epoch")), _int_or_none(state.get("step"))
    return LoadedModel(model, cfg, "protoscope", epoch, step, state)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Any accepted checkpoint → a model in eval mode on `map_location`, with its config.

    Raises CheckpointError (naming `path`) for unreadable files, unknown layouts and weights
    that do not fit the model exactly.
    """
    state = load_checkpoint(path, map_location)
    try:
        fmt = detect_format(state)
        if fmt == "protoscope":
            loaded = _load_protoscope(state)
        elif fmt == "swav_official":
            loaded = _load_swav_official(state)
        else:
            loaded = _load_pcl_official(state)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    loaded.model.to(torch.device(map_location)).eval()
    return loaded
