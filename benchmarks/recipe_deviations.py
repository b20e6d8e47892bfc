"""What each difference between the `cpu` and the `paper` recipe is worth on `shapes`.

For each method: the `cpu` recipe, the `paper` recipe, and `cpu` with one group of the paper's
values (its crops, its optimiser, its queue, ...) each train for `--minutes` of training time
(evaluation excluded); weighted kNN top-1 (k = 20, T = 0.07) on the test split is read at the
last evaluation before each of 1, 2, 5 and 15 minutes. One run per probe, so read differences
within the noise stated in the README as none.

Probes run `--parallel` at a time, each in its own process with cores / parallel torch threads
(two at once on two cores: each probe has one core, and every probe saw the same conditions).

    python benchmarks/recipe_deviations.py [--minutes 5] [--only swav,pcl]
        [--probes swav:cpu,swav:paper,pcl:positives,...] [--parallel 2] [--json PATH]

Writes benchmarks/out/recipe_deviations.json (or --json) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from training_quality import curve, throughput

OUT = Path(__file__).resolve().parent / "out"

# The paper's values by group; each group is one row of the README's deviations table.
_COLOUR_GEOMETRY = [
    "augment.jitter_strength",
    "augment.hue",
    "augment.jitter_p",
    "augment.grayscale_p",
    "augment.flip_p",
    "augment.rotate_deg",
    "augment.blur_p",
    "augment.blur_sigma",
]
_OPTIMIZER = [
    "optim.name",
    "optim.lr",
    "optim.momentum",
    "optim.weight_decay",
    "optim.decay_all",
    "optim.warmup_epochs",
    "optim.final_lr_frac",
]
GROUPS: dict[str, dict[str, list[str]]] = {
    "swav": {
        "crops": [
            "augment.num_small",
            "augment.small_frac",
            "augment.large_scale",
            "augment.small_scale",
        ],
        "colour_geometry": _COLOUR_GEOMETRY,
        "head_size": ["swav.num_prototypes", "swav.hidden_dim", "swav.feat_dim"],
        "epsilon": ["swav.epsilon"],
        "freeze": ["swav.freeze_prototypes_iters", "swav.freeze_prototypes_epochs"],
        "queue": ["swav.queue_length", "swav.epoch_queue_starts"],
        "optimizer": _OPTIMIZER,
    },
    "pcl": {
        "augment": ["augment.large_scale", *_COLOUR_GEOMETRY],
        "head": ["pcl.feat_dim", "pcl.hidden_dim"],
        "queue": ["pcl.queue_length"],
        "momentum": ["pcl.momentum"],
        "infonce_warmup": ["pcl.warmup_epochs"],
        "positives": ["pcl.positives"],
        "kmeans_redo": ["pcl.kmeans_redo", "pcl.kmeans_iters"],
        "shuffle_bn": ["pcl.bn_splits"],
        "optimizer": _OPTIMIZER,
    },
}

# Epochs the paper recipe fits in a minute of training on one core of a 2-core CPU under the
# AVX2 restriction (Intel Xeon, 2026-12-03, rounded down). The paper's schedule is a share of
# the epochs (PCL's InfoNCE-only warm-up is a tenth), so a time-budgeted paper run is given
# about the number of epochs it reaches to derive that share from.
PAPER_EPOCHS_PER_MINUTE = {"swav": 2.0, "pcl": 4.5}


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def probe_config(method: str, probe: str, minutes: float, threads: int) -> Any:
    """The TrainConfig of one probe: `cpu`, `paper`, or `cpu` with the paper's `probe` group."""
    from models.config import TrainConfig, set_dotted
    from models.data import load_dataset
    from models.recipes import fit_to_data

    paper_epochs = max(1, math.floor(PAPER_EPOCHS_PER_MINUTE[method] * minutes))
    paper = TrainConfig(method=method, recipe="paper", epochs=paper_epochs)
    train = load_dataset(paper.data, "train")
    paper, _ = fit_to_data(paper, len(train), paper.data.image_size)
    if probe == "paper":
        tree = paper.model_dump()
    else:
        tree = TrainConfig(method=method, recipe="cpu", epochs=1000).model_dump()
        if probe != "cpu":
            source = paper.model_dump()
            for key in GROUPS[method][probe]:
                set_dotted(tree, key, _get(source, key))
    # The values derived from the epochs (PCL's InfoNCE-only share) are in the tree now; the
    # run itself ends with its time budget, and the cosine follows the clock.
    tree["epochs"] = 1000
    tree["max_minutes"] = minutes
    tree["num_threads"] = threads
    return TrainConfig.model_validate(tree)


