"""The Collapse map page under AppTest, against a real backend and a sweep in its SQLite file.

The sweep's runs are written as their workers would have written them (`written_sweep`): a
one-cluster cell, an unjudged one, one still training on the ln K line, one stopped. A
`run_every` tick is simulated by calling `.run()` again.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from streamlit.testing.v1 import AppTest

from backend.store import Store, dumps
from tests.support import backend_server

APP = str(Path(__file__).resolve().parents[2] / "frontend" / "app.py")
GRID = {
    "method": "swav",
    "dataset": "shapes",
    "axes": [
        {"field": "epsilon", "values": [0.02, 0.2]},
        {"field": "num_prototypes", "values": [10, 40]},
    ],
    "max_steps": 50,
    "fields": {},
}


def _steps(loss: float, active: int, n: int, first: int = 51) -> list[dict[str, Any]]:
    return [
        {"type": "step", "step": s, "epoch": 0, "loss": loss, "active_prototypes": active}
        for s in range(first, first + n)
    ]


# (position, status, events) per cell, row-major over (epsilon, num_prototypes).
CELLS: list[tuple[list[int], str, list[dict[str, Any]]]] = [
    # the argmax of every batch on one prototype: the one-cluster alert
    ([0, 0], "completed", [*_steps(1.0, 1, 3), {"type": "knn", "step": 53, "knn_top1": 0.11}]),
    # looked fine, but ended before its first checkpoint: no report, no verdict
    ([0, 1], "completed", [*_steps(2.0, 20, 3), {"type": "knn", "step": 53, "knn_top1": 0.45}]),
    # still training, its loss on ln K for 20 steps: the uniform alert, live
    ([1, 0], "running", _steps(math.log(10), 6, 20)),
    ([1, 1], "stopped", []),
]


def written_sweep(data_dir: Path) -> tuple[int, list[int]]:
    """GRID with CELLS, written into the backend's database; (sweep id, run ids).

    The runs are inserted with their final status: a queued one would be picked up and
    trained by the server's job manager.
    """
    store = Store(data_dir / "protoscope.sqlite3", data_dir)
    now = time.time()
    run_ids = []
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO sweeps (name, grid, created_at) VALUES ('written', ?, ?)",
            (dumps(GRID), now),
        )
        sweep_id = int(cur.lastrowid or 0)
        for index, (position, status, _) in enumerate(CELLS):
            eps = GRID["axes"][0]["values"][position[0]]  # type: ignore[index]
            k = GRID["axes"][1]["values"][position[1]]  # type: ignore[index]
            config = {"method": "swav", "max_steps": 50, "swav": {"num_prototypes": k}}
            cur = conn.execute(
                "INSERT INTO runs (name, method, dataset, config, request, status, out_dir, "
                "created_at, queued_at) VALUES (?, 'swav', 'shapes', ?, '{}', ?, 'runs/x', ?, ?)",
                (f"written: epsilon={eps}, num_prototypes={k}", dumps(config), status, now, now),
            )
            run_id = int(cur.lastrowid or 0)
            coords = {"epsilon": eps, "num_prototypes": k}
            conn.execute(
                "INSERT INTO sweep_cells (sweep_id, cell, position, coords, run_id) "
                "VALUES (?, ?, ?, ?, ?)",
                (sweep_id, index, dumps(position), dumps(coords), run_id),
            )
            run_ids.append(run_id)
    for run_id, (_, _, events) in zip(run_ids, CELLS, strict=True):
        for event in events:
            store.add_event(run_id, event)
    store.close()
    return sweep_id, run_ids


@dataclass
class Served:
    url: str
    data: Path
    sweep_id: int
    run_ids: list[int]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("collapse-map") / "data"
    with backend_server(data) as url:
        sweep_id, run_ids = written_sweep(data)
        yield Served(url, data, sweep_id, run_ids)


def _page(url: str, monkeypatch: pytest.MonkeyPatch, **query: Any) -> AppTest:
    monkeypatch.setenv("PROTOSCOPE_API", url)
    monkeypatch.delenv("PROTOSCOPE_TOKEN", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    for key, value in query.items():
        at.query_params[key] = str(value)
    at.switch_page("views/collapse_map.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_the_page_says_when_the_backend_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    at = _page("http://127.0.0.1:9", monkeypatch)
    assert at.error and "not reachable" in at.error[0].value


def test_the_map_colours_each_cell_by_its_state_and_links_its_run(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(served.url, monkeypatch, sweep=served.sweep_id)
    assert not at.error, [e.value for e in at.error]
    verdicts, knn = _figures(at)
    # x: epsilon (cell position 0), y: num_prototypes (position 1).
    text = verdicts["data"][0]["text"]
    assert text[0][0] == "one-cluster (steps)<br>11.0 %"
    assert text[1][0].startswith("no verdict") and "45.0 %" in text[1][0]
    assert text[0][1] == "uniform (live)"
    assert text[1][1] == "no verdict"
    assert verdicts["layout"]["xaxis"]["title"]["text"] == "epsilon"
    assert knn["data"][0]["z"][1][0] == pytest.approx(45.0)
    assert knn["data"][0]["z"][0][1] is None
    # Progress: three of four cells have ended; none has a report.
    bars = [p.proto.text for p in at.get("progress")]
    assert any(t.startswith("3 / 4 cells trained · 0 diagnosed") for t in bars), bars
    table = at.dataframe[0].value
    assert list(table["run"]) == [f"/runs?run={i}" for i in served.run_ids]
    assert table["state"].iloc[0] == "one-cluster collapse"
    # The cell chooser links the chosen cell's run on the Runs page.
    at.selectbox(key="sweep_cell").set_value(2).run()
    links = [json.loads(json.dumps(str(p.proto))) for p in at.get("page_link")]
    assert any(f"run={served.run_ids[2]}" in link for link in links), links
    labels = [b.label for b in at.button]
    assert "Stop this sweep" in labels, labels  # a cell is still running


def test_a_refresh_tick_shows_what_the_running_cell_did_since(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(served.url, monkeypatch, sweep=served.sweep_id)
    store = Store(served.data / "protoscope.sqlite3", served.data)
    store.add_event(served.run_ids[2], {"type": "knn", "step": 71, "knn_top1": 0.3})
    store.close()
    at.run()  # the fragment's timer tick
    assert not at.exception
    _, knn = _figures(at)
    assert knn["data"][0]["z"][0][1] == pytest.approx(30.0)


def test_the_form_refuses_a_bad_value_and_starts_the_demo_preset(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(served.url, monkeypatch)
    before = len(requests.get(f"{served.url}/sweeps", timeout=10).json())
    at.text_input(key="sweep_x_values").set_value("0.05, 0.001")
    at.button(key="FormSubmitter:start_sweep-Start sweep").click().run()
    shown = " ".join(str(e.value) for e in at.error)
    assert "cell 1 (epsilon=0.001)" in shown and "0.005" in shown, shown
    assert len(requests.get(f"{served.url}/sweeps", timeout=10).json()) == before

    at.button(key="sweep_preset").click().run()
    assert at.text_input(key="sweep_x_values").value == "0.005, 0.02, 0.05, 0.2"
    at.number_input(key="sweep_steps").set_value(3)
    at.button(key="FormSubmitter:start_sweep-Start sweep").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("8 runs queued" in str(s.value) for s in at.success)
    sweeps = requests.get(f"{served.url}/sweeps", timeout=10).json()
    new = sweeps[0]
    try:
        assert len(sweeps) == before + 1 and new["num_cells"] == 8
        assert new["grid"]["axes"][1] == {"field": "num_prototypes", "values": [16, 128]}
        assert new["grid"]["max_steps"] == 3
    finally:  # its cells are real runs: stop them rather than train eight on the test's time
        requests.post(f"{served.url}/sweeps/{new['id']}/stop", timeout=60)
