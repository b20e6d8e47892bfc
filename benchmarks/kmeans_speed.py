"""k-means for PCL's E-step: faiss (as models/pcl/estep.py uses it) against scikit-learn.

    python benchmarks/kmeans_speed.py [--quick] [--json PATH]

Data: N = 50,000 points in d = 128, a mixture of 200 Gaussians around random unit centres,
every row L2-normalised as PCL's key-encoder features are. For K ∈ {100, 1000}:

- faiss: faiss.Clustering with the settings of run_kmeans (niter 20, nredo 1,
  max_points_per_centroid 1000, min_points_per_centroid min(10, N // K)), exact IndexFlatL2,
  random initialisation (faiss samples K points); also run_kmeans itself end to end (k-means,
  the final assignment search and φ).
- scikit-learn KMeans(n_init=1, max_iter=20, tol=0, algorithm="lloyd", random_state=0) with
  init="random" (K random points, as faiss does); --inits random,k-means++ adds sklearn's
  default k-means++ seeding (slow: ~50 s at K = 100 on a loaded 2-core machine). sklearn stops
  before 20 iterations once no label changes; faiss always runs 20, so a per-iteration ratio
  is reported too.

Inertia (sum over all N points of the squared distance to the nearest centroid) is computed the
same way for every result: an exact faiss IndexFlatL2 search of all N points, summed in float64.
Writes benchmarks/out/kmeans_speed.json and prints a markdown table.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import sklearn
import torch
from _common import finish, load_average, markdown_table, parser
from sklearn.cluster import KMeans

from models.pcl import MAX_POINTS_PER_CENTROID, MIN_POINTS_PER_CENTROID, run_kmeans


def clustered_data(n: int, d: int, centres: int, noise: float, seed: int = 0) -> np.ndarray:
    """(n, d) float32 rows on the unit sphere, drawn around `centres` random unit centres."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(centres, size=n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Σ over all rows of the squared L2 distance to the nearest centroid (exact search)."""
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sq, _ = index.search(x, 1)
    return float(np.maximum(sq[:, 0], 0.0).astype(np.float64).sum())


