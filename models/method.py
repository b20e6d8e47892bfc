"""What the trainer needs from a method (SwAV, PCL, supervised): one small protocol.

The trainer owns data, augmentation, optimiser, schedule, checkpoints and events; a method owns
its networks and its loss. Keeping the seam this narrow is what lets one loop train both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

# Given a function that maps a batch of un-augmented images (B, 3, H, W, float, normalised) to
# features (B, d), return those features for the whole training set in index order (N, d).
# The trainer implements it (batched, no grad, sharded and gathered across DDP ranks).
FeatureFn = Callable[[Callable[[Tensor], Tensor]], Tensor]


@dataclass
class Analysis:
    """What the analysis reads of one batch, from a single backbone pass (see `analyse`)."""

    embed: Tensor  # (B, D) backbone features
    projected: Tensor | None  # (B, d) unit rows in the prototypes' space, or None
    logits: Tensor | None  # (B, K) scores against the prototypes, or None


@dataclass
class StepOutput:
    """The result of one training step's forward pass."""

    loss: Tensor
    # Scores of the batch against the method's prototypes (B, K) for the first view, from which
    # the trainer measures prototype usage on *predictions*; None when the method has none yet
    # (PCL during warm-up).
    logits: Tensor | None = None
    # Extra scalars for the step event (e.g. the InfoNCE and ProtoNCE parts of PCL's loss).
    scalars: dict[str, float] = field(default_factory=dict)


class MethodModule(nn.Module):
    """Base class with the trainer's hooks; each does nothing unless a method overrides it."""

    def forward(
        self, views: list[Tensor], labels: Tensor | None, iteration: int, epoch: int
    ) -> StepOutput:
        # `forward` is the training step so DistributedDataParallel's gradient hooks see it.
        return self.training_step(views, labels, iteration, epoch)

    def set_batch_index(self, index: Tensor) -> None:
        """The data set indices of the coming batch (PCL looks up its images' clusters)."""

    def training_step(
        self, views: list[Tensor], labels: Tensor | None, iteration: int, epoch: int
    ) -> StepOutput:
        """Forward the augmented views (large crops first) and return the loss."""
        raise NotImplementedError

    def before_step(self, iteration: int, epoch: int) -> None:
        """Called before the forward pass (SwAV re-normalises its prototypes here)."""

    def after_backward(self, iteration: int, epoch: int) -> None:
        """Called between backward and the optimiser step (SwAV freezes prototypes here)."""

    def after_step(self, iteration: int, epoch: int) -> None:
        """Called after the optimiser step (PCL's momentum update)."""

    def on_epoch_start(self, epoch: int, features: FeatureFn) -> dict[str, Any]:
        """Called before each epoch (PCL's E-step); returns data for the epoch event."""
        return {}

    def embed(self, x: Tensor) -> Tensor:
        """Backbone features used for kNN evaluation and maps (B, out_dim)."""
        raise NotImplementedError

    def prototype_logits(self, x: Tensor) -> Tensor | None:
        """Scores of images against the prototypes (B, K), or None when there are none."""
        return None

    def project(self, x: Tensor) -> Tensor | None:
        """L2-normalised embeddings in the space the prototypes live in (B, d), or None."""
        return None

    def prototype_vectors(self) -> Tensor | None:
        """The prototypes as unit rows (K, d) in the `project` space; None when there are none."""
        return None

    def prototype_phi(self) -> Tensor | None:
        """PCL's concentration φ per prototype (K,) of the first clustering; None elsewhere."""
        return None

    def analyse(self, x: Tensor) -> Analysis:
        """embed, project and prototype_logits of one batch.

        Methods override this to run the backbone once: calling the three separately runs it
        three times, which made the analysis of a ResNet-50 three times as slow as it needs to be.
        """
        return Analysis(self.embed(x), self.project(x), self.prototype_logits(x))

    def prototype_logits_or_empty(self, x: Tensor) -> Tensor:
        """prototype_logits, with (B, 0) standing for 'no prototypes yet'."""
        out = self.prototype_logits(x)
        return out if out is not None else x.new_zeros((x.shape[0], 0))
