"""GET /runs/{id}/timeline and /runs/{id}/timeline/prototypes/{k} on a real server, with a real
tiny run (trained into the server's data folder, its events and checkpoints in SQLite)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.store import Store
from backend.worker import Emitter
from models.train import Trainer
from tests.support import backend_server, finished_run, tiny_run_config

IMAGES = 150  # the first 150 test images: every request here shares one computation
ANSWER_TIMEOUT_S = 180.0


def trained_run(data_dir: Path, method: str = "swav", epochs: int = 3, **over: object) -> int:
    """A tiny run trained into `data_dir` as the worker trains one: its events and checkpoints
    go through the worker's own Emitter into the store. Its id."""
    cfg = tiny_run_config(
        method, epochs=epochs, knn_every_steps=None, checkpoint_every_minutes=None, **over
    )
    store = Store(data_dir / "protoscope.sqlite3", data_dir)
    try:
        store.init_schema()  # as the server does at start-up, if it has not yet
        run_id = finished_run(data_dir, cfg.model_dump(mode="json"), [])
        run = store.get_run(run_id)
        assert run is not None
        out = data_dir / "runs" / f"timeline-{run_id}"
        Trainer(cfg, out, emit=Emitter(store, run), progress=False).run()
    finally:
        store.close()
    return run_id


def answer(url: str, params: dict[str, Any] | None = None) -> requests.Response:
    """The final answer of an analysis route: ask again while it answers 202."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        r = requests.get(url, params=params, timeout=30)
        if r.status_code != 202:
            return r
        body = r.json()
        assert body["status"] == "running" and 0.0 <= body["progress"] <= 1.0, body
        assert time.monotonic() < deadline, f"{url} still computing: {body}"
        time.sleep(0.5)


@dataclass(frozen=True)
class Server:
    url: str
    data: Path
    run_id: int
    empty_run_id: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("timeline-api") / "data"
    data.mkdir()
    run_id = trained_run(data)
    empty = finished_run(data, {"method": "swav"}, [])
    with backend_server(data) as url:
        yield Server(url, data, run_id, empty)


def test_timeline_progress_then_every_epoch(server: Server) -> None:
    url = f"{server.url}/runs/{server.run_id}/timeline"
    first = requests.get(url, params={"max_images": IMAGES}, timeout=30)
    assert first.status_code in (200, 202)
    if first.status_code == 202:  # progress, and when to ask again
        assert first.headers["Retry-After"] == "1" and "message" in first.json()
    r = answer(url, {"max_images": IMAGES})
    assert r.status_code == 200, r.text
    tl = r.json()
    ckpts = requests.get(f"{server.url}/checkpoints?run_id={server.run_id}", timeout=10).json()
    by_step = sorted(ckpts, key=lambda c: c["step"])
    assert [e["checkpoint_id"] for e in tl["epochs"]] == [c["id"] for c in by_step]
    assert [e["epochs_done"] for e in tl["epochs"]] == [1.0, 2.0, 3.0]
    assert tl["run_id"] == server.run_id and tl["num_points"] == IMAGES
    assert "galleries" not in tl  # served one prototype at a time
    assert len(tl["flows"]) == 2 and tl["alignment"].startswith("procrustes")
    # kNN per epoch: the trainer's own end-of-epoch evaluation, read from the run's events.
    events = requests.get(f"{server.url}/runs/{server.run_id}/metrics", timeout=10).json()
    knn = {e["step"]: e["knn_top1"] for e in events["events"] if e["type"] == "epoch"}
    assert [e["knn_top1"] for e in tl["epochs"]] == [knn[c["step"]] for c in by_step]
    for e in tl["epochs"]:
        assert len(e["x"]) == IMAGES and sum(e["usage"]) == IMAGES and e["verdict"]

    # Cached: the same answer at once, and each checkpoint's part kept on disk on its own.
    t0 = time.monotonic()
    again = requests.get(url, params={"max_images": IMAGES}, timeout=30)
    assert again.status_code == 200 and again.json()["epochs"] == tl["epochs"]
    assert time.monotonic() - t0 < 5.0
    assert len(list((server.data / "cache" / "timeline").glob("frame-*.npz"))) == 3


def test_fewer_checkpoints_keep_the_first_and_the_last(server: Server) -> None:
    url = f"{server.url}/runs/{server.run_id}/timeline"
    full = answer(url, {"max_images": IMAGES}).json()
    two = answer(url, {"max_images": IMAGES, "max_checkpoints": 2})
    assert two.status_code == 200, two.text
    ids = [e["checkpoint_id"] for e in two.json()["epochs"]]
    assert ids == [full["epochs"][0]["checkpoint_id"], full["epochs"][-1]["checkpoint_id"]]
    assert two.json()["cached_checkpoints"] == 2  # both parts were computed already


def test_prototype_gallery_at_every_epoch(server: Server) -> None:
    base = f"{server.url}/runs/{server.run_id}/timeline"
    tl = answer(base, {"max_images": IMAGES}).json()
    busiest = max(range(tl["num_prototypes"]), key=lambda k: tl["epochs"][-1]["usage"][k])
    r = answer(f"{base}/prototypes/{busiest}", {"max_images": IMAGES, "top_k": 8})
    assert r.status_code == 200, r.text
    g = r.json()
    assert g["prototype"] == busiest and g["dataset"] == "shapes"
    assert [e["checkpoint_id"] for e in g["epochs"]] == [e["checkpoint_id"] for e in tl["epochs"]]
    assert [e["usage"] for e in g["epochs"]] == [e["usage"][busiest] for e in tl["epochs"]]
    for e in g["epochs"]:
        assert len(e["images"]) == 8 and all(0 <= i < IMAGES for i in e["images"])
    missing = answer(f"{base}/prototypes/999", {"max_images": IMAGES})
    assert missing.status_code == 404
    assert "no prototype 999" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("path", "params", "status", "says"),
    [
        ("/runs/99999/timeline", {}, 404, "no run 99999"),
        ("/runs/{empty}/timeline", {}, 404, "no checkpoints yet"),
        ("/runs/{run}/timeline", {"max_checkpoints": 1}, 422, "max_checkpoints"),
        ("/runs/{run}/timeline", {"max_images": 0}, 422, "max_images"),
        ("/runs/{run}/timeline", {"data_root": "/etc"}, 400, ""),
        ("/runs/{run}/timeline/prototypes/-1", {}, 422, ""),
    ],
)
def test_bad_requests_are_4xx_with_a_message(
    server: Server, path: str, params: dict[str, Any], status: int, says: str
) -> None:
    url = server.url + path.format(run=server.run_id, empty=server.empty_run_id)
    r = requests.get(url, params=params, timeout=30)
    assert r.status_code == status, r.text
    assert says in r.text and r.json()["detail"]
