"""Sinkhorn, the swapped-prediction loss and the SwAV module."""

from __future__ import annotations

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from models.backbones import build_backbone
from models.config import SwAVConfig
from models.swav import SwAV, sinkhorn, swapped_prediction_loss


def official_sinkhorn(scores: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
    """The official algorithm, literally (no max subtraction), in the dtype it is given."""
    q = torch.exp(scores / epsilon).t()
    b, k = q.shape[1], q.shape[0]
    q = q / q.sum()
    for _ in range(n_iters):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def cosine_scores(b: int, k: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(b, d, generator=g), dim=1)
    c = F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.t()


def test_sinkhorn_rows_sum_to_one_and_columns_equipartition() -> None:
    scores = cosine_scores(64, 8)
    q = sinkhorn(scores, epsilon=0.05, n_iters=3)
    assert q.shape == (64, 8)
    assert torch.allclose(q.sum(dim=1), torch.ones(64), atol=1e-5)
    # With enough iterations the prototype marginals reach B / K exactly.
    q = sinkhorn(scores, epsilon=0.05, n_iters=200)
    assert torch.allclose(q.sum(dim=0), torch.full((8,), 64 / 8), atol=1e-3)
    assert (q >= 0).all()


def test_sinkhorn_matches_official_where_official_is_finite() -> None:
    scores = cosine_scores(128, 20, seed=1)
    ours = sinkhorn(scores, 0.05, 3)
    ref = official_sinkhorn(scores.double(), 0.05, 3).float()
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("epsilon", [0.01, 0.005])
def test_sinkhorn_stable_at_small_epsilon(epsilon: float) -> None:
    scores = cosine_scores(256, 30, seed=2)
    scores[0, 0] = 1.0  # exp(1 / 0.01) = e^100 overflows float32
    naive = official_sinkhorn(scores, epsilon, 3)
    assert not torch.isfinite(naive).all(), "the test should exercise the float32 overflow"
    ours = sinkhorn(scores, epsilon, 3)
    assert torch.isfinite(ours).all()
    exact = official_sinkhorn(scores.double(), epsilon, 3)
    assert torch.isfinite(exact).all()
    assert torch.allclose(ours.double(), exact, atol=1e-5)


def test_sinkhorn_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(torch.zeros(4, 3), epsilon=0.0)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        sinkhorn(torch.zeros(4))


def test_swapped_prediction_loss_hand_checked() -> None:
    # Two crops, one sample, two prototypes, τ = 0.5.
    s0 = torch.tensor([[0.2, -0.4]])
    s1 = torch.tensor([[0.6, 0.1]])
    q0 = torch.tensor([[0.7, 0.3]])
    q1 = torch.tensor([[0.25, 0.75]])

    def log_softmax_by_hand(a: float, b: float, tau: float) -> tuple[float, float]:
        za, zb = a / tau, b / tau
        lse = math.log(math.exp(za) + math.exp(zb))
        return za - lse, zb - lse

    l1 = log_softmax_by_hand(0.6, 0.1, 0.5)
    l0 = log_softmax_by_hand(0.2, -0.4, 0.5)
    loss_from_q0 = -(0.7 * l1[0] + 0.3 * l1[1])  # crop 0's codes predicted from crop 1
    loss_from_q1 = -(0.25 * l0[0] + 0.75 * l0[1])
    expected = (loss_from_q0 + loss_from_q1) / 2
    got = swapped_prediction_loss([s0, s1], {0: q0, 1: q1}, temperature=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_predictions_give_ln_k() -> None:
    k = 512
    scores = [torch.zeros(4, k), torch.zeros(4, k), torch.zeros(4, k)]
    codes = {0: torch.full((4, k), 1 / k)}
    got = swapped_prediction_loss(scores, codes, temperature=0.1)
    assert got.item() == pytest.approx(math.log(k), rel=1e-5)  # 6.238 for K = 512


def _tiny_swav(**kw: object) -> SwAV:
    cfg = SwAVConfig(num_prototypes=10, hidden_dim=32, feat_dim=16, **kw)
    return SwAV(build_backbone("small_cnn", width=4), cfg)


def test_prototypes_renormalised_and_frozen() -> None:
    torch.manual_seed(0)
    model = _tiny_swav(freeze_prototypes_iters=2)
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)
    model.before_step(0, 0)
    assert torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(10), atol=1e-5)
    views = [torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16), torch.randn(6, 3, 8, 8)]
    out = model.training_step(views, None, 0, 0)
    out.loss.backward()
    assert model.prototypes.weight.grad is not None
    model.after_backward(0, 0)
    assert model.prototypes.weight.grad is None  # frozen at iteration 0 < 2
    model.zero_grad()
    out = model.training_step(views, None, 5, 0)
    out.loss.backward()
    model.after_backward(5, 0)
    assert model.prototypes.weight.grad is not None  # free after the freeze
    assert out.logits is not None and out.logits.shape == (6, 10)


