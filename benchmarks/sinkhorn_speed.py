"""Sinkhorn: our log-domain `models.swav.sinkhorn` against the SwAV paper's exp-domain one.

    python benchmarks/sinkhorn_speed.py [--quick] [--json PATH]

Times both (median over repeats, torch on the CPU, float32) for B ∈ {256, 4096} samples and
K ∈ {100, 3000} prototypes at ε = 0.05, 3 iterations, on realistic cosine scores (unit
embeddings against unit prototypes, 1 % of the samples sitting exactly on a prototype, so
some scores are 1.0). Then, at ε = 0.01 (and the project default 0.02), counts the non-finite
entries each produces and checks that our rows sum to 1; at ε = 0.05, where both are finite,
reports the largest absolute difference between them. Writes benchmarks/out/sinkhorn_speed.json
and prints a markdown table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import finish, interleaved_seconds, load_average, markdown_table, parser
from torch import Tensor

from models.swav import sinkhorn


@torch.no_grad()
def sinkhorn_exp(scores: Tensor, epsilon: float = 0.05, n_iters: int = 3) -> Tensor:
    """The official exp-domain `distributed_sinkhorn` (one process), written out plainly."""
    q = torch.exp(scores / epsilon).t()  # (K, B)
    k, b = q.shape
    q /= torch.sum(q)
    for _ in range(n_iters):
        q /= torch.sum(q, dim=1, keepdim=True)
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def cosine_scores(
    b: int, k: int, d: int = 128, on_prototype: float = 0.01, seed: int = 0
) -> Tensor:
    """(B, K) cosine scores in [-1, 1]: random unit embeddings, some equal to a prototype."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.normalize(torch.randn(k, d, generator=gen), dim=1)
    z = torch.nn.functional.normalize(torch.randn(b, d, generator=gen), dim=1)
    n_on = max(1, round(on_prototype * b))
    rows = torch.randperm(b, generator=gen)[:n_on]
    z[rows] = protos[torch.randint(k, (n_on,), generator=gen)]
    return (z @ protos.t()).clamp(-1.0, 1.0)


def stability(scores: Tensor, epsilon: float, iters: int) -> dict[str, Any]:
    ours = sinkhorn(scores, epsilon, iters)
    naive = sinkhorn_exp(scores, epsilon, iters)
    return {
        "epsilon": epsilon,
        "max_score": float(scores.max()),
        "ours_nonfinite": int((~torch.isfinite(ours)).sum()),
        "naive_nonfinite": int((~torch.isfinite(naive)).sum()),
        "naive_nan": int(torch.isnan(naive).sum()),
        "naive_inf": int(torch.isinf(naive).sum()),
        "entries": int(scores.numel()),
        "ours_row_sum_max_err": float((ours.sum(dim=1) - 1).abs().max()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser((__doc__ or "").splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per size")
    ap.add_argument(
        "--threads",
        default=None,
        help="comma-separated torch thread counts to time (default: torch's default, and 1 "
        "unless --quick); one thread is immune to the stalls a busy shared CPU causes",
    )
    args = ap.parse_args(argv)
    quick: bool = args.quick
    repeats: int = args.repeats or (9 if quick else 31)
    sizes_b = [256, 1024] if quick else [256, 4096]
    sizes_k = [100, 500] if quick else [100, 3000]
    iters = 3
    default_threads = torch.get_num_threads()
    if args.threads:
        thread_counts = [int(x) for x in args.threads.split(",")]
    else:
        thread_counts = [default_threads] if quick or default_threads == 1 else [default_threads, 1]
    load_start = load_average()
    t_start = time.perf_counter()

    # Every (size, implementation) pair is timed round-robin in one loop, so bursts of load
    # from other jobs on a shared machine fall on all of them alike.
    cases = [(b, k, cosine_scores(b, k)) for b in sizes_b for k in sizes_k]
    fns: list[Callable[[], Tensor]] = []
    for _, _, s in cases:
        fns.append(lambda s=s: sinkhorn(s, 0.05, iters))
        fns.append(lambda s=s: sinkhorn_exp(s, 0.05, iters))
    timing: list[dict[str, Any]] = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        t = interleaved_seconds(fns, repeats)
        for i, (b, k, s) in enumerate(cases):
            t_ours, t_naive = t[2 * i], t[2 * i + 1]
            ours, naive = sinkhorn(s, 0.05, iters), sinkhorn_exp(s, 0.05, iters)
            both = torch.isfinite(ours) & torch.isfinite(naive)
            diff = (ours - naive).abs()[both]
            timing.append(
                {
                    "threads": threads,
                    "B": b,
                    "K": k,
                    "ours_ms": 1000 * t_ours["median"],
                    "naive_ms": 1000 * t_naive["median"],
                    "ours_over_naive": t_ours["median"] / t_naive["median"],
                    "ours_min_ms": 1000 * t_ours["min"],
                    "naive_min_ms": 1000 * t_naive["min"],
                    "max_abs_diff_eps0.05": float(diff.max()) if diff.numel() else None,
                    "both_finite": bool(both.all()),
                }
            )
        print(f"timed with {threads} threads, load {load_average()}", flush=True)
    torch.set_num_threads(default_threads)

    stab: list[dict[str, Any]] = []
    for b in sizes_b:
        for k in sizes_k:
            s = cosine_scores(b, k)
            for eps in (0.02, 0.01):
                stab.append({"B": b, "K": k, **stability(s, eps, iters)})

    t_rows = [
        [r[c] for c in ("threads", "B", "K", "ours_ms", "naive_ms", "ours_over_naive")]
        + [r["ours_min_ms"], r["naive_min_ms"]]
        + [r["max_abs_diff_eps0.05"]]
        for r in timing
    ]
    s_rows = [
        [
            r["B"],
            r["K"],
            r["epsilon"],
            f"{r['ours_nonfinite']} / {r['entries']}",
            f"{r['naive_nonfinite']} / {r['entries']} (NaN {r['naive_nan']}, inf {r['naive_inf']})",
            r["ours_row_sum_max_err"],
        ]
        for r in stab
    ]
    md = (
        f"Speed at ε = 0.05, {iters} iterations, median (and min) of {repeats} interleaved "
        "calls, float32, "
        f"torch threads {thread_counts} (default {default_threads}):\n\n"
        + markdown_table(
            [
                "threads",
                "B",
                "K",
                "ours (log) ms",
                "naive (exp) ms",
                "ours / naive",
                "ours min ms",
                "naive min ms",
                "max |ours − naive|",
            ],
            t_rows,
        )
        + "\n\nStability on cosine scores with max = 1.0 (1 % of samples on a prototype):\n\n"
        + markdown_table(
            ["B", "K", "ε", "ours non-finite", "naive non-finite", "ours max |row sum − 1|"],
            s_rows,
        )
    )
    result: dict[str, Any] = {
        "benchmark": "sinkhorn_speed",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": quick,
        "torch": torch.__version__,
        "torch_threads": thread_counts,
        "torch_default_threads": default_threads,
        "repeats": repeats,
        "iterations": iters,
        "timing": timing,
        "stability": stab,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "seconds": round(time.perf_counter() - t_start, 1),
        "markdown": md,
    }
    json_path: Path | None = args.json
    return finish("sinkhorn_speed", result, json_path)


if __name__ == "__main__":
    main()
