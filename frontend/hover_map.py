"""Hover a point of a plotly map, see its image: a small v2 component next to st.plotly_chart.

The map stays an ordinary `st.plotly_chart` (so click / box / lasso selection keeps reaching
Python and the gallery). This module adds an invisible `st.components.v2` component whose few
lines of JavaScript run in the app page (v2 components are not sandboxed in an iframe), find
that chart by its widget key (Streamlit gives the element the CSS class `st-key-<key>`) and
listen to plotly's own `plotly_hover` / `plotly_unhover` events. The hovered point's data set
index (customdata[0], never its position) picks its thumbnail from a table the page passes in,
and a small floating box shows it next to the mouse.

Thumbnails come from the backend's image endpoint through `Client.image` — fetched server-side
(a token never reaches the browser), in parallel, once per map (cached), re-encoded small and
embedded as `data:` URIs, so the browser needs no access to the backend at all.

Everything here is optional: if the component API is missing or anything fails, the page
still has its map, the text hover and the selection gallery.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import streamlit as st

from frontend.client import BackendError, BackendUnavailable, Client

log = logging.getLogger(__name__)

# Thumbnails embedded for hovering, at most: the embedding map itself is capped at 2000 points
# (the backend's default max_images), so every point of a default map gets one.
MAX_HOVER_IMAGES = 2000
# Largest side a thumbnail is stored at (bigger sets are shrunk; small ones keep their pixels
# and the browser enlarges them crisply).
THUMB_MAX_SIDE = 64
# Side of the preview box's image in CSS pixels.
PREVIEW_PX = 128
# Parallel requests while fetching the thumbnails (each is a few ms of backend work).
FETCH_THREADS = 8
COMPONENT_NAME = "protoscope_map_hover"
PREVIEW_TESTID = "map-hover-preview"

_JS = """
const BOX_ID = "protoscope-map-hover-preview";

export default function (component) {
  const data = component.data || {};
  const thumbs = data.thumbs || {};
  const target = data.target || "";
  const side = data.side || 128;
  const root = component.parentElement;
  const doc = (root && root.ownerDocument) || document;

  const old = doc.getElementById(BOX_ID);
  if (old) old.remove();
  const box = doc.createElement("div");
  box.id = BOX_ID;
  box.setAttribute("data-testid", data.testid || "map-hover-preview");
  Object.assign(box.style, {
    position: "fixed", zIndex: "100000", display: "none", pointerEvents: "none",
    background: "#ffffff", color: "#262730", border: "1px solid rgba(49, 51, 63, 0.3)",
    borderRadius: "6px", padding: "4px", boxShadow: "0 2px 10px rgba(0, 0, 0, 0.25)",
    font: "12px sans-serif", textAlign: "center",
  });
  const img = doc.createElement("img");
  img.alt = "hovered image";
  img.width = side;
  img.height = side;
  Object.assign(img.style, { display: "block", imageRendering: "pixelated" });
  const caption = doc.createElement("div");
  caption.style.marginTop = "2px";
  box.append(img, caption);
  doc.body.appendChild(box);

  let gd = null;

  const hide = () => { box.style.display = "none"; };

  const place = (ev) => {
    const w = box.offsetWidth, h = box.offsetHeight;
    const vw = doc.documentElement.clientWidth, vh = doc.documentElement.clientHeight;
    let x, y;
    if (ev && typeof ev.clientX === "number") { x = ev.clientX; y = ev.clientY; }
    else if (gd) {
      const r = gd.getBoundingClientRect();
      x = r.left + w / 2 + 8;
      y = r.top + h + 8;
    }
    else { x = w / 2 + 8; y = h + 8; }
    // Above the pointer, clear of plotly's text label (beside the point, centred on it);
    // below it when there is no room above.
    let top = y - h - 32;
    if (top < 4) top = y + 32;
    const left = Math.min(Math.max(4, x - w / 2), Math.max(4, vw - w - 4));
    box.style.left = left + "px";
    box.style.top = Math.min(top, Math.max(4, vh - h - 4)) + "px";
  };

  const show = (ev) => {
    const p = ev && ev.points && ev.points[0];
    const cd = p ? p.customdata : undefined;
    const idx = Array.isArray(cd) ? cd[0] : cd;
    const src = idx === undefined || idx === null ? undefined : thumbs[String(idx)];
    if (!src) { hide(); return; }
    if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    box.dataset.index = String(idx);
    img.dataset.index = String(idx);
    caption.textContent = "image " + idx;
    box.style.display = "block";
    place(ev.event);
  };

  const listening = (g) => {
    const ev = g._ev;
    return !ev || typeof ev.listeners !== "function" || ev.listeners("plotly_hover").includes(show);
  };

  const detach = () => {
    if (gd && typeof gd.removeListener === "function") {
      gd.removeListener("plotly_hover", show);
      gd.removeListener("plotly_unhover", hide);
      gd.removeEventListener("mouseleave", hide);
    }
    gd = null;
  };

  // The chart may be drawn after this component, or redrawn (new checkpoint, new colouring):
  // look for it now and then, and (re)attach to whatever graph div is there.
  const attach = () => {
    let host = null;
    try {
      host = target ? doc.querySelector("." + CSS.escape(target)) : null;
    } catch (e) {
      host = null;
    }
    const g = host ? host.querySelector(".js-plotly-plot") : null;
    if (g && g === gd && listening(g)) return;
    detach();
    hide();
    if (g && typeof g.on === "function") {
      g.on("plotly_hover", show);
      g.on("plotly_unhover", hide);
      g.addEventListener("mouseleave", hide);
      gd = g;
      box.dataset.attached = "1";
    }
  };
  attach();
  const timer = setInterval(attach, 500);

  return () => {
    clearInterval(timer);
    detach();
    box.remove();
  };
}
"""

_renderer: Any = None
_renderer_lock = threading.Lock()


def chart_class(key: str) -> str:
    """The CSS class Streamlit gives an element with this widget key."""
    return "st-key-" + re.sub(r"[^a-zA-Z0-9_-]", "-", key.strip())


def data_uri(png: bytes, max_side: int = THUMB_MAX_SIDE) -> str:
    """A thumbnail as a small `data:` URI: WebP (a few hundred bytes), else the PNG as it came."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            rgb = im.convert("RGB")
            if max(rgb.size) > max_side:
                rgb.thumbnail((max_side, max_side), Image.Resampling.BOX)
            out = io.BytesIO()
            rgb.save(out, format="WEBP", quality=85, method=2)
        return "data:image/webp;base64," + base64.b64encode(out.getvalue()).decode("ascii")
    except Exception:  # no WebP encoder, not an image: embed the PNG itself
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@st.cache_data(max_entries=4, show_spinner=False)
def _fetch_thumbnails(
    base_url: str, dataset: str, indices: tuple[int, ...], data_root: str | None = None
) -> dict[str, str]:
    """{str(index): data URI} for the images that could be fetched (others are left out)."""
    local = threading.local()

    def one(index: int) -> tuple[int, str | None]:
        if not hasattr(local, "client"):
            local.client = Client(base_url)
        try:
            return index, data_uri(local.client.image(dataset, index, data_root=data_root))
        except BackendUnavailable:
            raise
        except BackendError:
            return index, None  # e.g. an index outside the split: no preview for that point

    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        pairs = list(pool.map(one, indices))
    return {str(i): uri for i, uri in pairs if uri is not None}


