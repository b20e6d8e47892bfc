"""Faults, for real: a full disk mid-checkpoint, 20 SSE clients at once, a restart mid-run.

Covered elsewhere, and not repeated here:

- kill -9 of a training process mid-run: noticed within 5 s, the run marked with SIGKILL as
  the reason, the SSE `end`, and resume continuing from the last checkpoint —
  tests/backend/test_backend_processes.py::test_a_killed_training_process_is_noticed_within_seconds_and_resumes
  (this file adds that the checkpoint left behind loads as a model: see the restart test);
- a server stopped (Ctrl-C) or killed mid-run — the same file's restart/crash tests;
- a write that fails with ENOSPC inside torch.save (monkeypatched) —
  tests/models/test_checkpoints.py::test_save_is_atomic_when_the_write_fails.

Here the disk really refuses: the kernel's file-size limit (RLIMIT_FSIZE, with SIGXFSZ
ignored, so write(2) fails with EFBIG exactly as it fails with ENOSPC on a full disk) is set on
a training process between its first and second checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from models.checkpoints import load_checkpoint, load_model
from models.train import Trainer
from tests.backend.test_backend_live import TINY, all_events
from tests.backend.test_backend_processes import (
    LONG,
    Server,
    wait_for_event,
    wait_status,
    workers,  # noqa: F401 - a fixture
)
from tests.sse_client import EventStream
from tests.support import ROOT, backend_server, tiny_run_config, wait_until

# The child trains a tiny run; at its first checkpoint the disk "fills up".
FULL_DISK_CHILD = r"""
import errno, hashlib, json, resource, signal, sys
from pathlib import Path
from models.checkpoints import CheckpointError
from models.train import Trainer
from tests.support import tiny_run_config

out = Path(sys.argv[1])
last = out / "checkpoints" / "last.pt"
state = {}

def emit(event):
    if event["type"] == "checkpoint" and "limit" not in state:
        state["sha"] = hashlib.sha256(last.read_bytes()).hexdigest()
        state["limit"] = last.stat().st_size // 2
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death: a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (state["limit"], state["limit"]))

try:
    Trainer(tiny_run_config("swav", epochs=2), out, emit=emit, progress=False).run()
    state["outcome"] = "finished"
except OSError as e:
    state["outcome"] = "oserror"
    state["errno"] = e.errno
    state["message"] = str(e)
except CheckpointError as e:  # torch reports the short write as a RuntimeError: translated
    state["outcome"] = "checkpoint_error"
    state["message"] = str(e)
except Exception as e:
    state["outcome"] = f"{type(e).__name__}: {e}"
print(json.dumps(state))
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    # The second epoch's checkpoint could not be written, and the error surfaced as such.
    if state["outcome"] == "oserror":
        assert state["errno"] in (27, 28), state  # EFBIG / ENOSPC
    else:
        assert state["outcome"] == "checkpoint_error", state
        assert "is the disk full?" in state["message"] and "untouched" in state["message"]
    ckpts = out / "checkpoints"
    last = ckpts / "last.pt"
    assert sha(last) == state["sha"], "last.pt changed although its rewrite failed"
    leftovers = sorted(p.name for p in ckpts.iterdir() if p.name.startswith("."))
    assert leftovers == [], f"temporary files left behind: {leftovers}"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_0001.pt", "last.pt"]
    loaded = load_model(last)
    assert loaded.epoch == 0 and loaded.step == 8  # the first epoch, complete
    assert load_checkpoint(last)["extra"]["epoch_complete"] is True

    # With space again, the run resumes from that checkpoint and completes.
    end = Trainer(tiny_run_config("swav", epochs=2), out, resume=True, progress=False).run()
    assert end["status"] == "completed", end
    assert load_model(last).step == 16
    assert (ckpts / "epoch_0002.pt").is_file()


