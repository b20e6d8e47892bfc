"""Timing of the analysis on 10k images: UMAP map cold and cached, galleries for K = 100.

    python benchmarks/analysis_timing.py [--checkpoint PATH] [--images 10000]

Without --checkpoint it first trains a SwAV with K = 100 prototypes on `shapes` for 20 s (the
weights' quality does not matter for timing). Writes benchmarks/out/analysis_timing.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from models.config import TrainConfig
from models.embedding_map import embedding_map
from models.galleries import prototype_galleries
from models.train import Trainer

OUT = Path(__file__).resolve().parent / "out"


def train_k100(folder: Path) -> Path:
    cfg = TrainConfig.model_validate(
        {"method": "swav", "epochs": 100, "max_minutes": 0.33, "swav": {"num_prototypes": 100}}
    )
    Trainer(cfg, folder, progress=False).run()
    return folder / "checkpoints" / "last.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--images", type=int, default=10_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="protoscope-bench-"))
    ckpt = args.checkpoint or train_k100(work / "run")
    cache = work / "cache"
    rows: dict[str, float] = {}

    t0 = time.perf_counter()
    cold = embedding_map(ckpt, split="train", max_images=args.images, cache_dir=cache)
    rows["umap_cold_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = embedding_map(ckpt, split="train", max_images=args.images, cache_dir=cache)
    rows["umap_cached_s"] = time.perf_counter() - t0
    assert warm["cached"] and warm["num_points"] == cold["num_points"]

    t0 = time.perf_counter()
    gal = prototype_galleries(ckpt, split="train", top_k=16, max_images=args.images)
    rows["galleries_k100_s"] = time.perf_counter() - t0
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}",
        "images": cold["num_points"],
        "prototypes": gal["num_prototypes"],
        **{k: round(v, 2) for k, v in rows.items()},
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "analysis_timing.json").write_text(json.dumps(result, indent=2))
    print("| measurement | seconds |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")


if __name__ == "__main__":
    main()
