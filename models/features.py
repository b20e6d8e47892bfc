"""Features of a whole data set split under a trained model: the input of every analysis.

One pass over the images (un-augmented, standardised as in training), in batches, without
gradients, on the best device there is; every row keeps the data set index of its image so a
point on a plot can always be traced back to the picture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from models.augment import Normalize
from models.checkpoints import LoadedModel
from models.config import DataConfig, TrainConfig
from models.data import ImageSet, dataset_mean_std
from models.method import MethodModule
from models.precision import choose_precision


@dataclass
class Features:
    """What one pass over a split produces; all tensors on the CPU, float32, row i ↔ indices[i].

    backbone:   (N, D) backbone outputs — what weighted kNN and the maps use.
    projected:  (N, d) L2-normalised embeddings in the prototypes' space, None when the model
                has no such space (the supervised baseline).
    logits:     (N, K) scores against the prototypes, None when there are none (PCL before
                its first E-step). Predictions are softmax(logits / temperature).
    prototypes: (K, d) unit rows, or None.
    phi:        (K,) PCL's concentration of the first clustering, or None.
    labels:     (N,) int64 class labels, or None when the data set has none.
    indices:    (N,) int64 data set indices.
    """

    backbone: Tensor
    projected: Tensor | None
    logits: Tensor | None
    prototypes: Tensor | None
    phi: Tensor | None
    labels: Tensor | None
    indices: Tensor
    precision: str = "float32"  # the dtype autocast computed in ("float32": none)
    input_side: int = 0  # the side, in pixels, of the images the model saw

    @property
    def num_images(self) -> int:
        return int(self.indices.shape[0])


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


# --- how large the images are that a model is analysed on -------------------------------------
# ResNet-50 divides its input side by 32 before pooling: on a 32-px image its last stage sees a
# 1×1 map, while the released SwAV/PCL models were trained on 224-px (and SwAV's 96-px) crops.
# Rendering a small data set at 224 px instead cost 37 s per 2,000 `shapes` images and 4.1 GFLOP
# per image (a diagnose did not finish in 10 minutes on 2 cores). The policy: images stay in
# memory at the data set's own resolution and each batch is upsampled (bilinear) to at least
# MIN_INPUT_SIDE for such a backbone; 96 px is the smallest crop those models saw in training
# and costs 0.18× the FLOPs of 224 px. Larger images (an image folder at 224) keep their size.
MIN_INPUT_SIDE: dict[str, int] = {"resnet50": 96}
# The resolution each data set comes in; an image folder has none of its own (its images are
# resized to `DataConfig.image_size`).
NATIVE_SIDE: dict[str, int] = {"shapes": 32, "digits": 32, "cifar10": 32, "stl10": 96}


def analysis_sides(config: TrainConfig, source: str, data_name: str) -> tuple[int, int]:
    """(side the images are loaded at, side the model sees) for an analysis on `data_name`.

    Our own checkpoints see images as they were trained on them (same side for both). An
    imported official checkpoint records 224 px, its training resolution, which says nothing
    about the data set it is analysed on: those load at the data set's native side and are
    upsampled per batch to MIN_INPUT_SIDE of the backbone (see above).
    """
    trained = int(config.data.image_size)
    if source == "protoscope":
        return trained, trained
    stored = NATIVE_SIDE.get(data_name, trained)
    return stored, max(stored, MIN_INPUT_SIDE.get(config.backbone, stored))


ProgressFn = Callable[[float, str], None]


@torch.no_grad()
def extract_features(
    model: MethodModule,
    images: ImageSet,
    dataset_name: str,
    batch_size: int = 256,
    max_images: int | None = None,
    device: str = "auto",
    progress: bool = False,
    *,
    input_side: int | None = None,
    amp: str = "auto",
    backbone_only: bool = False,
    report: ProgressFn | None = None,
    what: str = "features",
) -> Features:
    """Run `model` over the first `max_images` images of `images` (all when None).

    One backbone pass per batch (`MethodModule.analyse`). `dataset_name` picks the per-channel
    mean/std the model was trained with; `input_side` upsamples each batch to that side (see
    `analysis_sides`); `amp` chooses the precision as training does (models/precision.py);
    `backbone_only` keeps the backbone features alone (a kNN bank needs nothing else);
    `report(fraction, message)` hears after every batch, for progress bars.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    dev = pick_device(device)
    was_training = model.training
    # channels_last for the weights as for the batches: mixed layouts made oneDNN reorder at
    # every layer (ResNet-50 at 96 px: 1.5× slower).
    model.eval().to(dev).to(memory_format=torch.channels_last)
    n = len(images) if max_images is None else min(len(images), max_images)
    normalize = Normalize(*dataset_mean_std(dataset_name))

    def batch(s: int, e: int) -> Tensor:
        x = normalize(images.images[s:e].to(dev))
        if input_side is not None and input_side != x.shape[-1]:
            x = F.interpolate(x, size=(input_side, input_side), mode="bilinear", antialias=False)
        return x.contiguous(memory_format=torch.channels_last)

    # No timing probe: a measurement must not decide the numbers a report shows or a cache
    # entry holds (under load one pass measured its way to bf16 and the next to float32).
    # Without one, "auto" is float32 on a CPU and reduced precision on CUDA, every time.
    precision = choose_precision(amp, dev)
    back: list[Tensor] = []
    proj: list[Tensor] = []
    logit: list[Tensor] = []
    bar = tqdm(total=n, desc=what, unit="img", disable=not progress, leave=False)
    try:
        with precision.autocast():
            for s in range(0, n, batch_size):
                x = batch(s, min(n, s + batch_size))
                if backbone_only:
                    back.append(model.embed(x).float().cpu())
                else:
                    out = model.analyse(x)
                    back.append(out.embed.float().cpu())
                    if out.projected is not None:
                        proj.append(out.projected.float().cpu())
                    if out.logits is not None:
                        logit.append(out.logits.float().cpu())
                bar.update(x.shape[0])
                if report is not None:
                    done = min(n, s + batch_size)
                    report(done / n, f"{what}: {done:,} of {n:,} images")
    finally:
        bar.close()
        model.train(was_training)
    protos = None if backbone_only else model.prototype_vectors()
    phi = None if backbone_only else model.prototype_phi()
    labels = images.labels[:n].long().clone() if images.labels is not None else None
    return Features(
        backbone=torch.cat(back) if back else torch.zeros(0, 0),
        projected=torch.cat(proj) if proj and len(proj) == len(back) else None,
        logits=torch.cat(logit) if logit and len(logit) == len(back) else None,
        prototypes=protos.cpu() if protos is not None else None,
        phi=phi.cpu() if phi is not None else None,
        labels=labels,
        indices=torch.arange(n, dtype=torch.long),
        precision=precision.dtype,
        input_side=int(input_side or images.image_size),
    )


