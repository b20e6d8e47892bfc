"""`protoscope diagnose` of a checkpoint in the released SwAV layout (ResNet-50) on `shapes`.

    python benchmarks/diagnose_resnet50.py [--images 2000] [--quick] [--json PATH]

Writes a file in the layout of `swav_800ep_pretrain.pth.tar` (a `module.`-prefixed torchvision
ResNet-50, `projection_head.{0,1,3}`, `prototypes` K = 3000 × 128; random weights, which do
not change the cost) and times the CLI end to end in a subprocess, as a user runs it: loading,
the evaluated images' features, the kNN bank's features, the measurements. It also reports the
CLI's progress lines (stderr) and its peak memory. Always cold: the CLI gets a feature cache of
its own. The target: ≤ 3 minutes for 2,000 images on 2 AVX2 cores. The images are upsampled to
96 px for ResNet-50 (models/features.py).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import OUT, load_average, parser

ROOT = Path(__file__).resolve().parent.parent


def write_official_swav(path: Path) -> None:
    from models.build import build_model
    from models.config import SwAVConfig, TrainConfig

    torch.manual_seed(0)
    cfg = TrainConfig(
        method="swav",
        backbone="resnet50",
        swav=SwAVConfig(num_prototypes=3000, hidden_dim=2048, feat_dim=128),
    )
    model = build_model(cfg, num_train=1)
    state = {}
    for k, v in model.state_dict().items():
        if k == "queue":
            continue
        name = k[len("backbone.") :] if k.startswith("backbone.") else k
        state[f"module.{name}"] = v
    torch.save(state, path)


def main() -> None:
    ap = parser(__doc__ or "")
    ap.add_argument("--images", type=int, default=None, help="images diagnosed (default 2000)")
    args = ap.parse_args()
    images = args.images or (200 if args.quick else 2000)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "swav_800ep_pretrain.pth.tar"
        write_official_swav(ckpt)
        load_before = load_average()
        cmd = [
            sys.executable,
            "-m",
            "protoscope",
            "diagnose",
            str(ckpt),
            "--dataset",
            "shapes",
            "--max-images",
            str(images),
        ]
        # A cache of its own: the shared feature cache keys on the file's bytes, and the same
        # seed writes the same bytes, so an earlier run's features would make this one warm.
        env = {**os.environ, "PROTOSCOPE_CACHE": str(Path(tmp) / "cache")}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, env=env)
        wall = time.perf_counter() - t0
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = json.loads(proc.stdout) if proc.returncode == 0 else {}
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "images": images,
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_mib),
        "verdict": report.get("verdict"),
        "knn_top1": report.get("knn_top1"),
        "progress_lines": proc.stderr.strip().splitlines(),
        "load_before": load_before,
        "load_after": load_average(),
        "torch_threads": torch.get_num_threads(),
    }
    path = args.json or OUT / "diagnose_resnet50.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "progress_lines"}, indent=2))
    print("\n".join(out["progress_lines"][-8:]))


if __name__ == "__main__":
    main()
