"""A real training run through the real server, followed live over Server-Sent Events.

`protoscope serve` runs in a subprocess with its own data folder and SQLite file; one tiny run
(~2 s of training) is created at the start and followed by two SSE clients at once — one of
them drops its connection and reconnects with Last-Event-ID — then checked against the stored
log through polling, and its checkpoints are analysed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.sse_client import EventStream, Message
from tests.support import TINY_RUN_BODY, backend_server, wait_until

TIMEOUT = 60  # seconds for anything the server does in the background

TINY = TINY_RUN_BODY
SERVER_ENV = {"PROTOSCOPE_SSE_PING_S": "1", "PROTOSCOPE_WORKER_NICE": "0"}


def assert_error(resp: requests.Response, status: int, *needles: str) -> str:
    """A JSON error with `detail`, the right status, the words we expect, and no traceback."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    text = str(resp.json()["detail"])
    assert "Traceback" not in resp.text, resp.text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def all_events(base: str, run_id: int, **params: Any) -> list[dict[str, Any]]:
    """All events of a run through /metrics, page by page."""
    out: list[dict[str, Any]] = []
    since = 0
    while True:
        page = requests.get(
            f"{base}/runs/{run_id}/metrics", params={"since": since, **params}, timeout=10
        ).json()
        out += page["events"]
        since = page["next"]
        if not page["more"]:
            return out


def read_messages(stream: EventStream, stop_after: int | None = None) -> list[Message]:
    """Id-carrying messages until the server closes the stream (or `stop_after` of them)."""
    got = []
    for message in stream:
        if message.id is None:
            continue  # comments: the greeting and the pings
        got.append(message)
        if stop_after is not None and len(got) >= stop_after:
            break
    return got


def check_message(message: Message) -> dict[str, Any]:
    """An SSE message carries one stored event: its id and name match the JSON."""
    data = message.json()
    assert message.id == str(data["id"]) and message.event == data["type"], message
    return data


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with backend_server(tmp_path_factory.mktemp("live") / "data", SERVER_ENV) as url:
        yield url


@pytest.fixture(scope="module")
def run_id(api: str) -> int:
    """The tiny run, created at once so the first test can follow it while it trains."""
    resp = requests.post(f"{api}/runs", json={**TINY, "name": "tiny"}, timeout=30)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] in ("queued", "running") and body["method"] == "swav"
    return int(body["id"])


