"""Strict loading of weights into a model, and what a loaded checkpoint carries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from torch import Tensor, nn

from models.checkpoints.layouts import _RESNET50_DIM, _SHOW, Format
from models.checkpoints.safe_io import CheckpointError, _first_line
from models.config import TrainConfig
from models.method import MethodModule


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

    model: MethodModule
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
