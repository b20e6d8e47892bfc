"""What a user does with Explore's map in Chromium, timed: open it, box-select, hover; memory.

Shared by tests/e2e/test_explore_scale_browser.py (does it work?) and benchmarks/map_scale.py
(how fast, how much memory?). Every wait is on a condition in the page, never on a clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, Playwright

from tests.e2e.pages import CHROMIUM

# Headless Chromium without a GPU draws WebGL with SwiftShader (software). Debian's falls back
# to it by itself today; Chromium is deprecating that silent fallback, so it is asked for.
CHROMIUM_ARGS = ["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]
PREVIEW = '[data-testid="map-hover-preview"]'

# The map is drawn: the plotly graph holds `n` points in WebGL traces and has painted a frame.
MAP_DRAWN = """(n) => {
    const gd = document.querySelector('.js-plotly-plot');
    if (!gd || !gd._fullData || !gd._fullLayout) return false;
    const gl = gd._fullData.filter((t) => t.type === 'scattergl');
    const count = gl.reduce((s, t) => s + (t._length || 0), 0);
    return count === n && gd.querySelector('canvas') !== null;
}"""
# Points over the WebGL traces of the map, and how many traces.
GL_POINTS = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    if (!gd || !gd._fullData) return [0, 0];
    const gl = gd._fullData.filter((t) => t.type === 'scattergl');
    return [gl.reduce((s, t) => s + (t._length || 0), 0), gl.length];
}"""
# The plot area in page pixels: [left, top, width, height].
PLOT_AREA = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    const r = gd.getBoundingClientRect(), L = gd._fullLayout;
    return [r.left + L.xaxis._offset, r.top + L.yaxis._offset, L.xaxis._length, L.yaxis._length];
}"""
# Where point `n` of the biggest WebGL trace is drawn, in page pixels.
POINT_AT = """(n) => {
    const gd = document.querySelector('.js-plotly-plot');
    const ts = gd._fullData.filter((t) => t.type === 'scattergl');
    const t = ts.reduce((a, b) => ((b._length || 0) > (a._length || 0) ? b : a));
    const i = Math.min(n, t._length - 1);
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
    return [r.left + xa._offset + xa.l2p(t.x[i]), r.top + ya._offset + ya.l2p(t.y[i])];
}"""
NEXT_FRAME = "() => new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)))"


def launch(pw: Playwright, profile: Path) -> BrowserContext:
    """Headless Chromium with its own profile folder (so its processes can be found)."""
    return pw.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1400, "height": 1000},
    )


@dataclass(frozen=True)
class Paint:
    app_s: float  # from navigating until the page's title is on screen (Streamlit started)
    map_s: float  # from navigating until the map is drawn (time to first paint of the map)


def open_map(page: Page, url: str, points: int, timeout_s: float = 300) -> Paint:
    """Navigate to `url` (Explore, its map cached) and wait until the map of `points` points
    is drawn."""
    t0 = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name="Explore").first.wait_for(timeout=timeout_s * 1000)
    app_s = time.perf_counter() - t0
    page.wait_for_function(MAP_DRAWN, arg=points, timeout=timeout_s * 1000, polling=50)
    page.evaluate(NEXT_FRAME)
    return Paint(app_s, time.perf_counter() - t0)


@dataclass(frozen=True)
class Selection:
    seconds: float  # from releasing the mouse until the gallery's images are shown
    count: int  # images the page says were selected
    shown: int  # images drawn in the gallery


def box_select(page: Page, timeout_s: float = 120) -> Selection:
    """Pick the box tool, drag over the middle of the map, and wait for the gallery."""
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.locator('.modebar-btn[data-title="Box Select"]').first.click()
    left, top, width, height = page.evaluate(PLOT_AREA)
    x0, y0 = left + 0.3 * width, top + 0.3 * height
    x1, y1 = left + 0.7 * width, top + 0.7 * height
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=8)
    t0 = time.perf_counter()
    page.mouse.up()
    heading = page.get_by_text("Selection:", exact=False).first
    heading.wait_for(timeout=timeout_s * 1000)
    # The gallery is shown once its images have loaded (Streamlit's st.image elements below
    # the heading).
    page.wait_for_function(
        """() => {
            const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
            return imgs.length >= 2 && imgs.every((i) => i.complete && i.naturalWidth > 0);
        }""",
        timeout=timeout_s * 1000,
        polling=50,
    )
    seconds = time.perf_counter() - t0
    text = heading.inner_text()
    count = int(text.split(":")[1].split()[0].replace(",", ""))
    shown = page.locator('[data-testid="stImage"] img').count()
    return Selection(seconds, count, shown)


def hover_thumbnail(page: Page, timeout_s: float = 30) -> tuple[float, int]:
    """Rest the mouse on map points until one shows its image: (seconds, its data set index).

    The preview must carry the hovered point's index (customdata[0]), and a real image."""
    page.locator(PREVIEW).wait_for(state="attached", timeout=timeout_s * 1000)
    img = page.locator(f"{PREVIEW} img")
    for n in (100, 5, 1000, 50, 3000):
        x, y = page.evaluate(POINT_AT, n)
        page.mouse.move(x - 30, y - 30)
        t0 = time.perf_counter()
        page.mouse.move(x, y, steps=3)
        try:
            page.wait_for_function(
                f"""() => {{
                    const i = document.querySelector('{PREVIEW} img');
                    const h = document.querySelector('.js-plotly-plot')._hoverdata;
                    return i && h && h.length > 0 && i.style.display !== 'none'
                        && i.complete && i.naturalWidth > 0
                        && i.dataset.index === String(h[0].customdata[0]);
                }}""",
                timeout=timeout_s * 1000 / 3,
                polling=20,
            )
        except Exception:
            continue
        seconds = time.perf_counter() - t0
        assert img.is_visible()
        return seconds, int(img.get_attribute("data-index") or -1)
    raise AssertionError("no map point showed its image on hover")


def _status_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def chromium_rss_mb(profile: Path) -> dict[str, float]:
    """Resident memory of the browser's processes by kind (browser, renderer, gpu-process…),
    MB: the processes descending from the one started with this profile folder."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents[int(d.name)] = ppid
        cmdlines[int(d.name)] = cmd
    roots = {p for p, c in cmdlines.items() if str(profile) in c and "--type=" not in c}
    ours = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                changed = True
    out: dict[str, float] = {}
    for pid in ours:
        cmd = cmdlines[pid]
        kind = cmd.split("--type=", 1)[1].split()[0] if "--type=" in cmd else "browser"
        try:
            out[kind] = out.get(kind, 0.0) + _status_kb(pid) / 1024
        except OSError:
            continue
    return {k: round(v, 1) for k, v in sorted(out.items())}


def js_heap_mb(page: Page) -> dict[str, float]:
    """The page's JavaScript heap (CDP Performance.getMetrics), MB."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    cdp.detach()
    mb = 1024 * 1024
    return {
        "js_heap_used_mb": round(metrics.get("JSHeapUsedSize", 0) / mb, 1),
        "js_heap_total_mb": round(metrics.get("JSHeapTotalSize", 0) / mb, 1),
    }
