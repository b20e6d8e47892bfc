"""Diagnose: the verdict of a checkpoint, every metric as a card, the spectrum and the usage."""

from __future__ import annotations

import streamlit as st

from frontend import widgets
from frontend.pickers import checkpoint_label, choose_checkpoint_and_data
from frontend.report_view import show_report


def main() -> None:
    st.title("Diagnose")
    st.caption("Is this checkpoint healthy, or has it collapsed — and which kind of collapse?")
    c = widgets.require_backend()
    picked = choose_checkpoint_and_data(c, key="diag")
    if picked is None:
        return
    ckpt, data = picked
    result_key = f"diag:{ckpt['id']}{data.tag}"
    if st.button("Recompute", key="diag_recompute", help="Ask the backend again"):
        widgets.forget(result_key)
    report = widgets.await_result(
        result_key,
        lambda: c.diagnostics(ckpt["id"], **data.params()),
        f"Diagnosing {checkpoint_label(ckpt)}",
    )
    if report is not None:
        show_report(report)


main()
