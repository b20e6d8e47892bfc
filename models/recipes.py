"""The recipes a run starts from: `cpu` (the default) and `paper`.

A recipe is a table of TrainConfig fields (dotted names) per method. `TrainConfig` fills every
field the user did not set from its recipe's table; a value the user set always wins, so
`--recipe paper --set swav.epsilon=0.03` is the paper with one change.

- `cpu`: tuned for a few minutes of training on a 2-core CPU without native bf16 (each value
  was measured, see the comments and README "Deviations from the papers"). The fields it does
  not name keep the plain defaults of models/config.py, which are the CPU recipe too.
- `paper`: the official code's algorithm and hyper-parameters (facebookresearch/swav's 200-epoch
  batch-256 ImageNet command; salesforce/PCL's PCL v2 command), as far as the data set
  allows. What depends on the data set is adapted and said so in the run's `start` event
  (`recipe_notes`, see `fit_to_data`): crop sizes scale with the image (224/96 px on 224-px
  images), queues are capped below the training set's size.

Kept by hand, as plain data: no library holds these recipes.
"""

from __future__ import annotations

import math
from typing import Any

# --- cpu ---------------------------------------------------------------------------------------
CPU: dict[str, dict[str, Any]] = {
    # Two small crops (half the side, scale 0.25–0.6) cost 1.35× a step and gave +6 kNN points
    # at equal steps; AdamW 4·10⁻³ instead of 2·10⁻³ gave +3 at 3,300 steps; a constant rate
    # ended at 73.8 % where the cosine to 0 ended at 61.7 % over 2,400 steps (RESULTS.md).
    "swav": {"augment.num_small": 2, "optim.lr": 0.004, "optim.final_lr_frac": 1.0},
    # AdamW 4·10⁻³ (60.0 % against 56.4 % at 2·10⁻³, three-minute probes); a warm-up of two
    # epochs (without it InfoNCE climbed to ln(queue + 1) for ~1,400 steps); a constant rate:
    # 75.4 % against 62.8 % with the cosine to 0 at 4,900 steps (README "PCL probes").
    "pcl": {"optim.lr": 0.004, "optim.warmup_epochs": 2.0, "optim.final_lr_frac": 1.0},
    "supervised": {},
}

# --- paper -------------------------------------------------------------------------------------
# What SwAV's and MoCo v2's pipelines share: colour jitter with p 0.8, grey 0.2, flip 0.5,
# Gaussian blur p 0.5 with σ 0.1–2.0, no rotation, large crops the size of the image.
_SHARED_AUGMENT: dict[str, Any] = {
    "augment.num_large": 2,
    "augment.large_frac": 1.0,
    "augment.jitter_p": 0.8,
    "augment.grayscale_p": 0.2,
    "augment.flip_p": 0.5,
    "augment.rotate_deg": 0.0,
    "augment.blur_p": 0.5,
    "augment.blur_sigma": (0.1, 2.0),
}
# SwAV's multi-crop and colour (main_swav.py + src/multicropdataset.py): 2 × 224 px at scale
# 0.14–1 and 6 × 96 px at 0.05–0.14, colour jitter (0.8, 0.8, 0.8, 0.2).
_SWAV_AUGMENT: dict[str, Any] = {
    **_SHARED_AUGMENT,
    "augment.num_small": 6,
    "augment.small_frac": 96 / 224,
    "augment.large_scale": (0.14, 1.0),
    "augment.small_scale": (0.05, 0.14),
    "augment.jitter_strength": 1.0,
    "augment.hue": 0.2,
}
# MoCo v2's augmentation (PCL's --aug-plus): one 224-px crop per view at scale 0.2–1, jitter
# (0.4, 0.4, 0.4, 0.1).
_MOCO_V2_AUGMENT: dict[str, Any] = {
    **_SHARED_AUGMENT,
    "augment.num_small": 0,
    "augment.large_scale": (0.2, 1.0),
    "augment.jitter_strength": 0.5,
    "augment.hue": 0.1,
}

