"""PCL: concentration φ, the E-step, ProtoNCE logits and the PCL module end to end."""

from __future__ import annotations

import copy
import io
import math
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score
from torch import nn

from models.backbones import build_backbone
from models.config import PCLConfig
from models.pcl import (
    PCL,
    Clustering,
    concentration,
    proto_nce_logits,
    run_kmeans,
    sample_negatives,
)

# --- concentration -----------------------------------------------------------------------------


def test_concentration_matches_a_hand_computation() -> None:
    # Five clusters: two normal ones, a singleton (2), a larger loose one (3) and an empty one (4).
    groups = {0: [0.2, 0.4], 1: [0.1, 0.3, 0.5], 2: [0.9], 3: [0.6, 0.8, 0.7, 0.5], 4: []}
    distances = torch.tensor([d for c in groups for d in groups[c]])
    assignments = torch.tensor([c for c in groups for _ in groups[c]])
    alpha, tau = 10.0, 0.2

    # By hand: mean distance / ln(Z + α) for clusters with more than one point ...
    raw = {
        0: 0.3 / math.log(2 + alpha),
        1: 0.3 / math.log(3 + alpha),
        3: 0.65 / math.log(4 + alpha),
    }
    # ... the singleton and the empty cluster take the largest of those (cluster 3's) ...
    filled = [raw[0], raw[1], raw[3], raw[3], raw[3]]
    # ... clip to numpy's [10th, 90th] percentile (this lifts cluster 1 to the 10th) ...
    lo, hi = np.percentile(filled, 10), np.percentile(filled, 90)
    assert lo > min(filled)  # the clip really changes something in this example
    clipped = [min(max(v, lo), hi) for v in filled]
    # ... and rescale to mean τ.
    expected = [tau * v / (sum(clipped) / len(clipped)) for v in clipped]

    phi = concentration(distances, assignments, 5, alpha=alpha, temperature=tau)
    assert phi.shape == (5,) and phi.dtype == torch.float32
    assert torch.allclose(phi, torch.tensor(expected, dtype=torch.float32), rtol=1e-6)
    assert math.isclose(float(phi.mean()), tau, rel_tol=1e-6)
    assert bool((phi > 0).all())
    # The singleton and the empty cluster carry the largest φ.
    assert phi[2] == phi.max() and phi[4] == phi.max()


def test_concentration_degenerate_cases_stay_finite() -> None:
    # Only singletons: the official code would divide 0 by 0; every φ is τ instead.
    phi = concentration(torch.tensor([0.5, 0.1, 0.3]), torch.tensor([0, 1, 2]), 4, temperature=0.3)
    assert torch.allclose(phi, torch.full((4,), 0.3))
    # Every point on its centroid: no spread anywhere, again τ.
    phi = concentration(torch.zeros(6), torch.tensor([0, 0, 1, 1, 2, 2]), 3)
    assert torch.allclose(phi, torch.full((3,), 0.2))
    with pytest.raises(ValueError):
        concentration(torch.zeros(3), torch.tensor([0, 1, 5]), 3)


# --- E-step -------------------------------------------------------------------------------------


