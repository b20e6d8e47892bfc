"""Import of the official releases: SwAV (facebookresearch/swav) and PCL (salesforce/PCL)."""

from __future__ import annotations

import re
import warnings
from typing import Any

from torch import Tensor

from models.checkpoints.layouts import _inner_state, _sample
from models.checkpoints.safe_io import CheckpointError
from models.checkpoints.strict_loading import (
    LoadedModel,
    _check_backbone_width,
    _config,
    _int_or_none,
    _load_strict,
    _metadata,
    _optional_official,
    _shape,
)

# --- official SwAV ------------------------------------------------------------------------------
_HEAD_KEY = re.compile(r"prototypes\.prototypes(\d+)\.weight")


def _load_swav_official(state: dict[str, Any]) -> LoadedModel:
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
    # ε = 0.05 is the official default the released models were trained with.
    section = {
        "num_prototypes": num_prototypes,
        "hidden_dim": hidden,
        "feat_dim": feat_dim,
        "epsilon": 0.05,
    }
    own_names = ("projection_head.", "prototypes.")
    mapped = {(k if str(k).startswith(own_names) else f"backbone.{k}"): v for k, v in inner.items()}
    return _released_resnet50("swav", section, mapped, state, payload, notes)


def _released_resnet50(
    method: str,
    section: dict[str, Any],
    mapped: dict[str, Any],
    state: dict[str, Any],
    payload: dict[str, Any],
    notes: list[str],
) -> LoadedModel:
    """Both releases are ResNet-50s at 224 px: build ours with the method's `section` of the
    configuration and load the renamed weights into it, strictly."""
    from models.build import build_model

    cfg = _config(method=method, backbone="resnet50", data={"image_size": 224}, **{method: section})
    model = build_model(cfg, num_train=1)
    _load_strict(model, mapped, _optional_official)
    payload["import_notes"] = notes
    epoch = _int_or_none(state.get("epoch"))
    return LoadedModel(model, cfg, payload["format"], epoch, None, payload, notes)


# --- official PCL -------------------------------------------------------------------------------
def _load_pcl_official(state: dict[str, Any]) -> LoadedModel:
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
    section = {
        "feat_dim": feat_dim,
        "hidden_dim": hidden,
        "mlp": mlp,
        "head_bn": False,  # the official head is Linear-ReLU-Linear
        "queue_length": queue_length,
        "momentum": 0.999,  # the official value
    }

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
    return _released_resnet50("pcl", section, mapped, state, payload, notes)
