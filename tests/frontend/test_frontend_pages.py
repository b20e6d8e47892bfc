"""Every page of the Streamlit app under streamlit.testing.v1.AppTest.

The pages talk to a real backend that the fixture starts on a free port, with a tiny real run
trained through it (no mocks). A `run_every` tick is simulated by calling `.run()` again.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.support import backend_server, finished_run

APP = str(Path(__file__).resolve().parents[2] / "frontend" / "app.py")
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


# --- against a real backend -------------------------------------------------------------------
# A tiny SwAV run (16-px shapes, 256 images, width 8): trains in seconds on 2 CPU cores.
TINY_RUN: dict[str, Any] = {
    "method": "swav",
    "dataset": "shapes",
    "name": "tiny",
    "epochs": 2,
    "batch_size": 32,
    "num_prototypes": 10,
    "seed": 3,
    "lr": 0.1,
    "amp": False,
    "freeze_prototypes_iters": 2,
    "overrides": {
        "data.num_train": 256,
        "data.image_size": 16,
        "width": 8,
        "swav.hidden_dim": 32,
        "swav.feat_dim": 16,
        "eval_max_images": 200,
    },
}
RUN_TIMEOUT_S = 120.0
ANALYSIS_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Backend:
    url: str
    run_id: int
    checkpoint_id: int
    data: Path  # the server's data folder (its datasets/ is an allowed data root)


def _wait_run(url: str, run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run = requests.get(f"{url}/runs/{run_id}", timeout=10).json()
        if run["status"] == "completed":
            return run
        assert run["status"] in ("queued", "running"), run
        time.sleep(0.5)
    raise TimeoutError(f"run {run_id} did not complete within {RUN_TIMEOUT_S:.0f} s")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    data = tmp_path_factory.mktemp("frontend-pages") / "data"
    data.mkdir()
    with backend_server(data) as url:
        r = requests.post(f"{url}/runs", json=TINY_RUN, timeout=30)
        assert r.status_code == 201, r.text
        run = _wait_run(url, r.json()["id"])
        ckpt = run["latest_checkpoint_id"]
        assert isinstance(ckpt, int)
        # Start the two slow analyses (UMAP) now, exactly as the pages ask for them: they are
        # computed while the quicker pages are tested.
        explore = f"/checkpoints/{ckpt}/embedding?max_images=5000&format=columns"
        for path in (explore, f"/compare?a={ckpt}&b={ckpt}"):
            assert requests.get(url + path, timeout=30).status_code in (200, 202)
        yield Backend(url, run["id"], ckpt, data)


def _page(backend: Backend, page: str, monkeypatch: pytest.MonkeyPatch, **query: Any) -> AppTest:
    at = _app(backend.url, monkeypatch)
    for key, value in query.items():
        at.query_params[key] = str(value)
    return _open(at, page)


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [s.value for s in at.success] + [w.value for w in at.warning]
    return "\n".join(str(p) for p in parts)


def _errors(at: AppTest) -> list[str]:
    """Red boxes, except a diagnose verdict (a collapsed checkpoint's verdict is drawn red)."""
    return [str(e.value) for e in at.error if not str(e.value).startswith("**Verdict:")]


def _verdict(at: AppTest) -> str | None:
    boxes = [*at.success, *at.warning, *at.error]
    return next((str(b.value) for b in boxes if "Verdict:" in str(b.value)), None)


def _until(at: AppTest, done: Callable[[AppTest], bool], what: str) -> AppTest:
    """Rerun the page (a poll tick) until `done`: the backend answers 202 while it computes."""
    deadline = time.monotonic() + ANALYSIS_TIMEOUT_S
    while True:
        assert not at.exception, [e.value for e in at.exception]
        assert not _errors(at), _errors(at)
        if done(at):
            return at
        assert time.monotonic() < deadline, f"{what} not ready within {ANALYSIS_TIMEOUT_S:.0f} s"
        time.sleep(1.0)
        at.run()


def test_runs_page_lists_the_run_and_draws_its_live_charts(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(backend, "runs", monkeypatch, run=backend.run_id)
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert list(table["id"]) == [backend.run_id]
    assert list(table["status"]) == ["completed"] and list(table["name"]) == ["tiny"]
    assert at.selectbox(key="runs_pick").value == backend.run_id
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Step"] == "16" and metrics["Epochs done"] == "2.0", metrics
    assert metrics["Active prototypes (last batch)"].endswith("/ 10"), metrics
    assert metrics["kNN top-1"].endswith("%"), metrics
    assert _charts(at) >= 4  # loss, active prototypes, usage heatmap, kNN
    assert any("Run ended: completed" in i.value for i in at.info)
    # The precision the run chose, and why, from its start event.
    assert any(c.value.startswith("Precision float32 (amp") for c in at.caption), [
        c.value for c in at.caption
    ]


def test_diagnose_page_shows_the_verdict(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _page(backend, "diagnose", monkeypatch, checkpoint=backend.checkpoint_id)
    at = _until(at, lambda a: _verdict(a) is not None, "the diagnostics")
    assert at.selectbox(key="diag_ckpt").value == backend.checkpoint_id
    verdict = _verdict(at)
    assert verdict is not None and verdict.startswith("**Verdict: ")
    labels = {m.label for m in at.metric}
    assert {"Active prototypes", "Effective rank (RankMe)", "kNN top-1"} <= labels, labels
    assert _charts(at) >= 2  # the eigenvalue spectrum and the usage histogram
    assert "data **shapes**" in _texts(at)
    # The same checkpoint on other images: a new report, on those images.
    at.selectbox(key="diag_data").set_value("digits").run()
    at = _until(at, lambda a: "data **digits**" in _texts(a), "the diagnostics on digits")
    assert _verdict(at) is not None


def test_prototypes_page_lists_the_prototypes_with_their_images(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(backend, "prototypes", monkeypatch, checkpoint=backend.checkpoint_id)
    at = _until(at, lambda a: len(a.metric) >= 4, "the prototypes")
    metrics = {m.label: int(m.value) for m in at.metric}
    assert metrics["Prototypes K"] == 10
    assert metrics["Used"] + metrics["Empty"] == 10 and metrics["Used"] >= 1
    entries = [m.value for m in at.markdown if str(m.value).startswith("**Prototype ")]
    assert len(entries) == 8, entries  # one page of PER_PAGE prototypes
    assert len(at.get("image")) >= 8  # their nearest images, fetched from the backend
    at.radio(key="proto_filter").set_value("empty").run()
    assert not at.exception and not at.error
    empty = [m.value for m in at.markdown if str(m.value).startswith("**Prototype ")]
    assert len(empty) == min(8, metrics["Empty"])
    assert all("EMPTY" in e for e in empty)


def _array(spec: Any) -> np.ndarray:
    """A plotly array of a figure's JSON: a list, or a typed one {dtype, bdata[, shape]}."""
    if not isinstance(spec, dict):
        return np.asarray(spec)
    flat = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))
    shape = spec.get("shape")
    if isinstance(shape, str):
        shape = [int(s) for s in shape.split(",")]
    return flat.reshape(shape) if shape else flat


def test_explore_page_draws_the_map_once_the_embedding_is_ready(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(backend, "explore", monkeypatch, checkpoint=backend.checkpoint_id)
    at = _until(at, lambda a: _charts(a) >= 1, "the UMAP map")
    assert at.selectbox(key="explore_ckpt").value == backend.checkpoint_id
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {trace["type"] for trace in fig["data"]} == {"scattergl"}  # WebGL
    # customdata travels as a typed binary array: (N, 3) of [index, label, cluster].
    indices = sorted(int(cd[0]) for trace in fig["data"] for cd in _array(trace["customdata"]))
    assert indices == list(range(2000))  # every test image, customdata = its data set index
    assert any("2000 images of `shapes`" in str(c.value) for c in at.caption)
    # Hover previews: one component bound to the map by its key, a thumbnail per data set index.
    hover = json.loads(at.get("bidi_component")[0].proto.json)
    assert hover["target"] == f"st-key-explore_map_{backend.checkpoint_id}"
    assert sorted(int(i) for i in hover["thumbs"]) == indices
    assert all(uri.startswith("data:image/") for uri in hover["thumbs"].values())
    thumb = Image.open(io.BytesIO(base64.b64decode(hover["thumbs"]["0"].split(",", 1)[1])))
    assert max(thumb.size) <= 64  # small: 2000 of them travel with the page
    options = " | ".join(at.selectbox(key="explore_colour").options)
    assert all(k in options for k in ("cluster", "label", "confidence")), options
    at.selectbox(key="explore_colour").set_value("label").run()
    assert not at.exception and not at.error and _charts(at) == 1
    assert len(at.get("bidi_component")) == 1


def test_explore_page_keeps_its_map_when_hover_previews_fail(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from frontend import hover_map

    def broken() -> Any:
        raise RuntimeError("no components v2 here")

    monkeypatch.setattr(hover_map, "_component", broken)
    at = _page(backend, "explore", monkeypatch, checkpoint=backend.checkpoint_id)
    at = _until(at, lambda a: _charts(a) >= 1, "the UMAP map")
    assert not at.exception and not at.error
    assert len(at.get("bidi_component")) == 0  # no previews, but the map and its text hover
    assert any("2000 images of `shapes`" in str(c.value) for c in at.caption)


def test_compare_page_with_the_same_checkpoint_twice_agrees_perfectly(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck = backend.checkpoint_id
    at = _page(backend, "compare", monkeypatch, compare_a=ck, compare_b=ck)
    at = _until(at, lambda a: len(a.metric) >= 3, "the comparison")
    assert at.selectbox(key="cmp_a").value == ck and at.selectbox(key="cmp_b").value == ck
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cluster agreement"] == "1.000"
    assert metrics["NMI"] == "1.000" and metrics["ARI"] == "1.000"
    assert _charts(at) >= 1  # the aligned maps
    matched, deltas = at.dataframe[0].value, at.dataframe[1].value
    assert list(matched.columns) == ["cluster A", "cluster B", "images in both"]
    assert list(matched["cluster A"]) == list(matched["cluster B"])
    assert matched["images in both"].sum() == 2000
    assert "knn_top1" in list(deltas["metric"])
    assert set(deltas["Δ (B − A)"]) == {"0.000"}


def test_learn_page_works_with_a_backend(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _page(backend, "learn", monkeypatch)
    assert not at.error
    assert _charts(at) >= 2
    assert any(
        "Backend" in str(c.value) and "not reachable" not in str(c.value) for c in at.caption
    )


def _start_from_the_form(at: AppTest, backend: Backend, name: str) -> dict[str, Any]:
    """Press "Start run" and return the run the backend created under `name`."""
    next(b for b in at.button if b.label == "Start run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    runs = requests.get(f"{backend.url}/runs", timeout=10).json()
    return next(r for r in runs if r["name"] == name)


def _final_status(backend: Backend, run: dict[str, Any]) -> str:
    """The run's status once it is neither queued nor running (waits on the store, not time)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = str(run["status"])
    while status in ("queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
        status = requests.get(f"{backend.url}/runs/{run['id']}", timeout=10).json()["status"]
    return status


def test_runs_page_starts_and_stops_a_run(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(backend, "runs", monkeypatch)
    at.text_input(key="form_name").input("from the form")
    at.number_input(key="form_epochs").set_value(1)
    at.number_input(key="form_k_cpu").set_value(10)
    new = _start_from_the_form(at, backend, "from the form")
    assert new["config"]["swav"]["num_prototypes"] == 10 and new["config"]["epochs"] == 1
    assert at.selectbox(key="runs_pick").value == new["id"]
    at.button(key="run_stop").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    status = _final_status(backend, new)
    assert status in ("stopped", "completed")


def test_runs_page_starts_a_paper_recipe_run(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(backend, "runs", monkeypatch)
    at.radio(key="form_recipe").set_value("paper").run()
    # The form's own defaults follow the recipe: the paper's K = 3000 and ε = 0.05.
    assert at.number_input(key="form_k_paper").value == 3000
    assert at.number_input(key="form_eps_paper").value == pytest.approx(0.05)
    at.text_input(key="form_name").input("paper from the form")
    at.number_input(key="form_k_paper").set_value(20)
    at.number_input(key="form_max_steps").set_value(2)
    new = _start_from_the_form(at, backend, "paper from the form")
    cfg = new["config"]
    assert cfg["recipe"] == "paper" and cfg["optim"]["name"] == "lars"
    assert cfg["augment"]["num_small"] == 6 and cfg["swav"]["num_prototypes"] == 20
    status = _final_status(backend, new)
    assert status == "completed"
    at.run()
    assert any("paper recipe" in o for o in at.selectbox(key="runs_pick").options)


def test_runs_page_imports_a_checkpoint_and_refuses_junk(
    backend: Backend, swav_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {ck["id"] for ck in requests.get(f"{backend.url}/checkpoints", timeout=10).json()}
    at = _page(backend, "runs", monkeypatch)
    at.file_uploader(key="import_file").set_value(
        ("junk.pt", b"definitely not a checkpoint" * 50, "application/octet-stream")
    )
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # The backend's own reason, shown as a message, and nothing kept.
    assert any("POST /checkpoints failed (400)" in str(e.value) for e in at.error), at.error
    after_junk = {ck["id"] for ck in requests.get(f"{backend.url}/checkpoints", timeout=10).json()}
    assert after_junk == before

    at.file_uploader(key="import_file").set_value(
        ("last.pt", swav_checkpoint.read_bytes(), "application/octet-stream")
    )
    at.text_input(key="import_name").input("imported in the app")
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ckpts = requests.get(f"{backend.url}/checkpoints", timeout=10).json()
    new = [ck for ck in ckpts if ck["id"] not in before]
    assert len(new) == 1 and new[0]["method"] == "swav", new
    assert new[0]["name"] == "imported in the app"
    assert any(f"Imported checkpoint #{new[0]['id']}" in str(s.value) for s in at.success)


def test_an_image_folder_runs_images_come_from_its_folder(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Galleries and hover previews read a cifar10 / stl10 / imagefolder set from the folder the
    analysis used, not from the server's default place (where this one is not)."""
    from frontend.hover_map import thumbnails

    root = backend.data / "datasets" / "my-images"
    for k, colour in enumerate(["red", "blue"]):
        (root / f"class{k}").mkdir(parents=True)
        for i in range(40):
            im = Image.new("RGB", (16, 16), "white")
            im.putpixel((i % 16, i // 16 % 16), (255, 0, 0) if colour == "red" else (0, 0, 255))
            im.save(root / f"class{k}" / f"{i:02d}.png")
    run_body = {
        **TINY_RUN,
        "name": "image folder",
        "dataset": "imagefolder",
        "data_root": str(root),
        "epochs": 1,
        "batch_size": 16,
        "overrides": {k: v for k, v in TINY_RUN["overrides"].items() if k != "data.num_train"},
    }
    r = requests.post(f"{backend.url}/runs", json=run_body, timeout=30)
    assert r.status_code == 201, r.text
    ckpt = _wait_run(backend.url, r.json()["id"])["latest_checkpoint_id"]

    at = _page(backend, "prototypes", monkeypatch, checkpoint=ckpt)
    at = _until(at, lambda a: len(a.metric) >= 4, "the prototypes")
    assert not at.warning, [w.value for w in at.warning]  # a failed image fetch warns
    assert len(at.get("image")) >= 1

    thumbs = thumbnails("imagefolder", [0, 1, 2], base_url=backend.url, data_root=str(root))
    assert sorted(thumbs) == ["0", "1", "2"]
    assert all(uri.startswith("data:image/") for uri in thumbs.values())
    # Without the folder the server cannot know where the images are.
    assert thumbnails("imagefolder", [0, 1, 2], base_url=backend.url) == {}

    # The shapes checkpoint analysed on that folder, picked on the page: its galleries too.
    at = _page(backend, "prototypes", monkeypatch, checkpoint=backend.checkpoint_id)
    at = _until(at, lambda a: len(a.metric) >= 4, "the prototypes")
    at.selectbox(key="proto_data").set_value("imagefolder").run()
    assert any("give it above" in str(i.value) for i in at.info)  # no folder yet: it waits
    at.text_input(key="proto_root_imagefolder").input(str(root)).run()
    at = _until(at, lambda a: len(a.metric) >= 4, "the prototypes on the image folder")
    assert not at.warning, [w.value for w in at.warning]
    assert len(at.get("image")) >= 1


def test_runs_page_shows_the_backend_s_collapse_alert(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page judges nothing: the red alert is the one the backend serves with the run's
    metrics (models/collapse_rules.py), word for word."""
    steps = [{"type": "step", "step": s, "loss": 1.0, "active_prototypes": 1} for s in (1, 2, 3)]
    run_id = finished_run(backend.data, {"method": "swav", "swav": {"num_prototypes": 10}}, steps)
    served = requests.get(f"{backend.url}/runs/{run_id}/metrics", timeout=10).json()["alert"]
    assert served is not None and served["kind"] == "one-cluster"
    at = _page(backend, "runs", monkeypatch, run=run_id)
    shown = [str(e.value) for e in at.error]
    assert any(e.startswith("**Collapse!**") and served["message"] in e for e in shown), shown


def test_explore_page_sends_thumbnails_near_the_mouse_for_a_big_map(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from frontend import hover_map

    # This map's 2,000 points count as big here: the previews go lazy, as at 50,000.
    monkeypatch.setattr(hover_map, "MAX_HOVER_IMAGES", 500)
    at = _page(backend, "explore", monkeypatch, checkpoint=backend.checkpoint_id, points=2000)
    at = _until(at, lambda a: _charts(a) >= 1, "the UMAP map")
    assert at.select_slider(key="explore_points").value == 2000  # ?points= preselects it
    key = f"explore_map_{backend.checkpoint_id}_hover"
    hover = json.loads(at.get("bidi_component")[0].proto.json)
    assert hover["lazy"] is True and hover["thumbs"] == {}  # nothing fetched up front
    # The browser reports the point under the mouse; the fragment answers with its thumbnail
    # and those of its neighbours on the map.
    at.session_state[key] = {"hover": 7}
    at.run()
    hover = json.loads(at.get("bidi_component")[0].proto.json)
    assert not at.exception
    assert "7" in hover["thumbs"] and len(hover["thumbs"]) == hover_map.LAZY_BATCH
