"""The Timeline page in a real browser (Debian's chromium through Playwright), real servers and
a real tiny run: the map and the Sankey draw, Play and the slider move through the epochs, a
click on a usage square shows that prototype's images at each epoch, and
no error or exception appears anywhere on the way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backend.test_timeline_api import trained_run
from tests.e2e.pages import browser_page, no_errors, wait_on_page

IMAGES = 300

# The animated map: the plotly chart with a slider.
MAP = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .find((gd) => gd.layout && gd.layout.sliders && gd.layout.sliders.length)"""
# The map's title names its epoch (Streamlit's theme wraps it in <b>: stripped).
MAP_TITLE = (
    f"() => {{ const gd = ({MAP})(); "
    "return gd ? gd._fullLayout.title.text.replace(/<[^>]+>/g, '') : ''; }"
)
MAP_POINTS = f"() => {{ const gd = ({MAP})(); return gd ? gd.data[0].x.length : 0; }}"
SANKEY_NODES = "() => document.querySelectorAll('.sankey .sankey-node').length"
# Where, in the window, the usage chart's busiest square is, and its prototype.
USAGE = (
    "[...document.querySelectorAll('.js-plotly-plot')]"
    ".find((gd) => gd.data && gd.data.length && gd.data[0].name === 'usage')"
)
BUSIEST_SQUARE = f"""() => {{
    const gd = {USAGE};
    if (!gd) return null;
    const t = gd.data[0], counts = t.customdata.map((c) => c[1]);
    const i = counts.indexOf(Math.max(...counts));
    // The drawn marker itself (plotly draws trace 0's points in data order): its centre.
    const box = gd.querySelectorAll('.scatterlayer .trace')[0]
        .querySelectorAll('.points path.point')[i].getBoundingClientRect();
    return {{x: box.left + box.width / 2, y: box.top + box.height / 2, k: t.customdata[i][0]}};
}}"""
IMAGES_SHOWN = "() => document.querySelectorAll('[data-testid=\"stImage\"] img').length"


@pytest.mark.timeout(420)
def test_timeline_page_draws_plays_and_slides(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    run_id = trained_run(data, "swav")
    with browser_page(data, tmp_path / "frontend.log") as (_, app, page):
        page.goto(f"{app}/timeline?run={run_id}&images={IMAGES}")
        wait_on_page("the map", lambda: page.evaluate(MAP_POINTS) == IMAGES, 240, page)
        assert page.evaluate(MAP_TITLE).startswith("epoch 3")  # opens at the last epoch
        page.locator(".sankey").first.scroll_into_view_if_needed()
        wait_on_page("the Sankey", lambda: page.evaluate(SANKEY_NODES) >= 3, 60, page)
        no_errors(page)

        # Play: the map goes back to the first epoch and moves through the run.
        seen: set[str] = set()
        page.locator(".updatemenu-button").first.scroll_into_view_if_needed()
        page.locator(".updatemenu-button", has_text="Play").click()

        def played() -> bool:
            seen.add(page.evaluate(MAP_TITLE).split(" · ")[0])
            return {"epoch 1", "epoch 2", "epoch 3"} <= seen

        wait_on_page("Play to show every epoch", played, 30, page)
        no_errors(page)

        # The slider: drag its handle to the left end, the first epoch.
        page.wait_for_timeout(2 * 600)  # let the animation finish
        grip = page.locator(".slider-grip-rect").first.bounding_box()
        rail = page.locator(".slider-rail-rect").first.bounding_box()
        assert grip is not None and rail is not None
        page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
        page.mouse.down()
        page.mouse.move(rail["x"] + 2, grip["y"] + grip["height"] / 2, steps=8)
        page.mouse.up()
        wait_on_page(
            "the slider to show epoch 1",
            lambda: page.evaluate(MAP_TITLE).startswith("epoch 1"),
            20,
            page,
        )
        no_errors(page)

        # A square of the usage chart: that prototype's images at each of the three epochs.
        page.evaluate(f"() => ({USAGE}).scrollIntoView({{block: 'center'}})")
        page.wait_for_timeout(500)
        square = page.evaluate(BUSIEST_SQUARE)
        assert square is not None
        before = page.evaluate(IMAGES_SHOWN)
        page.mouse.click(square["x"], square["y"])
        heading = f"Prototype {square['k']}: its nearest images at each epoch"
        wait_on_page(
            "the clicked prototype's images",
            lambda: (
                page.get_by_text(heading).count() > 0 and page.evaluate(IMAGES_SHOWN) >= before + 3
            ),
            60,
            page,
        )
        no_errors(page)
