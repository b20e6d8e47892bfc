"""`protoscope sweep …`: a grid of training runs, one folder per cell, and a summary table.

    protoscope sweep --method swav --dataset shapes --grid epsilon=0.005,0.02,0.05,0.2 \\
        --grid num_prototypes=16,128 --max-steps 600 --out sweeps/eps-k

writes `DIR/sweep.json` (the grid), `DIR/cell-000/ …` (each an ordinary run folder:
config.json, events.jsonl, checkpoints/, plus `result.json` once diagnosed) and
`DIR/summary.csv` / `DIR/summary.json`, and prints the table. Cells run one after another in
this process; `--cell I` runs only cell I (one task of a SLURM job array, docs/sweeps.md),
`--collect` only rebuilds the summary from the cell folders there are. A cell whose
`result.json` exists is not run again, so a re-submitted array redoes only what is missing.
A bad grid or option exits 2 with a message.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from models.sweep import (
    DEMO_STEPS,
    MAX_STEPS_PER_CELL,
    SweepCell,
    SweepError,
    SweepGrid,
    cell_config,
    cells,
    parse_axis,
    summary_rows,
    summary_table,
    validate_grid,
)
from protoscope.commands import command, fail

GRID_FILE = "sweep.json"
RESULT_FILE = "result.json"


def add_sweep(sub: Any) -> None:
    p = command(
        sub,
        "sweep",
        "train a grid of runs (e.g. ε × K) and tabulate where they collapse",
        "Train one run per cell of a grid of one or two fields, diagnose each "
        "cell's last checkpoint, write DIR/cell-NNN/ folders and DIR/summary.csv|json.",
        cmd_sweep,
    )
    p.add_argument("--method", choices=["swav", "pcl", "supervised"], default="swav")
    p.add_argument("--dataset", default="shapes", help="data set of every cell (default shapes)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2,…",
        help="an axis (at most two), e.g. --grid epsilon=0.005,0.05 --grid num_prototypes=16,128",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=DEMO_STEPS,
        help=f"training steps per cell (default {DEMO_STEPS})",
    )
    p.add_argument("--out", required=True, type=Path, help="the sweep's folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config field every cell shares, e.g. --set batch_size=32 --set width=8",
    )
    p.add_argument("--cell", type=int, help="run only this cell (a job array's task index)")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    p.add_argument("--collect", action="store_true", help="only write the summary of DIR")
    p.add_argument(
        "--diagnose-images", type=int, default=1000, help="test images each verdict reads"
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch in each cell")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _base_tree(items: list[str], threads: int | None) -> dict[str, Any]:
    from models.config import set_dotted

    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        try:
            set_dotted(tree, key.strip(), value)
        except ValueError as e:
            raise SweepError(f"--set {e}") from None
    if threads is not None:
        tree["num_threads"] = threads
    return tree


def _grid_from_args(args: argparse.Namespace) -> tuple[SweepGrid, dict[str, Any]]:
    """The grid and shared config of the command line, or of DIR/sweep.json for --collect."""
    saved = args.out / GRID_FILE
    if args.collect and not args.grid:
        if not saved.is_file():
            raise SweepError(f"--collect: {args.out} holds no sweep ({GRID_FILE} is missing)")
        data = json.loads(saved.read_text())
        return SweepGrid.model_validate(data["grid"]), data.get("base", {})
    if not args.grid:
        raise SweepError("give at least one --grid FIELD=V1,V2,… (e.g. epsilon=0.005,0.05)")
    if not 1 <= args.max_steps <= MAX_STEPS_PER_CELL:
        raise SweepError(f"--max-steps {args.max_steps}: allowed 1 ≤ steps ≤ {MAX_STEPS_PER_CELL}")
    axes = [parse_axis(text).model_dump() for text in args.grid]
    base = _base_tree(args.set, args.threads)
    payload = {"method": args.method, "dataset": args.dataset, "axes": axes}
    grid = validate_grid({**payload, "max_steps": args.max_steps}, base)
    if saved.is_file():
        old = json.loads(saved.read_text())
        if old.get("grid") != grid.model_dump(mode="json") or old.get("base", {}) != base:
            raise SweepError(
                f"{args.out} holds another sweep ({GRID_FILE} differs); pick another --out"
            )
    return grid, base


def write_atomically(path: Path, text: str) -> None:
    """Write `path` whole or not at all. Array tasks run side by side and a pre-empted one can
    stop mid-write; a half file would mark a cell done (result.json) or break every reader."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_result(path: Path) -> dict[str, Any] | None:
    """A cell's result.json, or None when it is missing or unreadable (the cell runs again)."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def cell_dir(out: Path, cell: SweepCell) -> Path:
    return out / f"cell-{cell.index:03d}"


def _last_loss(steps: Iterable[Mapping[str, Any]]) -> float | None:
    """The newest loss among a run's recent steps (the trainer's own record, restored from the
    checkpoint on resume, so a cell continued in a new task still knows its earlier steps)."""
    losses = [float(s["loss"]) for s in steps if s.get("loss") is not None]
    return losses[-1] if losses else None


def run_cell(
    grid: SweepGrid, cell: SweepCell, base: dict[str, Any], out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Train one cell into its folder, diagnose its last checkpoint, write result.json."""
    from models.diagnostics import diagnose_checkpoint
    from models.train import Trainer, set_process_env_defaults

    folder = cell_dir(out, cell)
    cfg = cell_config(grid, cell, base)
    # A folder with a checkpoint but no result: the task was cut short (a pre-empted array
    # task); continue it exactly rather than train it again.
    resume = (folder / "checkpoints" / "last.pt").is_file()
    set_process_env_defaults()
    print(f"sweep: cell {cell.index} ({cell.label}){' resumed' if resume else ''}", flush=True)
    trainer = Trainer(cfg, folder, resume=resume, progress=not args.quiet)
    end = trainer.run()
    result: dict[str, Any] = {"cell": cell.index, "coords": cell.coords}
    result |= {"status": end.get("status"), "step": end.get("step")}
    result["final_loss"] = _last_loss(trainer.recent_steps)
    last = folder / "checkpoints" / "last.pt"
    report = diagnose_checkpoint(last, max_images=args.diagnose_images) if last.is_file() else {}
    for key in ("knn_top1", "verdict", "reason", "active_prototypes", "effective_rank"):
        result[key] = report.get(key)
    write_atomically(folder / RESULT_FILE, json.dumps(result, indent=1))
    return result


