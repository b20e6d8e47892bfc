"""Hover a point of a plotly map, see its image: a small v2 component next to st.plotly_chart.

The map stays an ordinary `st.plotly_chart` (so click / box / lasso selection keeps reaching
Python and the gallery). This module adds an invisible `st.components.v2` component whose few
lines of JavaScript run in the app page (v2 components are not sandboxed in an iframe), find
that chart by its widget key (Streamlit gives the element the CSS class `st-key-<key>`) and
listen to plotly's own `plotly_hover` / `plotly_unhover` events. The hovered point's data set
index (customdata[0], never its position) picks its thumbnail, and a small floating box shows
it next to the mouse.

Thumbnails come from the backend's image endpoint through `Client.image` — fetched server-side
(a token never reaches the browser), re-encoded small and handed over as `data:` URIs, so the
browser needs no access to the backend at all. Two ways, by the size of the map:

- eager (up to MAX_HOVER_IMAGES points): every point's thumbnail is fetched once per map
  (in parallel, cached) and sent with the page; hovering is instant.
- lazy (bigger maps, up to 50,000 points and beyond): 50,000 thumbnails would be ~15 MB of
  page and minutes of fetching. Instead the component tells Python which point the mouse rests
  on (a component state value, inside a fragment, so only the fragment reruns); Python answers
  with that point's thumbnail and those of the LAZY_BATCH points drawn nearest to it, which
  the browser keeps, so moving on to neighbouring points needs no further round trip.

Everything here is optional: if the component API is missing or anything fails, the page
still has its map, the text hover and the selection gallery.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import streamlit as st

from frontend.client import BackendError, BackendUnavailable, Client
from frontend.map_columns import MapColumns, nearest_indices

log = logging.getLogger(__name__)

# Maps up to this many points get every thumbnail up front (eager); bigger ones fetch them near
# the mouse (lazy). 2,000 (the shapes test split) is ~0.6 MB of thumbnails and a few seconds of
# fetching, once per map.
MAX_HOVER_IMAGES = 2000
# Thumbnails sent per hovered point in lazy mode: it and its nearest neighbours on the map.
LAZY_BATCH = 64
# Thumbnails a session keeps for lazy mode (oldest dropped first), ~300 bytes each.
MAX_SESSION_THUMBS = 20_000
SESSION_THUMBS = "_hover_thumbs"
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
const ASK_DELAY_MS = 60;  // a mouse sweeping across the map asks only where it rests

export default function (component) {
  const data = component.data || {};
  const target = data.target || "";
  const side = data.side || 128;
  const lazy = !!data.lazy;
  const root = component.parentElement;
  const doc = (root && root.ownerDocument) || document;
  const win = doc.defaultView || window;

  // Thumbnails outlive one run of this function: in lazy mode Python sends a batch per hovered
  // point, and each batch re-runs this function, so what came before is kept per chart here.
  const store = (win.__protoscopeHover = win.__protoscopeHover || {});
  const memo = (store[target] =
    store[target] || { thumbs: new Map(), asked: null, hovered: null, at: null });
  if (!lazy) memo.thumbs = new Map();  // eager: the table sent is the whole map's
  for (const [k, v] of Object.entries(data.thumbs || {})) memo.thumbs.set(k, v);

  const old = doc.getElementById(BOX_ID);
  if (old) old.remove();
  const box = doc.createElement("div");
  box.id = BOX_ID;
  box.setAttribute("data-testid", data.testid || "map-hover-preview");
  box.dataset.mode = lazy ? "lazy" : "eager";
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

  const conceal = () => { box.style.display = "none"; };
  const hide = () => { memo.hovered = null; conceal(); };

  const place = (at) => {
    const w = box.offsetWidth, h = box.offsetHeight;
    const vw = doc.documentElement.clientWidth, vh = doc.documentElement.clientHeight;
    let x, y;
    if (at && typeof at.clientX === "number") { x = at.clientX; y = at.clientY; }
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

  const showImage = (idx, src, at) => {
    if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    img.style.display = "block";
    box.dataset.index = idx;
    img.dataset.index = idx;
    caption.textContent = "image " + idx;
    box.style.display = "block";
    place(at);
  };

  // Lazy mode: say which point the mouse is on; Python answers with its thumbnail and those of
  // its neighbours on the map (a fragment rerun), which re-runs this function with them.
  const ask = (idx) => {
    if (memo.asked === idx) return;
    clearTimeout(memo.timer);
    memo.timer = setTimeout(() => {
      memo.asked = idx;
      component.setStateValue("hover", Number(idx));
    }, ASK_DELAY_MS);
  };

  const show = (ev) => {
    const p = ev && ev.points && ev.points[0];
    const cd = p ? p.customdata : undefined;
    const raw = Array.isArray(cd) || ArrayBuffer.isView(cd) ? cd[0] : cd;
    if (raw === undefined || raw === null) { hide(); return; }
    const idx = String(raw);
    const at = ev.event ? { clientX: ev.event.clientX, clientY: ev.event.clientY } : null;
    memo.hovered = idx;
    memo.at = at;
    const src = memo.thumbs.get(idx);
    if (src) { showImage(idx, src, at); return; }
    if (!lazy) { conceal(); return; }
    img.style.display = "none";
    box.dataset.index = idx;
    caption.textContent = "loading image " + idx + "…";
    box.style.display = "block";
    place(at);
    ask(idx);
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
    conceal();
    if (g && typeof g.on === "function") {
      g.on("plotly_hover", show);
      g.on("plotly_unhover", hide);
      g.addEventListener("mouseleave", hide);
      gd = g;
      box.dataset.attached = "1";
    }
  };
  attach();
  // A batch has just arrived for the point still under the mouse: show it now.
  if (memo.hovered !== null && memo.thumbs.has(memo.hovered)) {
    showImage(memo.hovered, memo.thumbs.get(memo.hovered), memo.at);
  }
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


def _fetch(
    base_url: str, dataset: str, indices: Sequence[int], data_root: str | None = None
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


@st.cache_data(max_entries=4, show_spinner=False)
def _fetch_thumbnails(
    base_url: str, dataset: str, indices: tuple[int, ...], data_root: str | None = None
) -> dict[str, str]:
    """_fetch, cached per map (eager mode)."""
    return _fetch(base_url, dataset, indices, data_root)


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


def _hovered(state: Any) -> int | None:
    """The data set index the component last reported under the mouse (None: none yet)."""
    value = state.get("hover") if isinstance(state, Mapping) else getattr(state, "hover", None)
    return int(value) if isinstance(value, int | float) and value >= 0 else None


def lazy_batch(
    dataset: str,
    cols: MapColumns,
    hovered: int,
    data_root: str | None = None,
    base_url: str | None = None,
) -> dict[str, str]:
    """Thumbnails of `hovered` and its LAZY_BATCH − 1 nearest points on the map, {str(index): URI}.

    Kept in the session, so a neighbourhood visited before costs no request.
    """
    wanted = [int(i) for i in nearest_indices(cols, hovered, LAZY_BATCH)]
    kept: dict[str, str] = st.session_state.setdefault(SESSION_THUMBS, {})
    tag = f"{dataset}|{data_root or ''}|"
    missing = [i for i in wanted if tag + str(i) not in kept]
    if missing:
        fetched = _fetch(base_url or Client().base_url, dataset, missing, data_root)
        for i, uri in fetched.items():
            kept[tag + i] = uri
        for old in list(kept)[: max(0, len(kept) - MAX_SESSION_THUMBS)]:
            del kept[old]
    return {str(i): kept[tag + str(i)] for i in wanted if tag + str(i) in kept}


def _ignore() -> None:
    """The state callback a v2 component needs for its "hover" value (the fragment reads it)."""


@st.fragment
def _lazy_previews(chart_key: str, dataset: str, cols: MapColumns, data_root: str | None) -> None:
    """The lazy component; only this fragment reruns when the hovered point changes."""
    key = f"{chart_key}_hover"
    hovered = _hovered(st.session_state.get(key))
    thumbs: dict[str, str] = {}
    if hovered is not None:
        try:
            thumbs = lazy_batch(dataset, cols, hovered, data_root)
        except BackendError as exc:
            log.warning("no hover thumbnails near %s: %s", hovered, exc.message)
    _component()(
        key=key,
        data={
            "target": chart_class(chart_key),
            "thumbs": thumbs,
            "side": PREVIEW_PX,
            "testid": PREVIEW_TESTID,
            "lazy": True,
        },
        default={"hover": None},
        on_hover_change=_ignore,
    )


def hover_previews(
    chart_key: str,
    dataset: str,
    indices: Sequence[int],
    data_root: str | None = None,
    cols: MapColumns | None = None,
) -> int:
    """Show each point's image while the mouse is over it, on the chart with `chart_key`.

    Maps of up to MAX_HOVER_IMAGES `indices` get every thumbnail now (eager); bigger ones, whose
    `cols` (the map's columns) are then needed, get them near the mouse as it moves (lazy).
    Returns how many thumbnails were sent now (0 in lazy mode, or when none could be set up;
    the chart then keeps its text hover only). Call it after the chart: fetching the thumbnails
    the first time takes a few seconds, and everything above is already drawn meanwhile.
    """
    try:
        if len(indices) > MAX_HOVER_IMAGES and cols is not None:
            _lazy_previews(chart_key, dataset, cols, data_root)
            return 0
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
