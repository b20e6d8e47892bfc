"""Quality after a fixed training budget on `shapes`: SwAV, PCL, random init, supervised.

Each method trains its default configuration for `--minutes` of training time (evaluation time
excluded) on this machine; weighted kNN top-1 (k = 20, T = 0.07) on the test split is read from
the epoch events, giving the curve at 1, 2 and 5 minutes. Also the collapse ablation:
SwAV with equipartition off, its number of active prototypes over the first minutes.

    python benchmarks/training_quality.py [--minutes 5] [--only swav,pcl,...] [--recipe paper]

Writes benchmarks/out/training_quality.json (or --json PATH) and prints the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from models.config import TrainConfig, set_dotted
from models.train import Trainer

OUT = Path(__file__).resolve().parent / "out"


def default_config(
    method: str, minutes: float, recipe: str = "cpu", epochs: int = 1000, **over: Any
) -> TrainConfig:
    """The shipped defaults of `recipe` (what is measured), bounded by `minutes` of training.

    `epochs` bounds the run too; the paper recipe derives PCL's InfoNCE-only share from it
    (a tenth), so give it about the number of epochs that fit in the budget.
    """
    cfg = TrainConfig(method=method, recipe=recipe, epochs=epochs)
    tree = cfg.model_dump()
    tree.update({"max_minutes": minutes})
    for k, v in over.items():
        set_dotted(tree, k, v)
    return TrainConfig.model_validate(tree)


def run(name: str, cfg: TrainConfig) -> list[dict[str, Any]]:
    folder = OUT / "runs" / f"{name}-{int(time.time())}"
    events: list[dict[str, Any]] = []
    t0 = time.time()
    Trainer(cfg, folder, emit=events.append, progress=True).run()
    print(f"[{name}] wall {time.time() - t0:.0f}s")
    return events


def curve(events: list[dict[str, Any]], marks: list[float]) -> dict[str, float | None]:
    """kNN at the last evaluation at or before each mark (minutes of training time)."""
    evals = [
        (e["train_seconds"], e["knn_top1"])
        for e in events
        if e["type"] == "epoch" and "knn_top1" in e
    ]
    out: dict[str, float | None] = {}
    for m in marks:
        before = [acc for s, acc in evals if s <= m * 60 + 1e-6]
        out[f"{m:g}min"] = before[-1] if before else None
    out["final"] = evals[-1][1] if evals else None
    return out


def throughput(events: list[dict[str, Any]]) -> float:
    rates = sorted(e["crops_per_s"] for e in events if e["type"] == "step")
    return rates[len(rates) // 2] if rates else 0.0


def active_curve(events: list[dict[str, Any]], marks_s: list[float]) -> dict[str, int | None]:
    steps = [
        (e["train_seconds"], e["active_prototypes"])
        for e in events
        if e["type"] == "step" and "active_prototypes" in e
    ]
    out: dict[str, int | None] = {}
    for m in marks_s:
        before = [a for s, a in steps if s <= m]
        out[f"{m:g}s"] = before[-1] if before else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--only", default="random,swav,pcl,supervised,collapse")
    ap.add_argument("--json", type=Path, default=OUT / "training_quality.json", help="output")
    ap.add_argument("--recipe", choices=["cpu", "paper"], default="cpu")
    ap.add_argument(
        "--epochs", type=int, default=1000, help="also stop after this many epochs (see above)"
    )
    args = ap.parse_args()
    which = set(args.only.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    marks = [m for m in (1.0, 2.0, 5.0, 15.0) if m <= args.minutes]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "recipe": args.recipe,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}",
        "minutes": args.minutes,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_env": {
            k: os.environ[k]
            for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
            if k in os.environ
        },
    }
    if "random" in which:
        # The randomly initialised backbone, evaluated exactly as the trained ones are.
        trainer = Trainer(default_config("swav", args.minutes), OUT / "runs" / "random")
        trainer._setup()
        results["random_init"] = {"knn_top1": trainer._evaluate(0).get("knn_top1")}
    for method in ("swav", "pcl", "supervised"):
        if method in which:
            ev = run(method, default_config(method, args.minutes, args.recipe, args.epochs))
            start = next((e for e in ev if e["type"] == "start"), {})
            results[method] = {
                "knn": curve(ev, marks),
                "crops_per_s": throughput(ev),
                "precision": start.get("precision"),
                "steps": max((e["step"] for e in ev if e["type"] == "step"), default=0),
                "epochs": sum(1 for e in ev if e["type"] == "epoch"),
                "recipe_notes": start.get("recipe_notes", []),
            }
            if method == "swav":
                results[method]["active"] = active_curve(ev, [30, 60, 120])
    if "collapse" in which:
        ev = run(
            "collapse",
            default_config("swav", min(2.0, args.minutes), **{"swav.equipartition": False}),
        )
        results["swav_no_equipartition"] = {
            "active": active_curve(ev, [10, 30, 60, 120]),
            "knn": curve(ev, [m for m in marks if m <= 2]),
            "final_loss": next(e["loss"] for e in reversed(ev) if e["type"] == "step"),
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