@dataclass
class Inputs:
    """A checkpoint, the data it is analysed on, and its features there."""

    loaded: LoadedModel
    data: DataConfig
    images: ImageSet
    features: Features
    input_side: int
    loaded_path: Path  # the checkpoint file (the cache keys on its bytes)


def analysis_data(
    loaded: LoadedModel, dataset: str | None = None, data_root: str | None = None
) -> tuple[DataConfig, int]:
    """The data config an analysis of `loaded` loads, and the side its model sees."""
    update: dict[str, Any] = {k: v for k, v in (("name", dataset), ("root", data_root)) if v}
    name = dataset or loaded.config.data.name
    stored, side = analysis_sides(loaded.config, loaded.source, name)
    update["image_size"] = stored
    return loaded.config.data.model_copy(update=update), side


def load_inputs(
    checkpoint: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    max_images: int | None = None,
    progress: ProgressFn | None = None,
    amp: str = "auto",
    cache_dir: str | Path | None = None,
) -> Inputs:
    """Load `checkpoint`, its data set (or `dataset` / `data_root` instead) and the features.

    The features come from the shared on-disk cache when an earlier analysis of the same
    checkpoint (by content) computed them on the same images (see `cached_features`).
    Raises CheckpointError, DatasetError, or ValueError for bad arguments.
    """
    from models.checkpoints import load_model
    from models.data import load_dataset

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be ≥ 1 or None, got {max_images}")
    report = progress or (lambda f, m: None)
    loaded = load_model(checkpoint)  # before any progress: a bad file is the only line printed
    data_cfg, side = analysis_data(loaded, dataset, data_root)
    report(0.05, f"loading {data_cfg.name} ({split})")
    images = load_dataset(data_cfg, split)  # type: ignore[arg-type]
    if len(images) == 0:
        raise ValueError(f"the {split} split of {data_cfg.name} holds no images")
    key = FeatureKey(checkpoint, data_cfg, split, side, amp)
    feats = cached_features(
        key,
        lambda: images,
        lambda: loaded.model,
        max_images,
        cache_dir,
        lambda f, m: report(0.1 + 0.9 * f, m),
    )
    return Inputs(loaded, data_cfg, images, feats, side, Path(checkpoint))


