"""Training processes and the server's life cycle, for real: kill -9, NaN, restart, crash.

Every test starts `protoscope serve` itself (so it can stop, kill and restart it over the same
data folder and SQLite file) and trains tiny real runs. What must hold:

- a training process killed with SIGKILL is noticed within seconds, its run is marked with
  the reason, SSE clients get the `end` event, and the run resumes from its last checkpoint;
- a NaN loss ends the run `failed` with the reason stored;
- a server stopped mid-run stops the training (checkpoint first) and, once back, shows the run
  `interrupted` and resumable, with one unbroken event log;
- a server killed mid-run leaves the training running; the next server adopts it, and when
  the process is gone by then the run becomes `interrupted`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.processes import is_alive
from tests.sse_client import EventStream
from tests.support import ROOT, TINY_RUN_BODY, free_port, stop, wait_http, wait_until

TIMEOUT = 60
NOTICE_S = 5.0  # a killed training process must be noticed within this many seconds

TINY = TINY_RUN_BODY
# Trains until stopped (a few hundred epochs of 8 steps); the budget is only a safety net.
LONG = {**TINY, "epochs": 500, "max_minutes": 3.0}
ENV = {
    "PROTOSCOPE_MONITOR_INTERVAL_S": "0.2",
    "PROTOSCOPE_SSE_PING_S": "1",
    "PROTOSCOPE_SHUTDOWN_GRACE_S": "10",
    "PROTOSCOPE_WORKER_NICE": "0",
}


class Server:
    """`protoscope serve` over one data folder, started and stopped (or killed) at will."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    def start(self) -> str:
        self.starts += 1
        log = self.data.parent / f"server-{self.starts}.log"
        port = free_port()
        cmd = [sys.executable, "-m", "protoscope", "serve", "--port", str(port)]
        self.proc = subprocess.Popen(
            [*cmd, "--data", str(self.data)],
            cwd=ROOT,
            env={**os.environ, **ENV},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.url}/health", timeout=TIMEOUT, proc=self.proc)
        return self.url

    def stop(self) -> None:
        """Ctrl-C: the graceful way."""
        if self.proc is not None:
            stop(self.proc, grace=30)

    def kill(self) -> None:
        """kill -9 of the server alone (its training processes live in their own sessions)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    # --- API helpers ------------------------------------------------------------------------
    def post_run(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = requests.post(f"{self.url}/runs", json=body, timeout=30)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def run(self, run_id: int) -> dict[str, Any]:
        return requests.get(f"{self.url}/runs/{run_id}", timeout=10).json()

    def events(self, run_id: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        since = 0
        while True:
            page = requests.get(
                f"{self.url}/runs/{run_id}/metrics", params={"since": since}, timeout=10
            ).json()
            out += page["events"]
            since = page["next"]
            if not page["more"]:
                return out

    def post(self, path: str) -> requests.Response:
        return requests.post(f"{self.url}{path}", timeout=30)


def wait_for_event(srv: Server, run_id: int, kind: str, after: int = 0) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((e for e in srv.events(run_id) if e["type"] == kind and e["id"] > after), None)

    return wait_until(f"a {kind!r} event of run {run_id} after id {after}", found)


def wait_status(srv: Server, run_id: int, status: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    return wait_until(
        f"run {run_id} to be {status}",
        lambda: r if (r := srv.run(run_id))["status"] == status else None,
        timeout,
    )


def sse_ids_to_end(srv: Server, run_id: int) -> list[dict[str, Any]]:
    """The whole log over SSE; the stream must end by itself with the run's `end`."""
    with EventStream(f"{srv.url}/runs/{run_id}/events", timeout=(5, 30)) as stream:
        got = [m.json() for m in stream if m.id is not None]
    assert got and got[-1]["type"] == "end", got[-3:]
    return got


def check_resumes_from_checkpoint(srv: Server, run_id: int) -> None:
    """Resume: the new session starts at the last checkpoint's step and steps on from it."""
    before = srv.events(run_id)
    last_id = before[-1]["id"]
    ckpt_step = max(e["step"] for e in before if e["type"] == "checkpoint")
    resp = srv.post(f"/runs/{run_id}/resume")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] in ("queued", "running")
    start = wait_for_event(srv, run_id, "start", after=last_id)
    # The trainer may have written last.pt just before dying without its event getting out.
    assert start["resumed_at_step"] >= ckpt_step, (start["resumed_at_step"], ckpt_step)
    step = wait_for_event(srv, run_id, "step", after=start["id"])
    assert step["step"] == start["resumed_at_step"] + 1
    assert srv.post(f"/runs/{run_id}/stop").status_code == 200
    run = wait_status(srv, run_id, "stopped")
    assert run["reason"] == "stopped on request" and run["resumable"]
    ids = [e["id"] for e in srv.events(run_id)]
    assert ids == sorted(set(ids)), "one log, ids strictly increasing across sessions"


