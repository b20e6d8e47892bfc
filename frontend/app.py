"""protoscope's browser app: `streamlit run frontend/app.py` (backend URL from PROTOSCOPE_API).

Multipage via st.navigation; every page is a script in frontend/views/ and talks to the backend
only through frontend/client.py.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from frontend.client import BackendError, Client

HERE = Path(__file__).parent
# (script in views/, title, Material icon): icons come with Streamlit's own font, so they render
# even where no emoji font is installed.
PAGES: list[tuple[str, str, str]] = [
    ("runs", "Runs", "directions_run"),
    ("explore", "Explore", "scatter_plot"),
    ("timeline", "Timeline", "timeline"),
    ("prototypes", "Prototypes", "grid_view"),
    ("diagnose", "Diagnose", "monitor_heart"),
    ("compare", "Compare", "compare"),
    ("collapse_map", "Collapse map", "grid_on"),
    ("learn", "Learn", "school"),
]


def _view(name: str) -> str:
    return str(HERE / "views" / f"{name}.py")


def _sidebar_status() -> None:
    """Which backend this app talks to, and whether it answers (so a dead one is obvious)."""
    c = Client()
    with st.sidebar:
        try:
            c.health()
            st.caption(f":material/check_circle: Backend `{c.base_url}`")
        except BackendError:
            st.caption(f":material/error: Backend `{c.base_url}` is not reachable")


def main() -> None:
    st.set_page_config(page_title="protoscope", page_icon=":material/biotech:", layout="wide")
    pages = [
        st.Page(_view(name), title=title, icon=f":material/{icon}:", default=name == "runs")
        for name, title, icon in PAGES
    ]
    nav = st.navigation(pages)
    _sidebar_status()
    nav.run()


main()
