"""Streamlit helpers every page shares: the client, error display, 202 polling, image grids."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import streamlit as st

from frontend.client import BackendError, BackendUnavailable, Client, Pending

T = TypeVar("T")

# How often a page asks again while the backend answers 202 "still computing".
PENDING_POLL_S = 1.0
# Default thumbnail side for galleries (the backend resizes; small PNGs keep pages quick).
THUMB_PX = 64

_RESULTS = "_results"  # session_state key: finished analysis answers, keyed by request
_POLLING = "_polling"  # session_state key: requests that answered 202 at least once


def client() -> Client:
    """A client for PROTOSCOPE_API; a fresh one per script run is cheap."""
    return Client()


def show_error(exc: BackendError) -> None:
    """The backend's message as a red box; an unreachable backend also says how to fix it."""
    if isinstance(exc, BackendUnavailable):
        st.error(
            f"**The backend is not reachable.** {exc.message}\n\n"
            f"Tried: `{exc.url or client().base_url}`",
            icon=":material/cloud_off:",
        )
    else:
        st.error(exc.message, icon=":material/error:")


@contextmanager
def backend_errors(stop: bool = True) -> Iterator[None]:
    """Show a BackendError raised inside the block as st.error instead of a traceback.

    With stop=True the page ends there (what follows needs the answer); otherwise it goes on.
    """
    try:
        yield
    except BackendError as exc:
        show_error(exc)
        if stop:
            st.stop()


def require_backend() -> Client:
    """Check /health once per page run; an unreachable backend stops the page with its URL."""
    c = client()
    with backend_errors():
        c.health()
    return c


def cached_results() -> dict[str, Any]:
    return st.session_state.setdefault(_RESULTS, {})


# Finished answers a session keeps: a 20,000-image timeline is ~30 MB parsed, and a run still
# training adds one per checkpoint. The oldest go first; asked again, the backend has them cached.
MAX_RESULTS = 12


def keep_result(key: str, answer: Any) -> None:
    results = cached_results()
    results.pop(key, None)
    results[key] = answer  # newest last: dicts keep insertion order
    while len(results) > MAX_RESULTS:
        del results[next(iter(results))]


def remembered(slot: str, key: Any, make: Callable[[], T]) -> T:
    """`make()`, kept in the session under `slot` while `key` stays equal: a figure that takes a
    second to build is not built again by reruns that change nothing it shows (one per slot)."""
    held = st.session_state.get(f"_remembered:{slot}")
    if held is not None and held[0] == key:
        value: T = held[1]
        return value
    value = make()
    st.session_state[f"_remembered:{slot}"] = (key, value)
    return value


def forget(prefix: str) -> None:
    """Drop finished answers whose key starts with `prefix` (a 'recompute' button)."""
    results = cached_results()
    for key in [k for k in results if k.startswith(prefix)]:
        del results[key]


def await_result(key: str, fetch: Callable[[], Any], label: str) -> Any | None:
    """The answer of a slow backend call, or None while it is still being computed.

    While the backend answers 202, a small fragment polls it every PENDING_POLL_S seconds and
    draws a progress bar; when the answer is ready it is kept in session_state under `key` and
    the whole page reruns to draw it. No loop ever blocks the script.
    """
    results = cached_results()
    if key in results:
        keep_result(key, results[key])  # recently used: kept longest
        return results[key]
    polling: dict[str, str] = st.session_state.setdefault(_POLLING, {})
    try:
        with st.spinner(f"{label}…"):
            answer = fetch()
    except BackendError as exc:
        show_error(exc)
        return None
    if not isinstance(answer, Pending):
        keep_result(key, answer)
        polling.pop(key, None)
        return answer
    polling.setdefault(key, "waiting")
    _poll_fragment(key, fetch, label, answer)
    return None


def _progress_bar(label: str, pending: Pending) -> None:
    frac = pending.progress if pending.progress is not None else 0.0
    pct = f" {100 * frac:.0f} %" if pending.progress is not None else ""
    st.progress(frac, text=f"{label}: {pending.message}{pct}")


