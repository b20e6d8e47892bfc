"""SwAV (Caron et al. 2020): Sinkhorn codes, swapped prediction, prototypes, optional queue.

Written from the paper and the facts in shared/ALGORITHMS.md. One deliberate change from the
official code: Sinkhorn runs in log space, so it stays finite at small ε where exp(score / ε)
overflows float32; the result equals the official one wherever that one is finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from models.backbones import feature_width
from models.config import SwAVConfig
from models.distributed import is_distributed
from models.method import Analysis, MethodModule, StepOutput


def _logsumexp(x: Tensor, dim: int | None, all_reduce: bool) -> Tensor:
    """log Σ exp(x) over `dim` (None: everything), optionally summed over all ranks too.

    Across ranks the maximum is agreed first (all-reduce MAX) and then the shifted sums are
    all-reduced, which is the stable way to all-reduce a sum of exponentials. On one process
    torch's fused logsumexp does the same in one pass (keepdim, like the branch below).
    """
    if not all_reduce:
        return torch.logsumexp(
            x.reshape(-1) if dim is None else x, 0 if dim is None else dim, keepdim=dim is not None
        )
    m = x.max().reshape(1) if dim is None else x.max(dim=dim, keepdim=True).values
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    shifted = torch.exp(x - m)
    s = shifted.sum() if dim is None else shifted.sum(dim=dim, keepdim=True)
    s = s.reshape(m.shape)
    dist.all_reduce(s)
    out = m + torch.log(s)
    return out.reshape(()) if dim is None else out


def backbone_by_size(backbone: Callable[[Tensor], Tensor], views: list[Tensor]) -> Tensor:
    """Backbone features of all crops, each run of equal-sized crops in one batch (SwAV's trick:
    one forward pass per resolution instead of one per crop). Rows follow the order of views."""
    feats: list[Tensor] = []
    start = 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape[-1] == views[start].shape[-1]:
            end += 1
        feats.append(backbone(torch.cat(views[start:end])))
        start = end
    return torch.cat(feats)


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, n_iters: int = 3) -> Tensor:
    """Equipartitioned soft assignments (codes) for a batch of prototype scores.

    scores: (B, K) cosine scores of this rank's samples against the K prototypes.
    Returns (B, K) codes, each row summing to 1 — the official `distributed_sinkhorn` output
    (its final `Q *= B`, transposed back). Under torch.distributed, B is the global batch and
    the total and per-prototype sums are all-reduced; the per-sample sums stay local, as upstream.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, K), got shape {tuple(scores.shape)}")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    distributed = is_distributed()
    log_q = scores.detach().float().t() / epsilon  # (K, B)
    num_prototypes = log_q.shape[0]
    batch = log_q.shape[1]
    if distributed:
        total = torch.tensor([batch], device=log_q.device, dtype=torch.long)
        dist.all_reduce(total)
        batch = int(total.item())
    log_k, log_b = math.log(num_prototypes), math.log(batch)
    # In place: log_q is this function's own copy, and at B·K = 4096 · 3000 the fresh
    # allocations of out-of-place updates were most of the time.
    log_q.sub_(_logsumexp(log_q, None, distributed))
    for _ in range(n_iters):
        # Each prototype (row) gets total mass 1/K ...
        log_q.sub_(_logsumexp(log_q, 1, distributed) + log_k)
        # ... and each sample (column) total mass 1/B.
        log_q.sub_(_logsumexp(log_q, 0, False) + log_b)
    return log_q.add_(log_b).exp_().t().contiguous()


def swapped_prediction_loss(
    scores: list[Tensor], codes: dict[int, Tensor], temperature: float
) -> Tensor:
    """SwAV's loss: each assignment crop's codes predicted from every other crop.

    scores: per crop, (B, K) scores against the prototypes; codes: crop index -> (B, K) targets.
    loss = mean over assignment crops a of mean over crops v ≠ a of
           −mean_i Σ_k q_a[i, k] log softmax(scores_v[i] / τ)[k].
    """
    if len(scores) < 2:
        raise ValueError("the swapped prediction needs at least two crops")
    total = scores[0].new_zeros((), dtype=torch.float32)
    for a, q in codes.items():
        sub = q.new_zeros((), dtype=torch.float32)
        for v, s in enumerate(scores):
            if v == a:
                continue
            log_p = F.log_softmax(s.float() / temperature, dim=1)
            sub = sub - (q * log_p).sum(dim=1).mean()
        total = total + sub / (len(scores) - 1)
    return total / len(codes)


