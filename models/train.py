"""One training loop for SwAV, PCL and the supervised baseline.

The loop emits plain event dicts (written to `events.jsonl` in the run folder and handed to an
optional callback), checkpoints atomically every epoch, and resumes exactly: each epoch's
sampling and augmentation draw from generators seeded by (seed, epoch, rank), and a checkpoint
written mid-epoch also records the global RNG state and how many batches were done.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from models.augment import MultiCrop, Normalize
from models.build import build_model
from models.checkpoints import (
    capture_rng_state,
    load_checkpoint,
    make_payload,
    restore_rng_state,
    save_checkpoint,
)
from models.collapse_rules import RECENT_STEPS, STEP_FIELDS
from models.config import TrainConfig
from models.data import ImageSet, dataset_mean_std, load_dataset
from models.distributed import DistInfo, all_gather_cat, barrier, init_distributed
from models.evaluate import knn_bank_size, weighted_knn_top1
from models.lars import LARS
from models.method import MethodModule
from models.precision import Precision, choose_precision
from models.prototype_usage import usage_summary
from models.recipes import fit_to_data
from models.swav import backbone_by_size

Event = dict[str, Any]
EmitFn = Callable[[Event], None]


class TrainingError(RuntimeError):
    """The run cannot go on (a NaN loss, say); the message says why."""


def _pick_device(cfg: TrainConfig, dist_info: DistInfo) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device 'cuda' was asked for, but CUDA is not available here")
        return torch.device("cuda", dist_info.local_rank)
    return torch.device("cpu")


def _lr_at(cfg: TrainConfig, progress: float, step: int, steps_per_epoch: int) -> float:
    """Cosine decay to final_lr_frac · lr over progress ∈ [0, 1], times a linear warm-up.

    The warm-up counts steps (warmup_epochs · steps_per_epoch), not a fraction of `epochs`: a run
    bounded by max_steps or max_minutes sets epochs far above what it will reach, and a warm-up
    measured against `epochs` would then last a handful of steps.
    """
    o = cfg.optim
    final = o.lr * o.final_lr_frac
    warm_steps = o.warmup_epochs * steps_per_epoch
    ramp = min(1.0, (step + 1) / warm_steps) if warm_steps > 0 else 1.0
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return ramp * (final + (o.lr - final) * cos)


def _build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters, as is usual; the official SwAV and PCL
    # code decay every tensor (optim.decay_all, the paper recipe).
    o = cfg.optim
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 and not o.decay_all else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr)
    if o.name == "lars":
        return LARS(groups, lr=o.lr, momentum=o.momentum)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)


class Trainer:
    """Trains one run into `out_dir` (config.json, events.jsonl, checkpoints/)."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        resume: bool = False,
        emit: EmitFn | None = None,
        progress: bool = True,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.resume = resume
        self.emit_cb = emit
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.dist = DistInfo()
        self._events_file: Any = None
        # The latest logged steps, written into every checkpoint: a checkpoint's verdict reads
        # its training log with the live alert's rules (models/collapse_rules.py) from the file
        # alone, with no event log beside it.
        self.recent_steps: deque[Event] = deque(maxlen=RECENT_STEPS)
        # A copy of the model and a batch, while the precision is being measured.
        self._probe_state: tuple[MethodModule, list[Tensor]] | None = None

    # --- events -------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if not self.dist.is_main:
            return
        event.setdefault("time", time.time())
        if event.get("type") == "step":
            self.recent_steps.append({k: event.get(k) for k in STEP_FIELDS if k in event})
        if self._events_file is not None:
            self._events_file.write(json.dumps(event) + "\n")
            self._events_file.flush()
        if self.emit_cb is not None:
            self.emit_cb(event)

    # --- set-up ---------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        self.dist = init_distributed(want_cuda)
        self.device = _pick_device(cfg, self.dist)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)

        self.train_set: ImageSet = load_dataset(cfg.data, "train")
        self.test_set: ImageSet = load_dataset(cfg.data, "test")
        # The paper recipe's queues and crop sizes, adapted to this data set (and said so).
        cfg, self.recipe_notes = fit_to_data(cfg, len(self.train_set), self.train_set.image_size)
        self.cfg = cfg
        mean, std = dataset_mean_std(cfg.data.name)
        self.normalize = Normalize(mean, std)
        self.multicrop = MultiCrop(cfg.augment, self.train_set.image_size, self.normalize)
        self.train_images = self.train_set.images.to(self.device)
        self.train_labels = (
            self.train_set.labels.to(self.device) if self.train_set.labels is not None else None
        )
        num_classes = len(self.train_set.classes) if self.train_set.classes else None
        if cfg.method == "supervised" and self.train_labels is None:
            raise TrainingError(f"data set {cfg.data.name!r} has no labels to supervise with")

        self.model: MethodModule = build_model(cfg, len(self.train_set), num_classes)
        self.model.to(self.device).to(memory_format=torch.channels_last)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = _build_optimizer(cfg, self.model)
        self.num_classes = num_classes
        self.precision: Precision = self._choose_precision()
        # fp16 (CUDA without bf16) needs loss scaling; bf16 and float32 do not.
        self.scaler = self.precision.grad_scaler()

        world = self.dist.world_size
        self.steps_per_epoch = max(1, len(self.train_set) // (cfg.batch_size * world))
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.step = 0
        self.start_epoch = 0
        self.skip_batches = 0
        self.train_seconds = 0.0
        self._last_checkpoint_at = (0, 0.0)  # (step, train_seconds) of the latest checkpoint
        self._quick_knn_seconds = 0.0  # time the quick kNN has cost so far
        self._quick_knn_sets: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def _autocast(self) -> AbstractContextManager[Any]:
        return self.precision.autocast()

    def _step_probe(self, autocast: AbstractContextManager[Any]) -> None:
        """Forward + backward of the backbone on a batch of crops (precision measurement).

        The backbone is what precision changes the speed of. It runs on a copy, with the global
        RNG forked, so measuring changes nothing the run keeps (weights, BN statistics, random
        stream), and without collectives, so under DDP rank 0 can measure alone.
        """
        if self._probe_state is None:
            with torch.random.fork_rng(devices=[]):
                n = min(self.cfg.batch_size, 16, len(self.train_set))
                views = self.multicrop(self.train_images[:n])
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            self._probe_state = (copy.deepcopy(self.model).train(), views)
        model, views = self._probe_state
        with autocast:
            out = backbone_by_size(model.embed, views)
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    def _choose_precision(self) -> Precision:
        """Rank 0 decides (measuring if need be) and every rank follows, so all ranks agree."""
        probe = self._step_probe if self.dist.is_main else None
        choice = choose_precision(self.cfg.amp, self.device, probe)
        self._probe_state = None  # drop the copy
        if self.dist.enabled:
            box = [choice]
            torch.distributed.broadcast_object_list(box, src=0)
            choice = box[0]
        return choice

    # --- checkpoints --------------------------------------------------------------------
    def epochs_done(self, step: int | None = None) -> float:
        """Epochs of training behind `step` (default: now), fractional: 0.4 is 40 % of one."""
        return (self.step if step is None else step) / max(1, self.steps_per_epoch)

    def _save(self, epoch: int, batch_in_epoch: int, kind: str) -> Path | None:
        """Write a checkpoint and last.pt atomically; `kind` is epoch, timed or final.

        An epoch checkpoint is written after the epoch's last step; timed and final ones in
        the middle of an epoch, before batch `batch_in_epoch`, with the RNG state, so a resume
        from any of them continues exactly.
        """
        if not self.dist.is_main:
            return None
        complete = kind == "epoch"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        payload = make_payload(
            config=self.cfg,
            model_state=self.model.state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            epoch=epoch,
            step=self.step,
            rng_state=capture_rng_state(),
            extra={
                "num_train": len(self.train_set),
                "num_classes": self.num_classes,
                "epoch_complete": complete,
                "batch_in_epoch": batch_in_epoch,
                "train_seconds": self.train_seconds,
                "epochs_done": self.epochs_done(),
                "kind": kind,
                "recent_steps": list(self.recent_steps),
                "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            },
        )
        if complete:
            name = f"epoch_{epoch + 1:04d}.pt"
        elif kind == "timed":
            name = f"step_{self.step:07d}.pt"
        else:
            name = f"partial_{self.step:07d}.pt"
        path = self.ckpt_dir / name
        save_checkpoint(path, payload)
        save_checkpoint(self.ckpt_dir / "last.pt", payload)
        self._last_checkpoint_at = (self.step, self.train_seconds)
        self.emit(
            {
                "type": "checkpoint",
                "path": str(path),
                "epoch": epoch,
                "step": self.step,
                "epoch_complete": complete,
                "epochs_done": self.epochs_done(),
                "kind": kind,
                "train_seconds": self.train_seconds,
            }
        )
        self._retain()
        return path

    def _retain(self) -> None:
        """Keep at most `keep_checkpoints` files: drop the ones closest to their neighbours.

        Never the first (the early end of an early-against-late comparison) nor the newest;
        what is left stays spread over the whole run instead of crowding at its end.
        """
        files = sorted(
            (p for p in self.ckpt_dir.glob("*.pt") if p.name != "last.pt"),
            key=lambda p: (self._step_of(p), p.name),
        )
        steps = [self._step_of(p) for p in files]
        while len(files) > self.cfg.keep_checkpoints and len(files) > 2:
            # The inner file whose removal leaves the smallest hole between its neighbours.
            i = min(range(1, len(files) - 1), key=lambda j: steps[j + 1] - steps[j - 1])
            victim = files.pop(i)
            steps.pop(i)
            victim.unlink(missing_ok=True)
            self.emit({"type": "checkpoint_removed", "path": str(victim), "step": self.step})

    def _step_of(self, path: Path) -> int:
        """The step a checkpoint file of this run was written at, from its name alone:
        step_/partial_ files carry it, epoch_NNNN.pt is the end of epoch N."""
        kind, _, number = path.stem.partition("_")
        if not number.isdigit():
            return 0
        return int(number) * (self.steps_per_epoch if kind == "epoch" else 1)

    def _checkpoint_due(self) -> bool:
        """A timed checkpoint is due (steps or training minutes since the last one)."""
        cfg = self.cfg
        last_step, last_seconds = self._last_checkpoint_at
        if self.step == last_step:
            return False
        if cfg.checkpoint_every_steps and self.step - last_step >= cfg.checkpoint_every_steps:
            return True
        every = cfg.checkpoint_every_minutes
        return bool(every and self.train_seconds - last_seconds >= 60 * every)

    def _restore(self) -> None:
        path = self.ckpt_dir / "last.pt"
        if not path.exists():
            raise TrainingError(f"--resume: no checkpoint at {path}")
        payload = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(payload["model"])
        if payload.get("optimizer"):
            self.optimizer.load_state_dict(payload["optimizer"])
        extra = payload.get("extra") or {}
        self.step = int(payload["step"])
        self.train_seconds = float(extra.get("train_seconds", 0.0))
        self.recent_steps.extend(s for s in extra.get("recent_steps") or [] if isinstance(s, dict))
        self._last_checkpoint_at = (self.step, self.train_seconds)
        if self.scaler is not None and isinstance(extra.get("grad_scaler"), dict):
            self.scaler.load_state_dict(extra["grad_scaler"])
        if extra.get("epoch_complete", True):
            self.start_epoch = int(payload["epoch"]) + 1
            self.skip_batches = 0
        else:
            self.start_epoch = int(payload["epoch"])
            self.skip_batches = int(extra.get("batch_in_epoch", 0))
            restore_rng_state(payload["rng"])
        self._resumed_rng = not extra.get("epoch_complete", True)

    # --- features for PCL's E-step and for evaluation -----------------------------------
    @torch.no_grad()
    def _features(
        self,
        fn: Callable[[Tensor], Tensor],
        images: Tensor,
        shard: bool = True,
        float32: bool = False,
    ) -> Tensor:
        """fn over every image (un-augmented, standardised), in index order, in batches.

        Under DDP each rank does an equal shard and the shards are gathered, so every rank ends
        with all N features. `float32`: no autocast, as the official code computes PCL's E-step
        features (k-means and φ read small differences of distance; bf16 keeps 3 digits).
        """
        was_training = self.model.training
        self.model.eval()
        n = images.shape[0]
        world, rank = (self.dist.world_size, self.dist.rank) if shard else (1, 0)
        per_rank = math.ceil(n / world)
        idx = torch.arange(rank * per_rank, (rank + 1) * per_rank, device=images.device)
        idx = idx.clamp(max=n - 1)  # pad the last shard by repeating the last image
        outs = []
        bs = 512
        with contextlib.nullcontext() if float32 else self._autocast():
            for s in range(0, idx.numel(), bs):
                x = self.normalize(images[idx[s : s + bs]].to(self.device))
                outs.append(fn(x.contiguous(memory_format=torch.channels_last)).float())
        feats = torch.cat(outs)
        if world > 1:
            feats = all_gather_cat(feats)[:n]
        self.model.train(was_training)
        return feats

    def _embed_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone features (N, D) and prototype logits (N, K; K = 0 without prototypes) of
        un-augmented images, from one backbone pass per batch."""
        dim: list[int] = []

        def both(x: Tensor) -> Tensor:
            out = self.model.analyse(x)
            logits = out.logits if out.logits is not None else x.new_zeros((x.shape[0], 0))
            dim[:] = [out.embed.shape[1]]
            return torch.cat([out.embed.float(), logits.float()], dim=1)

        joined = self._features(both, images, shard=False)
        return joined[:, : dim[0]], joined[:, dim[0] :]

    @torch.no_grad()
    def _evaluate(self, epoch: int) -> Event:
        """The full evaluation of an epoch's end: kNN of the test images (at most
        eval_max_images) against the first `knn_bank_size` train images, as Diagnose does, and
        the test split's usage."""
        cfg = self.cfg
        event: Event = {"type": "epoch_eval", "epoch": epoch, "step": self.step}
        test = self.test_set
        n_eval = len(test) if cfg.eval_max_images is None else min(len(test), cfg.eval_max_images)
        test_images = test.images[:n_eval].to(self.device)
        query, logits = self._embed_and_logits(test_images)
        if test.labels is not None and self.train_labels is not None:
            n_bank = min(len(self.train_set), knn_bank_size(cfg.backbone))
            bank = self._features(self.model.embed, self.train_images[:n_bank], shard=False)
            event["knn_top1"] = weighted_knn_top1(
                bank,
                self.train_labels[:n_bank],
                query,
                test.labels[:n_eval].to(self.device),
                k=cfg.knn_k,
                temperature=cfg.knn_t,
            )
            event["knn_bank"] = int(bank.shape[0])
            event["knn_queries"] = int(n_eval)
        event["eval_images"] = int(n_eval)
        if logits.shape[1] > 0:
            summary = usage_summary(logits, cfg.prediction_temperature)
            event["assignments"] = logits.argmax(dim=1).tolist()
            event["eval_usage"] = summary["usage"]
            event["eval_active_prototypes"] = summary["active_prototypes"]
            event["eval_usage_entropy"] = summary["usage_entropy"]
            event["eval_assignment_entropy"] = summary["assignment_entropy"]
        return event

    def _quick_knn_due(self) -> bool:
        cfg = self.cfg
        every = cfg.knn_every_steps
        if not every or self.step == 0 or self.step % every:
            return False
        if self.test_set.labels is None or self.train_labels is None:
            return False
        # Never more than knn_max_overhead of the training time (a ResNet on large images).
        return self._quick_knn_seconds <= cfg.knn_max_overhead * self.train_seconds

    @torch.no_grad()
    def _quick_knn(self, epoch: int) -> Event:
        """kNN of a fixed test subset against a fixed train subset: cheap enough to run every
        `knn_every_steps` steps, so the curve rises during an epoch, not only at its end."""
        cfg = self.cfg
        t0 = time.perf_counter()
        if self._quick_knn_sets is None:
            n_bank = min(cfg.knn_bank_images, len(self.train_set))
            n_query = min(cfg.knn_query_images, len(self.test_set))
            # Seeded, so every quick kNN of the run (and of its resume) uses the same images;
            # random, because folders on disk are often sorted by class.
            gen = torch.Generator().manual_seed(cfg.seed + 12_345)
            bank_idx = torch.randperm(len(self.train_set), generator=gen)[:n_bank].sort().values
            assert self.test_set.labels is not None and self.train_labels is not None
            self._quick_knn_sets = (
                self.train_images[bank_idx.to(self.device)],
                self.train_labels[bank_idx.to(self.device)],
                self.test_set.images[:n_query].to(self.device),
                self.test_set.labels[:n_query].to(self.device),
            )
        bank_x, bank_y, query_x, query_y = self._quick_knn_sets
        with torch.random.fork_rng(devices=[]):  # no draw here may move the training stream
            bank = self._features(self.model.embed, bank_x, shard=False)
            query = self._features(self.model.embed, query_x, shard=False)
        top1 = weighted_knn_top1(bank, bank_y, query, query_y, k=cfg.knn_k, temperature=cfg.knn_t)
        seconds = time.perf_counter() - t0
        self._quick_knn_seconds += seconds
        return {
            "type": "knn",
            "epoch": epoch,
            "step": self.step,
            "epochs_done": self.epochs_done(),
            "knn_top1": top1,
            "knn_bank": int(bank.shape[0]),
            "knn_queries": int(query.shape[0]),
            "eval_seconds": seconds,
            "train_seconds": self.train_seconds,
        }

    # --- the loop -------------------------------------------------------------------------
    def _check_finite(self, loss: Tensor) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {self.step}; try a lower learning rate "
                f"(now {self.cfg.optim.lr}) or a larger epsilon"
            )

    def _progress_fraction(self) -> float:
        p = self.step / max(1, self.total_steps)
        if self.cfg.max_minutes:
            p = max(p, self.train_seconds / (60 * self.cfg.max_minutes))
        return min(1.0, p)

    def _budget_spent(self) -> bool:
        cfg = self.cfg
        if cfg.max_steps and self.step >= cfg.max_steps:
            return True
        return bool(cfg.max_minutes and self.train_seconds >= 60 * cfg.max_minutes)

    def run(self) -> Event:
        """Train to the end (or budget, or stop request); returns the final `end` event."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._setup()
        if self.dist.is_main:
            (self.out_dir / "config.json").write_text(self.cfg.model_dump_json(indent=2))
            self._events_file = open(self.out_dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._resumed_rng = False
        if self.resume:
            self._restore()
        try:
            end = self._loop()
        except Exception as exc:  # report, then let the caller see the error too
            self.emit({"type": "end", "status": "failed", "reason": str(exc), "step": self.step})
            raise
        finally:
            if self._events_file is not None:
                self._events_file.close()
                self._events_file = None
        return end

    def _loop(self) -> Event:
        cfg = self.cfg
        self.emit(
            {
                "type": "start",
                "config": cfg.model_dump(mode="json"),
                "device": str(self.device),
                "world_size": self.dist.world_size,
                "num_train": len(self.train_set),
                "num_test": len(self.test_set),
                "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps,
                "resumed_at_step": self.step if self.resume else None,
                "classes": self.train_set.classes,
                "crop_sizes": self.multicrop.sizes,
                "recipe": cfg.recipe,
                "recipe_notes": self.recipe_notes,
                "precision": self.precision.as_event(),
                "num_threads": torch.get_num_threads(),
            }
        )
        if self.progress and self.dist.is_main:
            print(f"{cfg.method} {cfg.data.name}: {self.precision.summary()}", file=sys.stderr)
            for note in self.recipe_notes:
                print(f"recipe {cfg.recipe}: {note}", file=sys.stderr)
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(
                total=self.total_steps,
                initial=self.step,
                unit="step",
                desc=f"{cfg.method} {cfg.data.name}",
                dynamic_ncols=True,
            )
        status, reason = "completed", ""
        epoch = self.start_epoch
        temperature = cfg.prediction_temperature
        crops_per_step = len(self.multicrop.sizes) * cfg.batch_size * self.dist.world_size
        try:
            while epoch < cfg.epochs:
                # Fresh, seeded randomness per epoch and rank makes resume exact.
                seed = cfg.seed * 1_000_003 + epoch * 7919 + self.dist.rank
                if not self._resumed_rng:
                    torch.manual_seed(seed)
                self._resumed_rng = False
                t0 = time.perf_counter()
                info = self.model.on_epoch_start(
                    epoch, lambda fn: self._features(fn, self.train_images, float32=True)
                )
                self.train_seconds += time.perf_counter() - t0
                perm_gen = torch.Generator().manual_seed(seed)
                if self.dist.enabled:  # every rank draws the same permutation, takes its slice
                    perm_gen.manual_seed(cfg.seed * 1_000_003 + epoch * 7919)
                perm = torch.randperm(len(self.train_set), generator=perm_gen)
                per_rank = cfg.batch_size * self.steps_per_epoch
                start = self.dist.rank * per_rank
                perm = perm[start : start + per_rank].to(self.device)
                epoch_losses: list[float] = []
                self.model.train()
                for b in range(self.skip_batches, self.steps_per_epoch):
                    if self._budget_spent() or self.should_stop():
                        status = "stopped" if self.should_stop() else "completed"
                        reason = "stop requested" if self.should_stop() else "budget reached"
                        self._save(epoch, b, "final")
                        raise StopIteration
                    if self._checkpoint_due():
                        self._save(epoch, b, "timed")
                    if self._quick_knn_due():
                        self.emit(self._quick_knn(epoch))
                    t0 = time.perf_counter()
                    idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    event = self._train_step(idx, epoch, temperature)
                    dt = time.perf_counter() - t0
                    self.train_seconds += dt
                    event["crops_per_s"] = crops_per_step / max(dt, 1e-9)
                    event["train_seconds"] = self.train_seconds
                    epoch_losses.append(event["loss"])
                    if self.step % cfg.log_every_steps == 0 or b == self.steps_per_epoch - 1:
                        self.emit(event)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            loss=f"{event['loss']:.3f}",
                            epoch=epoch + 1,
                            active=event.get("active_prototypes", "-"),
                        )
                self.skip_batches = 0
                ev: Event = {
                    "type": "epoch",
                    "epoch": epoch,
                    "step": self.step,
                    "train_loss": float(np.mean(epoch_losses)) if epoch_losses else None,
                    "train_seconds": self.train_seconds,
                }
                ev.update(info)
                if (epoch + 1) % cfg.eval_every_epochs == 0 or epoch + 1 == cfg.epochs:
                    ev.update({k: v for k, v in self._evaluate(epoch).items() if k != "type"})
                self.emit(ev)
                self._save(epoch, self.steps_per_epoch, "epoch")
                barrier()
                epoch += 1
                if bar is not None and "knn_top1" in ev:
                    bar.write(
                        f"epoch {epoch}: loss {ev['train_loss']:.4f} "
                        f"kNN top-1 {100 * ev['knn_top1']:.1f}%"
                    )
        except StopIteration:
            ev = {
                "type": "epoch",
                "epoch": epoch,
                "step": self.step,
                "partial": True,
                "train_seconds": self.train_seconds,
            }
            ev.update({k: v for k, v in self._evaluate(epoch).items() if k != "type"})
            self.emit(ev)
        finally:
            if bar is not None:
                bar.close()
        end = {
            "type": "end",
            "status": status,
            "reason": reason,
            "step": self.step,
            "epoch": epoch,
            "train_seconds": self.train_seconds,
        }
        self.emit(end)
        return end

    def _train_step(self, idx: Tensor, epoch: int, temperature: float) -> Event:
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = _lr_at(cfg, self._progress_fraction(), self.step, self.steps_per_epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        images = self.train_images[idx]
        labels = self.train_labels[idx] if self.train_labels is not None else None
        views = [v.contiguous(memory_format=torch.channels_last) for v in self.multicrop(images)]
        self.model.set_batch_index(idx)
        self.model.before_step(self.step, epoch)
        with self._autocast():
            out = self.net(views, labels, self.step, epoch)
        self._check_finite(out.loss)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            out.loss.backward()
            self.model.after_backward(self.step, epoch)
            self.optimizer.step()
        else:
            self.scaler.scale(out.loss).backward()
            self.model.after_backward(self.step, epoch)
            self.scaler.step(self.optimizer)  # skips the step when fp16 gradients overflowed
            self.scaler.update()
        self.model.after_step(self.step, epoch)
        self.step += 1
        event: Event = {
            "type": "step",
            "step": self.step,
            "epoch": epoch,
            "loss": float(out.loss.detach()),
            "lr": lr,
        }
        event.update(out.scalars)
        if out.logits is not None:
            event.update(usage_summary(out.logits, temperature))
            event["num_prototypes"] = int(out.logits.shape[1])
        return event


def set_process_env_defaults() -> None:
    """Keep OpenMP from oversubscribing when several ranks share one CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ["WORLD_SIZE"])))
