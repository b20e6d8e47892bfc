"""A session keeps at most MAX_RESULTS finished answers (the oldest go), and a remembered value
is made again only when its key changes."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _script() -> None:
    import streamlit as st

    from frontend import widgets

    for i in range(widgets.MAX_RESULTS + 5):
        widgets.keep_result(f"answer-{i}", i)
    widgets.keep_result("answer-5", 5)  # used again: kept as the newest
    made: list[str] = []

    def make(value: str) -> str:
        made.append(value)
        return value

    first = widgets.remembered("fig", ("run", 1), lambda: make("a"))
    again = widgets.remembered("fig", ("run", 1), lambda: make("b"))
    other = widgets.remembered("fig", ("run", 2), lambda: make("c"))
    st.session_state["seen"] = {
        "kept": list(widgets.cached_results()),
        "values": [first, again, other],
        "made": made,
        "max": widgets.MAX_RESULTS,
    }


def test_results_are_bounded_and_a_remembered_value_is_made_once_per_key() -> None:
    at = AppTest.from_function(_script).run()
    assert not at.exception
    seen = at.session_state["seen"]
    assert len(seen["kept"]) == seen["max"] and seen["kept"][-1] == "answer-5"
    assert "answer-0" not in seen["kept"] and "answer-16" in seen["kept"]
    assert seen["values"] == ["a", "a", "c"] and seen["made"] == ["a", "c"]
