"""The Collapse map in a real browser (Debian's chromium through Playwright), real servers.

Opens `/collapse_map?sweep=ID` on a sweep written into the backend's database, sees both heat
maps drawn with each cell's state, watches the map refresh by itself when the running cell
reports a kNN, and follows a cell's link to its run on the Runs page — with no error or
exception element anywhere on the way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from backend.store import Store
from tests.e2e.pages import ERRORS, browser_page, chromium, wait_on_page
from tests.frontend.test_collapse_map_page import written_sweep

# The text of every cell of the n-th heat map on the page, flattened ('' when not drawn yet).
MAP_TEXT = """(n) => {
    const gd = document.querySelectorAll('.js-plotly-plot')[n];
    if (!gd || !gd.data || !gd.data[0].text) return '';
    return gd.data[0].text.flat().join(' | ');
}"""


def choose_cell(page: Page, name: str, link: str) -> None:
    """Pick a cell in 'Open a cell' until its `link` shows; the map's refresh tick may close
    the open list before the click lands, so try again."""
    box = page.get_by_role("combobox", name="Open a cell")
    for _ in range(10):
        box.click()
        with contextlib.suppress(PlaywrightTimeout):
            page.get_by_role("option", name=name).click(timeout=3_000)
        with contextlib.suppress(PlaywrightTimeout):
            page.get_by_role("link", name=link).wait_for(timeout=2_000)
            return
    raise AssertionError(f"could not choose {name!r} in 'Open a cell'")


def tall_chromium(pw: Playwright) -> BrowserContext:
    """A window tall enough for both heat maps and the cell picker below them."""
    return chromium(pw, height=1300)


@pytest.mark.timeout(300)
def test_the_collapse_map_draws_refreshes_and_links_each_cell(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with browser_page(data, tmp_path / "frontend.log", launch=tall_chromium) as (_, app, page):
        sweep_id, run_ids = written_sweep(data)
        page.goto(f"{app}/collapse_map?sweep={sweep_id}")

        def maps_drawn() -> bool:
            return page.locator(".js-plotly-plot").count() == 2 and bool(page.evaluate(MAP_TEXT, 1))

        wait_on_page("both heat maps", maps_drawn, 90, page)
        verdicts = page.evaluate(MAP_TEXT, 0)
        assert "one-cluster (steps)<br>11.0 %" in verdicts and "uniform (live)" in verdicts, (
            verdicts
        )
        assert "3 / 4 cells trained" in page.inner_text("body")

        # The running cell reports a kNN: the map shows it on its own, without a reload.
        store = Store(data / "protoscope.sqlite3", data)
        store.add_event(run_ids[2], {"type": "knn", "step": 80, "knn_top1": 0.3})
        store.close()
        wait_on_page(
            "the refreshed kNN map", lambda: "30.0 %" in page.evaluate(MAP_TEXT, 1), 90, page
        )

        # A cell's link opens its run on the Runs page (the app's default page, at /), in
        # this tab. Cell 1: cell 0's run would rightly show its red collapse alert there.
        choose_cell(page, "cell 1: epsilon = 0.02, num_prototypes = 40", f"Run {run_ids[1]}")
        page.get_by_role("link", name=f"Run {run_ids[1]}").click()
        wait_on_page("the Runs page", lambda: f"run={run_ids[1]}" in page.url, 90, page)
        chosen = page.get_by_role("combobox", name="Run")
        wait_on_page(
            "the cell's run chosen on Runs",
            lambda: "num_prototypes=40" in (chosen.input_value() + chosen.inner_text()),
            90,
            page,
        )
        # Its own numbers: cell 1's loss and kNN (45 %), no other cell's.
        wait_on_page("its live view", lambda: "45.0 %" in page.inner_text("body"), 90, page)
        assert page.locator(ERRORS).count() == 0
