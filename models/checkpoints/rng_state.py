"""Every RNG state a run depends on, captured into a checkpoint and restored on resume."""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.checkpoints.safe_io import CheckpointError


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
