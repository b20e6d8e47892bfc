"""Every knob of a training run, in one typed place.

The bounds are part of the contract: the CLI and (later) the HTTP API validate against these
models, so an out-of-range value is refused with the field name and the allowed range.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["swav", "pcl", "supervised"]
BackboneName = Literal["small_cnn", "resnet18", "resnet50"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Which images to train on."""

    name: str = Field("shapes", description="shapes | digits | cifar10 | stl10 | imagefolder")
    root: str | None = Field(None, description="local folder for cifar10, stl10, imagefolder")
    download: bool = Field(False, description="let torchvision download cifar10/stl10 to root")
    image_size: int = Field(
        32, ge=8, le=256, description="side in pixels (digits/imagefolder are resized to it)"
    )
    num_train: int | None = Field(None, ge=16, description="cap on training images (None: all)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the procedural data set")


class AugmentConfig(_Strict):
    """Multi-crop as in SwAV, sizes given relative to the data set's resolution.

    Defaults are tuned for the 5-minute CPU budget on `shapes` (see benchmarks/): colour is pure
    nuisance there, so hue is randomised fully and half the crops are grey — otherwise SwAV
    happily clusters by colour; rotation is nuisance too (shapes come at any angle); small crops
    (16 px) and crop scales below 0.5 slowed learning at this budget, so they are off by default.
    """

    num_large: int = Field(2, ge=1, le=4)
    num_small: int = Field(0, ge=0, le=8)
    large_frac: float = Field(1.0, gt=0.1, le=1.0, description="large crop side / image side")
    small_frac: float = Field(0.5, gt=0.1, le=1.0, description="small crop side / image side")
    large_scale: tuple[float, float] = (0.5, 1.0)
    small_scale: tuple[float, float] = (0.1, 0.35)
    jitter_strength: float = Field(1.0, ge=0.0, le=1.5)
    hue: float | None = Field(
        0.5, ge=0.0, le=0.5, description="max hue shift in turns (None: 0.2 · jitter_strength)"
    )
    jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_p: float = Field(0.5, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)
    rotate_deg: float = Field(180.0, ge=0.0, le=180.0)
    blur_p: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _scales(self) -> AugmentConfig:
        for name in ("large_scale", "small_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got ({lo}, {hi})")
        return self


class SwAVConfig(_Strict):
    """SwAV: projection head, prototypes, Sinkhorn, queue (Caron et al. 2020).

    ε defaults to 0.02, not the paper's 0.05: with colour removed by augmentation the early
    scores are nearly equal, and at ε = 0.05 the Sinkhorn codes stayed almost uniform and the
    run drifted into uniform collapse (loss = ln K) — the sharper codes break that symmetry.
    The queue is off: at batch 64 it slowed learning on `shapes` within the 5-minute budget.
    """

    num_prototypes: int = Field(128, ge=2, le=100_000)
    hidden_dim: int = Field(512, ge=8, le=8192)
    feat_dim: int = Field(64, ge=2, le=2048)
    temperature: float = Field(0.1, gt=0.0, le=10.0)
    epsilon: float = Field(0.02, ge=0.005, le=10.0)
    sinkhorn_iterations: int = Field(3, ge=1, le=100)
    crops_for_assign: tuple[int, ...] = (0, 1)
    freeze_prototypes_iters: int = Field(100, ge=0)
    queue_length: int = Field(0, ge=0, le=1_000_000)
    epoch_queue_starts: int = Field(1, ge=0)
    equipartition: bool = Field(
        True, description="False: targets are softmax predictions, not Sinkhorn codes (collapses)"
    )


class PCLConfig(_Strict):
    """PCL: MoCo pair, negatives queue, E-step k-means, ProtoNCE (Li et al. 2021)."""

    feat_dim: int = Field(64, ge=2, le=2048)
    hidden_dim: int = Field(512, ge=8, le=8192)
    mlp: bool = True
    # BatchNorm inside the MLP head (as SwAV's head has). Off, as upstream: on the 5-minute
    # `shapes` budget it did not help (kNN 14 % vs 17 % at 1,100 steps, see README).
    head_bn: bool = False
    queue_length: int = Field(1024, ge=2, le=1_000_000)
    # 0.999 (upstream) suits ~10⁵–10⁶ steps; a 5-minute CPU run has ~5·10³, where the key
    # encoder would barely move, so the default is 0.99.
    momentum: float = Field(0.99, ge=0.0, lt=1.0)
    temperature: float = Field(0.2, gt=0.0, le=10.0)
    num_clusters: tuple[int, ...] = (40, 80, 160)
    warmup_epochs: int = Field(1, ge=0)
    num_negative_prototypes: int | None = Field(
        None, ge=1, description="negatives per clustering (None: queue_length, as upstream)"
    )
    alpha: float = Field(10.0, gt=0.0)
    fixed_phi: bool = Field(False, description="ablation: every cluster's φ = temperature")
    # Both crops act as query and as key (MoCo v3's symmetrised loss): twice the signal per
    # image for one extra key-encoder pass. Off upstream.
    symmetric: bool = False
    proto_weight: float = Field(1.0, ge=0.0, le=100.0, description="weight of ProtoNCE")
    kmeans_iters: int = Field(20, ge=1, le=300)
    kmeans_redo: int = Field(1, ge=1, le=10)

    @model_validator(mode="after")
    def _clusters(self) -> PCLConfig:
        if not self.num_clusters or any(k < 2 for k in self.num_clusters):
            raise ValueError("num_clusters must list at least one K >= 2")
        return self


# PCL's default learning-rate warm-up, in epochs. Without it, with AdamW's full step from the
# first iteration, InfoNCE climbed to ln(queue + 1) and kNN stayed near chance for ~1,400 steps
# on `shapes` (likely the query encoder outrunning the momentum key encoder; see README).
PCL_WARMUP_EPOCHS = 2.0


class OptimConfig(_Strict):
    name: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(0.002, gt=0.0, le=100.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    warmup_epochs: float = Field(0.0, ge=0.0)
    final_lr_frac: float = Field(0.0, ge=0.0, le=1.0)


class TrainConfig(_Strict):
    """A whole run: method, data, model, schedule."""

    method: Method = "swav"
    backbone: BackboneName = "small_cnn"
    width: int = Field(32, ge=4, le=512, description="base channel width of small_cnn")
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    swav: SwAVConfig = Field(default_factory=SwAVConfig)
    pcl: PCLConfig = Field(default_factory=PCLConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=2, le=65_536)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    max_minutes: float | None = Field(None, gt=0.0, description="stop after this wall time")
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy's seeds stop at 2**32 - 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CPU, fp16/bf16 on CUDA")
    num_threads: int | None = Field(None, ge=1, le=512)
    eval_every_epochs: int = Field(1, ge=1)
    knn_k: int = Field(20, ge=1, le=1000)
    knn_t: float = Field(0.07, gt=0.0, le=10.0)
    log_every_steps: int = Field(1, ge=1)
    eval_max_images: int | None = Field(2000, ge=16)

    @model_validator(mode="after")
    def _method_defaults(self) -> TrainConfig:
        """Defaults that depend on the method; a value the user set always wins."""
        if self.method == "pcl" and "warmup_epochs" not in self.optim.model_fields_set:
            self.optim.warmup_epochs = PCL_WARMUP_EPOCHS
        return self