@st.fragment(run_every=PENDING_POLL_S)
def _poll_fragment(key: str, fetch: Callable[[], Any], label: str, first: Pending) -> None:
    polling: dict[str, str] = st.session_state.setdefault(_POLLING, {})
    if polling.get(key) == "shown":  # a timer tick: ask again
        try:
            answer = fetch()
        except BackendError as exc:
            show_error(exc)
            return
        if not isinstance(answer, Pending):
            keep_result(key, answer)
            polling.pop(key, None)
            st.rerun(scope="app")
        _progress_bar(label, answer)
        return
    polling[key] = "shown"  # first draw: reuse the answer the page just got
    _progress_bar(label, first)


@st.cache_data(max_entries=4000, show_spinner=False)
def _image_bytes(
    base_url: str, dataset: str, index: int, size: int | None, data_root: str | None
) -> bytes:
    return Client(base_url).image(dataset, index, size, data_root)


def image_bytes(
    dataset: str, index: int, size: int | None = THUMB_PX, data_root: str | None = None
) -> bytes | None:
    """A data set image as PNG bytes (cached per URL), or None with a warning if it failed.

    `data_root`: the folder of a set that lives on disk, as the analysis answer names it.
    """
    try:
        return _image_bytes(client().base_url, dataset, int(index), size, data_root)
    except BackendError as exc:
        st.warning(exc.message)
        return None


def image_grid(
    dataset: str,
    indices: Sequence[int],
    captions: Sequence[str] | None = None,
    columns: int = 8,
    size: int = THUMB_PX,
    data_root: str | None = None,
) -> None:
    """Thumbnails in rows of `columns`; captions default to the data set index."""
    if not indices:
        st.caption("No images.")
        return
    caps = list(captions) if captions is not None else [f"#{i}" for i in indices]
    for start in range(0, len(indices), columns):
        cols = st.columns(columns)
        for col, idx, cap in zip(
            cols, indices[start : start + columns], caps[start : start + columns], strict=False
        ):
            data = image_bytes(dataset, idx, size, data_root)
            if data is not None:
                col.image(data, caption=cap, width="stretch")


def pick(
    label: str,
    options: Sequence[Any],
    format_func: Callable[[Any], str],
    key: str,
    shared: str,
    query_param: str | None = None,
) -> Any | None:
    """A selectbox whose choice is shared across pages and survives page switches.

    Streamlit forgets a widget's value when its page is left, so the choice is mirrored in the
    plain session_state entry `shared` (e.g. one checkpoint for Explore, Prototypes, Diagnose).
    `?query_param=ID` in the URL preselects an option (deep links, screenshots).
    """
    if not options:
        return None
    store = f"_keep_{shared}"
    ids = [str(o) for o in options]
    if query_param and store not in st.session_state:
        wanted = st.query_params.get(query_param)
        if wanted in ids:
            st.session_state[store] = options[ids.index(wanted)]
    if key not in st.session_state and st.session_state.get(store) in options:
        st.session_state[key] = st.session_state[store]
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    value = st.selectbox(label, options, format_func=format_func, key=key)
    st.session_state[store] = value
    return value


Row = TypeVar("Row", bound=Mapping[str, Any])


def pick_row(
    label: str, rows: Sequence[Row], row_label: Callable[[Row], str], key: str, shared: str
) -> Row | None:
    """One of the backend's `rows` (checkpoints, runs, sweeps: each has an `id`) in a `pick`.

    The selectbox holds ids, not the rows: a row re-read from the backend on the next rerun is
    another dict, and the choice must survive it. `?shared=ID` in the URL preselects a row.
    """
    by_id = {row["id"]: row for row in rows}
    chosen = pick(
        label,
        list(by_id),
        lambda i: row_label(by_id[i]),
        key=key,
        shared=shared,
        query_param=shared,
    )
    return by_id.get(chosen)
