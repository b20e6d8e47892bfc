"""The Runs page's form, as pure data: ablation switches and the POST /runs body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# switch → (label, what it does and what to expect); shown next to each checkbox.
ABLATIONS: dict[str, tuple[str, str]] = {
    "no_equipartition": (
        "SwAV: equipartition off",
        "Targets become the model's own softmax instead of the balanced Sinkhorn codes. Expect "
        "one-cluster collapse within seconds: 1–2 active prototypes, the heatmap shows one bright "
        "row, kNN drops to chance.",
    ),
    "no_freeze": (
        "SwAV: no prototype freeze",
        "Prototypes learn from the first step instead of staying fixed at first. Expect a less "
        "stable start: usage swings in the first epochs.",
    ),
    "fixed_phi": (
        "PCL: fixed φ",
        "Every cluster's concentration φ is the temperature τ. PCL loses its per-cluster "
        "sharpening; the φ charts go flat.",
    ),
}


def run_payload(form: Mapping[str, Any]) -> dict[str, Any]:
    """The POST /runs body from the form's values (ablations become config switches)."""
    payload: dict[str, Any] = {
        "method": form["method"],
        "recipe": form.get("recipe") or "cpu",
        "dataset": form["dataset"],
        "backbone": form["backbone"],
        "epochs": int(form["epochs"]),
        "batch_size": int(form["batch_size"]),
        "temperature": float(form["temperature"]),
        "epsilon": float(form["epsilon"]),
    }
    if form["method"] == "swav":
        payload["num_prototypes"] = int(form["k"])
        payload["equipartition"] = not form["no_equipartition"]
        if form["no_freeze"]:
            payload["freeze_prototypes_iters"] = 0
            payload["overrides"] = {"swav.freeze_prototypes_epochs": 0}  # the paper's 1 epoch
    else:
        payload["num_clusters"] = [int(k) for k in form["pcl_k"]]
        payload["fixed_phi"] = bool(form["fixed_phi"])
    if form.get("max_minutes"):
        payload["max_minutes"] = float(form["max_minutes"])
    if form.get("max_steps"):
        payload["max_steps"] = int(form["max_steps"])
    if form.get("amp"):
        payload["amp"] = str(form["amp"])
    if form.get("name"):
        payload["name"] = form["name"]
    return payload


def parse_ks(text: str) -> list[int]:
    return [int(t) for t in text.replace(";", ",").split(",") if t.strip()]
