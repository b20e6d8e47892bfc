"""Training speed of the default SwAV and PCL steps with amp auto / on / off, natively and with
the CPU restricted to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`), and what
`auto` chose in each case.

    python benchmarks/cpu_precision.py [--quick] [--steps N] [--json PATH]

Each cell is a fresh subprocess (the ISA variables only act at start-up) that trains the shipped
default configuration on `shapes` for a few steps and reports the median crops/s of the timed
steps (the first ones, where oneDNN builds its kernels, are left out). On an Intel CPU with AMX
the two columns differ; on a CPU without native bf16 (AMD Zen 3, most laptops) they are the same
machine twice, and `on` is the emulated, slow path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import OUT, isa_flags, load_average, parser

RESTRICTED = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
WARMUP_STEPS = 4

# Run inside the subprocess: train `steps` steps of the defaults, print one JSON line.
_CHILD = r"""
import json, statistics, sys, tempfile, torch
from models.config import TrainConfig
from models.train import Trainer
method, amp, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = TrainConfig(method=method, amp=amp, max_steps=steps, eval_max_images=16)
rates, start = [], {}
def emit(ev):
    if ev["type"] == "step":
        rates.append(ev["crops_per_s"])
    elif ev["type"] == "start":
        start.update(ev)
with tempfile.TemporaryDirectory() as d:
    Trainer(cfg, d, emit=emit, progress=False).run()
timed = rates[int(sys.argv[4]):] or rates
print(json.dumps({
    "crops_per_s": statistics.median(timed),
    "precision": start["precision"],
    "threads": torch.get_num_threads(),
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
}))
"""


def cell(method: str, amp: str, steps: int, restricted: bool) -> dict[str, Any]:
    env = {**os.environ, **(RESTRICTED if restricted else {})}
    if not restricted:
        for name in RESTRICTED:
            env.pop(name, None)
    root = Path(__file__).resolve().parent.parent
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, method, amp, str(steps), str(WARMUP_STEPS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = parser(__doc__ or "")
    ap.add_argument("--steps", type=int, default=None, help="steps per cell (default 40)")
    args = ap.parse_args()
    steps = args.steps or (10 if args.quick else 40)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "isa_flags": isa_flags(),
        "steps": steps,
        "restricted_env": RESTRICTED,
        "load_before": load_average(),
        "cells": [],
    }
    for method in ("swav", "pcl"):
        for amp in ("auto", "off", "on"):
            for restricted in (False, True):
                # bf16 emulated is ~10× slower: fewer steps keep the cell under a few minutes.
                n = max(WARMUP_STEPS + 3, steps // 4) if amp == "on" else steps
                r = cell(method, amp, n, restricted)
                r.update(method=method, amp=amp, restricted=restricted, steps=n)
                print(json.dumps(r), flush=True)
                results["cells"].append(r)
    results["load_after"] = load_average()
    path = args.json or OUT / "cpu_precision.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    rows = {(c["method"], c["amp"], c["restricted"]): c for c in results["cells"]}
    print(f"\nISA flags: {', '.join(results['isa_flags'])}")
    print("method amp    native crops/s (auto chose)   AVX2-restricted crops/s (auto chose)")
    for method in ("swav", "pcl"):
        for amp in ("auto", "off", "on"):
            line = [f"{method:6} {amp:5}"]
            for restricted in (False, True):
                c = rows[(method, amp, restricted)]
                rate = c.get("crops_per_s")
                dtype = (c.get("precision") or {}).get("dtype", "?")
                line.append(f"{rate:10.0f} ({dtype})" if rate else f"{'error':>10}")
            print("   ".join(line))


if __name__ == "__main__":
    main()