def run_one(method: str, probe: str, minutes: float, threads: int, out: Path) -> None:
    """Train one probe in this process and write its figures to `out` (JSON)."""
    from models.train import Trainer

    cfg = probe_config(method, probe, minutes, threads)
    events: list[dict[str, Any]] = []
    folder = OUT / "runs" / f"deviation-{method}-{probe}-{int(time.time())}"
    t0 = time.time()
    Trainer(cfg, folder, emit=events.append).run()
    marks = [m for m in (1.0, 2.0, 5.0, 15.0) if m <= minutes]
    start = next((e for e in events if e["type"] == "start"), {})
    result = {
        "method": method,
        "probe": probe,
        "minutes": minutes,
        "threads": threads,
        "knn": curve(events, marks),
        "crops_per_s": throughput(events),
        "steps": max((e["step"] for e in events if e["type"] == "step"), default=0),
        "epochs": sum(1 for e in events if e["type"] == "epoch"),
        "wall_s": round(time.time() - t0, 1),
        "precision": (start.get("precision") or {}).get("dtype"),
        "recipe_notes": start.get("recipe_notes", []),
        "changed": {k: _get(cfg.model_dump(), k) for k in GROUPS[method].get(probe, [])},
    }
    out.write_text(json.dumps(result, indent=2))


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| method | probe | steps | crops/s | 1 min | 2 min | 5 min | 15 min | final |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        k = r["knn"]

        def pct(key: str, k: dict[str, Any] = k) -> str:
            v = k.get(key)
            return "—" if v is None else f"{100 * v:.1f} %"

        rows.append(
            f"| {r['method']} | {r['probe']} | {r['steps']:,} | {r['crops_per_s']:,.0f} | "
            f"{pct('1min')} | {pct('2min')} | {pct('5min')} | {pct('15min')} | {pct('final')} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--only", default="swav,pcl", help="methods (all their probes)")
    ap.add_argument("--probes", default="", help="METHOD:PROBE,... instead of --only")
    ap.add_argument("--parallel", type=int, default=2, help="probes at once")
    ap.add_argument("--json", type=Path, default=OUT / "recipe_deviations.json")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # METHOD:PROBE, internal
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        method, probe = args.one.split(":")
        run_one(method, probe, args.minutes, args.threads, args.json)
        return
    if args.probes:
        probes = [tuple(p.split(":")) for p in args.probes.split(",")]
    else:
        probes = [(m, p) for m in args.only.split(",") for p in ["cpu", "paper", *GROUPS[m]]]
    for m, p in probes:
        if m not in GROUPS or p not in ("cpu", "paper", *GROUPS[m]):
            ap.error(f"unknown probe {m}:{p}; probes: cpu, paper, {', '.join(GROUPS.get(m, {}))}")
    threads = max(1, (os.cpu_count() or 2) // args.parallel)
    part_dir = args.json.parent / (args.json.stem + "_parts")
    part_dir.mkdir(parents=True, exist_ok=True)
    pending = list(probes)
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    done: list[Path] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            m, p = pending.pop(0)
            out = part_dir / f"{m}-{p}.json"
            cmd = [sys.executable, __file__, "--one", f"{m}:{p}", "--minutes", str(args.minutes)]
            cmd += ["--threads", str(threads), "--json", str(out)]
            print(f"start {m}:{p}", flush=True)
            running.append((subprocess.Popen(cmd), out))
        time.sleep(2)
        for proc, out in list(running):
            if proc.poll() is not None:
                running.remove((proc, out))
                print(f"done {out.stem} (exit {proc.returncode})", flush=True)
                if proc.returncode == 0:
                    done.append(out)
    results = [json.loads(p.read_text()) for p in done]
    args.json.write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
