"""PCL's networks: the query and key encoders (a MoCo pair with a negatives queue) and the
method module that runs the E-step each epoch and the InfoNCE + ProtoNCE step."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from models.backbones import feature_width
from models.config import PCLConfig
from models.distributed import all_gather_cat, is_distributed
from models.method import Analysis, FeatureFn, MethodModule, StepOutput
from models.pcl.estep import Clustering, run_kmeans
from models.pcl.proto_nce import proto_nce_logits


class Encoder(nn.Module):
    """Backbone + projection head → L2-normalised embedding.

    The names `backbone` and `head` (head.0 / head.2, or head.0 without MLP) are what the
    official checkpoints' `fc.*` / backbone keys are mapped onto; keep them.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        hidden_dim: int | None,
        mlp: bool,
        head_bn: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        out_dim = feature_width(backbone)
        hidden_dim = hidden_dim or out_dim  # None: MoCo v2's head, as wide as the backbone
        if mlp and head_bn:
            # BatchNorm in the hidden layer (as SwAV's and SimCLR's heads have) standardises
            # every hidden unit over the batch, so the embeddings cannot start out, or drift
            # towards, all pointing the same way; see PCLConfig.head_bn.
            self.head = nn.Sequential(
                nn.Linear(out_dim, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, feat_dim),
            )
        elif mlp:
            self.head = nn.Sequential(
                nn.Linear(out_dim, hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, feat_dim),
            )
        else:
            self.head = nn.Sequential(nn.Linear(out_dim, feat_dim))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, feat_dim), unit rows, float32 even under autocast."""
        return F.normalize(self.head(self.backbone(x)).float(), dim=1)


class PCL(MethodModule):
    """Prototypical Contrastive Learning: InfoNCE against a queue + ProtoNCE over clusterings.

    The trainer must call `set_batch_index(index)` with the batch's data set indices before
    every `training_step`: ProtoNCE looks up each image's cluster by its index.
    """

    queue: Tensor  # buffers, declared for the type checker
    queue_ptr: Tensor

    def __init__(
        self, backbone_q: nn.Module, backbone_k: nn.Module, cfg: PCLConfig, num_train: int
    ) -> None:
        super().__init__()
        if num_train >= 2 and max(cfg.num_clusters) > num_train:
            raise ValueError(
                f"num_clusters {list(cfg.num_clusters)} exceeds the {num_train} training images"
            )
        self.cfg = cfg
        self.num_train = num_train
        self.encoder_q = Encoder(backbone_q, cfg.feat_dim, cfg.hidden_dim, cfg.mlp, cfg.head_bn)
        self.encoder_k = Encoder(backbone_k, cfg.feat_dim, cfg.hidden_dim, cfg.mlp, cfg.head_bn)
        # The key encoder starts as an exact copy (weights and BN statistics) and then only
        # follows the query encoder by EMA; no gradient ever reaches it.
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        # (feat_dim, r), the official layout, so official checkpoints load unchanged.
        self.register_buffer(
            "queue", F.normalize(torch.randn(cfg.feat_dim, cfg.queue_length), dim=0)
        )
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.clusterings: list[Clustering] = []
        # None: negatives come from torch's global RNG, which the trainer checkpoints.
        self.generator: torch.Generator | None = None
        self._batch_index: Tensor | None = None
        self._estep_epoch = -1  # the epoch whose E-step produced self.clusterings

    @property
    def num_negatives(self) -> int:
        """r negative prototypes per clustering (the queue length unless set; as upstream)."""
        return self.cfg.num_negative_prototypes or self.cfg.queue_length

    # --- persistence of the E-step (tensors, lists and str keys only: weights_only loads) ----
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "clusterings": [list(c.tensors()) for c in self.clusterings],
            "estep_epoch": self._estep_epoch,
        }

    def set_extra_state(self, state: Any) -> None:
        device = self.queue.device
        self.clusterings = [Clustering(*c).to(device) for c in state.get("clusterings", [])]
        self._estep_epoch = int(state.get("estep_epoch", -1))

    # --- inference ------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        return self.encoder_q.backbone(x)

    def prototype_logits(self, x: Tensor) -> Tensor | None:
        """Cosines (B, K) of the queries to the first clustering's centroids, None before it.

        No φ here: the argmax is then the k-means assignment, which is what usage measures.
        """
        if not self.clusterings:
            return None
        return self.analyse(x).logits

    def project(self, x: Tensor) -> Tensor:
        return self.encoder_q(x)

    def analyse(self, x: Tensor) -> Analysis:
        b = self.encoder_q.backbone(x)
        q = F.normalize(self.encoder_q.head(b).float(), dim=1)
        logits = None
        if self.clusterings:
            with torch.autocast(q.device.type, enabled=False):  # cosines in float32
                logits = q @ self.clusterings[0].centroids.to(q.device, q.dtype).t()
        return Analysis(b, q, logits)

    def prototype_vectors(self) -> Tensor | None:
        """The first clustering's centroids (unit rows), None before the first E-step."""
        if not self.clusterings:
            return None
        return F.normalize(self.clusterings[0].centroids.detach().float(), dim=1)

    def prototype_phi(self) -> Tensor | None:
        return self.clusterings[0].phi.detach().float() if self.clusterings else None

    # --- training -------------------------------------------------------------------------
    def set_batch_index(self, index: Tensor) -> None:
        """Store the coming batch's data set indices (B,); the next training_step uses them."""
        self._batch_index = index

    def _splits(self, batch: int) -> int:
        """BatchNorm groups of one process's batch: cfg.bn_splits when it divides the batch."""
        splits = self.cfg.bn_splits
        if splits > 1 and batch % splits == 0 and batch // splits >= 2:
            return splits
        return 1

    def _queries(self, x: Tensor) -> Tensor:
        """Query embeddings; in `bn_splits` groups (in order) when shuffle-BN is simulated."""
        splits = 1 if is_distributed() else self._splits(x.shape[0])
        if splits == 1:
            return self.encoder_q(x)
        return torch.cat([self.encoder_q(part) for part in x.chunk(splits)])

    @torch.no_grad()
    def _keys(self, x: Tensor) -> Tensor:
        """Key embeddings (B, feat_dim) of the key crops; shuffle-BN across ranks under DDP.

        Shuffling which rank encodes which image keeps BatchNorm statistics from leaking the
        positive pair (MoCo §3.3); every rank needs the same local batch size.
        """
        if not is_distributed():
            splits = self._splits(x.shape[0])
            if splits == 1:
                return self.encoder_k(x)
            # Shuffle-BN on one process: the keys go through in `splits` groups of a random
            # permutation, each group with BatchNorm statistics of its own, so a key's
            # statistics come from other images than its query's (which go in order).
            perm = torch.randperm(x.shape[0], device=x.device)
            k = torch.cat([self.encoder_k(part) for part in x[perm].chunk(splits)])
            return k[torch.argsort(perm)]
        world, rank = dist.get_world_size(), dist.get_rank()
        x_all = all_gather_cat(x)
        perm = torch.randperm(x_all.shape[0], device=x_all.device)
        dist.broadcast(perm, src=0)  # one permutation for everyone
        k_mine = self.encoder_k(x_all[perm.view(world, -1)[rank]])
        k_all = all_gather_cat(k_mine)  # k_all[j] is the key of image perm[j]
        unshuffle = torch.argsort(perm)
        return k_all[unshuffle.view(world, -1)[rank]]

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """Write the (all ranks') keys (n, d) at the pointer, wrapping around the queue end.

        A queue length that is not a multiple of the batch simply wraps; when n exceeds the
        queue, only the last `queue_length` keys survive, as sequential writes would leave.
        """
        if is_distributed():
            keys = all_gather_cat(keys)
        n, length = keys.shape[0], self.queue.shape[1]
        ptr = int(self.queue_ptr)
        start = max(0, n - length)
        pos = (ptr + start + torch.arange(n - start, device=self.queue.device)) % length
        self.queue[:, pos] = keys[start:].t().to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % length

    def training_step(
        self, views: list[Tensor], labels: Tensor | None, iteration: int, epoch: int
    ) -> StepOutput:
        """views[0]: query crops, views[1]: key crops (B, 3, H, W); views[2:]: small crops.

        Small crops (multi-crop, a CPU-recipe addition; the paper has none) are extra queries
        against the large key crop's key: more positives per image for a fraction of a large
        crop's compute. Labels are not used.
        """
        if len(views) < 2:
            raise ValueError("PCL needs two views per image (query and key crops)")
        cfg = self.cfg
        # (query view, index of its key in `keys`)
        key_views = [views[1], views[0]] if cfg.symmetric else [views[1]]
        pairs = [(views[0], 0)] + ([(views[1], 1)] if cfg.symmetric else [])
        pairs += [(small, j) for small in views[2:] for j in range(len(key_views))]
        index = self._batch_index
        self._batch_index = None  # consumed: a missing set_batch_index must not reuse it
        keys = [self._keys(v) for v in key_views]
        scalars: dict[str, float] = {}
        losses: list[Tensor] = []
        logits_out = None
        for query_view, j in pairs:
            q = self._queries(query_view)
            with torch.autocast(q.device.type, enabled=False):
                loss, parts = self._pair_loss(q, keys[j], index)
            losses.append(loss)
            for name, value in parts.items():
                scalars[name] = scalars.get(name, 0.0) + value / len(pairs)
            if logits_out is None and self.clusterings:
                with torch.no_grad():
                    logits_out = q.detach() @ self.clusterings[0].centroids.to(q.device).t()
        self._enqueue(keys[0])
        loss = torch.stack(losses).mean()
        return StepOutput(loss=loss, logits=logits_out, scalars=scalars)

    def _pair_loss(
        self, q: Tensor, k: Tensor, index: Tensor | None
    ) -> tuple[Tensor, dict[str, float]]:
        """InfoNCE of queries q against their keys k and the queue, plus weighted ProtoNCE.

        Runs in float32: logits are cosines divided by τ ≈ 0.2 or φ.
        """
        cfg = self.cfg
        # The queue is cloned because _enqueue overwrites it in place before backward runs.
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.clone().to(q.dtype)
        inst_logits = torch.cat([l_pos, l_neg], dim=1) / cfg.temperature
        zeros = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(inst_logits, zeros)
        parts = {
            "loss_infonce": float(loss.detach()),
            "acc_inst": float((inst_logits.argmax(dim=1) == 0).float().mean()),
        }
        if self.clusterings:
            loss_proto, acc_proto = self._proto_nce(q, index)
            loss = loss + cfg.proto_weight * loss_proto
            parts["loss_protonce"] = float(loss_proto.detach())
            parts["acc_proto"] = acc_proto
        return loss, parts

    def _proto_nce(self, q: Tensor, index: Tensor | None) -> tuple[Tensor, float]:
        """Mean ProtoNCE over the clusterings, and the mean top-1 of its targets."""
        if index is None:
            raise RuntimeError("PCL.set_batch_index(index) must be called before each step")
        if index.shape != (q.shape[0],):
            raise ValueError(
                f"batch index {tuple(index.shape)} does not match {q.shape[0]} queries"
            )
        if self.clusterings[0].centroids.device != q.device:  # e.g. loaded on CPU, moved later
            self.clusterings = [c.to(q.device) for c in self.clusterings]
        losses, accs = [], []
        for clustering in self.clusterings:
            logits, targets = proto_nce_logits(
                q, index, clustering, self.num_negatives, self.generator, self.cfg.positives
            )
            losses.append(F.cross_entropy(logits, targets))
            accs.append(float((logits.argmax(dim=1) == targets).float().mean()))
        return torch.stack(losses).mean(), sum(accs) / len(accs)

    @torch.no_grad()
    def after_step(self, iteration: int, epoch: int) -> None:
        """Key encoder ← m · key + (1 − m) · query, parameters only (MoCo).

        Its BatchNorm statistics come from its own forward passes on the key crops, as upstream.
        """
        m = self.cfg.momentum
        params_k: list[Tensor] = list(self.encoder_k.parameters())
        params_q = [p.detach() for p in self.encoder_q.parameters()]
        torch._foreach_mul_(params_k, m)
        torch._foreach_add_(params_k, params_q, alpha=1.0 - m)

    def on_epoch_start(self, epoch: int, features: FeatureFn) -> dict[str, Any]:
        """The E-step, every `estep_every_epochs` from `warmup_epochs` on; returns φ and sizes.

        `features(self.encoder_k)` is the key encoder's (N, feat_dim) features of the whole
        un-augmented training set in index order, identical on every rank; k-means runs on rank
        0 only and its result is broadcast, as upstream.

        A run resumed in the middle of an epoch keeps the clusterings its checkpoint holds for
        that epoch instead of re-clustering with the since-moved key encoder: resume is exact.
        Between E-steps the last clusterings stay (their assignments are by data set index, so
        they remain valid while the encoder moves on).
        """
        cfg = self.cfg
        if epoch < cfg.warmup_epochs:
            self.clusterings = []  # warm-up trains InfoNCE only
            self._estep_epoch = -1
            return {}
        have = [c.num_clusters for c in self.clusterings]
        fresh = 0 <= epoch - self._estep_epoch < cfg.estep_every_epochs
        if fresh and have == list(cfg.num_clusters):
            return self._epoch_info()
        feats = features(self.encoder_k).detach()
        if feats.dim() != 2 or feats.shape[1] != cfg.feat_dim:
            raise ValueError(f"expected (N, {cfg.feat_dim}) features, got {tuple(feats.shape)}")
        clusterings = self._estep(feats)
        if cfg.fixed_phi:  # teaching ablation: one temperature for every cluster
            for c in clusterings:
                c.phi = torch.full_like(c.phi, cfg.temperature)
        self.clusterings = [c.to(self.queue.device) for c in clusterings]
        self._estep_epoch = epoch
        return self._epoch_info()

    def _epoch_info(self) -> dict[str, Any]:
        """φ, sizes and K of each clustering, for the epoch event (plain lists: JSON)."""
        return {
            "num_clusters": [c.num_clusters for c in self.clusterings],
            "phi": [c.phi.tolist() for c in self.clusterings],
            "cluster_sizes": [c.sizes.tolist() for c in self.clusterings],
        }

    def _estep(self, feats: Tensor) -> list[Clustering]:
        cfg = self.cfg

        def kmeans() -> list[Clustering]:
            return run_kmeans(
                feats,
                cfg.num_clusters,
                cfg.kmeans_iters,
                cfg.kmeans_redo,
                alpha=cfg.alpha,
                temperature=cfg.temperature,
            )

        if not is_distributed():
            return kmeans()
        n, d = feats.shape
        if dist.get_rank() == 0:
            clusterings = kmeans()
        else:  # placeholders of the right shapes, filled by the broadcast
            clusterings = [
                Clustering(
                    torch.zeros(k, d, device=feats.device),
                    torch.zeros(n, dtype=torch.long, device=feats.device),
                    torch.zeros(k, device=feats.device),
                    torch.zeros(k, dtype=torch.long, device=feats.device),
                )
                for k in cfg.num_clusters
            ]
        # feats' device suits the backend (CPU for gloo, CUDA for nccl).
        for c in clusterings:
            for t in c.tensors():
                dist.broadcast(t, src=0)
        return clusterings
