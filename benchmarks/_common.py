"""Helpers shared by the benchmark scripts: timing, load average, JSON output, markdown tables.

The scripts are run as `python benchmarks/NAME.py`, which puts this folder on sys.path, so
they import this module as `_common`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded (other jobs share this machine)."""
    return [round(v, 2) for v in os.getloadavg()]


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has: --quick and --json."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    ap.add_argument("--json", type=Path, default=None, help="where to write the results")
    return ap


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_seconds(
    fns: Sequence[Callable[[], Any]], repeats: int, warmup: int = 3
) -> list[dict[str, float]]:
    """Per function, {"median", "min"} wall seconds over `repeats` calls, the calls interleaved.

    Interleaving (f, g, f, g, ...) spreads the noise of other jobs on a shared machine over
    every contender alike instead of penalising whichever ran during a busy spell.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [{"median": statistics.median(t), "min": min(t)} for t in times]


def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant figures, None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return "NaN"
        if v == 0.0:
            return "0"
        if abs(v) >= 10**digits:
            return f"{v:,.0f}"
        if abs(v) < 10 ** -(digits - 1):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def finish(name: str, result: dict[str, Any], json_path: Path | None) -> dict[str, Any]:
    """Write `result` as JSON (default benchmarks/out/NAME.json), print it and its table."""
    path = json_path or OUT / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    printable = {k: v for k, v in result.items() if k != "markdown"}
    print(json.dumps(printable, indent=2))
    print()
    print(result.get("markdown", ""))
    print(f"\nwritten to {path}")
    return result


def isa_flags() -> list[str]:
    """The CPU's vector-ISA flags that decide CPU speed (avx512_bf16 / AMX: native bf16)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []
