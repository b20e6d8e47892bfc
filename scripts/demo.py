"""`make demo`: the backend, the app, and two live runs on `shapes` — one healthy, one collapsing.

Starts `protoscope serve` and `streamlit run frontend/app.py` on 127.0.0.1, asks the backend for
a default SwAV run and the same run with equipartition off (the teaching case: it collapses to
one prototype within a minute), prints the app's URL on a line of its own, and on Ctrl-C stops
the runs and both servers. `--sweep` also queues the demo sweep first (SwAV's ε × K on shapes,
`--sweep-steps` each, models/sweep.py): the Collapse map page then fills in where it collapses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from backend.processes import stop_group

ROOT = Path(__file__).resolve().parent.parent

DEMO_RUNS = [
    {"name": "demo: SwAV (default)", "method": "swav", "dataset": "shapes"},
    {
        "name": "demo: SwAV, equipartition off (collapses)",
        "method": "swav",
        "dataset": "shapes",
        "equipartition": False,
    },
]


def port_or_free(preferred: int) -> int:
    """`preferred` when nothing listens there, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {proc.args[2:4]} exited with {proc.returncode}; see the log")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"demo: {url} did not answer within {timeout:.0f} s")


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_group(proc, grace=15.0)


def start_sweep(api: str, steps: int) -> None:
    """Queue the demo sweep: one run per cell, trained before the demo's two runs."""
    from models.sweep import demo_grid

    body = {"name": "demo: ε × K", **demo_grid(steps).model_dump(mode="json")}
    r = requests.post(f"{api}/sweeps", json=body, timeout=60)
    if r.status_code >= 400:
        raise SystemExit(f"demo: the backend refused the demo sweep: {r.text}")
    sweep = r.json()
    print(
        f"demo: started sweep {sweep['id']}: {sweep['num_cells']} cells of {steps} steps, "
        f"{sweep['max_parallel']} at once (page: Collapse map)",
        flush=True,
    )


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _still_stopping(signum: int, frame: object) -> None:
    print("demo: still stopping (at most 15 s per server)…", flush=True)


def main() -> int:
    # `kill PID` or a closed terminal stops the servers as Ctrl-C does; without this the
    # interpreter would die at once and leave both servers (and their runs) behind. SIGINT too:
    # started in the background (`make demo &`) it arrives ignored, and the servers would
    # inherit that and ignore the stop request.
    signal.signal(signal.SIGINT, _stop_like_ctrl_c)
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    signal.signal(signal.SIGHUP, _stop_like_ctrl_c)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="protoscope-data", help="the backend's data folder")
    ap.add_argument("--backend-port", type=int, default=8000)
    ap.add_argument("--port", type=int, default=8501, help="the app's port")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget of each run")
    ap.add_argument("--no-runs", action="store_true", help="start the servers only")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="also start the demo sweep (ε ∈ {0.005, 0.02, 0.05, 0.2} × K ∈ {16, 128}); its "
        "cells are queued before the two runs",
    )
    ap.add_argument("--sweep-steps", type=int, default=600, help="training steps per sweep cell")
    args = ap.parse_args()

    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    logs = data / "logs"
    logs.mkdir(exist_ok=True)
    bport, fport = port_or_free(args.backend_port), port_or_free(args.port)
    api = f"http://127.0.0.1:{bport}"
    app = f"http://127.0.0.1:{fport}"
    py = sys.executable

    # Both demo runs train at once, side by side.
    backend_env = {"PROTOSCOPE_MAX_CONCURRENT_RUNS": "2"}
    backend = start(
        [
            py,
            "-m",
            "protoscope",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(bport),
            "--data",
            str(data),
        ],
        backend_env,
        logs / "backend.log",
    )
    frontend = None
    try:
        print(f"demo: starting the backend on {api} (log: {logs / 'backend.log'})", flush=True)
        wait_http(f"{api}/health", backend)
        if args.sweep:
            start_sweep(api, args.sweep_steps)
        if not args.no_runs:
            for body in DEMO_RUNS:
                r = requests.post(
                    f"{api}/runs", json={**body, "max_minutes": args.minutes}, timeout=30
                )
                if r.status_code >= 400:
                    raise SystemExit(f"demo: the backend refused {body['name']!r}: {r.text}")
                print(f"demo: started run {r.json()['id']}: {body['name']}", flush=True)
        frontend = start(
            [
                py,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "frontend" / "app.py"),
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(fport),
                "--browser.gatherUsageStats",
                "false",
            ],
            {"PROTOSCOPE_API": api},
            logs / "frontend.log",
        )
        wait_http(f"{app}/_stcore/health", frontend)
        print("demo: open this in a browser (Ctrl-C stops everything):", flush=True)
        print(app, flush=True)
        while backend.poll() is None and frontend.poll() is None:
            time.sleep(0.5)
        print("demo: a server stopped on its own; see the logs in " + str(logs), flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: stopping…", flush=True)
        return 0
    finally:
        # A second Ctrl-C (or a kill) while stopping must not abort the orderly stop: that
        # left a traceback and both servers running. `stop` is bounded (grace, then SIGKILL).
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _still_stopping)
        if frontend is not None:
            stop(frontend)
        stop(backend)  # the backend stops its training processes on shutdown
        print("demo: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
