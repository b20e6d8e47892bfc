"""Timeline timing (models/timeline): a run of 15 checkpoints on 2,000 images, cold and cached.

    python benchmarks/timeline_timing.py [--quick] [--aligned-umap] [--json PATH]

A real SwAV run on `shapes` (15 epochs, a checkpoint after each; training is not timed) is put
on one timeline the way the backend's GET /runs/{id}/timeline computes it (`run_timeline`):
per checkpoint its features (network pass over the 2,000 test images), its UMAP map (Explore's
own, `embedding_map.map_of`), verdict and galleries; then the Procrustes chain, cluster flow and
usage. Steps timed, in this fresh process and under fresh cache folders:

- UMAP's numba compile on a throwaway map, as the server does at start-up (`warm_up`);
- cold: every cache empty; cold + compile is what a page waits for on a server that started
  no warm-up;
- one new checkpoint: the timeline again after the last checkpoint's frame is deleted (a run
  that gained a checkpoint since the page was opened);
- cached: every frame read from its file (the backend then also keeps the whole answer).

`--aligned-umap` also times umap-learn's AlignedUMAP over the same 15 feature sets (PCA to 50
dims, identity relations between consecutive epochs): the alternative to the Procrustes chain.
Writes benchmarks/out/timeline_timing.json, prints it, a markdown table and one JSON summary
line (the last line).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import finish, load_average, markdown_table, parser

COLD_TARGET_S = 60.0  # the budgets, on 2 CPU cores
CACHED_TARGET_S = 2.0


def train_run(root: Path, epochs: int) -> list[Path]:
    """A small real SwAV run on shapes with one checkpoint per epoch; its checkpoint files."""
    from models.config import TrainConfig
    from models.train import Trainer

    cfg = TrainConfig.model_validate(
        {
            "method": "swav",
            "epochs": epochs,
            "batch_size": 64,
            "seed": 0,
            "width": 16,
            "data": {"name": "shapes", "num_train": 512},
            "swav": {"num_prototypes": 30},
            "eval_max_images": 200,
            "knn_every_steps": None,
            "checkpoint_every_minutes": None,
        }
    )
    Trainer(cfg, root, progress=False).run()
    return sorted((root / "checkpoints").glob("epoch_*.pt"))


def aligned_umap_seconds(files: list[Path], images: int, cache: Path) -> float:
    """AlignedUMAP over every checkpoint's features (from the feature cache just filled)."""
    import numpy as np
    import umap

    from models.embedding_map import pca_reduce
    from models.features import load_inputs

    feats = [
        pca_reduce(load_inputs(f, max_images=images, cache_dir=cache).features.backbone.numpy())
        for f in files
    ]
    relation = {i: i for i in range(feats[0].shape[0])}
    t0 = time.perf_counter()
    umap.AlignedUMAP(n_neighbors=15, min_dist=0.1, random_state=0).fit(
        [np.ascontiguousarray(f) for f in feats], relations=[relation] * (len(feats) - 1)
    )
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser((__doc__ or "").splitlines()[0])
    ap.add_argument("--aligned-umap", action="store_true", help="also time AlignedUMAP")
    args = ap.parse_args(argv)
    quick: bool = args.quick
    epochs, images = (4, 500) if quick else (15, 2000)
    work = Path(tempfile.mkdtemp(prefix="protoscope-timeline-bench-"))
    os.environ["PROTOSCOPE_CACHE"] = str(work / "cache")
    load_start = load_average()
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    files = train_run(work / "run", epochs)
    train_s = time.perf_counter() - t0
    assert len(files) == epochs, files
    print(f"trained {epochs} epochs in {train_s:.1f}s (not part of the timings)")

    import numpy as np

    from models.embedding_map import umap_2d
    from models.timeline import TimelineCheckpoint, run_timeline

    t0 = time.perf_counter()
    umap_2d(np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
    compile_s = time.perf_counter() - t0
    print(f"UMAP compile (the server's start-up warm-up) {compile_s:.1f}s")

    cache = work / "cache"
    checkpoints = [TimelineCheckpoint(f, i + 1) for i, f in enumerate(files)]

    def timeline() -> tuple[float, dict[str, Any]]:
        t = time.perf_counter()
        out = run_timeline(
            checkpoints,
            cache / "timeline",
            cache / "umap",
            max_images=images,
            feature_cache=cache / "features",
        )
        return time.perf_counter() - t, out

    cold_s, out = timeline()
    assert out["cached_checkpoints"] == 0 and out["num_points"] == images
    print(f"cold {cold_s:.1f}s")
    frames = sorted((cache / "timeline").glob("frame-*.npz"), key=lambda p: p.stat().st_mtime)
    frames[-1].unlink()  # the newest checkpoint's part: as if it had just been written
    one_new_s, again = timeline()
    assert again["cached_checkpoints"] == epochs - 1
    cached_s, again = timeline()
    assert again["cached_checkpoints"] == epochs
    answer_mb = len(json.dumps({k: v for k, v in out.items() if k != "galleries"})) / 1e6
    print(f"one new checkpoint {one_new_s:.2f}s, cached {cached_s:.2f}s")

    aligned_s = (
        aligned_umap_seconds(files, images, cache / "features") if args.aligned_umap else None
    )
    if aligned_s is not None:
        print(f"AlignedUMAP over {epochs} epochs {aligned_s:.1f}s")

    rows = [
        ["UMAP compile (server start-up)", compile_s],
        ["cold: every cache empty", cold_s],
        ["cold + compile (no warm-up)", cold_s + compile_s],
        ["cold, per checkpoint", cold_s / epochs],
        ["one new checkpoint", one_new_s],
        ["cached (frames on disk)", cached_s],
    ]
    if aligned_s is not None:
        rows.append([f"AlignedUMAP of the {epochs} epochs (fit only)", aligned_s])
    md = (
        f"SwAV on shapes, {epochs} checkpoints (one per epoch), timeline of the first "
        f"{images:,} test images; the answer without galleries is {answer_mb:.2f} MB of JSON.\n\n"
        + markdown_table(["step", "seconds"], rows)
    )
    result: dict[str, Any] = {
        "benchmark": "timeline_timing",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": quick,
        "checkpoints": epochs,
        "images": images,
        "train_s": train_s,
        "umap_compile_s": compile_s,
        "cold_s": cold_s,
        "cold_with_compile_s": cold_s + compile_s,
        "one_new_checkpoint_s": one_new_s,
        "cached_s": cached_s,
        "aligned_umap_s": aligned_s,
        "answer_mb": answer_mb,
        "cold_within_target": cold_s + compile_s <= COLD_TARGET_S,
        "cached_within_target": cached_s <= CACHED_TARGET_S,
        "cpus": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "seconds": round(time.perf_counter() - t_start, 1),
        "markdown": md,
    }
    finish("timeline_timing", result, args.json)
    summary = {k: v for k, v in result.items() if k not in ("markdown", "date")}
    print(json.dumps(summary))
    return result


if __name__ == "__main__":
    main()