@pytest.fixture(scope="module")
def finished(api: str, run_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = requests.get(f"{api}/runs/{run_id}", timeout=10).json()
        return run if run["status"] not in ("queued", "running") else None

    run = wait_until("the tiny run to finish", done)
    assert run["status"] == "completed", run
    return run


def test_sse_to_the_end_with_a_reconnect_that_loses_and_repeats_nothing(
    api: str, run_id: int
) -> None:
    url = f"{api}/runs/{run_id}/events"
    # A second client follows the whole run at the same time: any number of clients.
    other: list[Message] = []
    reader = threading.Thread(target=lambda: other.extend(read_messages(EventStream(url))))
    reader.start()

    with EventStream(url) as first:
        assert first.status_code == 200
        assert first.response.headers["content-type"].startswith("text/event-stream")
        head = read_messages(first, stop_after=3)  # ... and then the connection drops
        last_id = first.last_id
    assert last_id is not None
    with EventStream(url, last_event_id=last_id) as second:
        tail = read_messages(second)  # to the end: the server closes after `end`
    reader.join(timeout=TIMEOUT)
    assert not reader.is_alive(), "the second client's stream did not end"

    seen = [check_message(m) for m in head + tail]
    ids = [e["id"] for e in seen]
    assert ids == sorted(set(ids)), f"ids must strictly increase, without repeats: {ids}"
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "start" and kinds[-1] == "end", kinds
    assert {"step", "epoch", "checkpoint"} <= set(kinds)
    assert seen[-1]["status"] == "completed"
    # Nothing lost: exactly the stored log, which a fresh client and the poller get as well.
    replay = [check_message(m)["id"] for m in read_messages(EventStream(url))]
    assert ids == replay == [e["id"] for e in all_events(api, run_id)]
    assert [m.json()["id"] for m in other] == ids
    # ?last_event_id= (an EventSource's first connection cannot send the header).
    middle = ids[len(ids) // 2]
    later = read_messages(EventStream(f"{url}?last_event_id={middle}"))
    assert [m.json()["id"] for m in later] == [i for i in ids if i > middle]
    # The header wins over the query, as on an EventSource's automatic reconnect.
    both = read_messages(EventStream(f"{url}?last_event_id=0", last_event_id=middle))
    assert [m.json()["id"] for m in both] == [i for i in ids if i > middle]
    # After the end a reconnect gets 204, which makes EventSource stop reconnecting.
    assert EventStream(url, last_event_id=ids[-1]).status_code == 204
    assert_error(requests.get(url, headers={"Last-Event-ID": "abc"}, timeout=10), 400)


def test_the_finished_run_its_metrics_and_its_checkpoints(
    api: str, finished: dict[str, Any]
) -> None:
    run = finished
    assert run["reason"] == "" and run["pid"] is None and not run["resumable"]
    assert run["step"] == 16 and run["name"] == "tiny"
    assert run["config"]["swav"]["num_prototypes"] == 10  # named fields → TrainConfig
    assert run["config"]["swav"]["hidden_dim"] == 32  # `config` merged in
    assert run["config"]["data"]["image_size"] == 16
    assert run["id"] in [r["id"] for r in requests.get(f"{api}/runs", timeout=10).json()]

    # Polling: bounded pages with a cursor; the same events the stream has.
    events = all_events(api, run["id"])
    page = requests.get(
        f"{api}/runs/{run['id']}/metrics", params={"since": 0, "limit": 5}, timeout=10
    ).json()
    assert page["more"] and len(page["events"]) == 5 and page["next"] == events[4]["id"]
    assert page["status"] == "completed"
    steps = all_events(api, run["id"], type="step")
    assert [e["step"] for e in steps] == list(range(1, 17))
    assert isinstance(steps[0]["time"], float) and "loss" in steps[0]
    assert steps[0]["num_prototypes"] == 10 and "active_prototypes" in steps[0]
    end = requests.get(
        f"{api}/runs/{run['id']}/metrics", params={"since": events[-1]["id"]}, timeout=10
    ).json()
    assert end["events"] == [] and not end["more"] and end["next"] == events[-1]["id"]

    # One checkpoint per epoch, registered under ids as the trainer wrote them.
    ckpts = requests.get(f"{api}/checkpoints", params={"run_id": run["id"]}, timeout=10).json()
    ckpts.sort(key=lambda c: c["epoch"])
    assert [c["epoch"] for c in ckpts] == [1, 2]
    assert all(c["kind"] == "run" and c["run_name"] == "tiny" for c in ckpts)
    assert run["latest_checkpoint_id"] == ckpts[-1]["id"]
    ck_events = [e for e in events if e["type"] == "checkpoint"]
    assert [e["checkpoint_id"] for e in ck_events] == [c["id"] for c in ckpts]
    assert not ck_events[0]["path"].startswith("/"), "no server paths in events"

    # Finished: neither stop nor resume applies.
    assert_error(requests.post(f"{api}/runs/{run['id']}/stop", timeout=10), 409, "completed")
    assert_error(requests.post(f"{api}/runs/{run['id']}/resume", timeout=10), 409, "completed")

    # The run's own checkpoint feeds the analyses (202 while computing, then the answer).
    gallery = wait_until(
        "the gallery of prototype 0",
        lambda: (
            r.json()
            if (
                r := requests.get(
                    f"{api}/checkpoints/{ckpts[-1]['id']}/prototypes/0/gallery",
                    params={"top_k": 3, "max_images": 200},
                    timeout=30,
                )
            ).status_code
            == 200
            else None
        ),
    )
    assert gallery["prototype"] == 0 and len(gallery["images"]) == 3


def test_two_runs_share_the_slot_in_order(api: str, finished: dict[str, Any]) -> None:
    """With one slot (the default on a CPU) a second run waits queued, then runs."""
    first = requests.post(f"{api}/runs", json={**TINY, "epochs": 1}, timeout=30).json()
    second = requests.post(f"{api}/runs", json={**TINY, "epochs": 1}, timeout=30).json()
    assert second["status"] == "queued", second
    for run in (first, second):
        done = wait_until(
            f"run {run['id']} to complete",
            lambda r=run: (
                requests.get(f"{api}/runs/{r['id']}", timeout=10).json()["status"] == "completed"
            ),
        )
        assert done
    a = requests.get(f"{api}/runs/{first['id']}", timeout=10).json()
    b = requests.get(f"{api}/runs/{second['id']}", timeout=10).json()
    assert a["finished_at"] <= b["started_at"], "never two at once with one slot"


def test_health_counts_runs(api: str, finished: dict[str, Any]) -> None:
    health = requests.get(f"{api}/health", timeout=10).json()
    assert health["runs"].get("completed", 0) >= 1 and health["max_concurrent_runs"] == 1


def test_a_paper_recipe_run_over_http_records_its_recipe(
    api: str, finished: dict[str, Any]
) -> None:
    """POST /runs {"recipe": "paper"}: the official hyper-parameters, except what is set."""
    body = {**TINY, "recipe": "paper", "max_steps": 3, "name": "paper"}
    body["config"] = {**TINY["config"], "augment": {"num_small": 2}}
    created = requests.post(f"{api}/runs", json=body, timeout=30)
    assert created.status_code == 201, created.text
    cfg = created.json()["config"]
    assert cfg["recipe"] == "paper" and cfg["optim"]["name"] == "lars"
    assert cfg["swav"]["epsilon"] == 0.05  # TINY's own ε, and the paper's
    assert cfg["augment"]["num_small"] == 2 and cfg["augment"]["blur_p"] == 0.5  # mine, paper's
    run_id = created.json()["id"]
    wait_until(
        "the paper run to complete",
        lambda: requests.get(f"{api}/runs/{run_id}", timeout=10).json()["status"] == "completed",
    )
    ckpts = requests.get(f"{api}/checkpoints", params={"run_id": run_id}, timeout=10).json()
    assert ckpts and {c["recipe"] for c in ckpts} == {"paper"}
    others = requests.get(f"{api}/checkpoints", params={"run_id": finished["id"]}, timeout=10)
    assert {c["recipe"] for c in others.json()} == {"cpu"}
    # Compare sets the paper run's checkpoint against the cpu run's (same method and data).
    a, b = ckpts[-1]["id"], others.json()[-1]["id"]

    def compared() -> requests.Response | None:
        r = requests.get(f"{api}/compare", params={"a": a, "b": b, "max_images": 200}, timeout=30)
        return None if r.status_code == 202 else r

    r = wait_until("the paper-against-cpu comparison", compared)
    assert r.status_code == 200, r.text
    assert r.json()["a_id"] == a and r.json()["b_id"] == b
    assert 0.0 <= r.json()["nmi"] <= 1.0
    assert (
        requests.post(f"{api}/runs", json={**TINY, "recipe": "chef"}, timeout=30).status_code == 422
    )
