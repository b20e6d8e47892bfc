"""Training-step throughput: our default CPU SwAV against lightly's SwAV head, prototypes, loss.

    python benchmarks/lightly_throughput.py [--quick] [--json PATH] [--steps 30] [--warmup 5]

Both contenders share everything but the SwAV part: the default TrainConfig(method="swav")
(small_cnn width 32 backbone, batch 64 of `shapes`, 2 large 32-px crops made by the batched
tensor MultiCrop, channels_last, AdamW with the trainer's parameter groups, bf16 autocast on
the CPU when cfg.amp, the torch thread count the trainer would use). Ours is models.swav.SwAV
(projection MLP, bias-free prototypes, log-domain Sinkhorn, swapped prediction); lightly's is
SwaVProjectionHead + SwaVPrototypes + SwaVLoss with the same sizes, temperature, ε and
iterations. The step is the trainer's `_train_step` minus its event bookkeeping; the step
numbers start past the prototype freeze (both libraries freeze them for the first 100 steps),
so the figures are the steady state. Ours through `Trainer._train_step` itself (with the
per-step usage statistics of its events) is reported too.

Steps are timed in interleaved blocks (ours, lightly, trainer, repeated) after the warm-up
steps, so load from other jobs on a shared machine falls on all alike; the median step time
gives steps/s, crops/s = steps/s · crops per step. Writes benchmarks/out/lightly_throughput.json
and prints a markdown table.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import finish, load_average, markdown_table, parser
from torch import Tensor

from models.backbones import build_backbone
from models.build import build_model
from models.config import SwAVConfig, TrainConfig
from models.method import MethodModule, StepOutput
from models.swav import backbone_by_size
from models.train import Trainer, _build_optimizer, _lr_at

FROZEN_OFFSET = 1000  # step numbers past both libraries' prototype freeze (100 steps)


class LightlySwAV(MethodModule):
    """Our backbone and crop batching, lightly's SwAV projection head, prototypes and loss."""

    def __init__(self, backbone: torch.nn.Module, cfg: SwAVConfig, num_large: int) -> None:
        from lightly.loss import SwaVLoss
        from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes

        super().__init__()
        self.backbone = backbone
        self.num_large = num_large
        out_dim = int(backbone.out_dim)  # type: ignore[arg-type]
        self.projection_head = SwaVProjectionHead(out_dim, cfg.hidden_dim, cfg.feat_dim)
        self.prototypes = SwaVPrototypes(
            cfg.feat_dim, cfg.num_prototypes, n_steps_frozen_prototypes=cfg.freeze_prototypes_iters
        )
        self.criterion = SwaVLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            sinkhorn_epsilon=cfg.epsilon,
        )

    def embed(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    @torch.no_grad()
    def before_step(self, iteration: int, epoch: int) -> None:
        self.prototypes.normalize()

    def training_step(
        self, views: list[Tensor], labels: Tensor | None, iteration: int, epoch: int
    ) -> StepOutput:
        batch = views[0].shape[0]
        # Crops of one size through the backbone at once, exactly as ours.
        z = F.normalize(self.projection_head(backbone_by_size(self.backbone, views)), dim=1)
        scores = self.prototypes(z, step=iteration)
        per_crop = list(scores.split(batch))
        loss = self.criterion(per_crop[: self.num_large], per_crop[self.num_large :])
        return StepOutput(loss=loss.reshape(()), logits=per_crop[0].detach())


def make_step(
    trainer: Trainer, model: MethodModule
) -> tuple[Callable[[Tensor, int], float], torch.optim.Optimizer]:
    """The trainer's step for `model`, without the step event's statistics."""
    cfg = trainer.cfg
    model.to(trainer.device).to(memory_format=torch.channels_last)
    model.train()
    optimizer = _build_optimizer(cfg, model)

    def step(idx: Tensor, iteration: int) -> float:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(cfg, 0.1, iteration, trainer.steps_per_epoch)
        images = trainer.train_images[idx]
        views = [v.contiguous(memory_format=torch.channels_last) for v in trainer.multicrop(images)]
        model.set_batch_index(idx)
        model.before_step(iteration, 0)
        with trainer._autocast():
            out = model(views, None, iteration, 0)
        if not torch.isfinite(out.loss):
            raise RuntimeError(f"non-finite loss {out.loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        model.after_backward(iteration, 0)
        optimizer.step()
        model.after_step(iteration, 0)
        return float(out.loss.detach())

    return step, optimizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser((__doc__ or "").splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="timed steps per contender")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per contender")
    args = ap.parse_args(argv)
    quick: bool = args.quick
    steps: int = args.steps or (6 if quick else 30)
    warmup: int = args.warmup or (2 if quick else 5)
    block = 3 if quick else 5
    load_start = load_average()
    t_start = time.perf_counter()

    cfg = TrainConfig(method="swav")  # the shipped defaults
    cfg = TrainConfig.model_validate({**cfg.model_dump(), "data": {"num_train": 2048}})
    trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="protoscope-lightly-")), progress=False)
    trainer._setup()  # data, MultiCrop, our model, optimizer, threads, device, seeds
    crops_per_step = len(trainer.multicrop.sizes) * cfg.batch_size

    torch.manual_seed(0)
    ours = build_model(cfg, len(trainer.train_set))
    torch.manual_seed(0)
    theirs = LightlySwAV(
        build_backbone(cfg.backbone, cfg.width), cfg.swav, num_large=cfg.augment.num_large
    )
    step_ours, _ = make_step(trainer, ours)
    step_theirs, _ = make_step(trainer, theirs)
    trainer.step = FROZEN_OFFSET
    temperature = cfg.swav.temperature

    def step_trainer(idx: Tensor, iteration: int) -> float:
        return float(trainer._train_step(idx, 0, temperature)["loss"])

    contenders: dict[str, Callable[[Tensor, int], float]] = {
        "ours": step_ours,
        "lightly": step_theirs,
        "ours_trainer_step": step_trainer,
    }
    gen = torch.Generator().manual_seed(0)
    n_train = len(trainer.train_set)

    def batch() -> Tensor:
        return torch.randint(n_train, (cfg.batch_size,), generator=gen).to(trainer.device)

    times: dict[str, list[float]] = {k: [] for k in contenders}
    losses: dict[str, list[float]] = {k: [] for k in contenders}
    iteration = FROZEN_OFFSET
    for fn in contenders.values():
        for _ in range(warmup):
            fn(batch(), iteration)
    done = 0
    while done < steps:
        n = min(block, steps - done)
        for name, fn in contenders.items():
            for i in range(n):
                idx = batch()
                t0 = time.perf_counter()
                losses[name].append(fn(idx, iteration + done + i))
                times[name].append(time.perf_counter() - t0)
        done += n
        print(f"{done}/{steps} steps each")

    figures: dict[str, dict[str, float]] = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        figures[name] = {
            "median_step_s": med,
            "steps_per_s": 1.0 / med,
            "crops_per_s": crops_per_step / med,
            "mean_step_s": statistics.fmean(ts),
            "min_step_s": min(ts),
            "last_loss": losses[name][-1],
        }
    ratio = figures["ours"]["steps_per_s"] / figures["lightly"]["steps_per_s"]
    labels = {
        "ours": "ours (models.swav.SwAV)",
        "lightly": f"lightly {version('lightly')} SwaV head/prototypes/loss",
        "ours_trainer_step": "ours via Trainer._train_step (+ event statistics)",
    }
    md = (
        f"Default CPU SwAV config: {cfg.backbone} width {cfg.width}, batch {cfg.batch_size}, "
        f"crops {trainer.multicrop.sizes} px, amp (bf16 autocast) {cfg.amp}, "
        f"{torch.get_num_threads()} torch threads; median of {steps} steps after {warmup} "
        f"warm-up steps each, interleaved in blocks of {block}:\n\n"
        + markdown_table(
            ["contender", "steps/s", "crops/s", "median step ms", "min step ms"],
            [
                [
                    labels[k],
                    f["steps_per_s"],
                    f["crops_per_s"],
                    1000 * f["median_step_s"],
                    1000 * f["min_step_s"],
                ]
                for k, f in figures.items()
            ],
        )
        + f"\n\nours / lightly (steps/s): {ratio:.3f}"
    )
    result: dict[str, Any] = {
        "benchmark": "lightly_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": quick,
        "lightly": version("lightly"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(trainer.device),
        "amp": cfg.amp,
        "batch_size": cfg.batch_size,
        "crop_sizes": trainer.multicrop.sizes,
        "crops_per_step": crops_per_step,
        "steps": steps,
        "warmup": warmup,
        "figures": figures,
        "ours_over_lightly": ratio,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "seconds": round(time.perf_counter() - t_start, 1),
        "markdown": md,
    }
    json_path: Path | None = args.json
    return finish("lightly_throughput", result, json_path)


if __name__ == "__main__":
    main()