def thumbnails(
    dataset: str,
    indices: Sequence[int],
    base_url: str | None = None,
    data_root: str | None = None,
) -> dict[str, str]:
    """Data URIs of the first MAX_HOVER_IMAGES `indices` (data set indices), cached per map."""
    wanted = tuple(dict.fromkeys(int(i) for i in indices))[:MAX_HOVER_IMAGES]
    if not wanted:
        return {}
    url = base_url or Client().base_url
    try:
        return _fetch_thumbnails(url, dataset, wanted, data_root)
    except BackendError as exc:
        log.warning("no hover thumbnails for %s: %s", dataset, exc.message)
        return {}


def _component() -> Any:
    """The registered component's mount function (created once per process)."""
    global _renderer
    with _renderer_lock:
        if _renderer is None:
            _renderer = st.components.v2.component(COMPONENT_NAME, js=_JS)
        return _renderer


def hover_previews(
    chart_key: str, dataset: str, indices: Sequence[int], data_root: str | None = None
) -> int:
    """Show each point's image while the mouse is over it, on the chart with `chart_key`.

    Returns how many points have a preview (0 when none could be set up; the chart then keeps
    its text hover only). Call it after the chart: fetching the thumbnails the first time takes
    a few seconds, and everything above is already drawn meanwhile.
    """
    try:
        with st.spinner("Fetching thumbnails for the hover previews…", show_time=True):
            thumbs = thumbnails(dataset, indices, data_root=data_root)
        if not thumbs:
            return 0
        _component()(
            key=f"{chart_key}_hover",
            data={
                "target": chart_class(chart_key),
                "thumbs": thumbs,
                "side": PREVIEW_PX,
                "testid": PREVIEW_TESTID,
            },
        )
        return len(thumbs)
    except Exception as exc:  # never let the extra break the page
        log.warning("hover previews unavailable: %s", exc)
        return 0