def faiss_kmeans(x: np.ndarray, k: int, niter: int = 20, seed: int = 0) -> np.ndarray:
    """The k-means call of run_kmeans (models/pcl/estep.py), CPU index, returning the centroids."""
    n, d = x.shape
    km = faiss.Clustering(d, k)
    km.niter = niter
    km.nredo = 1
    km.seed = seed
    km.verbose = False
    km.max_points_per_centroid = MAX_POINTS_PER_CENTROID
    km.min_points_per_centroid = max(1, min(MIN_POINTS_PER_CENTROID, n // k))
    index = faiss.IndexFlatL2(d)
    km.train(x, index)
    return faiss.vector_to_array(km.centroids).reshape(k, d).astype(np.float32)


def sklearn_kmeans(x: np.ndarray, k: int, init: str, niter: int = 20) -> tuple[np.ndarray, int]:
    km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=niter, tol=0.0, algorithm="lloyd")
    km.set_params(random_state=0)
    km.fit(x)
    return km.cluster_centers_.astype(np.float32), int(km.n_iter_)


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser((__doc__ or "").splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None, help="timed runs of each (median)")
    ap.add_argument(
        "--inits",
        default="random",
        help="scikit-learn inits, comma-separated: random (as faiss), k-means++ (sklearn's "
        "default; its seeding alone took ~50 s at K = 100 on a loaded 2-core machine)",
    )
    args = ap.parse_args(argv)
    quick: bool = args.quick
    n, d, niter = (10_000, 128, 20) if quick else (50_000, 128, 20)
    ks = [20, 100] if quick else [100, 1000]
    inits: list[str] = args.inits.split(",")
    repeats: int = args.repeats or (1 if quick else 3)
    load_start = load_average()
    t_start = time.perf_counter()
    x = clustered_data(n, d, centres=200, noise=0.06)

    rows: list[dict[str, Any]] = []
    for k in ks:
        train_points = min(n, MAX_POINTS_PER_CENTROID * k)
        contenders: dict[str, Callable[[], Any]] = {
            "faiss": lambda k=k: (faiss_kmeans(x, k, niter), niter),
            "faiss_run_kmeans": lambda k=k: run_kmeans(torch.from_numpy(x), [k], niter=niter),
        }
        for init in inits:
            contenders[f"sklearn_{init}"] = lambda k=k, init=init: sklearn_kmeans(x, k, init, niter)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        outputs: dict[str, Any] = {}
        for _ in range(repeats):  # interleaved rounds: load bursts hit every contender alike
            for name, fn in contenders.items():
                outputs[name], t = timed(fn)
                times[name].append(t)
        t_faiss = statistics.median(times["faiss"])
        row: dict[str, Any] = {
            "K": k,
            "faiss_train_points": train_points,
            "faiss_subsampled": n > MAX_POINTS_PER_CENTROID * k,
            "faiss_s": t_faiss,
            "faiss_inertia": inertia(x, outputs["faiss"][0]),
            "faiss_run_kmeans_s": statistics.median(times["faiss_run_kmeans"]),
            "times_s": times,
        }
        print(f"K={k}: faiss {t_faiss:.2f}s, run_kmeans {row['faiss_run_kmeans_s']:.2f}s")
        for init in inits:
            c, iters = outputs[f"sklearn_{init}"]
            t_sk = statistics.median(times[f"sklearn_{init}"])
            row[f"sklearn_{init}_s"] = t_sk
            row[f"sklearn_{init}_iters"] = iters
            row[f"sklearn_{init}_inertia"] = inertia(x, c)
            row[f"sklearn_{init}_over_faiss"] = t_sk / t_faiss
            # faiss always runs niter iterations; sklearn stops early once no label changes.
            row[f"sklearn_{init}_over_faiss_per_iter"] = (t_sk / max(iters, 1)) / (t_faiss / niter)
            print(f"K={k}: sklearn {init} {t_sk:.2f}s ({iters} iterations)")
        rows.append(row)

    headers = ["K", "faiss train pts", "faiss s", "faiss inertia", "run_kmeans s"]
    for init in inits:
        headers += [
            f"sklearn {init} s",
            f"sklearn {init} iters",
            f"sklearn {init} inertia",
            f"sklearn {init} / faiss (time)",
            f"sklearn {init} / faiss (time per iter)",
        ]
    table = []
    for r in rows:
        cells: list[Any] = [
            r["K"],
            f"{r['faiss_train_points']:,}" + (" (subsampled)" if r["faiss_subsampled"] else ""),
            r["faiss_s"],
            f"{r['faiss_inertia']:,.1f}",
            r["faiss_run_kmeans_s"],
        ]
        for init in inits:
            cells += [
                r[f"sklearn_{init}_s"],
                r[f"sklearn_{init}_iters"],
                f"{r[f'sklearn_{init}_inertia']:,.1f}",
                r[f"sklearn_{init}_over_faiss"],
                r[f"sklearn_{init}_over_faiss_per_iter"],
            ]
        table.append(cells)
    md = (
        f"N = {n:,}, d = {d}, L2-normalised mixture of 200 Gaussians; ≤ {niter} Lloyd iterations; "
        f"median time of {repeats} interleaved runs each; inertia over all N points "
        "(lower is better):\n\n"
        + markdown_table(headers, table)
        + f"\n\nfaiss always runs its {niter} iterations; scikit-learn stops early at strict "
        "convergence (no label changed), hence the per-iteration ratio (which charges "
        "sklearn's initialisation to its iterations). "
        + "faiss trains on at most max_points_per_centroid · K = 1000 · K points; "
        + "; ".join(
            f"K = {r['K']}: {1000 * r['K']:,} "
            + (
                f"< N, so it subsamples {r['faiss_train_points']:,}"
                if r["faiss_subsampled"]
                else "≥ N, so no subsampling"
            )
            for r in rows
        )
        + "."
    )
    result: dict[str, Any] = {
        "benchmark": "kmeans_speed",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": quick,
        "N": n,
        "d": d,
        "niter": niter,
        "repeats": repeats,
        "sklearn_settings": "KMeans(n_init=1, max_iter=niter, tol=0, algorithm='lloyd', "
        "random_state=0)",
        "faiss": faiss.__version__,
        "sklearn": sklearn.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "cpus": os.cpu_count(),
        "rows": rows,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "seconds": round(time.perf_counter() - t_start, 1),
        "markdown": md,
    }
    json_path: Path | None = args.json
    return finish("kmeans_speed", result, json_path)


if __name__ == "__main__":
    main()
