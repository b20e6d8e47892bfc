"""Features of a whole data set split under a trained model: the input of every analysis.

One pass over the images (un-augmented, standardised as in training), in batches, without
gradients, on the best device there is; every row keeps the data set index of its image so a
point on a plot can always be traced back to the picture.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from models.augment import Normalize
from models.checkpoints import LoadedModel
from models.config import DataConfig, TrainConfig
from models.data import ImageSet, dataset_mean_std
from models.method import MethodModule


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

    @property
    def num_images(self) -> int:
        return int(self.indices.shape[0])


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@torch.no_grad()
def extract_features(
    model: MethodModule,
    images: ImageSet,
    dataset_name: str,
    batch_size: int = 256,
    max_images: int | None = None,
    device: str = "auto",
    progress: bool = False,
) -> Features:
    """Run `model` over the first `max_images` images of `images` (all when None).

    `dataset_name` picks the per-channel mean/std the model was trained with.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    dev = pick_device(device)
    was_training = model.training
    model.eval().to(dev)
    n = len(images) if max_images is None else min(len(images), max_images)
    normalize = Normalize(*dataset_mean_std(dataset_name))
    back: list[Tensor] = []
    proj: list[Tensor] = []
    logit: list[Tensor] = []
    has_proj = has_logits = True
    bar = tqdm(total=n, desc="features", unit="img", disable=not progress, leave=False)
    # Autocast only on CUDA: on CPU, float32 keeps the analysis exactly reproducible.
    amp = torch.autocast("cuda", dtype=torch.float16) if dev.type == "cuda" else nullcontext()
    try:
        with amp:
            for s in range(0, n, batch_size):
                x = normalize(images.images[s : min(n, s + batch_size)].to(dev))
                back.append(model.embed(x).float().cpu())
                if has_proj:
                    z = model.project(x)
                    has_proj = z is not None
                    if z is not None:
                        proj.append(z.float().cpu())
                if has_logits:
                    lg = model.prototype_logits(x)
                    has_logits = lg is not None
                    if lg is not None:
                        logit.append(lg.float().cpu())
                bar.update(x.shape[0])
    finally:
        bar.close()
        model.train(was_training)
    protos = model.prototype_vectors()
    phi = model.prototype_phi()
    labels = images.labels[:n].long().clone() if images.labels is not None else None
    return Features(
        backbone=torch.cat(back) if back else torch.zeros(0, 0),
        projected=torch.cat(proj) if has_proj and proj else None,
        logits=torch.cat(logit) if has_logits and logit else None,
        prototypes=protos.cpu() if protos is not None else None,
        phi=phi.cpu() if phi is not None else None,
        labels=labels,
        indices=torch.arange(n, dtype=torch.long),
    )



@dataclass
class Inputs:
    """A checkpoint, the data it is analysed on, and its features there."""

    loaded: LoadedModel
    data: DataConfig
    images: ImageSet
    features: Features


def load_inputs(
    checkpoint: str | Path,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    max_images: int | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> Inputs:
    """Load `checkpoint`, its data set (or `dataset` / `data_root` instead) and the features.

    Raises CheckpointError, DatasetError, or ValueError for bad arguments.
    """
    from models.checkpoints import load_model
    from models.data import load_dataset

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be ≥ 1 or None, got {max_images}")
    report = progress or (lambda f, m: None)
    report(0.0, "loading checkpoint")
    loaded = load_model(checkpoint)
    update = {k: v for k, v in (("name", dataset), ("root", data_root)) if v is not None}
    data_cfg = loaded.config.data.model_copy(update=update)
    report(0.1, f"loading {data_cfg.name} ({split})")
    images = load_dataset(data_cfg, split)  # type: ignore[arg-type]
    if len(images) == 0:
        raise ValueError(f"the {split} split of {data_cfg.name} holds no images")
    report(0.2, "features")
    feats = extract_features(loaded.model, images, data_cfg.name, max_images=max_images)
    return Inputs(loaded, data_cfg, images, feats)


def temperature_of(config: TrainConfig) -> float:
    """The softmax temperature of a method's predictions over its prototypes."""
    if config.method == "swav":
        return float(config.swav.temperature)
    if config.method == "pcl":
        return float(config.pcl.temperature)
    return 1.0


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file, read in chunks (checkpoints can be hundreds of MB)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