def test_queue_fills_and_is_used_only_when_full() -> None:
    torch.manual_seed(0)
    model = _tiny_swav(queue_length=12, epoch_queue_starts=1)
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    model.training_step(views, None, 0, 0)
    assert model.queue.abs().sum() == 0  # epoch 0 < start: untouched
    for _ in range(3):
        model.training_step(views, None, 1, 1)
    assert (model.queue.abs().sum(dim=2) > 0).all()  # 3 × 4 rows fill a 12-long queue


def test_equipartition_off_targets_are_predictions() -> None:
    torch.manual_seed(0)
    model = _tiny_swav(equipartition=False)
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    out = model.training_step(views, None, 0, 0)
    assert torch.isfinite(out.loss)


# --- distributed Sinkhorn: 2 gloo processes vs one process on the concatenated batch -------
def _dist_worker(rank: int, world: int, init_file: str, scores: torch.Tensor, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        local = scores.chunk(world)[rank]
        q = sinkhorn(local, epsilon=0.05, n_iters=3)
        torch.save(q, os.path.join(out_dir, f"q{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_sinkhorn_equals_single_process() -> None:
    scores = cosine_scores(96, 12, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_dist_worker, args=(2, init_file, scores, tmp), nprocs=2, join=True)
        parts = [torch.load(os.path.join(tmp, f"q{r}.pt"), weights_only=True) for r in range(2)]
    distributed = torch.cat(parts)
    single = sinkhorn(scores, epsilon=0.05, n_iters=3)
    assert torch.allclose(distributed, single, atol=1e-6)
    # The codes are not just each half Sinkhorn-ed on its own:
    separate = torch.cat([sinkhorn(p, 0.05, 3) for p in scores.chunk(2)])
    assert not torch.allclose(separate, single, atol=1e-4)


# --- the queue under DDP: queue_length / world_size rows per rank -----------------------------
def _codes_of_steps(model: SwAV, batches: list[torch.Tensor]) -> torch.Tensor:
    """The Sinkhorn codes of the last batch's first crop after the queue filled on the others."""
    import models.swav as swav_module

    seen: list[torch.Tensor] = []
    real = swav_module.sinkhorn

    def spy(scores: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
        q = real(scores, epsilon, n_iters)
        seen.append(q)
        return q

    swav_module.sinkhorn = spy  # type: ignore[assignment]
    try:
        model.eval()  # BatchNorm with running statistics: an image's z does not depend on its batch
        with torch.no_grad():
            for x in batches:
                model.training_step([x, x.flip(3)], None, 0, 1)
    finally:
        swav_module.sinkhorn = real  # type: ignore[assignment]
    return seen[-2][-batches[-1].shape[0] :]  # codes of crop 0 at the last step


def _queue_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = _tiny_swav(queue_length=12, epoch_queue_starts=0)
        batches = [b.chunk(world)[rank] for b in _queue_batches()]
        codes = _codes_of_steps(model, batches)
        torch.save(
            {"rows": model.queue.shape[1], "codes": codes}, os.path.join(out_dir, f"{rank}.pt")
        )
    finally:
        dist.destroy_process_group()


def _queue_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(6, 3, 16, 16, generator=g) for _ in range(3)]


def test_ddp_ranks_split_the_queue_and_sinkhorn_sees_it_whole() -> None:
    """As the official code: each of 2 ranks keeps 12 / 2 rows, and the codes equal those of one
    process with a 12-row queue on the concatenated batches (it kept 12 rows per rank before)."""
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_queue_worker, args=(2, init_file, tmp), nprocs=2, join=True)
        parts = [torch.load(os.path.join(tmp, f"{r}.pt"), weights_only=True) for r in range(2)]
    assert [p["rows"] for p in parts] == [6, 6]
    torch.manual_seed(0)
    single = _tiny_swav(queue_length=12, epoch_queue_starts=0)
    assert single.queue.shape[1] == 12
    expected = _codes_of_steps(single, _queue_batches())
    assert torch.allclose(torch.cat([p["codes"] for p in parts]), expected, atol=1e-5)


def test_a_ddp_checkpoints_per_rank_queue_loads_into_one_process() -> None:
    """A rank of a 2-process run kept queue_length / 2 rows; loading takes that length."""
    cfg = SwAVConfig(num_prototypes=5, feat_dim=4, hidden_dim=8, queue_length=8)
    rank_model = SwAV(build_backbone("small_cnn", width=4), cfg)
    state = rank_model.state_dict()
    state["queue"] = torch.randn(state["queue"].shape[0], 4, cfg.feat_dim)
    model = SwAV(build_backbone("small_cnn", width=4), cfg)
    model.load_state_dict(state)
    assert model.queue_rows == 4 and torch.equal(model.queue, state["queue"])
    wrong = dict(state, queue=torch.randn(state["queue"].shape[0], 4, cfg.feat_dim + 1))
    with pytest.raises(RuntimeError, match="queue"):
        model.load_state_dict(wrong)
