"""Supervised baseline: the same backbone with a linear classifier, for the benchmark's ceiling."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from models.backbones import feature_width
from models.method import Analysis, MethodModule, StepOutput


class Supervised(MethodModule):
    """Cross-entropy on the labels of the first view; the other views are ignored."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(feature_width(backbone), num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def prototype_logits(self, x: Tensor) -> Tensor:
        return self.classifier(self.backbone(x))

    def analyse(self, x: Tensor) -> Analysis:
        b = self.backbone(x)
        return Analysis(b, None, self.classifier(b))

    def training_step(
        self, views: list[Tensor], labels: Tensor | None, iteration: int, epoch: int
    ) -> StepOutput:
        if labels is None:
            raise ValueError("the supervised baseline needs a labelled data set")
        logits = self.classifier(self.backbone(views[0]))
        loss = F.cross_entropy(logits.float(), labels)
        acc = (logits.argmax(1) == labels).float().mean().item()
        return StepOutput(loss=loss, logits=logits.detach(), scalars={"train_acc": acc})
