"""End to end in a real browser: Debian's chromium driven by Playwright, real servers, a real run.

Opens the app, starts a tiny run from the Runs form, watches the live chart grow, opens Explore,
sees the map drawn and, hovering a point, that point's image; clicking it, the image and its
nearest neighbours beside the map — with no error or exception element anywhere on the way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.pages import browser_page, no_errors, wait_on_page


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


# Where the n-th point of the first trace with enough points is drawn, in page pixels.
POINT_XY = """(n) => {
    const gd = document.querySelector('.js-plotly-plot');
    const t = gd.data.find((t) => t.x && t.x.length > n) || gd.data[0];
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
    return [r.left + xa._offset + xa.l2p(t.x[n]), r.top + ya._offset + ya.l2p(t.y[n])];
}"""
PREVIEW = '[data-testid="map-hover-preview"]'


def hover_shows_the_image(page: Page) -> None:
    """Move the mouse onto a map point: a preview with that point's image (by index) appears."""
    page.locator(PREVIEW).wait_for(state="attached", timeout=60_000)  # thumbnails fetched
    img = page.locator(f"{PREVIEW} img")
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    for n in (3, 30, 60):  # a few points, in case one sits under the legend or another point
        x, y = page.evaluate(POINT_XY, n)
        page.mouse.move(x - 40, y - 40)
        page.mouse.move(x, y, steps=4)
        try:
            img.wait_for(state="visible", timeout=3_000)
            break
        except PlaywrightTimeout:
            continue
    assert img.is_visible(), "no image preview while hovering the map"
    src = img.get_attribute("src") or ""
    assert src.startswith("data:image/") and ";base64," in src, src[:60]
    page.wait_for_function(  # a real, decodable image, not a broken one
        f"() => {{ const i = document.querySelector('{PREVIEW} img'); "
        "return i && i.complete && i.naturalWidth > 0; }",
        timeout=5_000,
    )
    # The image is the hovered point's, by its data set index (customdata[0]), not its position
    # (the preview of a point hovered a moment earlier may still be on its way: wait for it).
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('{PREVIEW} img'); "
        "const h = document.querySelector('.js-plotly-plot')._hoverdata; "
        "return i && h && h.length > 0 && i.dataset.index === String(h[0].customdata[0]); }",
        timeout=10_000,
    )
    page.mouse.move(5, 5)  # off the map: the preview goes away
    img.wait_for(state="hidden", timeout=5_000)


def click_shows_the_point(page: Page) -> None:
    """Click one point: the panel beside the map shows that image (by index) and its neighbours."""
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    hovered = None
    for n in (30, 3, 60, 90):  # a point can sit under the legend or under another point
        x, y = page.evaluate(POINT_XY, n)
        page.mouse.move(x - 30, y - 30)
        page.mouse.move(x, y, steps=4)
        try:
            page.wait_for_function(
                "() => { const h = document.querySelector('.js-plotly-plot')._hoverdata; "
                "return h && h.length > 0 && h[0].customdata; }",
                timeout=3_000,
            )
        except PlaywrightTimeout:
            continue
        hovered = page.evaluate(
            "() => document.querySelector('.js-plotly-plot')._hoverdata[0].customdata[0]"
        )
        break
    assert hovered is not None, "no map point answered the mouse"
    page.mouse.click(x, y)
    page.get_by_text(f"Image {hovered} ·").wait_for(timeout=60_000)
    page.get_by_text("Nearest images in the embedding").wait_for(timeout=60_000)


@pytest.mark.timeout(420)
def test_start_a_run_watch_it_live_and_explore_its_map(tmp_path: Path) -> None:
    with browser_page(tmp_path / "data", tmp_path / "frontend.log") as (api, app, page):
        page.goto(app)  # Runs is the default page, at the root URL
        page.get_by_role("button", name="Start run").wait_for(timeout=60_000)
        no_errors(page)

        # A tiny run: the embedded digits, few prototypes, sized by steps (not by how many
        # epochs this CPU trains in a minute): 3 epochs of digits, cut at 45 steps.
        page.get_by_role("combobox", name="Data set").click()
        page.get_by_role("option", name="digits").click()
        page.get_by_role("spinbutton", name="Epochs", exact=True).fill("3")
        page.get_by_role("spinbutton", name="Max steps (0 = none)", exact=True).fill("45")
        page.get_by_role("spinbutton", name="Prototypes K", exact=True).fill("16")
        page.get_by_role("button", name="Start run").click()

        # The live view appears and its first chart grows while the run trains.
        wait_on_page("the live chart", lambda: plot_points(page) > 0, 120, page)
        first = plot_points(page)
        wait_on_page("the live chart to update", lambda: plot_points(page) > first, 120, page)
        no_errors(page)

        # Explore: once the run has written its checkpoints, the map is drawn.
        def finished() -> bool:
            runs = requests.get(f"{api}/runs", timeout=10).json()
            return bool(runs) and runs[0]["status"] == "completed"

        wait_on_page("the run to complete", finished, 240, page)
        page.goto(f"{app}/explore")
        wait_on_page("the UMAP map", lambda: plot_points(page) > 100, 240, page)
        no_errors(page)
        hover_shows_the_image(page)
        no_errors(page)
        click_shows_the_point(page)
        no_errors(page)
