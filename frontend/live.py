"""Pure helpers over a run's event list: split by type, and watch for collapse while it trains.

The trainer emits `start`, `step`, `epoch`, `checkpoint` and `end` events (models/train.py); the
backend stores them with an id and serves them as JSON. Everything here works on plain dicts so
it is testable without Streamlit or a backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]

# --- collapse alert thresholds (the Runs page raises a red alert when either rule fires) ------
# One-cluster collapse: the argmax of (almost) every image in a batch lands on ≤ this many
# prototypes. Healthy SwAV batches spread over many prototypes; 2 leaves room for nothing.
COLLAPSE_MAX_ACTIVE_PROTOTYPES = 2
# ... and it must hold for this many consecutive logged steps, so one odd batch does not alarm.
COLLAPSE_ACTIVE_WINDOW = 3
# Uniform collapse: the swapped-prediction loss against flat predictions is exactly ln K; a
# loss within this relative distance of ln K ...
LN_K_RELATIVE_TOLERANCE = 0.02
# ... for this many consecutive logged steps means the predictions stopped carrying information.
LN_K_WINDOW = 20
# The first steps of every SwAV run sit near ln K (random prototypes, frozen at first), so the
# ln K rule only looks at steps after this one.
LN_K_MIN_STEP = 50


def flatten_event(raw: Mapping[str, Any]) -> Event:
    """One event as a flat dict: the backend may nest the trainer's fields under `data`."""
    event = dict(raw)
    for nested in ("data", "payload"):
        inner = event.pop(nested, None)
        if isinstance(inner, Mapping):
            for k, v in inner.items():
                event.setdefault(k, v)
    return event


def parse_metrics(answer: Any) -> tuple[list[dict[str, Any]], int | None]:
    """(events, next cursor) from a /metrics answer: a list or {events, next/last_id}."""
    if isinstance(answer, list):
        raw = answer
        cursor = None
    else:
        answer = answer or {}
        raw = answer.get("events") or []
        cursor = answer.get("next") or answer.get("last_id") or answer.get("cursor")
    events = [flatten_event(e) for e in raw if isinstance(e, Mapping)]
    ids = [int(e["id"]) for e in events if isinstance(e.get("id"), int)]
    if ids:
        cursor = max(max(ids), int(cursor) if isinstance(cursor, int) else -1)
    return events, cursor if isinstance(cursor, int) else None


def of_type(events: Iterable[Event], kind: str) -> list[Event]:
    return [e for e in events if e.get("type") == kind]


def run_config(events: Iterable[Event]) -> dict[str, Any]:
    """The configuration of the run's latest `start` event ({} before it arrived)."""
    starts = of_type(events, "start")
    return dict(starts[-1].get("config") or {}) if starts else {}


def precision_text(events: Iterable[Event]) -> str | None:
    """One line on the run's precision and why (from its latest `start` event), or None."""
    starts = of_type(events, "start")
    if not starts:
        return None
    start = starts[-1]
    p = start.get("precision")
    if not isinstance(p, Mapping):
        return None
    threads = start.get("num_threads")
    where = f" on {start.get('device', '?')}" + (f", {threads} threads" if threads else "")
    return f"Precision {p.get('dtype')} (amp {p.get('mode')}){where}: {p.get('reason')}"


def epochs_done_text(events: Iterable[Event], last_step: Event) -> str:
    """"1.4": epochs of training behind the latest step (steps / steps per epoch)."""
    starts = of_type(events, "start")
    spe = starts[-1].get("steps_per_epoch") if starts else None
    step = last_step.get("step")
    if isinstance(spe, int) and spe > 0 and isinstance(step, int):
        return f"{step / spe:.1f}"
    return f"{int(last_step.get('epoch', 0))}"


def knn_sets_text(event: Mapping[str, Any]) -> str:
    """Which images a kNN figure came from, in words."""
    queries, bank = event.get("knn_queries"), event.get("knn_bank")
    what = "quick kNN on a fixed subset" if event.get("type") == "knn" else "epoch-end kNN"
    if isinstance(queries, int) and isinstance(bank, int):
        return f"{what}: {queries:,} test images against {bank:,} train images (k = 20)"
    return what


def num_prototypes(events: list[Event]) -> int | None:
    """K for the ln K line: from the step events, else the SwAV configuration."""
    for e in reversed(of_type(events, "step")):
        if isinstance(e.get("num_prototypes"), int):
            return int(e["num_prototypes"])
    cfg = run_config(events)
    if cfg.get("method") == "swav":
        k = (cfg.get("swav") or {}).get("num_prototypes")
        return int(k) if isinstance(k, int) else None
    return None


def last_end(events: list[Event]) -> Event | None:
    """The `end` event of the latest session, None while it trains (a resume starts anew)."""
    for e in reversed(events):
        if e.get("type") == "start":
            return None
        if e.get("type") == "end":
            return e
    return None


def is_finished(events: list[Event]) -> bool:
    return last_end(events) is not None


@dataclass(frozen=True)
class CollapseAlert:
    """Why the live view thinks the run collapsed, in words that name the numbers."""

    kind: str  # "one-cluster" or "uniform"
    message: str


def collapse_alert(events: list[Event], method: str | None = None) -> CollapseAlert | None:
    """Check the most recent step events against the thresholds above; None while healthy."""
    steps = [e for e in of_type(events, "step") if e.get("loss") is not None]
    active = [e for e in steps if isinstance(e.get("active_prototypes"), int)]
    if len(active) >= COLLAPSE_ACTIVE_WINDOW:
        last = active[-COLLAPSE_ACTIVE_WINDOW:]
        k = last[-1].get("num_prototypes")
        # With K ≤ 2 every batch trivially uses ≤ 2 prototypes; the rule means nothing there.
        if (k is None or k > COLLAPSE_MAX_ACTIVE_PROTOTYPES) and all(
            e["active_prototypes"] <= COLLAPSE_MAX_ACTIVE_PROTOTYPES for e in last
        ):
            n = last[-1]["active_prototypes"]
            return CollapseAlert(
                "one-cluster",
                f"One-cluster collapse: only {n} {'prototype' if n == 1 else 'prototypes'} of "
                f"{k or '?'} received any image "
                f"in each of the last {COLLAPSE_ACTIVE_WINDOW} logged steps "
                f"(step {last[-1].get('step')}).",
            )
    k_lines = num_prototypes(events)
    if method in (None, "swav") and k_lines and k_lines > 1:
        ln_k = math.log(k_lines)
        late = [e for e in steps if (e.get("step") or 0) > LN_K_MIN_STEP]
        if len(late) >= LN_K_WINDOW:
            window = late[-LN_K_WINDOW:]
            if all(abs(float(e["loss"]) - ln_k) <= LN_K_RELATIVE_TOLERANCE * ln_k for e in window):
                return CollapseAlert(
                    "uniform",
                    f"Uniform collapse: the loss has stayed within "
                    f"{100 * LN_K_RELATIVE_TOLERANCE:.0f} % of ln K = {ln_k:.3f} for the last "
                    f"{LN_K_WINDOW} steps (now {float(window[-1]['loss']):.3f}): the predictions "
                    "are flat and carry no information.",
                )
    return None
