"""Explore's big-map mode in real headless Chromium: WebGL, box selection, lazy hover previews.

A real backend and app, a tiny run trained on an image folder of shapes whose test split holds
2,400 images — more than hover_map.MAX_HOVER_IMAGES, so the page runs exactly as at 50,000
points (thumbnails fetched near the mouse) while UMAP stays cheap. The map is computed before
the browser opens it; every wait is on a condition in the page.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Playwright

from frontend import hover_map
from tests.e2e import map_browser
from tests.e2e.explore_scale_setup import precompute_map, train_checkpoint, write_image_folder
from tests.e2e.pages import browser_page, no_errors

IMAGES = 2400
MAP_SIZE = 5000  # the Explore size control's choice: at most 5,000, so all 2,400

# Points of the map inside the page-pixel box [x0, y0, x1, y1], counted from plotly's own data.
POINTS_IN_BOX = """([x0, y0, x1, y1]) => {
    const gd = document.querySelector('.js-plotly-plot');
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
    let n = 0;
    for (const t of gd._fullData) {
        for (let i = 0; i < t._length; i++) {
            const px = r.left + xa._offset + xa.l2p(t.x[i]);
            const py = r.top + ya._offset + ya.l2p(t.y[i]);
            if (px >= x0 && px <= x1 && py >= y0 && py <= y1) n++;
        }
    }
    return n;
}"""


@pytest.mark.timeout(420)
def test_a_big_map_draws_as_webgl_selects_by_box_and_previews_on_hover(tmp_path: Path) -> None:
    assert IMAGES > hover_map.MAX_HOVER_IMAGES  # the lazy previews are what is tested
    data = tmp_path / "data"
    write_image_folder(data, IMAGES)

    def webgl(pw: Playwright) -> BrowserContext:
        # WebGL by the software renderer, the browser benchmarks/map_scale.py measures.
        return map_browser.launch(pw, tmp_path / "profile")

    with browser_page(data, tmp_path / "frontend.log", launch=webgl) as (api, app, page):
        ckpt = train_checkpoint(api)
        _, points = precompute_map(api, ckpt, MAP_SIZE)
        assert points == IMAGES
        map_browser.open_map(page, f"{app}/explore?checkpoint={ckpt}&points={MAP_SIZE}", IMAGES)
        no_errors(page)
        drawn, traces = page.evaluate(map_browser.GL_POINTS)
        assert drawn == IMAGES and traces >= 1  # every point, in WebGL traces only
        assert page.locator(".js-plotly-plot canvas").count() > 0

        # Hover: the preview shows the hovered point's own image, fetched for it on demand.
        _, index = map_browser.hover_thumbnail(page)
        preview = page.locator(map_browser.PREVIEW)
        assert preview.get_attribute("data-mode") == "lazy"
        assert 0 <= index < IMAGES
        src = page.locator(f"{map_browser.PREVIEW} img").get_attribute("src") or ""
        assert src.startswith("data:image/"), src[:40]  # from the app, not the backend
        page.mouse.move(5, 5)
        page.locator(f"{map_browser.PREVIEW} img").wait_for(state="hidden", timeout=10_000)

        # Box select: the page's selection is exactly the points inside the box.
        left, top, width, height = page.evaluate(map_browser.PLOT_AREA)
        box = [left + 0.3 * width, top + 0.3 * height, left + 0.7 * width, top + 0.7 * height]
        inside = page.evaluate(POINTS_IN_BOX, box)
        selection = map_browser.box_select(page)
        assert selection.count == inside > 1
        assert selection.shown >= min(inside, 2)
        page.get_by_text(f"Selection: {inside} images").wait_for(timeout=10_000)
        no_errors(page)
