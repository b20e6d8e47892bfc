"""`diagnose_checkpoint`: the single entry point the CLI and the backend call — a checkpoint's
features on a data set split (shared feature cache), kNN against a train bank, the report."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch.nn.functional as F
from torch import Tensor

from models.collapse_rules import (
    early_note,
)
from models.diagnostics.measures import PhiVsSize, cluster_assignments, phi_vs_size
from models.diagnostics.report import DiagnosticReport, diagnose_tensors, json_value

if TYPE_CHECKING:  # the heavy modules are imported where they are used
    from models.config import TrainConfig
    from models.data import ImageSet
    from models.features import Features, Inputs
    from models.method import MethodModule


# --- from a checkpoint --------------------------------------------------------------------------
def _pcl_clusterings(model: MethodModule, projected: Tensor | None) -> list[PhiVsSize] | None:
    """φ vs size for every clustering of a PCL model, sized on the evaluated images."""
    clusterings = getattr(model, "clusterings", None)
    if not clusterings or projected is None:
        return None
    return [
        phi_vs_size(
            c.phi.detach().cpu(),
            cluster_assignments(projected, c.centroids.detach().cpu()),
            c.sizes.detach().cpu(),
        )
        for c in clusterings
    ]


def measure_inputs(
    inputs: Inputs, recent_steps: Sequence[Mapping[str, Any]] | None = None
) -> tuple[dict[str, Any], list[PhiVsSize] | None]:
    """Everything Diagnose says of a checkpoint's features but the kNN: (the verdict with its
    reason and every measure, PCL's φ vs size per clustering or None). Diagnose and a
    timeline's frames both call it, so the two cannot judge one checkpoint differently."""
    loaded, feats = inputs.loaded, inputs.features
    metrics = _measure(loaded.config, feats, loaded.recent_steps or recent_steps)
    metrics["reason"] += early_note(metrics["verdict"], loaded.source, loaded.epochs_done)
    return metrics, _pcl_clusterings(loaded.model, feats.projected)


def diagnose_checkpoint(
    checkpoint: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    max_images: int | None = 2000,
    recent_steps: Sequence[Mapping[str, Any]] | None = None,
    progress: Callable[[float, str], None] | None = None,
    amp: str = "auto",
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The diagnostic report of `checkpoint` on the first `max_images` images of `split`.

    `dataset` / `data_root` override the data set the checkpoint was trained on. kNN top-1
    (k = 20, T = 0.07) is a fraction in [0, 1] (`weighted_knn_top1` returns one): the train
    split's backbone features (at most `knn_bank_size`) are the bank and the evaluated images the
    queries; for split="train" the bank is the train images after the evaluated ones, and kNN
    is None when none are left. The training-log rules read the step events the checkpoint
    records (written by models/train.py); `recent_steps` stands in for a file that records none
    (the backend passes the run's stored steps up to the checkpoint's).
    `progress(fraction, message)` is called with fractions from 0 to 1.

    Raises CheckpointError for an unusable checkpoint, DatasetError for unusable data and
    ValueError for bad arguments. Returns `DiagnosticReport.model_dump()`.
    """
    from models.features import load_inputs

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be ≥ 1 or None, got {max_images}")
    path = Path(checkpoint)
    report(0.0, "loading checkpoint")
    # Steps and their share of the bar: features of the evaluated images 0–50 %, the kNN
    # bank 50–90 %, the measurements the rest.
    inputs = load_inputs(
        path, dataset, data_root, split, max_images, lambda f, m: report(0.5 * f, m), amp, cache_dir
    )
    loaded, data_cfg = inputs.loaded, inputs.data
    cfg = loaded.config
    knn = _knn_top1(inputs, split, amp, cache_dir, lambda f, m: report(0.5 + 0.4 * f, m))
    report(0.9, "measuring")
    metrics, pcl = measure_inputs(inputs, recent_steps)
    epochs_done = loaded.epochs_done
    out = DiagnosticReport(
        **metrics,
        method=cfg.method,
        checkpoint=str(path),
        source=loaded.source,
        epoch=epochs_done,
        epochs_done=loaded.epochs_fraction,
        step=loaded.step,
        dataset=data_cfg.name,
        split=split,
        phi=pcl[0].phi if pcl else None,
        cluster_sizes=pcl[0].cluster_sizes if pcl else None,
        pcl_clusterings=[asdict(p) for p in pcl] if pcl else None,
        num_classes=len(inputs.images.classes) if inputs.images.classes else None,
        knn_top1=knn,
    ).model_dump()
    out = {k: json_value(v) for k, v in out.items()}
    from models.metric_readings import readings  # lazily: it is only needed here

    out["readings"] = readings(out)
    report(1.0, "done")
    return out


def _measure(
    config: TrainConfig, feats: Features, recent_steps: Sequence[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """`diagnose_tensors` on a model's features, choosing the space and what applies."""
    space: Literal["projected", "backbone"] = "projected"
    z = feats.projected
    if z is None:
        space, z = "backbone", F.normalize(feats.backbone, dim=1)
    # The supervised baseline's "prototype logits" are its classifier's class scores: not
    # prototypes, so its report has no prototype metrics and is judged on the embedding.
    has_protos = config.method != "supervised"
    metrics = diagnose_tensors(
        z,
        feats.logits if has_protos else None,
        config.prediction_temperature,
        feats.prototypes if has_protos else None,
        recent_steps,
        feats.labels,
        config.method,
    )
    return {**metrics, "embedding_space": space}


def _knn_top1(
    inputs: Inputs,
    split: str,
    amp: str,
    cache_dir: str | Path | None,
    report: Callable[[float, str], None],
) -> float | None:
    """Weighted kNN top-1 (fraction) of the evaluated images against a bank of train images.

    The bank is the first `knn_bank_size` train images, backbone features only (the one thing
    kNN reads), from the shared feature cache when an earlier analysis computed them. When the
    queries come from the train split they are its first images, and a query must not find
    itself in the bank, so the bank then starts after them. None without labels or without
    bank images.
    """
    from models.data import load_dataset
    from models.evaluate import knn_bank_size, weighted_knn_top1
    from models.features import FeatureKey, cached_features

    queries = inputs.features
    if queries.labels is None:
        return None
    skip = queries.num_images if split == "train" else 0

    def train_images() -> ImageSet:
        if split == "train":
            return inputs.images
        report(0.0, f"loading {inputs.data.name} (train) for the kNN bank")
        return load_dataset(inputs.data, "train")

    key = FeatureKey(inputs.loaded_path, inputs.data, "train", inputs.input_side, amp)
    bank = cached_features(
        key,
        train_images,
        lambda: inputs.loaded.model,
        skip + knn_bank_size(inputs.loaded.config.backbone),
        cache_dir,
        report,
        backbone_only=True,
        what="kNN bank",
    )
    if bank.labels is None or bank.num_images <= skip:
        return None
    return weighted_knn_top1(
        bank.backbone[skip:], bank.labels[skip:], queries.backbone, queries.labels
    )  # the product's one kNN protocol: models/evaluate.py's KNN_K and KNN_T
