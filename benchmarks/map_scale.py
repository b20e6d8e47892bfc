"""Explore at 2,000, 10,000 and 50,000 points in headless Chromium: paint, selection, memory.

    python benchmarks/map_scale.py [--quick] [--sizes 2000 10000 50000] [--repeats 3]
                                   [--data DIR] [--json PATH]

Sets up offline (tests/e2e/explore_scale_setup.py): `shapes` images written as an image folder
whose test split holds the largest size, a tiny SwAV run trained on it through `POST /runs`,
and the map of every size computed and cached by the backend *before* any browser opens it —
so the figures below are the browser's and the app's cost, not UMAP's (the precompute seconds
are reported apart). Then, per size, in a fresh headless Chromium (Debian's, WebGL through
SwiftShader, no GPU):

- time to first paint: from navigating to /explore?points=N until the WebGL map holds all N
  points and a frame has been drawn (median of --repeats fresh page loads), and the part of it
  after the page's title showed (the map's own share: fetch, figure, transfer, WebGL);
- hover: resting the mouse on a point until its thumbnail shows (lazy mode above 2,000 points;
  the first hover of a size may include the backend loading the split's images);
- selection latency: from releasing a box drag over the middle of the map until the gallery's
  images are shown (the page reruns, draws the selection and fetches its thumbnails);
- the browser's memory after the selection: the page's JS heap (CDP Performance.getMetrics)
  and the resident memory of Chromium's processes by kind (renderer, gpu-process, …);
- the size of the map's HTTP answer as columns (what Explore asks for) and as points.

--data DIR keeps the image folder and the backend's caches between invocations (the first one
pays for writing images and computing maps). Prints one JSON summary line last.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from _common import OUT, load_average, parser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from playwright.sync_api import sync_playwright

from tests.e2e import map_browser
from tests.e2e.explore_scale_setup import precompute_map, train_checkpoint, write_image_folder
from tests.e2e.pages import no_errors
from tests.support import backend_server, frontend_server

IMAGE_SIZE = 32
# Seconds from navigation start until Streamlit's lazily loaded plotly bundle had arrived.
PLOTLY_CHUNK_S = """() => {
    const e = performance.getEntriesByType('resource').find((r) => /PlotlyChart/.test(r.name));
    return e ? e.responseEnd / 1000 : null;
}"""


def earlier_checkpoint(api: str) -> int | None:
    """The checkpoint of a run this benchmark trained before in the same --data folder (its
    maps are cached there), if any."""
    runs = requests.get(f"{api}/runs", timeout=30).json()
    done = [
        r
        for r in runs
        if r.get("dataset") == "imagefolder"
        and r.get("status") == "completed"
        and r.get("latest_checkpoint_id")
    ]
    return int(done[0]["latest_checkpoint_id"]) if done else None


def answer_bytes(api: str, ckpt: int, points: int) -> dict[str, int]:
    """Bytes of the map's answer in each format (the columns one is cached; points is cut from
    the same cached map file)."""
    out = {}
    for fmt in ("columns", "points"):
        url = f"{api}/checkpoints/{ckpt}/embedding"
        params = {"max_images": points, "format": fmt}
        while (r := requests.get(url, params=params, timeout=300)).status_code == 202:
            time.sleep(0.5)
        r.raise_for_status()
        out[fmt] = len(r.content)
    return out


def one_size(pw: Any, app: str, ckpt: int, points: int, repeats: int, tmp: Path) -> dict[str, Any]:
    url = f"{app}/explore?checkpoint={ckpt}&points={points}"
    paints, apps, chunks = [], [], []
    for r in range(repeats):
        profile = tmp / f"profile-{points}-{r}"
        browser = map_browser.launch(pw, profile)
        page = browser.new_page()
        paint = map_browser.open_map(page, url, points)
        paints.append(paint.map_s)
        apps.append(paint.app_s)
        chunks.append(page.evaluate(PLOTLY_CHUNK_S))
        no_errors(page)
        if r < repeats - 1:
            browser.close()
    drawn, traces = page.evaluate(map_browser.GL_POINTS)
    after_paint = {**map_browser.js_heap_mb(page), "rss_mb": map_browser.chromium_rss_mb(profile)}
    first_hover, _ = map_browser.hover_thumbnail(page)
    second_hover, _ = map_browser.hover_thumbnail(page)
    page.mouse.move(5, 5)
    selection = map_browser.box_select(page)
    no_errors(page)
    after_select = {
        **map_browser.js_heap_mb(page),
        "rss_mb": map_browser.chromium_rss_mb(profile),
    }
    browser.close()
    return {
        "points": points,
        "drawn_points": drawn,
        "webgl_traces": traces,
        "first_paint_s": round(statistics.median(paints), 2),
        "first_paint_all_s": [round(p, 2) for p in paints],
        # Of which the app itself (Streamlit starting the session, the page's first widgets):
        # what is left is fetching, building and drawing the map.
        "app_ready_s": round(statistics.median(apps), 2),
        # When Streamlit's plotly chunk (4.7 MB of JS, fetched by every fresh browser) had
        # arrived, seconds after navigating: a fixed cost of any plotly page, whatever the map.
        "plotly_js_loaded_s": (
            round(statistics.median(c for c in chunks if c is not None), 2)
            if any(c is not None for c in chunks)
            else None
        ),
        "map_after_app_s": round(
            statistics.median(p - a for p, a in zip(paints, apps, strict=True)), 2
        ),
        "hover_first_s": round(first_hover, 2),
        "hover_next_s": round(second_hover, 2),
        "select_s": round(selection.seconds, 2),
        "selected": selection.count,
        "memory_after_paint": after_paint,
        "memory_after_select": after_select,
    }


def main() -> None:
    ap = parser(__doc__ or "")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="map sizes (points)")
    ap.add_argument("--repeats", type=int, default=None, help="page loads per size (default 3)")
    ap.add_argument("--data", type=Path, default=None, help="keep data and caches here")
    args = ap.parse_args()
    sizes = args.sizes or ([2000, 5000] if args.quick else [2000, 10000, 50000])
    repeats = args.repeats or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = args.data or tmp / "data"
        t0 = time.monotonic()
        write_image_folder(data, max(sizes), IMAGE_SIZE)
        setup = {"write_images_s": round(time.monotonic() - t0, 1)}
        with (
            backend_server(data) as api,
            frontend_server(api, tmp / "frontend.log") as app,
            sync_playwright() as pw,
        ):
            t0 = time.monotonic()
            ckpt = earlier_checkpoint(api) or train_checkpoint(api, IMAGE_SIZE)
            setup["train_s"] = round(time.monotonic() - t0, 1)
            precompute = {}
            sizes_bytes = {}
            for n in sizes:
                seconds, got = precompute_map(api, ckpt, n)
                if got != n:
                    raise RuntimeError(f"the map of {n} has {got} points")
                precompute[str(n)] = round(seconds, 1)
                sizes_bytes[str(n)] = answer_bytes(api, ckpt, n)
            load_before = load_average()
            results = [one_size(pw, app, ckpt, n, repeats, tmp) for n in sizes]
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "browser": "headless Debian chromium, WebGL via SwiftShader (software), 1400×1000",
        "repeats": repeats,
        "setup_s": setup,
        "map_precompute_s": precompute,
        "answer_bytes": sizes_bytes,
        "sizes": results,
        "load_before": load_before,
        "load_after": load_average(),
    }
    path = args.json or OUT / "map_scale.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    summary = {
        "benchmark": "map_scale",
        **{
            f"{r['points']}": {
                "paint_s": r["first_paint_s"],
                "map_after_app_s": r["map_after_app_s"],
                "plotly_js_loaded_s": r["plotly_js_loaded_s"],
                "select_s": r["select_s"],
                "hover_s": r["hover_next_s"],
                "js_heap_mb": r["memory_after_select"]["js_heap_used_mb"],
                "renderer_rss_mb": r["memory_after_select"]["rss_mb"].get("renderer"),
                "gpu_rss_mb": r["memory_after_select"]["rss_mb"].get("gpu-process"),
            }
            for r in results
        },
        "load_after": out["load_after"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
