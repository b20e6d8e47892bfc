"""Time from `make demo` on a fresh clone to the first live chart in a real browser.

    python benchmarks/demo_startup.py [--repo .] [--keep] [--screenshot PATH]

Clones the repository's committed HEAD into a temporary folder (so `.venv` is created from
nothing, as a newcomer's would be), runs `make demo` there, waits for the URL line, opens it in
headless Chromium (Playwright, Debian's chromium) and waits until the Runs page shows a plotly
chart with drawn data. Then Ctrl-C (SIGINT) to `make demo`, and checks every process it started
is gone. Prints the phases as JSON:

    venv_and_servers_s   `make demo` started → the URL printed
    first_chart_s        the URL printed → a live chart with data in the browser
    total_s              the sum: what a newcomer waits after typing `make demo`
    stop_s               Ctrl-C → `make demo` exited
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
URL_LINE = re.compile(r"^(http://127\.0\.0\.1:\d+)\s*$")
# A plotly chart whose SVG holds at least one drawn trace point/line.
CHART_WITH_DATA = '[data-testid="stPlotlyChart"] .js-plotly-plot .trace'


def wait_for_url(proc: subprocess.Popen[str], log: list[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise SystemExit(f"make demo exited with {proc.returncode}:\n" + "".join(log))
            continue
        log.append(line)
        m = URL_LINE.match(line.strip())
        if m:
            return m.group(1)
    raise SystemExit(f"no URL within {timeout_s:.0f} s:\n" + "".join(log))


def first_chart(url: str, timeout_s: float, screenshot: Path | None) -> float:
    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector(CHART_WITH_DATA, timeout=timeout_s * 1000)
        elapsed = time.monotonic() - t0
        if screenshot is not None:
            time.sleep(3.0)  # let the other charts of the live view draw too
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return elapsed


def descendants(pid: int) -> set[int]:
    """Every live process whose ancestry reaches pid (from /proc)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {c for c, p in parent.items() if p in frontier} - out
        out |= frontier
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--keep", action="store_true", help="keep the clone")
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="protoscope-demo-"))
    clone = work / "protoscope"
    subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["make", "demo"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    log: list[str] = []
    try:
        url = wait_for_url(proc, log, args.timeout)
        t_url = time.monotonic() - t0
        t_chart = first_chart(url, args.timeout, args.screenshot)
        children = descendants(proc.pid)
        t_stop0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        t_stop = time.monotonic() - t_stop0
        time.sleep(1.0)
        left = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    result = {
        "venv_and_servers_s": round(t_url, 1),
        "first_chart_s": round(t_chart, 1),
        "total_s": round(t_url + t_chart, 1),
        "stop_s": round(t_stop, 1),
        "exit_code": proc.returncode,
        "processes_left": left,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
