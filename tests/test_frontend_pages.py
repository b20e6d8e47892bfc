"""Every page of the Streamlit app under streamlit.testing.v1.AppTest.

The pages talk to a real backend that the fixture starts on a free port, with a tiny real run
trained through it (no mocks). A `run_every` tick is simulated by calling `.run()` again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "frontend" / "app.py")
PAGES = ("runs", "explore", "prototypes", "diagnose", "compare", "learn")
TIMEOUT_S = 60


def _app(api: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("PROTOSCOPE_API", api)
    monkeypatch.delenv("PROTOSCOPE_TOKEN", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.run()
    return at


def _open(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# --- without a backend ----------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_each_page_says_clearly_when_the_backend_is_down(
    page: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    at = _open(_app(dead, monkeypatch), page)
    if page == "learn":  # pure numpy: works without a backend
        assert not at.error
        assert _charts(at) >= 2
    else:
        assert at.error, "expected a visible error"
        assert "not reachable" in at.error[0].value and dead in at.error[0].value


def test_learn_page_reacts_to_its_controls(monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(_app("http://127.0.0.1:9", monkeypatch), "learn")
    at.radio(key="learn_kind").set_value("one favourite prototype").run()
    at.select_slider(key="learn_eps").set_value(0.05).run()
    at.slider(key="learn_iters").set_value(30).run()
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    # One favourite prototype: the softmax sends (almost) the whole batch of 10 to p0, while
    # 30 Sinkhorn iterations spread it to about B/K = 2 per prototype.
    assert float(values["Softmax: busiest prototype gets"].split()[0]) > 8
    assert float(values["Codes: busiest prototype gets"].split()[0]) < 2.5
    at.slider(key="phi_size_2").set_value(150).run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table["Z"]) == [40, 40, 150]

