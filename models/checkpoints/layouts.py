"""Which of the accepted layouts a loaded checkpoint has."""

from __future__ import annotations

from typing import Any, Literal

from models.checkpoints.safe_io import CheckpointError

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