def collect(grid: SweepGrid, out: Path) -> list[dict[str, Any]]:
    """The summary rows of every cell folder holding a result; writes summary.csv / .json."""
    results: dict[int, dict[str, Any]] = {}
    for cell in cells(grid):
        result = read_result(cell_dir(out, cell) / RESULT_FILE)
        if result is not None:
            results[cell.index] = result
    rows = summary_rows(grid, results)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def cmd_sweep(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        grid, base = _grid_from_args(args)
    except SweepError as e:
        fail(parser, str(e))
    # torch comes in only now: a bad grid is refused at once.
    from models.checkpoints import CheckpointError
    from models.data import DatasetError
    from models.train import TrainingError

    todo = cells(grid)
    if args.list:
        for cell in todo:
            print(f"{cell.index}\t{cell.label}")
        return 0
    if args.cell is not None:
        if not 0 <= args.cell < len(todo):
            fail(parser, f"--cell {args.cell}: this grid has cells 0–{len(todo) - 1}")
        todo = [todo[args.cell]]
    args.out.mkdir(parents=True, exist_ok=True)
    saved = {"grid": grid.model_dump(mode="json"), "base": base}
    write_atomically(args.out / GRID_FILE, json.dumps(saved, indent=1))
    failed = 0
    if not args.collect:
        for cell in todo:
            if read_result(cell_dir(args.out, cell) / RESULT_FILE) is not None:
                continue
            try:
                run_cell(grid, cell, base, args.out, args)
            except (DatasetError, CheckpointError) as e:
                fail(parser, f"cell {cell.index} ({cell.label}): {e}")
            except TrainingError as e:
                print(f"protoscope sweep: cell {cell.index} failed: {e}", file=sys.stderr)
                failed += 1
            except KeyboardInterrupt:
                print("protoscope sweep: interrupted; run it again to continue", file=sys.stderr)
                return 130
    if args.cell is not None:  # one array task: the summary is the --collect step's job
        result_path = cell_dir(args.out, todo[0]) / RESULT_FILE
        if result_path.is_file():
            print(result_path.read_text())
        return 1 if failed else 0
    rows = collect(grid, args.out)
    print(summary_table(rows))
    print(f"sweep: summary in {args.out / 'summary.csv'} and summary.json", flush=True)
    return 1 if failed else 0
