"""What the tests share: real servers, a tiny run configuration, waiting on a condition.

The servers are the backend (`protoscope serve`) and the Streamlit app, on free ports.

Each runs as its own process with its own data folder, exactly as a user starts them; tests
talk to them over HTTP. Nothing here mocks anything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from backend.processes import stop_group
from models.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Poll `url` until it answers 200; fail with the process's log if it died first."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(
                f"server exited with {proc.returncode} before {url} answered:\n{out}"
            )
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = type(e).__name__
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s (last: {last})")


def _default_sigint() -> None:
    """In the child, before exec: Ctrl-C's signal does its default again.

    A test run started in the background (`cmd &`, as CI may do) inherits SIGINT *ignored*,
    and so would every server it starts; `stop` would then always wait out its grace period
    and kill, and never see a clean shutdown.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGINT (what Ctrl-C sends), then SIGKILL if it lingers; the whole process group."""
    stop_group(proc, grace)


@contextlib.contextmanager
def backend_server(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`protoscope serve` on a free port with `data_dir`; yields its base URL.

    Its output goes to `data_dir/../backend.log` (a pipe nobody reads would fill and block it).
    """
    log = data_dir.parent / f"backend-{data_dir.name}.log"
    port = free_port()
    cmd = [sys.executable, "-m", "protoscope", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--data", str(data_dir)]
    # No UMAP warm-up: a test server that never draws a map would compile numba for nothing.
    env = {**os.environ, "PROTOSCOPE_WARM_UMAP": "0", **(env or {})}
    with _serving(cmd, env, log, port, "/health") as url:
        yield url


@contextlib.contextmanager
def _serving(
    cmd: list[str], env: dict[str, str], log: Path, port: int, health: str
) -> Iterator[str]:
    """Start `cmd` as its own process group, wait until `health` answers, stop it after."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}{health}", timeout=60, proc=proc, log=log)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def frontend_server(api_url: str, log: Path) -> Iterator[str]:
    """`streamlit run frontend/app.py` headless on a free port, talking to `api_url`."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "frontend" / "app.py")]
    cmd += ["--server.headless", "true", "--server.port", str(port)]
    cmd += ["--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with _serving(
        cmd, {**os.environ, "PROTOSCOPE_API": api_url}, log, port, "/_stcore/health"
    ) as url:
        yield url


def data_files(folder: Path) -> set[str]:
    """Every file under a backend's data folder, except the database's own files."""
    if not folder.exists():
        return set()
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and "protoscope.sqlite3" not in p.name
    }


def upload_checkpoint(
    api: str, payload: bytes, filename: str = "ck.pt", timeout: float = 30, **data: str
) -> requests.Response:
    """POST a checkpoint file to the backend, as the app's upload does."""
    files = {"file": (filename, payload, "application/octet-stream")}
    return requests.post(f"{api}/checkpoints", files=files, data=data, timeout=timeout)


def finished_run(data_dir: Path, config: dict[str, Any], events: list[dict[str, Any]]) -> int:
    """A completed run with these events, written into a backend's SQLite file as its worker
    would have written them (no worker picks a completed run up); its id."""
    from backend.store import Store, dumps

    store = Store(data_dir / "protoscope.sqlite3", data_dir)
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO runs (method, dataset, config, request, status, out_dir, created_at, "
            "queued_at) VALUES (?, 'shapes', ?, '{}', 'completed', 'runs/finished', ?, ?)",
            (config.get("method", "swav"), dumps(config), time.time(), time.time()),
        )
        run_id = int(cur.lastrowid or 0)
    for event in events:
        store.add_event(run_id, event)
    store.close()
    return run_id


def wait_until(
    what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1
) -> Any:
    """Poll `check` until it returns something truthy (returned); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def tiny_run_config(method: str = "swav", **over: object) -> TrainConfig:
    """A configuration that trains in about a second on 2 CPU cores (16-px shapes, 256 images)."""
    base: dict[str, object] = {
        "method": method,
        "width": 8,
        "epochs": 2,
        "batch_size": 32,
        "seed": 3,
        "data": {"name": "shapes", "num_train": 256, "image_size": 16},
        "swav": {
            "num_prototypes": 10,
            "hidden_dim": 32,
            "feat_dim": 16,
            "freeze_prototypes_iters": 2,
        },
        "pcl": {
            "num_clusters": [8, 12],
            "queue_length": 64,
            "warmup_epochs": 1,
            "hidden_dim": 32,
            "feat_dim": 16,
        },
        "optim": {"lr": 0.1},
        "eval_max_images": 200,
        "amp": False,
    }
    base.update(over)
    return TrainConfig.model_validate(base)


# tiny_run_config above, as a POST /runs body: contract fields, the named
# fields, and the rest through `config` (a partial TrainConfig tree).
TINY_RUN_BODY: dict[str, Any] = {
    "method": "swav",
    "dataset": "shapes",
    "epochs": 2,
    "epsilon": 0.05,
    "batch_size": 32,
    "num_prototypes": 10,
    "image_size": 16,
    "num_train": 256,
    "width": 8,
    "seed": 3,
    "lr": 0.1,
    "freeze_prototypes_iters": 2,
    "amp": False,
    "config": {"swav": {"hidden_dim": 32, "feat_dim": 16}, "eval_max_images": 200},
}
