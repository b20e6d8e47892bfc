"""The figures of short fixed-seed runs, to show a refactor changed no behaviour.

    python benchmarks/fixed_seed_figures.py [--repo DIR] [--steps 400] [--json PATH]

Trains default SwAV and PCL on `shapes` for `--steps` steps with seed 0 and one torch thread
(by steps, so the figures do not depend on the machine's speed), through the CLI of the tree in
`--repo` (default: this one; pass a `git worktree` of an older commit to get its figures), then
diagnoses each last checkpoint. Prints and writes: each run's last step loss, its active
prototypes, the last kNN top-1 and the diagnose verdict, kNN and active prototypes. Run it on
two trees on the same machine: the same figures mean the same behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def cli(repo: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`protoscope ARGS` of the tree in `repo`, with a feature cache of its own."""
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "OMP_NUM_THREADS": "1",
        "PROTOSCOPE_CACHE": str(work / "cache"),
    }
    # The CLI moved from models/cli.py to protoscope/cli.py; an older tree has the former.
    module = "protoscope" if (repo / "protoscope" / "cli.py").is_file() else "models.cli"
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=True)


def figures(repo: Path, method: str, steps: int, work: Path) -> dict[str, Any]:
    out = work / method
    cli(
        repo, work, "train", "--method", method, "--max-steps", str(steps), "--seed", "0",
        "--threads", "1", "--quiet", "--out", str(out), "--set", "checkpoint_every_minutes=null",
    )  # fmt: skip
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    last = [e for e in events if e.get("type") == "step"][-1]
    knn = [e["knn_top1"] for e in events if e.get("knn_top1") is not None]
    report = json.loads(
        cli(
            repo, work, "diagnose", str(out / "checkpoints" / "last.pt"), "--max-images", "500"
        ).stdout
    )
    return {
        "last_step": last["step"],
        "last_loss": round(last["loss"], 6),
        "last_active_prototypes": last.get("active_prototypes"),
        "last_knn_top1": round(knn[-1], 4) if knn else None,
        "verdict": report["verdict"],
        "diagnose_knn_top1": round(report["knn_top1"], 4),
        "diagnose_active_prototypes": report.get("active_prototypes"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repo", type=Path, default=HERE.parent)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            m: figures(args.repo.resolve(), m, args.steps, Path(tmp)) for m in ("swav", "pcl")
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