# --- the shared feature cache -------------------------------------------------------------------
# Diagnose, Explore, Prototypes, Compare and the kNN bank all start from the same features of
# the same checkpoint on the same images; computed once, they are kept on disk by content
# hash, so the second page on a checkpoint reads a file instead of running the network.
FEATURES_VERSION = 1  # bump when what Features holds, or how it is computed, changes


@dataclass(frozen=True)
class FeatureKey:
    """What the features of a split depend on: the checkpoint's bytes, the images, the side
    they are fed at, and the precision mode."""

    checkpoint: str | Path
    data: DataConfig
    split: str
    input_side: int
    amp: str

    def file_name(self, backbone_only: bool) -> str:
        from models.disk_cache import cache_key, checkpoint_hash

        key = cache_key(
            FEATURES_VERSION,
            checkpoint_hash(self.checkpoint),
            data=self.data.model_dump(mode="json", exclude={"download"}),
            split=self.split,
            input_side=self.input_side,
            amp=self.amp,
            backbone_only=backbone_only,
        )
        return f"features-{key}.npz"


def features_dir(cache_dir: str | Path | None) -> Path:
    from models.disk_cache import cache_root

    return Path(cache_dir) if cache_dir is not None else cache_root() / "features"


def _to_arrays(f: Features) -> dict[str, np.ndarray]:
    out = {
        "backbone": f.backbone.numpy(),
        "indices": f.indices.numpy(),
        "precision": np.array(f.precision),
        "input_side": np.array(f.input_side),
    }
    for name in ("projected", "logits", "prototypes", "phi", "labels"):
        value = getattr(f, name)
        if value is not None:
            out[name] = value.numpy()
    return out


def _from_arrays(a: dict[str, np.ndarray], n: int) -> Features:
    """The first n rows of a cached entry (features of image i do not depend on the others)."""

    def rows(name: str) -> Tensor | None:
        return torch.from_numpy(a[name][:n].copy()) if name in a else None

    def whole(name: str) -> Tensor | None:
        return torch.from_numpy(a[name].copy()) if name in a else None

    backbone = rows("backbone")
    assert backbone is not None
    return Features(
        backbone=backbone,
        projected=rows("projected"),
        logits=rows("logits"),
        prototypes=whole("prototypes"),
        phi=whole("phi"),
        labels=rows("labels"),
        indices=torch.from_numpy(a["indices"][:n].copy()),
        precision=str(a["precision"]),
        input_side=int(a["input_side"]),
    )


def cached_features(
    key: FeatureKey,
    images: Callable[[], ImageSet],
    model: Callable[[], MethodModule],
    max_images: int | None,
    cache_dir: str | Path | None,
    report: ProgressFn,
    *,
    backbone_only: bool = False,
    what: str = "features",
) -> Features:
    """Features of the first `max_images` images of `key`, from the cache or computed.

    An entry holds the features of the first N images; any request for at most N is a slice of
    it, so pages asking for 2,000 and for all images share one computation. `images` and
    `model` are called only when the features must be computed (a cached kNN bank needs
    neither the train images nor the network); the entry records the split's size, so "all
    images" can be answered from it too.
    """
    from models.disk_cache import load_arrays, save_arrays

    path = features_dir(cache_dir) / key.file_name(backbone_only)
    cached = load_arrays(path) if path.exists() else None
    if cached is not None and "indices" in cached and "split_size" in cached:
        have, size = int(cached["indices"].shape[0]), int(cached["split_size"])
        want = size if max_images is None else min(size, max_images)
        if have >= want:
            report(1.0, f"{what}: {want:,} images (cached)")
            return _from_arrays(cached, want)
    image_set = images()
    feats = extract_features(
        model(),
        image_set,
        key.data.name,
        max_images=max_images,
        input_side=key.input_side,
        amp=key.amp,
        backbone_only=backbone_only,
        report=report,
        what=what,
    )
    save_arrays(path, {**_to_arrays(feats), "split_size": np.array(len(image_set))})
    return feats
