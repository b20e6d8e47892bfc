"""Timing of the analysis on 10k images: UMAP map cold and cached, galleries for K = 100.

    python benchmarks/analysis_timing.py [--checkpoint PATH] [--images 10000] [--minutes 0.3]

Without --checkpoint it first trains a SwAV with K = 100 prototypes on `shapes` for ~20 s (the
weights' quality does not matter for timing). All timings use the `shapes` train split (or the
checkpoint's data set). Besides the end-to-end calls it times their parts (data + features,
UMAP alone once numba has compiled, the faiss search alone) so a slow figure can be placed.
Writes benchmarks/out/analysis_timing.json (or --json PATH) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from models.config import TrainConfig
from models.embedding_map import embedding_map, umap_2d
from models.features import load_inputs
from models.galleries import galleries_from, prototype_galleries
from models.train import Trainer

OUT = Path(__file__).resolve().parent / "out"
T = TypeVar("T")


def train_k100(folder: Path, minutes: float) -> Path:
    """A SwAV run with K = 100 prototypes, stopped after `minutes` of training."""
    cfg = TrainConfig.model_validate(
        {"method": "swav", "epochs": 1000, "max_minutes": minutes, "swav": {"num_prototypes": 100}}
    )
    Trainer(cfg, folder, progress=False).run()
    return folder / "checkpoints" / "last.pt"


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(ckpt: Path, images: int, cache: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """(seconds per measurement, sizes): the order matters — the first UMAP compiles numba."""
    rows: dict[str, float] = {}
    kwargs: dict[str, Any] = {"split": "train", "max_images": images, "cache_dir": cache}
    cold, rows["map_cold_first_in_process_s"] = timed(lambda: embedding_map(ckpt, **kwargs))
    warm, rows["map_cached_s"] = timed(lambda: embedding_map(ckpt, **kwargs))
    assert warm["cached"] and warm["points"] == cold["points"]
    inputs, rows["data_and_features_s"] = timed(
        lambda: load_inputs(ckpt, split="train", max_images=images)
    )
    x = inputs.features.backbone.numpy()
    _, rows["umap_2d_compiled_fit5000_s"] = timed(lambda: umap_2d(x, max_fit=5000))
    _, rows["umap_2d_compiled_fit_all_s"] = timed(lambda: umap_2d(x, max_fit=len(x)))
    gal, rows["galleries_end_to_end_s"] = timed(
        lambda: prototype_galleries(ckpt, split="train", top_k=16, max_images=images)
    )
    f = inputs.features
    assert f.projected is not None and f.prototypes is not None
    _, rows["galleries_search_only_s"] = timed(
        lambda: galleries_from(f.projected, f.prototypes, f.logits, f.indices, 16, f.phi)
    )
    sizes = {"images": cold["num_points"], "prototypes": len(gal["prototypes"])}
    return rows, sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="time this checkpoint instead of training")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=0.3, help="training budget without one")
    ap.add_argument("--json", type=Path, default=OUT / "analysis_timing.json", help="output")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="protoscope-bench-"))
    ckpt = args.checkpoint or train_k100(work / "run", args.minutes)
    rows, sizes = measure(ckpt, args.images, work / "cache")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
        f"torch threads, torch {torch.__version__}, cuda {torch.cuda.is_available()}",
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        **sizes,
        **{k: round(v, 3) for k, v in rows.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{sizes['images']} images, K = {sizes['prototypes']}\n")
    print("| measurement | seconds |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")


if __name__ == "__main__":
    main()
