"""Pure helpers over a run's event list: split by type, read the run's settings and progress.

The trainer emits `start`, `step`, `epoch`, `checkpoint` and `end` events (models/train.py); the
backend stores them with an id and serves them as JSON. Everything here works on plain dicts so
it is testable without Streamlit or a backend. Whether the run collapsed is the backend's to
say (each metrics page carries its `alert`, from models/collapse_rules.py): nothing here judges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Event = dict[str, Any]


def parse_metrics(answer: Any) -> tuple[list[dict[str, Any]], int | None]:
    """(events, next cursor) from a GET /runs/{id}/metrics answer ({events, next, more, alert};
    each event flat, with its id)."""
    answer = answer if isinstance(answer, Mapping) else {}
    events = [dict(e) for e in answer.get("events") or [] if isinstance(e, Mapping)]
    cursor = answer.get("next")
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
    """ "1.4": epochs of training behind the latest step (steps / steps per epoch)."""
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
