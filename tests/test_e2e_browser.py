"""End to end in a real browser: Debian's chromium driven by Playwright, real servers, a real run.

Opens the app, starts a tiny run from the Runs form, watches the live chart grow, opens Explore
and sees the map drawn — with no error or exception element anywhere on the way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, sync_playwright

from tests.servers import backend_server, frontend_server

CHROMIUM = "/usr/bin/chromium"
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def wait_until(what: str, check: Callable[[], bool], timeout: float, page: Page) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).first.inner_text()
        time.sleep(0.5)
    page.screenshot(path="/tmp/e2e-failure.png", full_page=True)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def plot_points(page: Page) -> int:
    """Points over all traces of the first plotly chart on the page (0 when none yet)."""
    return int(
        page.evaluate(
            """() => {
                const p = document.querySelector('.js-plotly-plot');
                if (!p || !p.data) return 0;
                return p.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0);
            }"""
        )
    )


def no_errors(page: Page) -> None:
    errors = page.locator(ERRORS)
    assert errors.count() == 0, errors.first.inner_text()


@pytest.mark.timeout(420)
def test_start_a_run_watch_it_live_and_explore_its_map(tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it"
    data = tmp_path / "data"
    with (
        backend_server(data) as api,
        frontend_server(api, tmp_path / "frontend.log") as app,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app)  # Runs is the default page, at the root URL
        page.get_by_role("button", name="Start run").wait_for(timeout=60_000)
        no_errors(page)

        # A tiny run: the embedded digits, a few epochs, few prototypes.
        page.get_by_role("combobox", name="Data set").click()
        page.get_by_role("option", name="digits").click()
        page.get_by_role("spinbutton", name="Epochs", exact=True).fill("3")
        page.get_by_role("spinbutton", name="Prototypes K", exact=True).fill("16")
        page.get_by_role("button", name="Start run").click()

        # The live view appears and its first chart grows while the run trains.
        wait_until("the live chart", lambda: plot_points(page) > 0, 120, page)
        first = plot_points(page)
        wait_until("the live chart to update", lambda: plot_points(page) > first, 120, page)
        no_errors(page)

        # Explore: once the run has written its checkpoints, the map is drawn.
        def finished() -> bool:
            runs = requests.get(f"{api}/runs", timeout=10).json()
            return bool(runs) and runs[0]["status"] == "completed"

        wait_until("the run to complete", finished, 240, page)
        page.goto(f"{app}/explore")
        wait_until("the UMAP map", lambda: plot_points(page) > 100, 240, page)
        no_errors(page)
        browser.close()