class SwAV(MethodModule):
    """Backbone → projection MLP → L2 normalise → prototypes, trained by swapped prediction.

    Parameter names follow the official model (`projection_head.0/1/3`, `prototypes`) so the
    released checkpoints map onto it by prefix.
    """

    queue: Tensor  # a buffer, declared for the type checker

    def __init__(self, backbone: nn.Module, cfg: SwAVConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        out_dim = feature_width(backbone)
        self.projection_head = nn.Sequential(
            nn.Linear(out_dim, cfg.hidden_dim),
            nn.BatchNorm1d(cfg.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden_dim, cfg.feat_dim),
        )
        self.prototypes = nn.Linear(cfg.feat_dim, cfg.num_prototypes, bias=False)
        n_assign = len(cfg.crops_for_assign)
        # Under DDP each rank keeps queue_length / world_size rows, as the official code does:
        # Sinkhorn sums over all ranks, so the queue it sees is queue_length long in total (a
        # whole queue per rank made it world_size times longer than asked).
        world = dist.get_world_size() if is_distributed() else 1
        self.queue_rows = cfg.queue_length // world
        if cfg.queue_length and self.queue_rows == 0:
            raise ValueError(
                f"swav.queue_length = {cfg.queue_length} is shorter than the {world} ranks: "
                "give each rank at least one row"
            )
        # The queue holds embeddings (not scores): their scores are recomputed with the current
        # prototypes each step. A buffer, so a resumed run continues with the same queue.
        self.register_buffer(
            "queue", torch.zeros(n_assign, self.queue_rows, cfg.feat_dim), persistent=True
        )

    def resize_queue(self, rows: int) -> None:
        """Make room for a queue of `rows` rows per rank (loading a checkpoint of a DDP run,
        whose ranks kept queue_length / world_size rows each)."""
        self.queue_rows = rows
        self.queue = self.queue.new_zeros(self.queue.shape[0], rows, self.queue.shape[2])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # A checkpoint of a DDP run holds one rank's queue (queue_length / world_size rows):
        # take its length, so any loader (resume, analysis) reads it without a special case.
        queue = state_dict.get(prefix + "queue")
        if (
            isinstance(queue, Tensor)
            and queue.dim() == 3
            and queue.shape[1] != self.queue.shape[1]
            and (queue.shape[0], queue.shape[2]) == (self.queue.shape[0], self.queue.shape[2])
        ):
            self.resize_queue(int(queue.shape[1]))
        super()._load_from_state_dict(state_dict, prefix, *args)

    # --- pieces -------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def _head(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Unit embeddings z and their prototype scores, both float32 under any autocast.

        The scores are cosines that Sinkhorn divides by ε (0.02–0.05) before exp: from bf16
        autocast (3 significant digits) the codes moved by up to 2·10⁻² (ε 0.05) and 8·10⁻²
        (ε 0.02). So the head — projection MLP, normalisation, prototypes — always runs in
        float32 on the backbone's features; it is a few small matrix products per crop, noise
        next to the backbone, which is where reduced precision pays.
        """
        with torch.autocast(features.device.type, enabled=False):
            z = F.normalize(self.projection_head(features.float()), dim=1)
            return z, self.prototypes(z)

    def project(self, x: Tensor) -> Tensor:
        """L2-normalised embeddings z (B, feat_dim), float32."""
        return self._head(self.backbone(x))[0]

    def prototype_logits(self, x: Tensor) -> Tensor:
        return self._head(self.backbone(x))[1]

    def analyse(self, x: Tensor) -> Analysis:
        b = self.backbone(x)
        z, scores = self._head(b)
        return Analysis(b, z, scores)

    def prototype_vectors(self) -> Tensor:
        return F.normalize(self.prototypes.weight.detach().float(), dim=1)

    def _forward_crops(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Embeddings and scores of all crops, crops of one size batched through the backbone."""
        return self._head(backbone_by_size(self.backbone, views))

    # --- trainer hooks ------------------------------------------------------------------
    @torch.no_grad()
    def before_step(self, iteration: int, epoch: int) -> None:
        w = self.prototypes.weight
        w.copy_(F.normalize(w.float(), dim=1).to(w.dtype))

    def after_backward(self, iteration: int, epoch: int) -> None:
        # Frozen prototypes at the start stabilise training: the first assignments come from
        # random prototypes, and letting them chase those assignments invites collapse.
        if (
            iteration < self.cfg.freeze_prototypes_iters
            or epoch < self.cfg.freeze_prototypes_epochs
        ):
            self.prototypes.weight.grad = None

    def training_step(
        self, views: list[Tensor], labels: Tensor | None, iteration: int, epoch: int
    ) -> StepOutput:
        cfg = self.cfg
        batch = views[0].shape[0]
        z, scores = self._forward_crops(views)
        per_crop = list(scores.split(batch))
        codes: dict[int, Tensor] = {}
        use_queue = self.queue_rows > 0 and epoch >= cfg.epoch_queue_starts
        for i, crop in enumerate(cfg.crops_for_assign):
            with torch.no_grad():
                out = per_crop[crop].detach().float()
                if not cfg.equipartition:
                    # Teaching ablation: targets are the model's own sharpened predictions. With
                    # nothing forcing an even split, one prototype soon takes every image.
                    codes[crop] = F.softmax(out / cfg.temperature, dim=1)
                    continue
                if use_queue:
                    # Only a full queue is used (its last row is filled last).
                    if bool(self.queue[i, -1].abs().sum() > 0):
                        queue_scores = self.queue[i] @ self.prototypes.weight.detach().float().t()
                        out = torch.cat([queue_scores, out])
                    new = z[crop * batch : (crop + 1) * batch].detach().float()
                    self.queue[i] = torch.cat([new, self.queue[i, :-batch]])[: self.queue_rows]
                codes[crop] = sinkhorn(out, cfg.epsilon, cfg.sinkhorn_iterations)[-batch:]
        loss = swapped_prediction_loss(per_crop, codes, cfg.temperature)
        return StepOutput(loss=loss, logits=per_crop[0].detach())