PAPER: dict[str, dict[str, Any]] = {
    "swav": {
        **_SWAV_AUGMENT,
        "swav.epsilon": 0.05,
        "swav.temperature": 0.1,
        "swav.sinkhorn_iterations": 3,
        "swav.num_prototypes": 3000,
        "swav.hidden_dim": 2048,
        "swav.feat_dim": 128,
        "swav.queue_length": 3840,
        "swav.epoch_queue_starts": 15,
        # --freeze_prototypes_niters 5005: one epoch of ImageNet at batch 256.
        "swav.freeze_prototypes_iters": 0,
        "swav.freeze_prototypes_epochs": 1,
        # SGD + LARC (trust 10⁻³, no clipping), base lr 0.6 (the authors keep 0.6 below a
        # batch of 512), cosine to 0.0006 without warm-up, weight decay 10⁻⁶ on every
        # parameter.
        "optim.name": "lars",
        "optim.lr": 0.6,
        "optim.momentum": 0.9,
        "optim.weight_decay": 1e-6,
        "optim.decay_all": True,
        "optim.warmup_epochs": 0.0,
        "optim.final_lr_frac": 0.001,
    },
    "pcl": {
        **_MOCO_V2_AUGMENT,
        "pcl.feat_dim": 128,
        "pcl.mlp": True,
        "pcl.head_bn": False,
        "pcl.hidden_dim": None,  # MoCo v2's head: hidden width = the backbone's output width
        "pcl.temperature": 0.2,
        "pcl.momentum": 0.999,
        "pcl.queue_length": 16384,
        "pcl.positives": "sample",
        "pcl.num_negative_prototypes": 16384,  # r: the code's --pcl-r (the paper says 16,000)
        "pcl.kmeans_iters": 20,
        "pcl.kmeans_redo": 5,
        "pcl.alpha": 10.0,
        "pcl.symmetric": False,
        "pcl.proto_weight": 1.0,
        "pcl.estep_every_epochs": 1,
        # SGD lr 0.03 at batch 256 (scaled linearly with the batch, MoCo's rule: see
        # `paper_defaults`), momentum 0.9, weight decay 10⁻⁴ on every parameter, cosine to 0.
        "optim.name": "sgd",
        "optim.momentum": 0.9,
        "optim.weight_decay": 1e-4,
        "optim.decay_all": True,
        "optim.warmup_epochs": 0.0,
        "optim.final_lr_frac": 0.0,
    },
    "supervised": {},
}

RECIPES = {"cpu": CPU, "paper": PAPER}

PCL_PAPER_LR_AT_256 = 0.03
PCL_PAPER_WARMUP_SHARE = 20 / 200  # --warmup-epoch 20 of --epochs 200: InfoNCE only
MOCO_GPU_BATCH = 32  # 256 images on 8 GPUs: the batch each shuffle-BN statistic saw


def paper_defaults(method: str, batch_size: int, epochs: int) -> dict[str, Any]:
    """The `paper` table of `method`, with the values that depend on the batch or the length."""
    table = dict(PAPER[method])
    if method == "pcl":
        table["optim.lr"] = PCL_PAPER_LR_AT_256 * batch_size / 256
        table["pcl.warmup_epochs"] = max(1, math.ceil(PCL_PAPER_WARMUP_SHARE * epochs))
        # MoCo's shuffle-BN over 8 GPUs: each BatchNorm saw 32 images. On one process the
        # stand-in splits the batch into groups of that size (one group below 64 images).
        splits = batch_size // MOCO_GPU_BATCH
        table["pcl.bn_splits"] = splits if splits > 1 and batch_size % splits == 0 else 1
    return table


def fit_to_data(cfg: Any, num_train: int, image_size: int) -> tuple[Any, list[str]]:
    """Adapt what depends on the data set, and say what was adapted (for the `start` event).

    Queues cannot be longer than the training set (they would hold an image twice, and MoCo
    needs a multiple of the batch); the paper's crop sizes are fractions of 224 px.
    """
    notes: list[str] = []
    if cfg.recipe != "paper":
        return cfg, notes
    batch = cfg.batch_size
    cap = max(batch, (num_train - batch) // batch * batch)
    if cfg.method == "swav":
        large = max(8, round(cfg.augment.large_frac * image_size))
        small = max(8, round(cfg.augment.small_frac * image_size))
        if image_size != 224:
            notes.append(
                f"crops of {large} and {small} px: the paper's 224 and 96 px scaled to "
                f"{image_size}-px images"
            )
        if cfg.swav.queue_length > cap:
            notes.append(
                f"SwAV queue {cap} instead of {cfg.swav.queue_length}: at most the "
                f"{num_train} training images"
            )
            cfg = cfg.model_copy(update={"swav": cfg.swav.model_copy(update={"queue_length": cap})})
    if cfg.method == "pcl":
        if image_size != 224:
            notes.append(f"crops of {image_size} px: the paper's 224 px is the image side")
        if cfg.pcl.queue_length > cap:
            notes.append(
                f"MoCo queue {cap} instead of {cfg.pcl.queue_length}: at most the {num_train} "
                "training images, a multiple of the batch"
            )
            cfg = cfg.model_copy(update={"pcl": cfg.pcl.model_copy(update={"queue_length": cap})})
        if cfg.pcl.bn_splits > 1:
            notes.append(
                f"shuffle-BN stand-in: BatchNorm in {cfg.pcl.bn_splits} groups of "
                f"{batch // cfg.pcl.bn_splits} images (MoCo: 32 per GPU)"
            )
    return cfg, notes
