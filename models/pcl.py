"""PCL (Li et al. 2021): MoCo pair + negatives queue, E-step k-means with faiss, φ, ProtoNCE.

Written from the paper and the facts in shared/ALGORITHMS.md. Deviations from the official
code, each for a reason: negatives are sampled from a tensor (the official `random.sample` on a
set fails on Python ≥ 3.11); no shuffle-BN (single-process CPU training has nothing to shuffle
across, and our DDP runs are small).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import PCLConfig
from models.method import FeatureFn, MethodModule, StepOutput


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def concentration(
    distances: Tensor,
    assignments: Tensor,
    num_clusters: int,
    alpha: float = 10.0,
    temperature: float = 0.2,
) -> Tensor:
    """Per-cluster concentration φ (K,) as PCL defines it.

    distances: (N,) each point's Euclidean (not squared) distance to its centroid;
    assignments: (N,) cluster index of each point.
    φ_c = mean distance / ln(Z_c + α); clusters with ≤ 1 point take the largest φ of the others;
    then clip to the [10th, 90th] percentile and rescale so that mean φ = temperature.
    """
    d = distances.detach().double().cpu()
    a = assignments.detach().long().cpu()
    sizes = torch.bincount(a, minlength=num_clusters).double()
    sums = torch.zeros(num_clusters, dtype=torch.float64).scatter_add_(0, a, d)
    phi = sums / sizes.clamp_min(1) / torch.log(sizes + alpha)
    big = sizes > 1
    fill = phi[big].max() if big.any() else torch.tensor(1.0, dtype=torch.float64)
    phi = torch.where(big, phi, fill)
    lo, hi = np.percentile(phi.numpy(), 10), np.percentile(phi.numpy(), 90)
    phi = phi.clamp(float(lo), float(hi))
    phi = temperature * phi / phi.mean()
    return phi.float()


@dataclass
class Clustering:
    """One k-means result of the E-step."""

    centroids: Tensor  # (K, d), L2-normalised
    assignments: Tensor  # (N,) int64
    phi: Tensor  # (K,)
    sizes: Tensor  # (K,) int64


def run_kmeans(
    features: Tensor,
    num_clusters: Sequence[int],
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    alpha: float = 10.0,
    temperature: float = 0.2,
) -> list[Clustering]:
    """faiss k-means for each K, then φ per cluster (the E-step).

    features: (N, d) L2-normalised features of the whole training set.
    """
    x = np.ascontiguousarray(features.detach().float().cpu().numpy())
    n, d = x.shape
    out = []
    for i, k in enumerate(num_clusters):
        if k > n:
            raise ValueError(f"cannot make {k} clusters from {n} points; lower num_clusters")
        km = faiss.Clustering(d, k)
        km.niter = niter
        km.nredo = nredo
        km.seed = seed + i  # seed = index of K, as upstream
        km.max_points_per_centroid = 1000
        km.min_points_per_centroid = 1  # small data sets: warn-free, unlike upstream's 10
        km.verbose = False
        index = faiss.IndexFlatL2(d)
        km.train(x, index)
        centroids = faiss.vector_float_to_array(km.centroids).reshape(k, d)
        sq_dist, assign = index.search(x, 1)
        assign_t = torch.from_numpy(assign[:, 0].astype(np.int64))
        dist_t = torch.from_numpy(np.sqrt(np.maximum(sq_dist[:, 0], 0.0)))
        phi = concentration(dist_t, assign_t, k, alpha, temperature)
        cent = F.normalize(torch.from_numpy(centroids).float(), dim=1)
        sizes = torch.bincount(assign_t, minlength=k)
        out.append(Clustering(cent, assign_t, phi, sizes))
    return out


def proto_nce_logits(
    q: Tensor,
    index: Tensor,
    clustering: Clustering,
    num_negatives: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Logits and targets of one clustering's prototype contrast.

    q: (B, d) normalised queries; index: (B,) data set indices of the batch.
    Positives are the centroids of the batch's own clusters (column i for sample i); negatives are
    centroids sampled without replacement from clusters positive for no sample in the batch.
    Each column is divided by its centroid's φ.
    """
    k = clustering.centroids.shape[0]
    device = q.device
    pos = clustering.assignments.to(device)[index]  # (B,)
    is_pos = torch.zeros(k, dtype=torch.bool, device=device)
    is_pos[pos] = True
    candidates = (~is_pos).nonzero().squeeze(1)
    perm = torch.randperm(candidates.numel(), generator=generator).to(device)
    neg = candidates[perm[:num_negatives]]
    ids = torch.cat([pos, neg])
    centroids = clustering.centroids.to(device)[ids]
    phi = clustering.phi.to(device)[ids]
    logits = (q @ centroids.t().to(q.dtype)) / phi.to(q.dtype)
    targets = torch.arange(q.shape[0], device=device)
    return logits, targets


