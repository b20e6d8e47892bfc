"""UMAP map timing (models/embedding_map.py): cold and cached, for N ∈ {2k, 10k, 50k} points.

    python benchmarks/umap_timing.py [--quick] [--json PATH]

The features are synthetic: 256-d (the default small_cnn's backbone width, 8 · 32) non-negative
rows from a mixture of 10 Gaussians, with 128 random prototype logits and labels per row, the
shape of what `embedding_map` feeds its map. The map runs through the module's own pieces with
its defaults (PCA to 50 dims, UMAP fitted on at most max_fit = 5000 points, the rest placed by
`transform`, n_neighbors 15, min_dist 0.1) and its npz cache under a fresh $PROTOSCOPE_CACHE,
keyed by `cache_key` over a content hash of the features and the parameters; the checkpoint
loading and feature extraction of `embedding_map` are not part of it (analysis_timing.py times
those).

First, in this fresh process, `import umap` and two warm-up maps (300 of 600 points fitted, and
4,200 of 4,500: below and above umap's 4,096-point switch to pynndescent, each with `transform`)
are timed on their own: they pay numba's JIT compilation (or loading its on-disk cache). Then per N:
cold = hash + PCA/UMAP + save + building the point dicts; cached = hash + load + point dicts.
Writes benchmarks/out/umap_timing.json and prints a markdown table.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import finish, load_average, markdown_table, parser

from models.features import Features

BACKBONE_DIM = 256  # small_cnn(width=32).out_dim, the default backbone
NUM_PROTOTYPES = 128  # SwAVConfig.num_prototypes default


def synthetic_features(n: int, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, BACKBONE_DIM)).astype(np.float32)
    labels = rng.integers(10, size=n)
    x = centres[labels] + 0.7 * rng.standard_normal((n, BACKBONE_DIM)).astype(np.float32)
    x = np.maximum(x, 0.0)  # post-ReLU, average-pooled features are non-negative
    logits = rng.standard_normal((n, NUM_PROTOTYPES)).astype(np.float32)
    return Features(
        backbone=torch.from_numpy(x),
        projected=None,
        logits=torch.from_numpy(logits),
        prototypes=None,
        phi=None,
        labels=torch.from_numpy(labels.astype(np.int64)),
        indices=torch.arange(n, dtype=torch.int64),
    )


def content_hash(f: Features) -> str:
    h = hashlib.sha256()
    for t in (f.backbone, f.logits, f.labels, f.indices):
        assert t is not None
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser((__doc__ or "").splitlines()[0])
    args = ap.parse_args(argv)
    quick: bool = args.quick
    sizes = [1_000, 3_000] if quick else [2_000, 10_000, 50_000]
    max_fit = 1_000 if quick else 5_000
    params: dict[str, Any] = {"max_fit": max_fit, "n_neighbors": 15, "min_dist": 0.1, "seed": 0}
    cache_root = Path(tempfile.mkdtemp(prefix="protoscope-umap-bench-"))
    os.environ["PROTOSCOPE_CACHE"] = str(cache_root)
    load_start = load_average()
    t_start = time.perf_counter()

    from models import embedding_map as em

    t0 = time.perf_counter()
    from models.umap_import import umap  # noqa: F401  (numba, pynndescent, the disk cache)

    import_s = time.perf_counter() - t0
    # umap-learn takes exact neighbours below 4096 points and pynndescent above, each with
    # its own numba code: a map fitted on 300 of 600 points and one fitted on 4,200 of 4,500
    # compile both paths and `transform`, so no compilation lands in the timed maps below.
    warm = synthetic_features(600 if quick else 4_500, seed=1)
    t0 = time.perf_counter()
    em.umap_2d(warm.backbone.numpy()[:600], max_fit=300)  # exact-neighbour path
    if not quick:
        em.umap_2d(warm.backbone.numpy(), max_fit=4_200)  # pynndescent path
    warmup_s = time.perf_counter() - t0
    print(f"import umap {import_s:.1f}s, first small map (JIT) {warmup_s:.1f}s")

    folder = em.default_cache_dir()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        feats = synthetic_features(n)
        row: dict[str, Any] = {"N": n, "fit_points": min(n, max_fit)}

        def request(f: Features = feats) -> tuple[bool, dict[str, float]]:
            """One map request as embedding_map serves it, minus checkpoint and features."""
            parts: dict[str, float] = {}
            t = time.perf_counter()
            key = em.cache_key(content_hash(f), **params)
            parts["hash_s"] = time.perf_counter() - t
            path = folder / f"map-{key}.npz"
            t = time.perf_counter()
            arrays, cached = em.cached_arrays(
                path, lambda: em.map_arrays(f, 0.1, em.UmapParams(**params))
            )
            parts["map_or_load_s"] = time.perf_counter() - t
            t = time.perf_counter()
            points = em.points_from(arrays)
            parts["points_s"] = time.perf_counter() - t
            assert len(points) == f.num_images
            return cached, parts

        t0 = time.perf_counter()
        cached, cold_parts = request()
        row["cold_s"] = time.perf_counter() - t0
        assert not cached, "a fresh cache folder must miss"
        t0 = time.perf_counter()
        cached, warm_parts = request()
        row["cached_s"] = time.perf_counter() - t0
        assert cached, "the second request must hit the cache"
        row["cold_map_s"] = cold_parts["map_or_load_s"]
        row["cached_load_s"] = warm_parts["map_or_load_s"]
        row["points_s"] = warm_parts["points_s"]
        row["hash_s"] = warm_parts["hash_s"]
        row["cold_over_cached"] = row["cold_s"] / row["cached_s"]
        rows.append(row)
        print(f"N={n}: cold {row['cold_s']:.1f}s, cached {row['cached_s']:.2f}s")

    md = (
        f"Synthetic {BACKBONE_DIM}-d clustered features, {NUM_PROTOTYPES} prototype logits; "
        f"UMAP fitted on ≤ {max_fit:,} points, the rest transformed; fresh cache folder. "
        f"In this process `import umap` took {import_s:.1f} s and the first (JIT-compiling) "
        f"warm-up maps (600 and {warm.num_images:,} points) {warmup_s:.1f} s, both excluded "
        "below.\n\n"
        + markdown_table(
            [
                "N",
                "UMAP fit on",
                "cold s",
                "of which PCA+UMAP+save s",
                "cached s",
                "of which npz load s",
                "point dicts s",
                "cold / cached",
            ],
            [
                [
                    f"{r['N']:,}",
                    f"{r['fit_points']:,}",
                    r["cold_s"],
                    r["cold_map_s"],
                    r["cached_s"],
                    r["cached_load_s"],
                    r["points_s"],
                    r["cold_over_cached"],
                ]
                for r in rows
            ],
        )
    )
    import umap as umap_mod

    result: dict[str, Any] = {
        "benchmark": "umap_timing",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": quick,
        "umap": umap_mod.__version__,
        "features": "synthetic",
        "backbone_dim": BACKBONE_DIM,
        "params": params,
        "import_umap_s": import_s,
        "first_map_jit_s": warmup_s,
        "warmup_points": warm.num_images,
        "rows": rows,
        "cache_dir": str(cache_root),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "seconds": round(time.perf_counter() - t_start, 1),
        "markdown": md,
    }
    json_path: Path | None = args.json
    return finish("umap_timing", result, json_path)


if __name__ == "__main__":
    main()
