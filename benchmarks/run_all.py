"""Run every benchmark, each in its own subprocess, and write benchmarks/RESULTS.md.

    python benchmarks/run_all.py [--quick] [--skip NAME,...] [--output PATH] [--render-only]

Parts, in order: sinkhorn_speed, kmeans_speed, umap_timing, lightly_throughput,
cpu_precision, training_quality, training_quality_avx2 (the same with the CPU restricted to
AVX2: `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`), api_latency, analysis_timing,
diagnose_resnet50, diagnose_resnet50_avx2, page_loads, page_loads_avx2, demo_startup (the
`_avx2` parts and demo_startup under the AVX2 restriction). Each writes its JSON under
benchmarks/out/run_all/ and its output to a log beside it; RESULTS.md gets the machine (CPU
model, cores, RAM, library versions, load average at start and end), the date, and one
section per part with its table and what it means — every figure read from this run's JSON.
--quick passes --quick to the new scripts and small budgets to the older ones (training for
0.3 min): a smoke test whose figures mean little, and RESULTS.md says so at the top.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from _common import OUT, fmt, isa_flags, load_average, markdown_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUN_OUT = OUT / "run_all"


# What an AVX2-only CPU (no AVX-512, no AMX, no native bf16) looks like to torch and oneDNN.
RESTRICTED = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@dataclass
class Part:
    name: str
    full: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=lambda: ["--quick"])
    timeout_s: float = 3600.0
    script: str = ""  # the benchmark file's stem, when it differs from the part's name
    env: dict[str, str] = field(default_factory=dict)  # set for the part's process


PARTS = [
    Part("sinkhorn_speed"),
    Part("kmeans_speed"),
    Part("umap_timing"),
    Part("lightly_throughput"),
    Part("cpu_precision"),
    Part("training_quality", quick=["--minutes", "0.3"], timeout_s=3 * 3600.0),
    Part(
        "training_quality_avx2",
        full=["--only", "swav,pcl"],
        quick=["--only", "swav,pcl", "--minutes", "0.3"],
        timeout_s=3600.0,
        script="training_quality",
        env=RESTRICTED,
    ),
    Part("api_latency", quick=["--minutes", "0.3", "--requests", "40"]),
    Part("analysis_timing", quick=["--images", "2000", "--minutes", "0.2"]),
    Part("diagnose_resnet50"),
    Part("diagnose_resnet50_avx2", script="diagnose_resnet50", env=RESTRICTED),
    Part("page_loads"),
    Part("page_loads_avx2", script="page_loads", env=RESTRICTED),
    Part("demo_startup", full=["--isa-avx2"], quick=["--isa-avx2"], timeout_s=1800.0),
    Part("timeline_timing", timeout_s=1800.0),
    Part("map_scale", timeout_s=3600.0),
]


# --- the machine ------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def dist_version(*names: str) -> str:
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "not installed"


def machine() -> dict[str, Any]:
    torch_threads = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu_model(),
        "isa_flags": isa_flags(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "python": platform.python_version(),
        "torch_default_threads": torch_threads or "?",
        "versions": {
            "torch": dist_version("torch"),
            "torchvision": dist_version("torchvision"),
            "faiss": dist_version("faiss-cpu", "faiss", "faiss-gpu"),
            "umap-learn": dist_version("umap-learn"),
            "numba": dist_version("numba"),
            "scikit-learn": dist_version("scikit-learn"),
            "lightly": dist_version("lightly"),
        },
    }


# --- running ----------------------------------------------------------------------------------
def run_part(part: Part, quick: bool, args_over: list[str] | None = None) -> dict[str, Any]:
    """Run one benchmark script; returns its JSON (or None) with rc, wall time and load.

    `args_over` replaces the part's own arguments (run_all's --args).
    """
    RUN_OUT.mkdir(parents=True, exist_ok=True)
    json_path = RUN_OUT / f"{part.name}.json"
    log_path = RUN_OUT / f"{part.name}.log"
    json_path.unlink(missing_ok=True)
    args = args_over if args_over is not None else (part.quick if quick else part.full)
    script = part.script or part.name
    cmd = [sys.executable, str(HERE / f"{script}.py"), *args, "--json", str(json_path)]
    env_text = " ".join(f"{k}={v}" for k, v in part.env.items())
    print(f"== {part.name}: {env_text} {' '.join(cmd[1:])}", flush=True)
    load_before = load_average()
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=part.timeout_s,
                env={**os.environ, **part.env},
            )
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {part.timeout_s:.0f} s"
    wall = time.perf_counter() - t0
    data = json.loads(json_path.read_text()) if json_path.exists() and rc == 0 else None
    print(f"   rc {rc}, {wall:.0f} s, load {load_before} → {load_average()}", flush=True)
    return {
        "name": part.name,
        "script": script,
        "env": part.env,
        "args": args,
        "rc": rc,
        "wall_s": round(wall, 1),
        "load_before": load_before,
        "load_after": load_average(),
        "log": str(log_path.relative_to(ROOT)),
        "data": data,
    }


# --- the sections -----------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _ratio_range(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> str:
    vals = [key(r) for r in rows]
    return f"{min(vals):.1f}–{max(vals):.1f}×" if vals else "—"


def sec_sinkhorn(d: dict[str, Any]) -> tuple[str, str]:
    default = d.get("torch_default_threads")
    by_threads: dict[Any, list[dict[str, Any]]] = {}
    for r in d["timing"]:
        by_threads.setdefault(r.get("threads", default), []).append(r)
    speed = "; ".join(
        f"{th} thread{'s' if th != 1 else ''}: {_ratio_range(rows, lambda r: r['ours_over_naive'])}"
        f" by median, {_ratio_range(rows, lambda r: r['ours_min_ms'] / r['naive_min_ms'])} by "
        "fastest call"
        for th, rows in by_threads.items()
    )
    diffs = [r["max_abs_diff_eps0.05"] for r in d["timing"] if r["max_abs_diff_eps0.05"]]
    at01 = [r for r in d["stability"] if r["epsilon"] == 0.01]
    naive_bad = sum(r["naive_nonfinite"] > 0 for r in at01)
    ours_bad = sum(r["ours_nonfinite"] for r in at01)
    row_err = max((r["ours_row_sum_max_err"] for r in d["stability"]), default=float("nan"))
    text = (
        f"Time of the log-domain Sinkhorn over the exp-domain one at ε = 0.05 — {speed}. It "
        "runs eight passes of exp over the (K, B) matrix where the exp-domain one runs one; the "
        "fastest call is the figure the load of other jobs disturbs least. Where both are "
        f"finite they agree to {fmt(max(diffs) if diffs else None)} (max abs difference). At "
        f"ε = 0.01 the exp-domain version produced non-finite codes in {naive_bad} of "
        f"{len(at01)} cases, ours {ours_bad} non-finite entries in all, rows summing to 1 within "
        f"{fmt(row_err)}: the extra cost buys stability at small ε (the project default is 0.02)."
    )
    return d["markdown"], text


def sec_kmeans(d: dict[str, Any]) -> tuple[str, str]:
    parts = []
    for r in d["rows"]:
        inits = [k[len("sklearn_") : -len("_iters")] for k in r if k.endswith("_iters")]
        bits = ", ".join(
            f"sklearn {i} {r[f'sklearn_{i}_s']:.2f} s in {r[f'sklearn_{i}_iters']} iterations "
            f"({r[f'sklearn_{i}_over_faiss']:.2f}× faiss's time, "
            f"{r[f'sklearn_{i}_over_faiss_per_iter']:.2f}× per iteration), inertia "
            f"{r[f'sklearn_{i}_inertia'] / r['faiss_inertia']:.4f}× faiss's"
            for i in inits
        )
        parts.append(
            f"K = {r['K']}: faiss {r['faiss_s']:.2f} s for {d['niter']} iterations; {bits}"
        )
    text = (
        "; ".join(parts)
        + ". An inertia ratio near 1 means clusterings of the same quality; the time ratios "
        "are what PCL's E-step would pay per clustering with scikit-learn instead of faiss on "
        f"this machine (load {d.get('load_average_start')} → {d.get('load_average_end')})."
    )
    return d["markdown"], text


def sec_umap(d: dict[str, Any]) -> tuple[str, str]:
    rows = d["rows"]
    big = rows[-1]
    larger = (
        "building the point dicts" if big["points_s"] > big["cached_load_s"] else "the npz read"
    )
    text = (
        f"A first map in a fresh process pays `import umap` ({d['import_umap_s']:.1f} s) and "
        f"numba compilation ({d['first_map_jit_s']:.1f} s for warm-up maps of up to "
        f"{d.get('warmup_points', '?')} points) on top of the figures above. Cold: "
        + ", ".join(f"{r['N']:,} points {r['cold_s']:.1f} s" for r in rows)
        + f" (UMAP fitted on at most {d['params']['max_fit']:,}, the rest placed by "
        "`transform`); cached: "
        + ", ".join(f"{r['cached_s']:.2f} s" for r in rows)
        + f", of which {larger} is the larger part at {big['N']:,} points. Load "
        f"{d.get('load_average_start')} → {d.get('load_average_end')}."
    )
    return d["markdown"], text


def sec_lightly(d: dict[str, Any]) -> tuple[str, str]:
    f = d["figures"]
    ratio = d["ours_over_lightly"]
    if abs(ratio - 1) < 0.05:
        verdict = "the same within 5 %"
    else:
        verdict = f"ours {abs(ratio - 1) * 100:.0f} % {'faster' if ratio > 1 else 'slower'}"
    text = (
        f"Ours ran {f['ours']['steps_per_s']:.2f} steps/s ({f['ours']['crops_per_s']:.0f} "
        f"crops/s), lightly's SwAV parts {f['lightly']['steps_per_s']:.2f} steps/s: ratio "
        f"{ratio:.3f}, {verdict}. Only the SwAV head, prototypes, Sinkhorn and loss differ, "
        "which are small next to the backbone and the augmentation; load average "
        f"{d.get('load_average_start')} → {d.get('load_average_end')} during the run."
    )
    return d["markdown"], text


def sec_training(d: dict[str, Any]) -> tuple[str, str]:
    marks = ["1min", "2min", "5min", "final"]
    rows: list[list[Any]] = []
    if "random_init" in d:
        rows.append(["random init"] + ["—"] * 3 + [_pct(d["random_init"].get("knn_top1")), "—"])
    for m in ("swav", "pcl", "supervised"):
        if m in d:
            knn = d[m]["knn"]
            chose = (d[m].get("precision") or {}).get("dtype", "—")
            rate = d[m].get("crops_per_s")
            rows.append(
                [m] + [_pct(knn.get(k)) for k in marks] + [f"{rate:.0f}" if rate else "—", chose]
            )
    isa = d.get("isa_env") or {}
    where = (
        "the CPU restricted to AVX2 (" + ", ".join(f"`{k}={v}`" for k, v in isa.items()) + ")"
        if isa
        else "the CPU as it is"
    )
    table = (
        f"Training budget {d.get('minutes')} min per method on `shapes`, {where}, torch CPU "
        f"capability {d.get('cpu_capability', '?')}; weighted kNN top-1 (k = 20, T = 0.07) on "
        "the test split at the last evaluation before each mark; `amp auto`'s choice:\n\n"
        + markdown_table(
            ["method", "1 min", "2 min", "5 min", "final", "crops/s", "auto chose"], rows
        )
    )
    text = ""
    if "swav_no_equipartition" in d:
        c = d["swav_no_equipartition"]
        active = c.get("active", {})
        table += (
            "\n\nCollapse ablation (SwAV, equipartition off), active prototypes over time:\n\n"
            + markdown_table(
                [*active.keys(), "final loss"], [[*active.values(), c.get("final_loss")]]
            )
        )
        swav_active = d.get("swav", {}).get("active", {})
        text = f"Without equipartition the active prototypes went {list(active.values())}"
        if swav_active:
            text += f" (default SwAV at {list(swav_active)}: {list(swav_active.values())})"
        text += ". "
    best = max(
        (m for m in ("swav", "pcl", "supervised") if m in d and d[m]["knn"].get("final")),
        key=lambda m: d[m]["knn"]["final"],
        default=None,
    )
    if best:
        text += f"Highest final kNN top-1: {best} ({_pct(d[best]['knn']['final'])})."
    return table, text


def sec_api(d: dict[str, Any]) -> tuple[str, str]:
    rows = []
    for key, label in (
        ("get_runs_idle_ms", "GET /runs, idle server"),
        ("get_runs_while_training_ms", "GET /runs, while training"),
        ("step_to_sse_client_ms", "step event → SSE client"),
    ):
        s = d.get(key, {})
        rows.append([label, s.get("n"), s.get("p50"), s.get("p99"), s.get("max")])
    table = markdown_table(["measurement", "n", "p50 ms", "p99 ms", "max ms"], rows)
    run = d.get("run", {})
    table += (
        f"\n\nThe run: {run.get('status')} ({run.get('reason')}), {run.get('steps')} steps, "
        f"{run.get('steps_per_s')} steps/s. {d.get('notes', '')}"
    )
    busy = d.get("get_runs_while_training_ms", {})
    sse = d.get("step_to_sse_client_ms", {})
    text = (
        f"While a run trains, `GET /runs` answers in {busy.get('p50')} ms (p50) / "
        f"{busy.get('p99')} ms (p99), and a step reaches an SSE client {sse.get('p50')} ms "
        "(p50) after the trainer stamps it."
    )
    return table, text


def sec_analysis(d: dict[str, Any]) -> tuple[str, str]:
    skip = {"date", "machine", "load_average_1min_at_end", "images", "prototypes"}
    rows = [[k, v] for k, v in d.items() if k not in skip]
    table = f"{d.get('images')} images, K = {d.get('prototypes')}:\n\n" + markdown_table(
        ["measurement", "seconds"], rows
    )
    text = (
        f"End to end, a cold map took {d.get('map_cold_first_in_process_s')} s (first in its "
        f"process, numba compilation included) and a cached one {d.get('map_cached_s')} s; "
        f"galleries took {d.get('galleries_end_to_end_s')} s."
    )
    return table, text


def sec_cpu_precision(d: dict[str, Any]) -> tuple[str, str]:
    cells = {(c["method"], c["amp"], c["restricted"]): c for c in d["cells"]}

    def show(c: dict[str, Any]) -> str:
        if "crops_per_s" not in c:
            return "error"
        return f"{c['crops_per_s']:.0f} ({(c.get('precision') or {}).get('dtype', '?')})"

    rows = [
        [m, a, show(cells[(m, a, False)]), show(cells[(m, a, True)])]
        for m in ("swav", "pcl")
        for a in ("auto", "off", "on")
        if (m, a, False) in cells and (m, a, True) in cells
    ]
    table = (
        f"Default recipe, median crops/s over {d['steps']} steps (fewer for `on`), and the "
        f"precision used; CPU flags: {', '.join(d.get('isa_flags', [])) or '?'}:\n\n"
        + markdown_table(["method", "amp", "as it is", "restricted to AVX2"], rows)
    )
    auto = [
        cells[(m, "auto", r)]
        for m in ("swav", "pcl")
        for r in (False, True)
        if (m, "auto", r) in cells
    ]
    reasons = sorted({(c.get("precision") or {}).get("reason", "?") for c in auto})
    text = (
        "`auto` measured or checked, and chose: " + "; ".join(reasons) + ". Where bf16 is not "
        "native, `on` is emulated and the slowest path there is."
    )
    return table, text


def sec_diagnose_r50(d: dict[str, Any]) -> tuple[str, str]:
    table = markdown_table(
        ["images", "exit", "wall s", "peak RSS MiB", "torch threads"],
        [[d["images"], d["returncode"], d["wall_s"], d["peak_rss_mib"], d["torch_threads"]]],
    )
    lines = d.get("progress_lines", [])
    text = (
        f"`protoscope diagnose` of a released-layout SwAV ResNet-50 (random weights) on "
        f"{d['images']:,} `shapes` images, end to end in a subprocess: {d['wall_s']} s (target "
        f"≤ 180 s). It printed {len(lines)} progress lines on stderr"
        + (f", the last: `{lines[-1]}`" if lines else "")
        + f". Load {d.get('load_before')} → {d.get('load_after')}."
    )
    return table, text


def sec_page_loads(d: dict[str, Any]) -> tuple[str, str]:
    cold, cached = d["cold_s"], d["cached_s"]
    rows = [[page, cold.get(page), cached.get(page)] for page in cold]
    rows.append(["compare, features cached, pair new", d["compare_of_cached_features_s"], "—"])
    table = (
        f"Default SwAV trained {d['training_steps']} steps over HTTP ({len(d['checkpoints'])} "
        "checkpoints); seconds from the first ask to the answer, 2,000 test images, in a "
        "teacher's order:\n\n" + markdown_table(["page", "cold s", "cached s"], rows)
    )
    first = next(iter(cold.values()))
    rest = max(v for k, v in cold.items() if k not in ("diagnose", "compare"))
    text = (
        f"The first page took {first} s cold (target ≤ 20 s); the other pages on the same "
        f"checkpoint at most {rest} s (target ≤ 3 s); Compare of two checkpoints with cached "
        f"features {d['compare_of_cached_features_s']} s (target ≤ 10 s). Load "
        f"{d.get('load_before')} → {d.get('load_after')}."
    )
    return table, text


def sec_timeline(d: dict[str, Any]) -> tuple[str, str]:
    text = (
        f"A timeline of {d['checkpoints']} checkpoints × {d['images']:,} images: cold "
        f"{d['cold_s']:.1f} s (+{d['umap_compile_s']:.1f} s UMAP compile without the server's "
        f"warm-up), one new checkpoint {d['one_new_checkpoint_s']:.2f} s, cached "
        f"{d['cached_s']:.2f} s. Load {d.get('load_average_start')} → "
        f"{d.get('load_average_end')}."
    )
    return d["markdown"], text


def sec_map_scale(d: dict[str, Any]) -> tuple[str, str]:
    rows = [
        [
            r["points"],
            r["first_paint_s"],
            r["select_s"],
            r["memory_after_select"]["js_heap_used_mb"],
            r["memory_after_select"]["rss_mb"].get("renderer"),
        ]
        for r in d["sizes"]
    ]
    table = markdown_table(
        ["points", "first paint s", "box select → gallery s", "JS heap MB", "renderer RSS MB"],
        rows,
    )
    text = (
        f"Explore in {d['browser']}, maps computed beforehand, {d['repeats']} page loads a size "
        f"(medians). Load {d.get('load_before')} → {d.get('load_after')}."
    )
    return table, text


def sec_demo(d: dict[str, Any]) -> tuple[str, str]:
    keys = [
        "venv_and_servers_s",
        "first_chart_s",
        "collapse_alert_s",
        "knn_50_s",
        "stop_s",
    ]
    table = markdown_table(["phase", "seconds"], [[k, d.get(k, "—")] for k in keys])
    text = (
        "`make demo` on a fresh clone"
        + (" under the AVX2 restriction" if d.get("isa_restricted") else "")
        + ": "
        f"the URL after {d.get('venv_and_servers_s')} s; then the collapse alert after "
        f"{d.get('collapse_alert_s', '—')} s and the healthy run's kNN ≥ 50 % after "
        f"{d.get('knn_50_s', '—')} s (target: both ≤ 180 s after the URL). Processes left "
        f"after Ctrl-C: {len(d.get('processes_left', []))}."
    )
    return table, text


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], tuple[str, str]]]] = {
    "sinkhorn_speed": ("Sinkhorn: log-domain (ours) vs exp-domain", sec_sinkhorn),
    "kmeans_speed": ("k-means: faiss (PCL's E-step) vs scikit-learn", sec_kmeans),
    "umap_timing": ("UMAP map: cold and cached", sec_umap),
    "timeline_timing": ("Timeline of a run: cold, one new checkpoint, cached", sec_timeline),
    "map_scale": ("Explore's map at scale in Chromium (2k / 10k / 50k points)", sec_map_scale),
    "lightly_throughput": ("Training throughput: ours vs lightly's SwAV", sec_lightly),
    "cpu_precision": (
        "Precision: amp auto / off / on, as it is and restricted to AVX2",
        sec_cpu_precision,
    ),
    "training_quality": ("Training quality after a fixed budget", sec_training),
    "training_quality_avx2": ("Training quality, CPU restricted to AVX2", sec_training),
    "api_latency": ("API latency under training", sec_api),
    "analysis_timing": ("Analysis timing (map, galleries)", sec_analysis),
    "diagnose_resnet50": ("Diagnose of a released-layout ResNet-50", sec_diagnose_r50),
    "diagnose_resnet50_avx2": (
        "Diagnose of a released-layout ResNet-50, CPU restricted to AVX2",
        sec_diagnose_r50,
    ),
    "page_loads": ("Analysis pages: cold and cached", sec_page_loads),
    "page_loads_avx2": ("Analysis pages, CPU restricted to AVX2", sec_page_loads),
    "demo_startup": ("`make demo` on a fresh clone", sec_demo),
}


def write_results(
    path: Path,
    results: list[dict[str, Any]],
    mach: dict[str, Any],
    quick: bool,
    started: str,
    load_start: list[float],
    load_end: list[float],
    skipped: list[str],
    finished: str | None = None,
) -> None:
    v = mach["versions"]
    lines = ["# protoscope benchmark results", ""]
    if quick:
        lines += [
            "> **QUICK RUN** (`run_all.py --quick`): smoke-test sizes and 0.3-minute training "
            "budgets. These figures check that the benchmarks run; they are not the results.",
            "",
        ]
    lines += [
        f"Generated by `benchmarks/run_all.py{' --quick' if quick else ''}`, started {started}, "
        f"finished {finished or time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        "## Machine",
        "",
        f"- CPU: {mach['cpu']} (flags: {', '.join(mach.get('isa_flags', [])) or '?'}; native "
        f"bf16: {'yes' if {'avx512_bf16', 'amx_bf16'} & set(mach.get('isa_flags', [])) else 'no'}"
        f"), {mach['cores']} logical cores; RAM {mach['ram_gib']} GiB; "
        f"no GPU used (all figures on the CPU), torch default threads "
        f"{mach['torch_default_threads']}",
        f"- Python {mach['python']}; torch {v['torch']}, torchvision {v['torchvision']}, faiss "
        f"{v['faiss']}, umap-learn {v['umap-learn']}, numba {v['numba']}, scikit-learn "
        f"{v['scikit-learn']}, lightly {v['lightly']}",
        f"- Load average (1, 5, 15 min) at start {load_start}, at end {load_end}. The machine is "
        "shared with other jobs, so timings are noisy; each section gives the load around it.",
        "",
    ]
    if skipped:
        lines += [
            f"Skipped: {', '.join(skipped)} (earlier runs of every part: `benchmarks/history/`).",
            "",
        ]
    for r in results:
        title, fn = SECTIONS[r["name"]]
        lines += [f"## {title}", ""]
        env_text = "".join(f"{k}={v} " for k, v in (r.get("env") or {}).items())
        lines += [
            f"`{env_text}benchmarks/{r.get('script') or r['name']}.py {' '.join(r['args'])}` — "
            f"{r['wall_s']} s, load "
            f"{r['load_before']} → {r['load_after']}, log `{r['log']}`.",
            "",
        ]
        if r["data"] is None:
            lines += [f"**Failed** (exit status {r['rc']}); see the log.", ""]
            continue
        try:
            table, text = fn(r["data"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            lines += [f"Could not summarise its JSON ({exc!r}); raw:", "", "```json"]
            lines += [json.dumps(r["data"], indent=2), "```", ""]
            continue
        lines += [table, "", text, ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes, 0.3-min training")
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out")
    ap.add_argument("--only", default="", help="comma-separated parts to run (the rest skipped)")
    ap.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="PART=ARGS",
        help="run PART with these arguments instead of its own, e.g. "
        "--args 'training_quality=--only swav,pcl' (repeatable; RESULTS.md shows the command)",
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: rewrite --output from benchmarks/out/run_all/summary.json",
    )
    args = ap.parse_args(argv)
    if args.render_only:
        summ = json.loads((RUN_OUT / "summary.json").read_text())
        write_results(
            args.output,
            summ["parts"],
            summ["machine"],
            summ["quick"],
            summ["started"],
            summ["load_average_start"],
            summ["load_average_end"],
            summ.get("skipped", []),
            finished=summ.get("finished"),
        )
        print(f"wrote {args.output} from {RUN_OUT / 'summary.json'}")
        return
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only:
        skip |= {p.name for p in PARTS} - only
    unknown = (skip | only) - {p.name for p in PARTS}
    if unknown:
        ap.error(
            f"unknown parts in --skip/--only: {sorted(unknown)}; parts: {[p.name for p in PARTS]}"
        )
    args_over: dict[str, list[str]] = {}
    for item in args.args:
        name, sep, rest = item.partition("=")
        if not sep or name.strip() not in {p.name for p in PARTS}:
            ap.error(f"--args wants PART=ARGS with a known part, got {item!r}")
        args_over[name.strip()] = shlex.split(rest)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_start = load_average()
    mach = machine()
    results = [run_part(p, args.quick, args_over.get(p.name)) for p in PARTS if p.name not in skip]
    load_end = load_average()
    summary = {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
        "skipped": [p.name for p in PARTS if p.name in skip],
        "quick": args.quick,
        "machine": mach,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "parts": results,
    }
    RUN_OUT.mkdir(parents=True, exist_ok=True)
    (RUN_OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_results(
        args.output,
        results,
        mach,
        args.quick,
        started,
        load_start,
        load_end,
        summary["skipped"],
        finished=summary["finished"],
    )
    failed = [r["name"] for r in results if r["data"] is None]
    print(f"wrote {args.output}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