def blobs(n_per: int = 100, centers: int = 3, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = F.normalize(torch.randn(centers, d, generator=g), dim=1)
    labels = torch.arange(centers).repeat_interleave(n_per)
    x = F.normalize(mu[labels] + 0.03 * torch.randn(len(labels), d, generator=g), dim=1)
    return x, labels


def test_run_kmeans_recovers_separated_blobs() -> None:
    x, labels = blobs()
    results = run_kmeans(x, [3, 5], niter=10, nredo=2, seed=0, temperature=0.2)
    assert [c.num_clusters for c in results] == [3, 5]
    first = results[0]
    assert adjusted_rand_score(labels.numpy(), first.assignments.numpy()) >= 0.99
    for c in results:
        k = c.num_clusters
        assert c.centroids.shape == (k, 16)
        assert torch.allclose(c.centroids.norm(dim=1), torch.ones(k), atol=1e-5)
        assert c.assignments.shape == (300,) and c.assignments.dtype == torch.int64
        assert c.sizes.tolist() == torch.bincount(c.assignments, minlength=k).tolist()
        assert c.phi.shape == (k,) and math.isclose(float(c.phi.mean()), 0.2, rel_tol=1e-5)
        assert c.density is c.phi
    # The assignment is the nearest normalised centroid too (blobs live on the sphere).
    assert torch.equal((x @ first.centroids.t()).argmax(1), first.assignments)


def test_run_kmeans_small_data_and_too_many_clusters() -> None:
    x, _ = blobs(n_per=4)  # 12 points: fewer than 10 per centroid must not warn or crash
    (c,) = run_kmeans(x, [6], niter=5, nredo=1, seed=0)
    assert c.sizes.sum() == 12
    with pytest.raises(ValueError, match="clusters"):
        run_kmeans(x, [13], niter=5, nredo=1, seed=0)


# --- ProtoNCE -----------------------------------------------------------------------------------


def one_hot_clustering(k: int, phi: torch.Tensor | None = None) -> Clustering:
    """Centroid j = e_j, so q @ centroids.T reads q's coordinates: columns reveal their ids."""
    assignments = torch.tensor([0, 2, 2, 5, 1, 3, 4, 6, 7, 0])
    return Clustering(
        centroids=torch.eye(k),
        assignments=assignments,
        phi=phi if phi is not None else torch.ones(k),
        sizes=torch.bincount(assignments, minlength=k),
    )


def test_proto_nce_positives_diagonal_and_negatives_never_positive() -> None:
    k = 10
    clustering = one_hot_clustering(k)
    index = torch.tensor([1, 0, 2, 3])  # clusters 2, 0, 2, 5
    q = torch.arange(1, k + 1, dtype=torch.float32).repeat(4, 1)  # q[i, j] = j + 1
    g = torch.Generator().manual_seed(0)
    logits, targets = proto_nce_logits(q, index, clustering, num_negatives=4, generator=g)
    assert logits.shape == (4, 3 + 4)  # 3 distinct positive clusters + 4 negatives
    ids = (logits[0] - 1).round().long()  # the cluster id of every column
    assert ids[:3].tolist() == [0, 2, 5]  # the distinct positives, sorted
    # Each sample's target column is its own cluster; the two samples of cluster 2 share one.
    assert [int(ids[t]) for t in targets] == [2, 0, 2, 5]
    negatives = set(ids[3:].tolist())
    assert len(negatives) == 4 and not negatives & {0, 2, 5}

    # Asking for more negatives than the 7 free clusters takes each free cluster once.
    logits, _ = proto_nce_logits(q, index, clustering, num_negatives=50, generator=g)
    ids = (logits[0] - 1).round().long()
    assert sorted(ids[3:].tolist()) == [1, 3, 4, 6, 7, 8, 9]


def official_proto_nce(q: torch.Tensor, index: torch.Tensor, c: Clustering, r: int) -> torch.Tensor:
    """salesforce/PCL's ProtoNCE for one clustering, restated: every sample's own centroid as
    its positive column (repeats and all), then r clusters that are no sample's positive, each
    column divided by its cluster's φ, cross-entropy against the diagonal."""
    own = c.assignments[index]
    free = [k for k in range(int(c.assignments.max()) + 1) if k not in set(own.tolist())]
    chosen = torch.tensor(free[:r], dtype=torch.long)  # which ones: irrelevant when r >= free
    ids = torch.cat([own, chosen])
    logits = (q @ c.centroids[ids].t()) / c.phi[ids]
    return F.cross_entropy(logits, torch.arange(q.shape[0]))


def test_proto_nce_sample_positives_is_the_official_loss() -> None:
    g = torch.Generator().manual_seed(4)
    k, d = 8, 6
    assignments = torch.tensor([3, 1, 1, 6, 3, 0, 7, 2])
    clustering = Clustering(
        centroids=F.normalize(torch.randn(k, d, generator=g), dim=1),
        assignments=assignments,
        phi=torch.rand(k, generator=g) * 0.3 + 0.05,
        sizes=torch.bincount(assignments, minlength=k),
    )
    q = F.normalize(torch.randn(5, d, generator=g), dim=1)
    index = torch.tensor([0, 1, 2, 4, 3])  # clusters 3, 1, 1, 3, 6: two pairs share a cluster
    want = official_proto_nce(q, index, clustering, r=100)
    logits, targets = proto_nce_logits(q, index, clustering, 100, g, positives="sample")
    assert logits.shape == (5, 5 + 5)  # one column per sample + the 5 free clusters
    assert torch.equal(targets, torch.arange(5))
    assert torch.allclose(F.cross_entropy(logits, targets), want, atol=1e-6)
    # The distinct-cluster form differs exactly where clusters repeat in the batch:
    logits_c, targets_c = proto_nce_logits(q, index, clustering, 100, g, positives="cluster")
    assert logits_c.shape == (5, 3 + 5)
    assert not torch.allclose(F.cross_entropy(logits_c, targets_c), want, atol=1e-3)
    # ... and coincides with it when every sample of the batch has its own cluster.
    distinct = torch.tensor([0, 1, 3, 5, 6])  # clusters 3, 1, 6, 0, 7
    a = proto_nce_logits(q, distinct, clustering, 100, g, positives="sample")
    b = proto_nce_logits(q, distinct, clustering, 100, g, positives="cluster")
    assert torch.allclose(F.cross_entropy(*a), F.cross_entropy(*b), atol=1e-6)


def test_proto_nce_divides_each_column_by_its_phi() -> None:
    g = torch.Generator().manual_seed(1)
    k, d = 8, 5
    clustering = Clustering(
        centroids=F.normalize(torch.randn(k, d, generator=g), dim=1),
        assignments=torch.tensor([3, 1, 1, 6]),
        phi=torch.rand(k, generator=g) + 0.1,
        sizes=torch.tensor([0, 2, 0, 1, 0, 0, 1, 0]),
    )
    q = F.normalize(torch.randn(2, d, generator=g), dim=1)
    logits, _ = proto_nce_logits(q, torch.tensor([0, 3]), clustering, 3, torch.Generator())
    # Positives are the distinct clusters sorted (3, 6): column 1 is sample 1's cluster 6,
    # q · c_6 / φ_6, checked element by element.
    c6, phi6 = clustering.centroids[6], float(clustering.phi[6])
    expected = [sum(float(q[i, j]) * float(c6[j]) for j in range(d)) / phi6 for i in range(2)]
    assert torch.allclose(logits[:, 1], torch.tensor(expected), atol=1e-6)
    # And every column: the unscaled cosine times its φ recovers a centroid's own cosine.
    cos = q @ clustering.centroids.t()
    for col in range(logits.shape[1]):
        matches = [
            c for c in range(k) if torch.allclose(logits[:, col] * clustering.phi[c], cos[:, c])
        ]
        assert len(matches) == 1


def test_sample_negatives_is_seeded_and_without_replacement() -> None:
    pos = torch.tensor([0, 0, 4])
    a = sample_negatives(pos, 20, 10, torch.Generator().manual_seed(5))
    b = sample_negatives(pos, 20, 10, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and len(set(a.tolist())) == 10
    assert not set(a.tolist()) & {0, 4}


# --- the PCL module ------------------------------------------------------------------------------

N, B, SIDE = 32, 8, 16


def make_pcl(**over: object) -> PCL:
    torch.manual_seed(0)
    base: dict[str, object] = {
        "feat_dim": 8,
        "hidden_dim": 16,
        "queue_length": 20,  # not a multiple of the batch: the pointer must wrap
        "momentum": 0.9,
        "num_clusters": (4, 6),
        "warmup_epochs": 1,
        "kmeans_iters": 5,
        "head_bn": False,  # the official head layout; the BN variant is checked on its own
    }
    base.update(over)
    cfg = PCLConfig.model_validate(base)
    return PCL(build_backbone("small_cnn", 4), build_backbone("small_cnn", 4), cfg, num_train=N)


def images(n: int = N, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def fake_features(model: PCL, data: torch.Tensor):
    """What the trainer does: the encoder over the un-augmented set, in eval mode, no grad."""

    def features(fn):
        was = model.training
        model.eval()
        with torch.no_grad():
            out = torch.cat([fn(data[i : i + 16]) for i in range(0, len(data), 16)])
        model.train(was)
        return out

    return features


def test_pcl_layout_and_initial_state() -> None:
    model = make_pcl()
    keys = model.state_dict().keys()
    assert {"queue", "queue_ptr", "encoder_q.head.0.weight", "encoder_q.head.2.weight"} <= keys
    # head_bn (the default): Linear, BatchNorm, ReLU, Linear.
    bn_keys = make_pcl(head_bn=True).state_dict().keys()
    assert {"encoder_q.head.1.running_mean", "encoder_q.head.3.weight"} <= bn_keys
    assert "encoder_k.backbone.features.0.weight" in keys
    assert model.queue.shape == (8, 20) and model.queue_ptr.tolist() == [0]
    assert torch.allclose(model.queue.norm(dim=0), torch.ones(20), atol=1e-5)
    q_state, k_state = model.encoder_q.state_dict(), model.encoder_k.state_dict()
    assert all(torch.equal(q_state[n], k_state[n]) for n in q_state)
    assert not any(p.requires_grad for p in model.encoder_k.parameters())
    no_mlp = make_pcl(mlp=False)
    assert len(no_mlp.encoder_q.head) == 1 and no_mlp.encoder_q.head[0].out_features == 8
    x = images(4)
    assert model.embed(x).shape == (4, 32)
    assert model.prototype_logits(x) is None
    with pytest.raises(ValueError):
        make_pcl(num_clusters=(4, 64))  # more clusters than the 32 training images


def test_pcl_warmup_then_protonce_end_to_end() -> None:
    model = make_pcl()
    data = images()
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.1)

    # Warm-up: no E-step, InfoNCE only.
    assert model.on_epoch_start(0, fake_features(model, data)) == {}
    idx = torch.arange(B)
    model.set_batch_index(idx)
    out = model([images(B, 1), images(B, 2)], None, 0, 0)
    assert out.logits is None and "loss_protonce" not in out.scalars
    assert math.isclose(float(out.loss.detach()), out.scalars["loss_infonce"], rel_tol=1e-6)
    assert out.scalars["loss_infonce"] > 0 and 0.0 <= out.scalars["acc_inst"] <= 1.0
    assert model.queue_ptr.tolist() == [8]

    # E-step.
    info = model.on_epoch_start(1, fake_features(model, data))
    assert info["num_clusters"] == [4, 6]
    assert [len(p) for p in info["phi"]] == [4, 6]
    assert [sum(s) for s in info["cluster_sizes"]] == [N, N]
    assert all(math.isclose(sum(p) / len(p), 0.2, rel_tol=1e-5) for p in info["phi"])
    assert [c.num_clusters for c in model.clusterings] == [4, 6]

    # A step after warm-up: both losses, logits against the first clustering, backward works.
    torch.manual_seed(1)
    v0, v1 = data[idx] + 0.1 * torch.randn(B, 3, SIDE, SIDE), data[idx]
    expected_keys = model.encoder_k(v1).detach()  # train mode: batch statistics, as the step
    model.set_batch_index(idx)
    out = model.training_step([v0, v1], None, 1, 1)
    s = out.scalars
    assert s["loss_protonce"] > 0
    assert math.isclose(
        float(out.loss.detach()), s["loss_infonce"] + s["loss_protonce"], rel_tol=1e-5
    )
    assert out.logits is not None and out.logits.shape == (B, 4)
    assert torch.allclose(model.queue[:, 8:16], expected_keys.t(), atol=1e-6)
    assert model.queue_ptr.tolist() == [16]
    opt.zero_grad()
    out.loss.backward()
    assert all(p.grad is not None for p in model.encoder_q.parameters())
    assert all(p.grad is None for p in model.encoder_k.parameters())
    opt.step()

    # EMA: key ← 0.9 · key + 0.1 · query, on one parameter exactly.
    w_k = model.encoder_k.head[2].weight.clone()
    w_q = model.encoder_q.head[2].weight.detach().clone()
    assert not torch.allclose(w_k, w_q)
    model.after_step(1, 1)
    assert torch.allclose(model.encoder_k.head[2].weight, 0.9 * w_k + 0.1 * w_q, atol=1e-7)

    # A step without set_batch_index is refused (the index is used once).
    with pytest.raises(RuntimeError, match="set_batch_index"):
        model.training_step([v0, v1], None, 2, 1)

    # The next step wraps: 4 keys at 16..19, 4 at 0..3, pointer 4.
    model.queue_ptr[0] = 16
    expected_keys = model.encoder_k(v1).detach()
    model.set_batch_index(idx)
    model.training_step([v0, v1], None, 2, 1)
    assert model.queue_ptr.tolist() == [4]
    assert torch.allclose(model.queue[:, 16:20], expected_keys[:4].t(), atol=1e-6)
    assert torch.allclose(model.queue[:, 0:4], expected_keys[4:].t(), atol=1e-6)

    # Inference against the first clustering.
    with torch.no_grad():
        logits = model.prototype_logits(data[:5])
    assert logits is not None and logits.shape == (5, 4)
    assert float(logits.abs().max()) <= 1 + 1e-5  # cosines, no φ


def test_small_crops_are_extra_queries_against_the_large_key() -> None:
    model = make_pcl()
    data = images()
    model.on_epoch_start(1, fake_features(model, data))
    idx = torch.arange(B)
    torch.manual_seed(3)
    v0, v1 = data[idx] + 0.1 * torch.randn(B, 3, SIDE, SIDE), data[idx]
    small = [F.interpolate(data[idx], size=(8, 8), mode="bilinear") for _ in range(2)]
    state = copy.deepcopy(model.state_dict())

    def one(views: list[torch.Tensor]) -> float:
        model.load_state_dict(state)
        model.set_batch_index(idx)
        return float(model.training_step(views, None, 1, 1).loss.detach())

    large_only = one([v0, v1])
    key = model.encoder_k(v1).detach()  # the key every query is contrasted with
    model.load_state_dict(state)
    per_small = []
    for view in small:
        q = model.encoder_q(view).detach()
        # K = 4 and 6 with 20 negatives wanted: every free cluster is a negative, so the draw
        # order is all that varies, and the loss does not depend on it.
        loss, _ = model._pair_loss(q, key, idx)
        per_small.append(float(loss))
    with_small = one([v0, v1, *small])
    # The step's loss is the mean over its three queries; only the large crop's key is queued.
    assert with_small != pytest.approx(large_only)
    assert model.queue_ptr.tolist() == [B]
    assert torch.allclose(model.queue[:, :B], key.t(), atol=1e-6)
    assert with_small == pytest.approx((large_only + sum(per_small)) / 3, rel=1e-5)


def test_shuffle_bn_stand_in_gives_keys_statistics_of_other_images() -> None:
    model = make_pcl(bn_splits=2)
    x = images(B, 5)
    torch.manual_seed(7)
    keys = model._keys(x)
    torch.manual_seed(7)
    perm = torch.randperm(B)
    with torch.no_grad():
        halves = [model.encoder_k(part) for part in x[perm].chunk(2)]
        expected = torch.cat(halves)[torch.argsort(perm)]
        whole = model.encoder_k(x)
    assert torch.allclose(keys, expected, atol=1e-6)
    assert not torch.allclose(keys, whole, atol=1e-3)  # train-mode BN: the groups matter
    queries = model._queries(x)
    in_order = torch.cat([model.encoder_q(part) for part in x.chunk(2)])
    assert torch.allclose(queries, in_order, atol=1e-6)
    # A batch the groups do not divide, or groups of one image, fall back to one group.
    assert model._splits(B + 1) == 1 and make_pcl(bn_splits=B)._splits(B) == 1
    assert make_pcl()._splits(B) == 1


def test_estep_every_n_epochs_keeps_the_clusterings_between() -> None:
    model = make_pcl(estep_every_epochs=3)
    data = images()
    calls: list[int] = []

    def counted(fn):
        calls.append(1)
        return fake_features(model, data)(fn)

    for epoch in range(1, 8):
        model.on_epoch_start(epoch, counted)
    assert len(calls) == 3  # epochs 1, 4 and 7
    assert model._estep_epoch == 7
    first = make_pcl()
    first.on_epoch_start(1, counted)
    first.on_epoch_start(2, counted)
    assert len(calls) == 5  # the default re-clusters every epoch


def test_enqueue_more_keys_than_the_queue_keeps_the_last_ones() -> None:
    model = make_pcl(queue_length=5)
    model.queue_ptr[0] = 3
    keys = F.normalize(torch.randn(12, 8), dim=1)
    model._enqueue(keys)
    # Sequential writes of 12 keys from position 3: key j lands at (3 + j) % 5, later wins.
    expected = torch.empty(8, 5)
    for j in range(12):
        expected[:, (3 + j) % 5] = keys[j]
    assert torch.equal(model.queue, expected)
    assert model.queue_ptr.tolist() == [(3 + 12) % 5]


def test_fixed_phi_ablation_sets_every_phi_to_temperature() -> None:
    model = make_pcl(fixed_phi=True, temperature=0.3)
    info = model.on_epoch_start(1, fake_features(model, images()))
    for phi in info["phi"]:
        assert phi == pytest.approx([0.3] * len(phi))
    assert all(torch.equal(c.phi, torch.full_like(c.phi, 0.3)) for c in model.clusterings)


def test_state_dict_round_trip_restores_clusterings() -> None:
    model = make_pcl()
    model.on_epoch_start(1, fake_features(model, images()))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    fresh = make_pcl()
    assert fresh.clusterings == []
    fresh.load_state_dict(state)
    assert len(fresh.clusterings) == 2
    for a, b in zip(model.clusterings, fresh.clusterings, strict=True):
        for ta, tb in zip(a.tensors(), b.tensors(), strict=True):
            assert torch.equal(ta, tb)
    assert torch.equal(fresh.queue, model.queue)
    x = images(3, 7)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(model.prototype_logits(x), fresh.prototype_logits(x))

    # Resumed within the E-step's epoch: the stored clusterings are kept, no re-clustering.
    def must_not_run(fn):
        raise AssertionError("the E-step ran again")

    info = fresh.on_epoch_start(1, must_not_run)
    assert info["phi"] == [c.phi.tolist() for c in model.clusterings]
    # The next epoch clusters again.
    calls = []
    features = fake_features(fresh, images())
    fresh.on_epoch_start(2, lambda fn: calls.append(1) or features(fn))
    assert calls == [1]


# --- torch.distributed: shuffle-BN, gathered enqueue, E-step on rank 0 ----------------------


class _PerSample(nn.Module):
    """A backbone without BatchNorm: each key depends on its own image only."""

    out_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3 * 4 * 4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same weights on both ranks, as DDP guarantees
        cfg = PCLConfig(feat_dim=4, hidden_dim=8, queue_length=16, num_clusters=(3,), head_bn=False)
        model = PCL(_PerSample(), _PerSample(), cfg, num_train=12)
        data = torch.randn(12, 3, 4, 4, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(100 + rank)  # ranks draw different permutations; rank 0's wins
        mine = data[rank * 3 : rank * 3 + 3]
        keys = model._keys(mine)
        direct = model.encoder_k(mine)
        model.set_batch_index(torch.arange(rank * 3, rank * 3 + 3))
        model.training_step([mine, mine], None, 0, 0)
        if rank == 1:  # rank 1's k-means must not matter: it only receives rank 0's result
            torch.manual_seed(999)
        model.on_epoch_start(1, lambda fn: fn(data).detach())
        c = model.clusterings[0]
        torch.save(
            {
                "keys": keys,
                "direct": direct,
                "queue": model.queue,
                "ptr": model.queue_ptr,
                "assignments": c.assignments,
                "phi": c.phi,
            },
            os.path.join(out_dir, f"r{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_distributed_shuffle_enqueue_and_broadcast() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_dist_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        r = [torch.load(os.path.join(tmp, f"r{i}.pt"), weights_only=True) for i in range(2)]
    for part in r:  # shuffle-BN hands every rank back the keys of its own images
        assert torch.allclose(part["keys"], part["direct"], atol=1e-6)
    # Both ranks enqueued the gathered keys of all 6 images, in rank order.
    assert torch.equal(r[0]["queue"], r[1]["queue"]) and r[0]["ptr"].tolist() == [6]
    gathered = torch.cat([r[0]["direct"], r[1]["direct"]])
    assert torch.allclose(r[0]["queue"][:, :6], gathered.t(), atol=1e-6)
    assert torch.equal(r[0]["assignments"], r[1]["assignments"])
    assert torch.equal(r[0]["phi"], r[1]["phi"])


def test_bn_splits_that_do_not_divide_the_batch_are_refused() -> None:
    from models.config import TrainConfig

    with pytest.raises(ValueError, match="must divide batch_size"):
        TrainConfig(method="pcl", batch_size=64, pcl={"bn_splits": 3})
    with pytest.raises(ValueError, match="groups of at least 2"):
        TrainConfig(method="pcl", batch_size=8, pcl={"bn_splits": 8})
    assert TrainConfig(method="pcl", batch_size=64, pcl={"bn_splits": 4}).pcl.bn_splits == 4
