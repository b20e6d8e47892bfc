"""Schemathesis against the real server's own OpenAPI document, over HTTP.

`protoscope serve` runs in a subprocess with its own data folder and SQLite file; schemathesis
reads `/openapi.json` from it and generates requests for every operation — valid ones
(positive) and ones that break the schema (negative) — and every answer is checked:

- never a 5xx (`not_a_server_error`);
- the body conforms to the documented response schema, with the documented content type
  (`response_schema_conformance`, `content_type_conformance`).

Generated runs must not train: a "blocker" run takes the only training slot and its process is
frozen with SIGSTOP before it gets past its imports, so every run the fuzzer creates waits in
the queue (and is stopped at once, which is immediate for a queued run). The blocker itself
is never stopped or resumed by generated requests (its id is swapped for an unknown one).
Analyses of checkpoints get ids that exist in no store here: their parameters are validated
(422) and the lookup answers 404; real checkpoints under hostile parameters are the subject
of tests/robustness/test_hostile_input.py, where each analysis is run once instead of
thousands of times.

The fast test (`make test`) sends a few hundred requests; the soak test (`make soak`) at
least 1,000.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.processes import is_alive
from tests.support import backend_server

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

SERVER_ENV = {
    "PROTOSCOPE_MONITOR_INTERVAL_S": "0.2",
    "PROTOSCOPE_SHUTDOWN_GRACE_S": "2",
    "PROTOSCOPE_SSE_PING_S": "1",
    "PROTOSCOPE_ANALYSIS_WAIT_S": "0",
    # A small upload limit: generated multipart bodies are tiny anyway.
    "PROTOSCOPE_MAX_UPLOAD_MB": "2",
}
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
MISSING_CHECKPOINT = 987_654_321  # no store here has that many checkpoints
MISSING_RUN = 987_654_320
BLOCKER = {
    "method": "swav",
    "dataset": "shapes",
    "epochs": 1,
    "image_size": 16,
    "num_train": 64,
    "batch_size": 32,
    "width": 8,
    "amp": False,
    "name": "fuzz blocker",
}


@dataclass
class Tally:
    requests: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class Target:
    url: str
    blocker_id: int
    blocker_pid: int


def _freeze_blocker(url: str) -> tuple[int, int]:
    resp = requests.post(f"{url}/runs", json=BLOCKER, timeout=30)
    assert resp.status_code == 201, resp.text
    run_id = resp.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = requests.get(f"{url}/runs/{run_id}", timeout=10).json()
        if run["status"] == "running" and run["pid"]:
            os.kill(run["pid"], signal.SIGSTOP)
            return run_id, run["pid"]
        time.sleep(0.02)
    raise AssertionError(f"the blocker run never started: {run}")


@contextlib.contextmanager
def fuzz_server(tmp: Path) -> Iterator[Target]:
    with backend_server(tmp / "data", SERVER_ENV) as url:
        run_id, pid = _freeze_blocker(url)
        try:
            yield Target(url, run_id, pid)
        finally:
            # Stop everything the fuzzer queued, then end the frozen blocker for good.
            with contextlib.suppress(requests.RequestException):
                queued = requests.get(
                    f"{url}/runs", params={"status": "queued", "limit": 1000}, timeout=10
                ).json()
                for run in queued:
                    requests.post(f"{url}/runs/{run['id']}/stop", timeout=10)
            if is_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _pin(case: Any, target: Target) -> None:
    """Keep generated requests off the blocker and off analyses that would really compute."""
    params = case.path_parameters or {}
    path = case.operation.path
    on_blocker = params.get("run_id") == target.blocker_id
    if on_blocker and path.endswith(("/stop", "/resume")):
        params["run_id"] = MISSING_RUN
    if "checkpoint_id" in params and path != "/checkpoints/{checkpoint_id}":
        params["checkpoint_id"] = MISSING_CHECKPOINT
    if path == "/compare" and isinstance(case.query, dict):
        for key in ("a", "b"):
            if isinstance(case.query.get(key), int):
                case.query[key] = MISSING_CHECKPOINT


def _fuzz_operation(
    op: Any, mode: Any, target: Target, session: requests.Session, n: int, tally: Tally
) -> None:
    # SSE streams of a live (blocked) run never end: only check they open and answer.
    stream = op.path == "/runs/{run_id}/events"

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        _pin(case, target)
        try:
            if stream:
                # Opened by hand so the endless body is never read: headers, then close.
                kwargs = case.as_transport_kwargs(base_url=target.url)
                resp = session.request(**kwargs, stream=True, timeout=(5, 10))
                if resp.status_code == 200:
                    resp.close()
            else:
                resp = case.call(base_url=target.url, session=session, timeout=30)
        except requests.RequestException as e:
            tally.failures.append(f"{op.label} [{mode.value}]: {type(e).__name__}: {e}")
            return
        tally.requests += 1
        tally.by_operation[op.label] = tally.by_operation.get(op.label, 0) + 1
        tally.statuses[resp.status_code] = tally.statuses.get(resp.status_code, 0) + 1
        if stream and resp.status_code == 200:
            if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                tally.failures.append(f"{op.label}: 200 without text/event-stream: {resp.headers}")
            return
        try:
            case.validate_response(resp, checks=CHECKS)
        except (AssertionError, FailureGroup) as e:  # every failed check, with a curl to repeat
            tally.failures.append(
                f"{op.label} [{mode.value}] → {resp.status_code}: {str(e)[:1500]}"
            )

    try:
        one()
    except Unsatisfiable:
        # Nothing to negate (GET /health has no parameters): the positive mode covers it.
        assert mode == schemathesis.GenerationMode.NEGATIVE, op.label


def fuzz(target: Target, per_operation: int) -> Tally:
    """Generate and send requests to every operation; collect failures instead of stopping."""
    schema = schemathesis.openapi.from_url(f"{target.url}/openapi.json")
    tally = Tally()
    session = requests.Session()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    for op in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            _fuzz_operation(op, mode, target, session, per_operation, tally)
    return tally


def _report(tally: Tally) -> str:
    lines = [f"{tally.requests} requests; statuses {dict(sorted(tally.statuses.items()))}"]
    lines += [f"  {n:4d}  {label}" for label, n in sorted(tally.by_operation.items())]
    return "\n".join(lines)


def _check(tally: Tally, minimum: int) -> None:
    unique = list(dict.fromkeys(tally.failures))
    assert not unique, f"{len(unique)} failing requests:\n\n" + "\n\n".join(unique[:15])
    assert tally.requests >= minimum, _report(tally)
    assert not any(code >= 500 for code in tally.statuses), _report(tally)
    # Both kinds of answers were seen: generation reached the handlers and the validators.
    assert any(200 <= c < 300 for c in tally.statuses) and 422 in tally.statuses, _report(tally)


def test_schema_fuzz_fast(tmp_path: Path) -> None:
    """A few hundred generated requests across every operation (make test)."""
    with fuzz_server(tmp_path) as target:
        tally = fuzz(target, per_operation=12)
        frozen_ok = is_alive(target.blocker_pid)
    print(_report(tally))
    _check(tally, minimum=250)
    assert frozen_ok, "the blocker run's process died: generated requests reached it"


@pytest.mark.soak
def test_schema_fuzz_soak(tmp_path: Path) -> None:
    """At least 1,000 generated requests (make soak)."""
    with fuzz_server(tmp_path) as target:
        tally = fuzz(target, per_operation=60)
    print(_report(tally))
    _check(tally, minimum=1000)
