"""The Timeline page under streamlit.testing.v1.AppTest, against a real backend serving tiny
real runs (a SwAV one and a PCL one, trained into its data folder)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from streamlit.testing.v1 import AppTest

from tests.backend.test_timeline_api import trained_run
from tests.support import backend_server

APP = str(Path(__file__).resolve().parents[2] / "frontend" / "app.py")
TIMEOUT_S = 60
IMAGES = 300  # images per map (?images=): the page's own control, kept small for speed
ANALYSIS_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Backend:
    url: str
    swav: int
    pcl: int


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    data = tmp_path_factory.mktemp("timeline-page") / "data"
    data.mkdir()
    swav = trained_run(data, "swav")
    pcl = trained_run(data, "pcl")
    with backend_server(data) as url:
        # Start both timelines now, exactly as the page asks for them.
        for run in (swav, pcl):
            r = requests.get(f"{url}/runs/{run}/timeline?max_images={IMAGES}", timeout=30)
            assert r.status_code in (200, 202), r.text
        yield Backend(url, swav, pcl)


def _page(url: str, monkeypatch: pytest.MonkeyPatch, **query: Any) -> AppTest:
    monkeypatch.setenv("PROTOSCOPE_API", url)
    monkeypatch.delenv("PROTOSCOPE_TOKEN", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    for key, value in {"images": IMAGES, **query}.items():
        at.query_params[key] = str(value)
    at.run()
    at.switch_page("views/timeline.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _until(at: AppTest, done: Callable[[AppTest], bool], what: str) -> AppTest:
    """Rerun the page (a poll tick) until `done`: the backend answers 202 while it computes."""
    deadline = time.monotonic() + ANALYSIS_TIMEOUT_S
    while True:
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        if done(at):
            return at
        assert time.monotonic() < deadline, f"{what} not ready in {ANALYSIS_TIMEOUT_S:.0f} s"
        time.sleep(1.0)
        at.run()


def _charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def test_the_page_says_clearly_when_the_backend_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    at = _page(dead, monkeypatch)
    assert at.error and "not reachable" in at.error[0].value and dead in at.error[0].value


def test_timeline_map_slider_usage_flow_and_knn(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(backend.url, monkeypatch, run=backend.swav)
    at = _until(at, lambda a: _charts(a) >= 4, "the timeline")
    assert at.selectbox(key="tl_run").value == backend.swav
    assert "3 checkpoints" in at.selectbox(key="tl_run").format_func(backend.swav)
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    the_map = next(f for f in figs if f.get("frames"))
    # One frame per epoch, a slider step per frame and a Play button; the page starts at the
    # last epoch.
    assert [fr["name"] for fr in the_map["frames"]] == ["epoch 1", "epoch 2", "epoch 3"]
    slider = the_map["layout"]["sliders"][0]
    assert [s["label"] for s in slider["steps"]] == ["epoch 1", "epoch 2", "epoch 3"]
    assert slider["active"] == 2
    buttons = the_map["layout"]["updatemenus"][0]["buttons"]
    assert buttons[0]["label"].endswith("Play") and buttons[0]["method"] == "animate"
    # Every frame holds every image, identified by its data set index.
    for frame in the_map["frames"]:
        trace = frame["data"][0]
        assert sorted(int(i) for i in trace["ids"]) == list(range(IMAGES))
    assert {f["data"][0]["type"] for f in figs if f.get("data")} >= {"scatter", "sankey"}
    assert any(f"{IMAGES} images of `shapes`" in str(c.value) for c in at.caption)
    labels = {m.label for m in at.metric}
    assert {"kNN top-1", "Active prototypes", "Map moved"} <= labels, labels
    assert any("epoch 3:" in str(m.value) for m in at.markdown)  # the verdict's sentence

    # Another epoch: the map starts there and the summary follows it.
    at.select_slider(key=f"tl_epoch_{backend.swav}").set_value(0).run()
    assert not at.exception and not at.error
    the_map = next(
        json.loads(c.proto.spec) for c in at.get("plotly_chart") if "frames" in c.proto.spec
    )
    assert the_map["layout"]["sliders"][0]["active"] == 0
    assert "Kept clusters" in {m.label for m in at.metric}  # epoch 1 has a next one
    assert any("epoch 1:" in str(m.value) for m in at.markdown)

    # Colour by label: the map recoloured, nothing else breaks.
    at.selectbox(key="tl_colour").set_value("label").run()
    assert not at.exception and not at.error and _charts(at) >= 4


def test_clicking_a_prototype_shows_its_images_at_each_epoch(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(backend.url, monkeypatch, run=backend.swav)
    at = _until(at, lambda a: _charts(a) >= 4, "the timeline")
    assert any("Click a square" in i.value for i in at.info)
    # What a click on the usage chart stores (the chart's selection is the browser's part).
    at.session_state[f"tl_proto_{backend.swav}"] = 0
    at.run()
    at = _until(at, lambda a: len(a.get("image")) >= 3 * 8, "prototype 0's galleries")
    captions = [str(c.value) for c in at.caption if "images predicted" in str(c.value)]
    assert [c.split(" · ")[0] for c in captions] == ["epoch 1", "epoch 2", "epoch 3"]


def test_a_pcl_run_shows_phi_against_size_over_epochs(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(backend.url, monkeypatch, run=backend.pcl)
    at = _until(at, lambda a: _charts(a) >= 5, "the PCL timeline")
    assert any("E-step" in str(s.value) for s in at.subheader)
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    phi = next(f for f in figs if "φ against" in f["layout"]["title"]["text"])
    titles = [a["text"] for a in phi["layout"]["annotations"]]
    assert titles == ["K = 8", "K = 12"]
    assert any("relabelled along the chain" in str(c.value) for c in at.caption)


# --- the figures, on a hand-made timeline ---------------------------------------------------------
def _synthetic(epochs: int = 3, n: int = 6) -> dict[str, Any]:
    clusters = [[0, 0, 0, 1, 1, 1], [0, 0, 2, 1, 1, 1], [2, 2, 2, 1, 1, 1]][:epochs]
    return {
        "index": list(range(n)),
        "label": [0, 0, 1, 1, 2, 2],
        "epochs": [
            {
                "epochs_done": float(t + 1),
                "step": 10 * (t + 1),
                "checkpoint_id": t + 1,
                "x": [float(i + t) for i in range(n)],
                "y": [float(i) for i in range(n)],
                "cluster": clusters[t],
                "confidence": [0.5] * n,
                "phi": [None] * n,
                "usage": [c.count(k) for k in range(3)] if (c := clusters[t]) else [],
                "verdict": "healthy" if t else "partial collapse",
                "knn_top1": 0.1 * (t + 1),
                "active_prototypes": len(set(clusters[t])),
            }
            for t in range(epochs)
        ],
        "flows": [
            {"source": 0, "target": 1, "links": [[0, 0, 2], [0, 2, 1], [1, 1, 3]]},
            {"source": 1, "target": 2, "links": [[0, 2, 2], [2, 2, 1], [1, 1, 3]]},
        ][: epochs - 1],
        "born": [[2, 1]],
        "died": [[0, 2]],
    }


def test_map_figure_has_a_frame_per_epoch_and_fixed_axes() -> None:
    from frontend import timeline_figures as tf

    tl = _synthetic()
    fig = tf.timeline_map_figure(tl, "cluster", start=1).to_dict()
    assert [f["name"] for f in fig["frames"]] == ["epoch 1", "epoch 2", "epoch 3"]
    assert fig["layout"]["sliders"][0]["active"] == 1
    assert list(fig["data"][0]["x"]) == tl["epochs"][1]["x"]  # drawn at the start epoch
    lo, hi = fig["layout"]["xaxis"]["range"]
    assert lo < 1.0 < 6.0 < hi  # the start epoch's points (x = 1 … 6) all in view
    frame_ranges = [f["layout"]["xaxis"]["range"] for f in fig["frames"]]
    assert frame_ranges[0][0] < 0.0 < frame_ranges[2][0]  # each frame zooms to its own map
    colours = [f["data"][0]["marker"]["color"] for f in fig["frames"]]
    assert colours[0][2] != colours[2][2]  # image 2 changed cluster: 0 → 2
    assert colours[0][3] == colours[2][3]  # image 3 stayed in cluster 1: same colour


def test_sankey_links_usage_rows_and_clicks() -> None:
    from frontend import timeline_figures as tf

    tl = _synthetic()
    sankey = tf.sankey_figure(tl).to_dict()["data"][0]
    assert sum(sankey["link"]["value"]) == 12  # 6 images per step, 2 steps
    # A node per (epoch, cluster) with images: e1 c0 c1, e2 c0 c1 c2, e3 c1 c2.
    assert sorted(zip(sankey["node"]["customdata"], sankey["node"]["label"], strict=True)) == [
        ("epoch 1", "c0"),
        ("epoch 1", "c1"),
        ("epoch 2", "c0"),
        ("epoch 2", "c1"),
        ("epoch 2", "c2"),
        ("epoch 3", "c1"),
        ("epoch 3", "c2"),
    ]
    only_first = tf.sankey_figure(tl, 0, 1).to_dict()["data"][0]
    assert sum(only_first["link"]["value"]) == 6
    assert tf.usage_rows(tl) == [0, 1, 2] and tf.usage_rows(tl, most=1) == [1]
    rows = tf.flow_events(
        {**tl, "flows": [{**tl["flows"][0], "splits": [{"cluster": 0, "into": [[0, 2], [2, 1]]}]}]}
    )
    assert rows == [
        {"when": "epoch 1 → epoch 2", "what": "split", "cluster": 0, "parts": "c0 (2), c2 (1)"}
    ]
    click = {"selection": {"points": [{"customdata": [2, 1], "x": "epoch 2"}]}}
    assert tf.clicked_prototype(click) == 2 and tf.clicked_prototype({}) is None
    assert tf.pcl_phi_figure(tl) is None  # no E-step anywhere: no panel
