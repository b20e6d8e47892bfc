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

from pathlib import Path

import torch

from models.checkpoints.layouts import ACCEPTED_LAYOUTS, FORMAT, VERSION, Format, detect_format
from models.checkpoints.official import _load_pcl_official, _load_swav_official
from models.checkpoints.own_format import _load_protoscope, make_payload
from models.checkpoints.rng_state import capture_rng_state, restore_rng_state
from models.checkpoints.safe_io import CheckpointError, load_checkpoint, save_checkpoint
from models.checkpoints.strict_loading import LoadedModel

__all__ = [
    "ACCEPTED_LAYOUTS",
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "Format",
    "LoadedModel",
    "capture_rng_state",
    "detect_format",
    "load_checkpoint",
    "load_model",
    "make_payload",
    "restore_rng_state",
    "save_checkpoint",
]


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
