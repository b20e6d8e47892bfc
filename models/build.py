"""Build the model a TrainConfig describes."""

from __future__ import annotations

from models.backbones import build_backbone
from models.config import TrainConfig
from models.method import MethodModule


def build_model(cfg: TrainConfig, num_train: int, num_classes: int | None = None) -> MethodModule:
    """The method module for `cfg`, with freshly initialised weights.

    num_train: size of the training set (PCL's E-step keeps one assignment per image);
    num_classes: needed by the supervised baseline only.
    """
    if cfg.method == "swav":
        from models.swav import SwAV

        return SwAV(build_backbone(cfg.backbone, cfg.width), cfg.swav)
    if cfg.method == "pcl":
        from models.pcl import PCL

        return PCL(
            build_backbone(cfg.backbone, cfg.width),
            build_backbone(cfg.backbone, cfg.width),
            cfg.pcl,
            num_train,
        )
    if cfg.method == "supervised":
        from models.supervised import Supervised

        if not num_classes:
            raise ValueError("the supervised baseline needs a labelled data set")
        return Supervised(build_backbone(cfg.backbone, cfg.width), num_classes)
    raise ValueError(f"unknown method {cfg.method!r}; choose swav, pcl or supervised")