class Encoder(nn.Module):
    """Backbone + projection head → L2-normalised embedding (parameter names: backbone, head)."""

    def __init__(self, backbone: nn.Module, cfg: PCLConfig) -> None:
        super().__init__()
        self.backbone = backbone
        out_dim = int(backbone.out_dim)
        if cfg.mlp:
            self.head = nn.Sequential(
                nn.Linear(out_dim, cfg.hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(cfg.hidden_dim, cfg.feat_dim),
            )
        else:
            self.head = nn.Sequential(nn.Linear(out_dim, cfg.feat_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)


class PCL(MethodModule):
    """Prototypical Contrastive Learning: InfoNCE + ProtoNCE over several clusterings."""

    def __init__(
        self, backbone_q: nn.Module, backbone_k: nn.Module, cfg: PCLConfig, num_train: int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder_q = Encoder(backbone_q, cfg)
        self.encoder_k = Encoder(backbone_k, cfg)
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer(
            "queue", F.normalize(torch.randn(cfg.feat_dim, cfg.queue_length), dim=0)
        )
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.num_train = num_train
        self.clusterings: list[Clustering] = []
        self._index: Tensor | None = None
        self._gen = torch.Generator()

    # --- persistence of the E-step's result (tensors only, for weights_only loading) -----------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "clusterings": [
                {
                    "centroids": c.centroids,
                    "assignments": c.assignments,
                    "phi": c.phi,
                    "sizes": c.sizes,
                }
                for c in self.clusterings
            ],
            "generator": self._gen.get_state(),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.clusterings = [Clustering(**c) for c in state.get("clusterings", [])]
        if "generator" in state:
            self._gen.set_state(state["generator"])

    # --- pieces -------------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        return self.encoder_q.backbone(x)

    def prototype_logits(self, x: Tensor) -> Tensor | None:
        if not self.clusterings:
            return None
        c = self.clusterings[0]
        q = self.encoder_q(x)
        # Cosine to the centroids: argmax is the k-means assignment (φ would shift it).
        return q @ c.centroids.to(q.device, q.dtype).t()

    def set_batch_index(self, index: Tensor) -> None:
        self._index = index

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        if _distributed():
            parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, keys.contiguous())
            keys = torch.cat(parts)
        n, length = keys.shape[0], self.queue.shape[1]
        ptr = int(self.queue_ptr)
        pos = (torch.arange(n, device=keys.device) + ptr) % length
        self.queue[:, pos] = keys.t().to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % length

    # --- trainer hooks ------------------------------------------------------------------------
    @torch.no_grad()
    def after_step(self, iteration: int, epoch: int) -> None:
        m = self.cfg.momentum
        for pk, pq in zip(self.encoder_k.parameters(), self.encoder_q.parameters(), strict=True):
            pk.mul_(m).add_(pq.detach(), alpha=1 - m)
        for bk, bq in zip(self.encoder_k.buffers(), self.encoder_q.buffers(), strict=True):
            bk.copy_(bq)

    def on_epoch_start(self, epoch: int, features: FeatureFn) -> dict[str, Any]:
        cfg = self.cfg
        if epoch < cfg.warmup_epochs:
            self.clusterings = []
            return {}
        feats = features(self.encoder_k)  # (N, d), every rank gets all of them
        if not _distributed() or dist.get_rank() == 0:
            clusterings = run_kmeans(
                feats,
                cfg.num_clusters,
                cfg.kmeans_iters,
                cfg.kmeans_redo,
                seed=0,
                alpha=cfg.alpha,
                temperature=cfg.temperature,
            )
        else:
            clusterings = [
                Clustering(
                    torch.zeros(k, feats.shape[1]),
                    torch.zeros(feats.shape[0], dtype=torch.long),
                    torch.zeros(k),
                    torch.zeros(k, dtype=torch.long),
                )
                for k in cfg.num_clusters
            ]
        if _distributed():  # k-means on rank 0, the result broadcast, as upstream
            device = feats.device
            for c in clusterings:
                for name in ("centroids", "assignments", "phi", "sizes"):
                    t = getattr(c, name).to(device)
                    dist.broadcast(t, src=0)
                    setattr(c, name, t.cpu())
        if cfg.fixed_phi:  # teaching ablation: no adaptive sharpening per cluster
            for c in clusterings:
                c.phi = torch.full_like(c.phi, cfg.temperature)
        self.clusterings = clusterings
        return {
            "num_clusters": list(cfg.num_clusters),
            "phi": [c.phi.tolist() for c in clusterings],
            "cluster_sizes": [c.sizes.tolist() for c in clusterings],
        }

    def training_step(
        self, views: list[Tensor], labels: Tensor | None, iteration: int, epoch: int
    ) -> StepOutput:
        cfg = self.cfg
        q = self.encoder_q(views[0])
        with torch.no_grad():
            k = self.encoder_k(views[1])
        qf, kf = q.float(), k.float()
        l_pos = (qf * kf).sum(dim=1, keepdim=True)
        l_neg = qf @ self.queue.clone().float()
        inst_logits = torch.cat([l_pos, l_neg], dim=1) / cfg.temperature
        zeros = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss_inst = F.cross_entropy(inst_logits, zeros)
        acc = float((inst_logits.argmax(1) == 0).float().mean())
        scalars = {"loss_infonce": float(loss_inst.detach()), "acc_inst": acc}
        loss = loss_inst
        logits_out = None
        if self.clusterings:
            if self._index is None:
                raise RuntimeError("PCL needs set_batch_index() before each training step")
            index = self._index.to(q.device)
            num_neg = cfg.num_negative_prototypes or cfg.queue_length
            proto_losses = []
            for c in self.clusterings:
                logits, targets = proto_nce_logits(qf, index, c, num_neg, self._gen)
                proto_losses.append(F.cross_entropy(logits, targets))
            loss_proto = torch.stack(proto_losses).mean()
            loss = loss + loss_proto
            scalars["loss_protonce"] = float(loss_proto.detach())
            c0 = self.clusterings[0]
            with torch.no_grad():
                logits_out = qf @ c0.centroids.to(q.device).t()
        self._enqueue(kf.detach())
        return StepOutput(loss=loss, logits=logits_out, scalars=scalars)
