"""A checkpoint with a big map, offline: the setup of the Explore scale test and benchmark.

No built-in split reaches 50,000 images (shapes: 10,000 train, 2,000 test), so `shapes` images
are written as an image folder (`imagefolder`: test/<class>/*.png, and a small train/) where
the backend looks by default (<data dir>/datasets/imagefolder). A tiny run trains on its train
split for a few steps through `POST /runs`; its test split then holds as many images as asked
for, and `precompute_map` has the backend compute and cache their map, so whatever comes next
pays for drawing, not for UMAP.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from models.data import make_shapes

TRAIN_IMAGES = 256
TRAIN_SEED, TEST_SEED = 0, 1


def _write(folder: Path, num: int, seed: int, size: int) -> None:
    data = make_shapes(num, seed, size)
    classes = data.classes or ["images"]
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
    pixels = data.images.permute(0, 2, 3, 1).numpy()
    labels = data.labels.numpy() if data.labels is not None else np.zeros(num, dtype=np.int64)
    for i in range(num):
        Image.fromarray(pixels[i]).save(folder / classes[int(labels[i])] / f"{i:06d}.png")


def write_image_folder(data_dir: Path, test_images: int, size: int = 16) -> Path:
    """<data_dir>/datasets/imagefolder with `test_images` shapes to map (written once)."""
    root = data_dir / "datasets" / "imagefolder"
    done = root / f".complete-{test_images}-{size}"
    if not done.exists():
        _write(root / "train", TRAIN_IMAGES, TRAIN_SEED, size)
        _write(root / "test", test_images, TEST_SEED, size)
        done.touch()
    return root


def train_checkpoint(api: str, size: int = 16, max_steps: int = 4) -> int:
    """A tiny SwAV run on the image folder's train split; its last checkpoint's id."""
    body: dict[str, Any] = {
        "method": "swav",
        "dataset": "imagefolder",
        "epochs": 1,
        "max_steps": max_steps,
        "batch_size": 32,
        "num_prototypes": 10,
        "image_size": size,
        "width": 8,
        "seed": 3,
        "amp": False,
        "freeze_prototypes_iters": 2,
        "config": {"swav": {"hidden_dim": 32, "feat_dim": 16}, "eval_max_images": 64},
    }
    r = requests.post(f"{api}/runs", json=body, timeout=30)
    r.raise_for_status()
    run_id = r.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run = requests.get(f"{api}/runs/{run_id}", timeout=10).json()
        if run["status"] == "completed" and run.get("latest_checkpoint_id"):
            return int(run["latest_checkpoint_id"])
        if run["status"] not in ("queued", "running", "completed"):
            raise RuntimeError(f"run {run_id} ended {run['status']}: {run.get('error')}")
        time.sleep(0.5)
    raise TimeoutError(f"run {run_id} did not finish")


def precompute_map(api: str, ckpt: int, points: int, timeout: float = 1800) -> tuple[float, int]:
    """(seconds, points on the map) until the backend has the map of the first `points` test
    images (as Explore asks for it: columns), computed and cached."""
    t0 = time.monotonic()
    params: dict[str, str | int] = {"max_images": points, "format": "columns"}
    while time.monotonic() - t0 < timeout:
        r = requests.get(f"{api}/checkpoints/{ckpt}/embedding", params=params, timeout=120)
        if r.status_code == 200:
            return time.monotonic() - t0, int(r.json()["num_points"])
        if r.status_code != 202:
            raise RuntimeError(f"map of {points}: {r.status_code} {r.text[:300]}")
        time.sleep(0.5)
    raise TimeoutError(f"map of {points} points")
