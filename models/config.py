"""Every knob of a training run, in one typed place.

The bounds are part of the contract: the CLI and (later) the HTTP API validate against these
models, so an out-of-range value is refused with the field name and the allowed range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.recipes import CPU, paper_defaults

# The product's one kNN protocol (models/evaluate.py): weighted votes of the k = 20 nearest train
# images at T = 0.07, as InstDisc and DINO evaluate. The defaults of every run's knn_k / knn_t.
KNN_K = 20
KNN_T = 0.07

Method = Literal["swav", "pcl", "supervised"]
AmpMode = Literal["auto", "on", "off"]  # what each means: models/precision.py
BackboneName = Literal["small_cnn", "resnet18", "resnet50"]
Positives = Literal["sample", "cluster"]
Recipe = Literal["cpu", "paper"]


def set_dotted(tree: dict[str, Any], key: str | Sequence[str], value: Any) -> None:
    """tree["a"]["b"] = value for key "a.b" (or ("a", "b")), making the sections on the way.

    The one way a flag, a request field or an override reaches a config tree (the CLI's
    `--set`, `POST /runs`, the benchmarks). Raises ValueError naming the key when a section on
    the way is a value.
    """
    parts = key.split(".") if isinstance(key, str) else list(key)
    node = tree
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"{'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not a section")
    node[parts[-1]] = value


# The named fields of a run (`POST /runs` fields; the CLI's flags are the same names with
# dashes) and the config path each one sets. One table for both doors.
FIELD_PATHS: dict[str, tuple[str, ...]] = {
    "method": ("method",),
    "recipe": ("recipe",),
    "dataset": ("data", "name"),
    "data_root": ("data", "root"),
    "download": ("data", "download"),
    "image_size": ("data", "image_size"),
    "num_train": ("data", "num_train"),
    "backbone": ("backbone",),
    "width": ("width",),
    "epochs": ("epochs",),
    "batch_size": ("batch_size",),
    "lr": ("optim", "lr"),
    "optimizer": ("optim", "name"),
    "seed": ("seed",),
    "max_minutes": ("max_minutes",),
    "max_steps": ("max_steps",),
    "device": ("device",),
    "amp": ("amp",),
    "num_prototypes": ("swav", "num_prototypes"),
    "epsilon": ("swav", "epsilon"),
    "equipartition": ("swav", "equipartition"),
    "freeze_prototypes_iters": ("swav", "freeze_prototypes_iters"),
    "sinkhorn_iterations": ("swav", "sinkhorn_iterations"),
    "num_clusters": ("pcl", "num_clusters"),
    "fixed_phi": ("pcl", "fixed_phi"),
    "warmup_epochs": ("pcl", "warmup_epochs"),
}
# These two exist in both methods' sections; the run's method picks one.
METHOD_FIELDS = ("temperature", "queue_length")


def apply_fields(tree: dict[str, Any], fields: dict[str, Any], method: str) -> None:
    """Set each named field that is not None (FIELD_PATHS, METHOD_FIELDS) in a config tree."""
    for name, path in FIELD_PATHS.items():
        if fields.get(name) is not None:
            set_dotted(tree, path, fields[name])
    for name in METHOD_FIELDS:
        if fields.get(name) is not None and method in ("swav", "pcl"):
            set_dotted(tree, (method, name), fields[name])


class _Strict(BaseModel):
    # allow_inf_nan=False: NaN and ±Infinity (JSON tokens Python accepts) are refused by name.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# The side images are trained at when a run does not say. `shapes` is rendered at 28 px for
# the CPU recipe (2-core AVX2, width 16, one run each, by steps): 28 px learned far faster per
# step than 24 px (75.8 % against 58.9 % kNN at 1,400 steps) for 1.3× the time per step, and
# 32 px no faster per step than 28 px for another 1.2× (benchmarks/RESULTS.md). Everything
# else keeps 32 px (CIFAR-10's own; STL-10 and folders are downscaled to it).
DEFAULT_IMAGE_SIDE: dict[str, int] = {"shapes": 28}


class DataConfig(_Strict):
    """Which images to train on."""

    name: str = Field("shapes", description="shapes | digits | cifar10 | stl10 | imagefolder")
    root: str | None = Field(None, description="local folder for cifar10, stl10, imagefolder")
    download: bool = Field(False, description="let torchvision download cifar10/stl10 to root")
    image_size: int = Field(
        32,
        ge=8,
        le=256,
        description="side in pixels, every image resized to it (default: 24 for shapes, 32 "
        "for the others)",
    )
    num_train: int | None = Field(None, ge=16, description="cap on training images (None: all)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the procedural data set")

    @model_validator(mode="before")
    @classmethod
    def _default_side(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("image_size") is None:
            name = data.get("name", "shapes")
            return {**data, "image_size": DEFAULT_IMAGE_SIDE.get(str(name), 32)}
        return data


class AugmentConfig(_Strict):
    """Multi-crop as in SwAV, sizes given relative to the data set's resolution.

    Defaults are tuned for the 5-minute CPU budget on `shapes` (see benchmarks/): colour is pure
    nuisance there, so hue is randomised fully and half the crops are grey — otherwise SwAV
    happily clusters by colour; rotation is nuisance too (shapes come at any angle). Small crops
    are off here and switched on for SwAV by the cpu recipe (models/recipes.py): on a CPU without
    native bf16, two half-side crops per image bought more kNN per second than a wider network.
    PCL takes small crops as extra queries when asked, but not by default: two of them cost
    14 kNN points at three minutes (README, "PCL probes").
    """

    num_large: int = Field(2, ge=1, le=4)
    num_small: int = Field(0, ge=0, le=8)
    large_frac: float = Field(1.0, gt=0.1, le=1.0, description="large crop side / image side")
    small_frac: float = Field(0.5, gt=0.1, le=1.0, description="small crop side / image side")
    large_scale: tuple[float, float] = (0.5, 1.0)
    small_scale: tuple[float, float] = (0.25, 0.6)
    jitter_strength: float = Field(1.0, ge=0.0, le=1.5)
    hue: float | None = Field(
        0.5, ge=0.0, le=0.5, description="max hue shift in turns (None: 0.2 · jitter_strength)"
    )
    jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_p: float = Field(0.5, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)
    rotate_deg: float = Field(180.0, ge=0.0, le=180.0)
    blur_p: float = Field(0.0, ge=0.0, le=1.0)
    # σ in pixels of the crop, drawn uniformly: 0.1–2.0 as in SwAV's and MoCo v2's code (PIL's
    # blur radius on the already resized crop). It used to grow with the crop (0.1 × side, up
    # to 22 px at 224), which wiped a crop out instead of softening it.
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    @model_validator(mode="after")
    def _scales(self) -> AugmentConfig:
        for name in ("large_scale", "small_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got ({lo}, {hi})")
        lo, hi = self.blur_sigma
        if not 0.0 < lo <= hi <= 50.0:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high <= 50, got ({lo}, {hi})")
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
    freeze_prototypes_epochs: int = Field(0, ge=0, description="also freeze them this many epochs")
    queue_length: int = Field(0, ge=0, le=1_000_000)
    epoch_queue_starts: int = Field(1, ge=0)
    equipartition: bool = Field(
        True, description="False: targets are softmax predictions, not Sinkhorn codes (collapses)"
    )


class PCLConfig(_Strict):
    """PCL: MoCo pair, negatives queue, E-step k-means, ProtoNCE (Li et al. 2021)."""

    feat_dim: int = Field(64, ge=2, le=2048)
    hidden_dim: int | None = Field(
        512, ge=8, le=8192, description="MLP head's hidden width (None: the backbone's output)"
    )
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
    # ProtoNCE's positive columns (models/pcl/proto_nce.py): "sample" as the official
    # code, "cluster" one column per distinct cluster of the batch.
    positives: Positives = "cluster"
    kmeans_iters: int = Field(20, ge=1, le=300)
    kmeans_redo: int = Field(1, ge=1, le=10)
    # The E-step (a key-encoder pass over the whole training set + k-means) every epoch, as
    # upstream; on a CPU with short epochs it can take a fifth of the training time.
    estep_every_epochs: int = Field(1, ge=1, le=1000, description="E-step every N epochs")
    # MoCo's shuffle-BN on one process (see models/pcl/model.py): 1 turns it off. Without it the key
    # encoder's BatchNorm sees the same batch as the query's, a shortcut MoCo §3.3 warns of.
    bn_splits: int = Field(1, ge=1, le=64, description="BatchNorm groups (shuffle-BN stand-in)")

    @model_validator(mode="after")
    def _clusters(self) -> PCLConfig:
        if not self.num_clusters or any(k < 2 for k in self.num_clusters):
            raise ValueError("num_clusters must list at least one K >= 2")
        return self


class OptimConfig(_Strict):
    # lars: SGD whose every step is scaled per tensor by LARC's trust ratio (SwAV's optimiser,
    # models/lars.py).
    name: Literal["sgd", "adamw", "lars"] = "adamw"
    lr: float = Field(0.002, gt=0.0, le=100.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD and LARS only")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    warmup_epochs: float = Field(0.0, ge=0.0)
    final_lr_frac: float = Field(0.0, ge=0.0, le=1.0)
    # Weight decay on biases and norm parameters too, as the official SwAV and PCL code do; off
    # otherwise, as is usual for these methods.
    decay_all: bool = False


class TrainConfig(_Strict):
    """A whole run: method, data, model, schedule."""

    method: Method = "swav"
    # Where the defaults come from (models/recipes.py): "cpu", tuned for minutes on a plain CPU,
    # or "paper", the official code's hyper-parameters. A field the user sets always wins.
    recipe: Recipe = "cpu"
    backbone: BackboneName = "small_cnn"
    # 16, not 32: on a 2-core AVX2 CPU in float32 a step of width 32 cost 4.6× one of width
    # 16 (24-px crops), and width 20 learned no faster per step (benchmarks/RESULTS.md).
    width: int = Field(16, ge=4, le=512, description="base channel width of small_cnn")
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
    amp: AmpMode = Field(
        "auto",
        description="auto: reduced precision only where this machine runs it faster (see "
        "models/precision.py); on: bf16 autocast on CPU, bf16/fp16 on CUDA; off: float32",
    )
    num_threads: int | None = Field(None, ge=1, le=512)
    eval_every_epochs: int = Field(1, ge=1)
    knn_k: int = Field(KNN_K, ge=1, le=1000)
    knn_t: float = Field(KNN_T, gt=0.0, le=10.0)
    log_every_steps: int = Field(1, ge=1)
    eval_max_images: int | None = Field(2000, ge=16)
    # Checkpoints come at every epoch's end and also on a clock, so a long epoch (or a short
    # time-budgeted run) still leaves several to compare: the demo's 10-minute runs used to end
    # inside their first epoch with one checkpoint, written at the very end.
    checkpoint_every_minutes: float | None = Field(
        1.0, gt=0.0, le=10_000.0, description="also checkpoint after this much training time"
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="also checkpoint every this many steps"
    )
    keep_checkpoints: int = Field(
        30,
        ge=2,
        le=100_000,
        description="at most this many checkpoint files per run (besides last.pt); beyond, the "
        "one closest to its neighbours goes, never the first or the newest",
    )
    # A quick kNN on a fixed subset between epochs, so the kNN curve rises while a run is young.
    knn_every_steps: int | None = Field(100, ge=1, description="quick kNN every N steps")
    knn_bank_images: int = Field(2000, ge=16, le=100_000, description="quick kNN: train images")
    knn_query_images: int = Field(1000, ge=16, le=100_000, description="quick kNN: test images")
    knn_max_overhead: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="skip a quick kNN while they have cost more than this share of training time",
    )

    @property
    def prediction_temperature(self) -> float:
        """The softmax temperature of the method's predictions over its prototypes."""
        if self.method == "swav":
            return self.swav.temperature
        if self.method == "pcl":
            return self.pcl.temperature
        return 1.0

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_bool(cls, value: object) -> object:
        # Configs written before "auto" existed stored a bool: True meant bf16 autocast.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @model_validator(mode="after")
    def _method_defaults(self) -> TrainConfig:
        """Fill what the user did not set from the recipe (models/recipes.py), then check."""
        if self.recipe == "paper":
            table = paper_defaults(self.method, self.batch_size, self.epochs)
        else:
            table = CPU[self.method]
        for dotted, value in table.items():
            *parents, name = dotted.split(".")
            node: BaseModel = self
            for part in parents:
                node = getattr(node, part)
            if name not in node.model_fields_set:
                setattr(node, name, value)  # validated on assignment
        if self.method == "pcl":
            splits = self.pcl.bn_splits
            if splits > 1 and (self.batch_size % splits or self.batch_size // splits < 2):
                raise ValueError(
                    f"pcl.bn_splits = {splits} must divide batch_size = {self.batch_size} into "
                    "groups of at least 2 images (BatchNorm needs two); pick a divisor or 1"
                )
        return self