def test_twenty_concurrent_sse_clients_each_get_every_event_in_order(tmp_path: Path) -> None:
    env = {"PROTOSCOPE_SSE_PING_S": "1", "PROTOSCOPE_WORKER_NICE": "0"}
    with backend_server(tmp_path / "data", env) as api:
        resp = requests.post(f"{api}/runs", json=TINY, timeout=30)
        assert resp.status_code == 201, resp.text
        run_id = resp.json()["id"]
        url = f"{api}/runs/{run_id}/events"
        results: list[list[dict[str, Any]] | BaseException] = [[] for _ in range(20)]
        connected = threading.Barrier(21, timeout=60)

        def follow(i: int) -> None:
            try:
                with EventStream(url, timeout=(10, 60)) as stream:
                    assert stream.status_code == 200
                    connected.wait()
                    got = results[i]
                    assert isinstance(got, list)
                    for message in stream:
                        if message.id is None:
                            continue
                        data = message.json()
                        assert message.id == str(data["id"]) and message.event == data["type"]
                        got.append(data)
            except BaseException as e:  # reported below, with the client's number
                results[i] = e

        threads = [threading.Thread(target=follow, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        connected.wait()  # all 20 are connected before (most of) the run has happened
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a client's stream did not end"
        stored = all_events(api, run_id)
        assert stored[0]["type"] == "start" and stored[-1]["type"] == "end"
        assert stored[-1]["status"] == "completed"
        for i, got in enumerate(results):
            assert not isinstance(got, BaseException), f"client {i}: {got!r}"
            assert got == stored, f"client {i} got {len(got)} of {len(stored)} events"


@pytest.mark.soak
def test_a_server_restart_mid_run_loses_and_repeats_no_event(
    tmp_path: Path,
    workers: list[int],  # noqa: F811 - the fixture
) -> None:
    """A client follows a run across a server restart; the log it assembles is the stored
    log: every step exactly once, in order, across both training sessions.

    In `make soak`: the fast suite has the restart already (test_backend_processes)."""
    srv = Server(tmp_path / "data")
    try:
        srv.start()
        run_id = srv.post_run(LONG)["id"]
        url = f"{srv.url}/runs/{run_id}/events"
        seen: list[dict[str, Any]] = []
        with EventStream(url, timeout=(10, 30)) as stream:
            for message in stream:
                if message.id is not None:
                    seen.append(message.json())
                if any(e["type"] == "checkpoint" for e in seen) and seen[-1]["type"] == "step":
                    break
        workers.append(srv.run(run_id)["pid"])
        srv.stop()  # mid-epoch: the worker writes a partial checkpoint and ends
        srv.start()
        run = srv.run(run_id)
        assert run["status"] == "interrupted" and run["resumable"], run
        # The checkpoint the interrupted session left behind is a loadable model.
        ck = requests.get(f"{srv.url}/checkpoints/{run['latest_checkpoint_id']}", timeout=10)
        loaded = load_model(srv.data / ck.json()["path"])
        assert loaded.step == run["step"] and ck.json()["partial"]

        assert srv.post(f"/runs/{run_id}/resume").status_code == 200
        start = wait_for_event(srv, run_id, "start", after=seen[-1]["id"])
        wait_until("5 more steps", lambda: srv.run(run_id)["step"] >= start["resumed_at_step"] + 5)
        assert srv.post(f"/runs/{run_id}/stop").status_code == 200
        wait_status(srv, run_id, "stopped")

        # The client reconnects with the last id it had, over the new server, to the end.
        url = f"{srv.url}/runs/{run_id}/events"  # the new server listens on another port
        with EventStream(url, last_event_id=seen[-1]["id"], timeout=(10, 30)) as stream:
            seen += [m.json() for m in stream if m.id is not None]
        stored = srv.events(run_id)
        assert [e["id"] for e in seen] == [e["id"] for e in stored]
        assert seen == stored
        steps = [e["step"] for e in stored if e["type"] == "step"]
        assert steps == list(range(1, len(steps) + 1)), "a step lost or repeated"
        assert [e["type"] for e in stored].count("start") == 2
        assert [e["status"] for e in stored if e["type"] == "end"] == ["interrupted", "stopped"]
        workers.append(srv.run(run_id)["pid"] or 0)
    finally:
        srv.stop()


@pytest.mark.soak
def test_restart_soak_five_restarts_in_a_row(
    tmp_path: Path,
    workers: list[int],  # noqa: F811 - the fixture
) -> None:
    """Five stop/start/resume cycles of one run: still one log, every step once."""
    srv = Server(tmp_path / "data")
    try:
        srv.start()
        run_id = srv.post_run(LONG)["id"]
        last = 0
        for _ in range(5):
            ev = wait_for_event(srv, run_id, "step", after=last)
            workers.append(srv.run(run_id)["pid"] or 0)
            srv.stop()
            srv.start()
            assert srv.run(run_id)["status"] == "interrupted"
            last = srv.events(run_id)[-1]["id"]
            assert ev["id"] <= last
            assert srv.post(f"/runs/{run_id}/resume").status_code == 200
        wait_for_event(srv, run_id, "step", after=last)
        assert srv.post(f"/runs/{run_id}/stop").status_code == 200
        wait_status(srv, run_id, "stopped")
        stored = srv.events(run_id)
        steps = [e["step"] for e in stored if e["type"] == "step"]
        assert steps == list(range(1, len(steps) + 1))
        ids = [e["id"] for e in stored]
        assert ids == sorted(set(ids))
    finally:
        srv.stop()
