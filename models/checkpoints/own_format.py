"""Our own checkpoint format: what the trainer writes and how it is read back."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from models.checkpoints.layouts import FORMAT, VERSION
from models.checkpoints.safe_io import CheckpointError
from models.checkpoints.strict_loading import LoadedModel, _int_or_none, _load_strict
from models.config import TrainConfig


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