def start_long_run(srv: Server, workers: list[int], until: str) -> tuple[int, dict[str, Any], int]:
    """Start the server and a LONG run, and wait for the run's first `until` event:
    (run id, that event, pid of its training process).

    The pid goes into `workers` at once, so the process is killed however the test ends.
    """
    srv.start()
    run_id: int = srv.post_run(LONG)["id"]
    event = wait_for_event(srv, run_id, until)
    pid: int = srv.run(run_id)["pid"]
    workers.append(pid)
    return run_id, event, pid


@pytest.fixture
def workers() -> Iterator[list[int]]:
    """Pids of training processes a test saw; whatever is left of them is killed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data")
    try:
        yield srv
    finally:
        srv.stop()


def test_a_killed_training_process_is_noticed_within_seconds_and_resumes(
    server: Server, workers: list[int]
) -> None:
    run_id, _, pid = start_long_run(server, workers, "checkpoint")

    # While it trains, a second run waits in the queue (one slot); stopping it is immediate.
    queued = server.post_run(TINY)
    assert queued["status"] == "queued"
    assert server.post(f"/runs/{queued['id']}/stop").status_code == 200
    stopped = server.run(queued["id"])
    assert stopped["status"] == "stopped" and stopped["reason"] == "stopped before it started"
    assert [e["type"] for e in server.events(queued["id"])] == ["end"]
    assert server.post(f"/runs/{queued['id']}/stop").status_code == 409

    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    run = wait_until(
        "the kill to be noticed",
        lambda: r if (r := server.run(run_id))["status"] != "running" else None,
        timeout=NOTICE_S + 5,
    )
    noticed = time.monotonic() - t0
    assert noticed < NOTICE_S, f"noticed after {noticed:.1f} s"
    # The brief allows either word; the reason must name the signal, and it stays resumable.
    assert run["status"] in ("failed", "interrupted"), run
    assert "SIGKILL" in run["reason"] and run["resumable"] and run["pid"] is None
    end = sse_ids_to_end(server, run_id)[-1]
    assert end["status"] == run["status"] and end["reason"] == run["reason"]
    assert server.run(run_id)["exit_code"] == -signal.SIGKILL

    check_resumes_from_checkpoint(server, run_id)
    workers.append(server.run(run_id)["pid"] or 0)


def test_a_nan_loss_fails_the_run_with_the_reason(server: Server) -> None:
    server.start()
    # A temperature of 1e-40 is inside the bounds (τ > 0) but overflows the logits at once.
    run_id = server.post_run({**TINY, "temperature": 1e-40})["id"]
    run = wait_status(server, run_id, "failed")
    assert "loss became nan" in run["reason"], run["reason"]
    end = sse_ids_to_end(server, run_id)[-1]
    assert end["status"] == "failed" and end["reason"] == run["reason"]


def test_a_server_restart_mid_run_interrupts_it_resumably(
    server: Server, workers: list[int]
) -> None:
    run_id, first, pid = start_long_run(server, workers, "checkpoint")

    server.stop()  # Ctrl-C: the training process checkpoints and ends with the server
    assert not is_alive(pid), "the training process outlived a graceful shutdown"
    server.start()
    run = server.run(run_id)
    assert run["status"] == "interrupted", run
    assert "shut down" in run["reason"] and run["resumable"]
    log = sse_ids_to_end(server, run_id)
    assert log[-1]["status"] == "interrupted"
    partial = [e for e in log if e["type"] == "checkpoint" and not e["epoch_complete"]]
    assert partial and partial[-1]["id"] > first["id"], "it checkpointed when it was stopped"
    check_resumes_from_checkpoint(server, run_id)
    workers.append(server.run(run_id)["pid"] or 0)


def test_a_crashed_server_leaves_training_running_and_the_next_one_adopts_it(
    server: Server, workers: list[int]
) -> None:
    run_id, seen, pid = start_long_run(server, workers, "step")

    server.kill()  # no shutdown at all
    time.sleep(0.5)
    assert is_alive(pid), "the training process must survive the server"
    server.start()
    run = server.run(run_id)
    assert run["status"] == "running" and run["pid"] == pid, run
    # Events keep arriving live through the new server, from where the client left off.
    with EventStream(f"{server.url}/runs/{run_id}/events", last_event_id=seen["id"]) as s:
        fresh = []
        for message in s:
            if message.id is not None:
                fresh.append(message.json())
            if sum(e["type"] == "step" for e in fresh) >= 3:
                break
    assert fresh[0]["id"] > seen["id"]

    # Killed with its process gone before the next start: interrupted, with the reason.
    server.kill()
    os.kill(pid, signal.SIGKILL)
    wait_until("the training process to die", lambda: not is_alive(pid))
    server.start()
    run = server.run(run_id)
    assert run["status"] == "interrupted", run
    assert "while the server was down" in run["reason"] and run["resumable"]
    assert sse_ids_to_end(server, run_id)[-1]["status"] == "interrupted"
