"""Screenshot every page of a running app with headless Chromium (Playwright, Debian's chromium).

    python scripts/screenshots.py http://127.0.0.1:8501 [--out docs/screenshots]

Used for the README's pictures and for looking at the app as a user does. Each page is opened,
given time to finish its first run (Streamlit's "running" indicator gone, plotly drawn), and
saved as <page>.png.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

PAGES = [
    "runs",
    "explore",
    "timeline",
    "prototypes",
    "diagnose",
    "compare",
    "collapse_map",
    "learn",
]
CHROMIUM = "/usr/bin/chromium"
DEFAULT_PAGE = "runs"


def settle(page: Page, timeout_s: float = 300.0) -> None:
    """Wait until Streamlit has finished running the page script and charts are drawn.

    A cold analysis (UMAP, kNN bank) shows a progress bar while the backend computes, and the
    page is "quiet" between its polls: wait for the bar to go too, or the picture is of it.
    """
    page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=timeout_s * 1000)
    # Live fragments (Runs) draw a few seconds after the page script: wait for a chart first.
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        running = running or _unfinished_progress(page)
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 2.0:
            return
        time.sleep(0.25)


def _unfinished_progress(page: Page) -> bool:
    """A progress bar short of 100 % (a full one, like a finished sweep's, is content)."""
    values = page.eval_on_selector_all(
        '[data-testid="stProgress"] [role="progressbar"]',
        "bars => bars.map(b => Number(b.getAttribute('aria-valuenow') ?? 0))",
    )
    return any(v < 100 for v in values)


def shoot(app_url: str, out: Path, pages: list[str], width: int, height: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": width, "height": height})
        for item in pages:
            # "name" or "file=page?query" (e.g. "diagnose-collapsed=diagnose?checkpoint=7": the
            # same page on another checkpoint, saved as diagnose-collapsed.png). The default page
            # (Runs) lives at the root URL; the others at /<page>.
            name, _, target = item.partition("=")
            target = target or name
            page_name, _, query = target.partition("?")
            path_part = "" if page_name == DEFAULT_PAGE else page_name
            page.goto(f"{app_url.rstrip('/')}/{path_part}" + (f"?{query}" if query else ""))
            settle(page)
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            written.append(path)
            print(path, flush=True)
        browser.close()
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="the app's URL, e.g. http://127.0.0.1:8501")
    ap.add_argument("--out", default="docs/screenshots", type=Path)
    ap.add_argument(
        "--pages",
        default=",".join(PAGES),
        help="comma-separated pages, each NAME or FILE=PAGE?QUERY (e.g. c2=compare?compare_a=1)",
    )
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000)
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    shoot(args.url, args.out, args.pages.split(","), args.width, args.height)
    return 0


if __name__ == "__main__":
    sys.exit(main())
