"""PCL (Li et al., ICLR 2021): a MoCo pair with a negatives queue, plus prototypes from k-means.

Each epoch after warm-up, the E-step clusters the key encoder's features of the whole training
set with faiss k-means, once per K, and measures how tight every cluster is (its concentration
φ). The M-step loss is InfoNCE against the queue plus ProtoNCE: each query is contrasted with
its own cluster's centroid against centroids of other clusters, every logit divided by that
centroid's φ, so tight clusters give sharp logits and loose ones soft logits.

Written from the paper and shared/ALGORITHMS.md, checked against salesforce/PCL. Where we differ
from the official code, and why:
- Negative prototypes are drawn without replacement from a tensor (the official
  `random.sample` on a set fails on Python ≥ 3.11); when fewer than r clusters are free, all
  of them are taken instead of raising. Candidates are all K clusters, not `max(id) + 1`.
- φ: when no cluster has two points (the official code would divide 0 by 0) or every distance
  is 0, every φ is τ.
- The official E-step halves feature rows with norm > 1.5: its `all_reduce(SUM)` counts the
  DistributedSampler's padded samples twice. Our trainer gathers shards and cuts them back to
  N, so every row is one unit vector and that step has nothing to correct; we omit it.
- faiss `min_points_per_centroid` is min(10, N // K), so small data sets cluster without
  faiss's "please provide more points" warning; large ones get the official 10.
- The k-means assignment search is redone against the final centroids, so stored
  assignments, distances and centroids always belong together.
- The loss math (both contrasts) runs in float32 even under autocast: logits are cosines
  divided by τ ≈ 0.2 or φ, where bf16's three significant digits would be visible.
- Shuffle-BN is done as MoCo does under torch.distributed. A single process has no ranks to
  shuffle across, so `bn_splits` > 1 stands in for them: queries go through the encoder in
  that many groups in order, keys in as many groups of a random permutation, so that, as on
  MoCo's GPUs, a key's BatchNorm statistics come from other images than its query's.
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

from models.config import PCLConfig, Positives
from models.distributed import all_gather_cat, is_distributed
from models.method import Analysis, FeatureFn, MethodModule, StepOutput

# The official settings (faiss's default is 256): at most this many points per centroid train
# k-means, a random subsample beyond, which bounds the E-step's cost on large data sets.
MAX_POINTS_PER_CENTROID = 1000
MIN_POINTS_PER_CENTROID = 10  # official value; lowered for small data sets, see run_kmeans


# --- E-step ----------------------------------------------------------------------------------


def concentration(
    distances: Tensor,
    assignments: Tensor,
    num_clusters: int,
    alpha: float = 10.0,
    temperature: float = 0.2,
) -> Tensor:
    """Per-cluster concentration φ, as PCL estimates it.

    Args:
        distances: (N,) each point's Euclidean (not squared) distance to its centroid.
        assignments: (N,) the cluster of each point, in [0, num_clusters).
        num_clusters: K.
        alpha: smoothing α in ln(Z + α); it keeps small clusters from getting a tiny φ.
        temperature: τ, the mean of the result.

    Returns:
        (K,) float32 on the device of `distances`: φ_c = mean distance / ln(Z_c + α), where
        clusters with ≤ 1 point take the largest φ of the others (a lone point has no spread to
        measure), then clipped to the [10th, 90th] percentile (numpy's linear interpolation)
        so outliers cannot dominate, then rescaled so that mean φ = τ.
    """
    if distances.shape != assignments.shape or distances.dim() != 1:
        raise ValueError(
            f"distances and assignments must both be (N,), got {tuple(distances.shape)} "
            f"and {tuple(assignments.shape)}"
        )
    d = distances.detach().to(torch.float64)  # float64: percentiles and means match numpy's
    a = assignments.detach().to(device=d.device, dtype=torch.long)
    sizes = torch.bincount(a, minlength=num_clusters).to(d.dtype)
    if sizes.numel() != num_clusters:
        raise ValueError(f"assignments reach {sizes.numel() - 1}, beyond K = {num_clusters}")
    sums = torch.zeros(num_clusters, dtype=d.dtype, device=d.device).scatter_add_(0, a, d)
    phi = sums / sizes.clamp_min(1) / torch.log(sizes + alpha)
    measured = sizes > 1
    if not measured.any():  # only singletons and empty clusters: nothing to tell them apart
        return torch.full((num_clusters,), temperature, device=d.device)
    phi = torch.where(measured, phi, phi[measured].max())
    bounds = torch.quantile(phi, torch.tensor([0.1, 0.9], dtype=d.dtype, device=d.device))
    phi = phi.clamp(bounds[0], bounds[1])
    mean = phi.mean()
    if not mean > 0:  # every point sits on its centroid: all clusters equally (infinitely) tight
        return torch.full((num_clusters,), temperature, device=d.device)
    return (temperature * phi / mean).float()


@dataclass
class Clustering:
    """One k-means result of the E-step, everything a ProtoNCE term needs."""

    centroids: Tensor  # (K, d) float32, rows L2-normalised
    assignments: Tensor  # (N,) int64, the cluster of each training image (by data set index)
    phi: Tensor  # (K,) float32 concentration, mean τ
    sizes: Tensor  # (K,) int64 points per cluster

    @property
    def density(self) -> Tensor:
        """φ under the official code's name."""
        return self.phi

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def to(self, device: torch.device | str) -> Clustering:
        return Clustering(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.centroids, self.assignments, self.phi, self.sizes


def _flat_l2_index(d: int, device: torch.device) -> tuple[Any, Any]:
    """An exact L2 index on the GPU of `device` when faiss has GPUs, else on the CPU.

    Returns (index, gpu_resources); keep the resources alive as long as the index.
    """
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if device.type == "cuda" and has_gpu:
        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.useFloat16 = False  # as upstream: fp16 distances would blur φ
        cfg.device = device.index if device.index is not None else torch.cuda.current_device()
        return faiss.GpuIndexFlatL2(res, d, cfg), res
    return faiss.IndexFlatL2(d), None


def run_kmeans(
    features: Tensor,
    num_clusters: Sequence[int],
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    alpha: float = 10.0,
    temperature: float = 0.2,
) -> list[Clustering]:
    """The E-step: faiss k-means for each K, then each cluster's φ.

    Args:
        features: (N, d) features of the whole training set in index order (the key
            encoder's L2-normalised outputs).
        num_clusters: the K of each clustering, each ≤ N.
        niter, nredo: k-means iterations and restarts (faiss keeps the best restart).
        seed: the i-th clustering uses seed + i (upstream: seed = index of K).
        alpha, temperature: passed to `concentration`.

    Returns:
        One Clustering per K, its tensors on the device of `features`. φ is computed from the
        distances to the raw centroids (as upstream); the stored centroids are then
        L2-normalised, since ProtoNCE compares them with unit-norm queries.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be (N, d), got {tuple(features.shape)}")
    x = np.ascontiguousarray(features.detach().float().cpu().numpy())
    n, d = x.shape
    out: list[Clustering] = []
    for i, k in enumerate(num_clusters):
        k = int(k)
        if not 1 <= k <= n:
            raise ValueError(f"cannot make {k} clusters from {n} points; lower num_clusters")
        km = faiss.Clustering(d, k)
        km.niter = niter
        km.nredo = nredo
        km.seed = seed + i
        km.verbose = False
        km.max_points_per_centroid = MAX_POINTS_PER_CENTROID
        km.min_points_per_centroid = max(1, min(MIN_POINTS_PER_CENTROID, n // k))
        index, _res = _flat_l2_index(d, features.device)
        km.train(x, index)
        centroids = faiss.vector_to_array(km.centroids).reshape(k, d).astype(np.float32)
        index.reset()  # search the final centroids explicitly, whatever the index holds now
        index.add(centroids)
        sq_dist, assign = index.search(x, 1)
        # faiss returns squared distances, a hair below 0 from rounding when a point sits on
        # its centroid; φ wants Euclidean ones.
        dist_t = torch.from_numpy(np.sqrt(np.maximum(sq_dist[:, 0], 0.0)))
        assign_t = torch.from_numpy(assign[:, 0].astype(np.int64))
        phi = concentration(dist_t, assign_t, k, alpha, temperature)
        out.append(
            Clustering(
                centroids=F.normalize(torch.from_numpy(centroids), dim=1),
                assignments=assign_t,
                phi=phi,
                sizes=torch.bincount(assign_t, minlength=k),
            ).to(features.device)
        )
    return out


# --- ProtoNCE ---------------------------------------------------------------------------------


def sample_negatives(
    positives: Tensor,
    num_clusters: int,
    num_negatives: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Clusters positive for no sample in the batch, drawn without replacement.

    Args:
        positives: (B,) the cluster of each sample in the batch.
        num_clusters: K.
        num_negatives: r; when fewer clusters are free, all of them are returned.
        generator: a CPU generator, or None for torch's global RNG (which the trainer seeds
            and checkpoints, so a resumed run draws the same negatives).

    Returns:
        (min(r, free),) int64 cluster ids on the device of `positives`, in random order.
    """
    free = torch.ones(num_clusters, dtype=torch.bool, device=positives.device)
    free[positives] = False
    candidates = free.nonzero().squeeze(1)
    take = min(num_negatives, candidates.numel())
    order = torch.randperm(candidates.numel(), generator=generator)[:take]
    return candidates[order.to(candidates.device)]


def proto_nce_logits(
    q: Tensor,
    index: Tensor,
    clustering: Clustering,
    num_negatives: int,
    generator: torch.Generator | None = None,
    positives: Positives = "cluster",
) -> tuple[Tensor, Tensor]:
    """Logits and targets of one clustering's prototype contrast.

    Args:
        q: (B, d) L2-normalised queries.
        index: (B,) the data set indices of the batch (to look up their clusters).
        clustering: the E-step's result for one K.
        num_negatives: r negative centroids (fewer when fewer clusters are free).
        generator: for the negatives; see `sample_negatives`.
        positives: "sample" (the official code): one positive column per sample, its own
            cluster's centroid, so the batch's columns repeat a centroid as often as its cluster
            occurs; "cluster": one column per distinct cluster of the batch.

    Returns:
        logits (B, P + r'): q @ [positives; negatives]ᵀ, column j divided by the φ of its
        centroid, P = B ("sample") or the number of distinct clusters ("cluster"); targets (B,)
        = the column of each sample's own positive.

    With "sample", two samples of one cluster get identical columns and each must beat the
    other's copy of its own centroid — harmless when K ≫ B (ImageNet), but with K ≈ B (small
    data sets) many columns are duplicates and the contrast fights itself. "cluster" removes
    that; with K ≫ B (no cluster twice in a batch) the two forms coincide.
    """
    assignments = clustering.assignments
    own = assignments[index.to(assignments.device)].to(q.device)
    negatives = sample_negatives(own, clustering.num_clusters, num_negatives, generator)
    if positives == "sample":
        columns, targets = own, torch.arange(own.numel(), device=q.device)
    else:
        columns, targets = torch.unique(own, return_inverse=True)
    ids = torch.cat([columns, negatives.to(q.device)])
    centroids = clustering.centroids.to(q.device, q.dtype)[ids]
    phi = clustering.phi.to(q.device, q.dtype)[ids]
    logits = (q @ centroids.t()) / phi  # broadcasting divides column j by φ of centroid j
    return logits, targets


# --- networks ---------------------------------------------------------------------------------


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
        out_dim = int(backbone.out_dim)
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
        params_k = list(self.encoder_k.parameters())
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
        kwargs = {"alpha": cfg.alpha, "temperature": cfg.temperature}
        if not is_distributed():
            return run_kmeans(feats, cfg.num_clusters, cfg.kmeans_iters, cfg.kmeans_redo, **kwargs)
        n, d = feats.shape
        if dist.get_rank() == 0:
            clusterings = run_kmeans(
                feats, cfg.num_clusters, cfg.kmeans_iters, cfg.kmeans_redo, **kwargs
            )
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
