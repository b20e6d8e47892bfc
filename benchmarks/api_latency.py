"""API latency while a run trains: `GET /runs` p50/p99, and step → SSE delivery delay.

    python benchmarks/api_latency.py [--requests 200] [--minutes 1]

Starts `protoscope serve` (default settings) on a free port with a fresh data folder, measures
`GET /runs` on the idle server, then starts a default SwAV run on `shapes` with a time budget
and, while it trains, measures `GET /runs` again and the delay between each step event's
`time` (stamped by the trainer when the step ends) and its arrival at an SSE client. Writes
benchmarks/out/api_latency.json (or --json PATH) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sse_client import EventStream  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary_ms(values: list[float]) -> dict[str, float | int]:
    """p50 / p99 / mean / max in milliseconds of values given in seconds."""
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return {"n": 0}

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))]

    return {
        "n": len(ms),
        "p50": round(pct(50), 2),
        "p99": round(pct(99), 2),
        "mean": round(statistics.fmean(ms), 2),
        "max": round(ms[-1], 2),
    }


def time_get_runs(session: requests.Session, url: str, n: int, pause: float) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = session.get(f"{url}/runs", timeout=30)
        out.append(time.perf_counter() - t0)
        resp.raise_for_status()
        time.sleep(pause)
    return out


def follow(url: str, run_id: int, delays: list[float], stop: threading.Event) -> None:
    """Record arrival − trainer time for every step event until the run ends or `stop`."""
    with EventStream(f"{url}/runs/{run_id}/events", timeout=(5, 120)) as stream:
        for message in stream:
            arrived = time.time()
            if message.event == "step":
                delays.append(arrived - float(message.json()["time"]))
            if message.event == "end" or stop.is_set():
                return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="GET /runs requests per phase")
    ap.add_argument("--pause", type=float, default=0.05, help="seconds between requests")
    ap.add_argument("--minutes", type=float, default=1.0, help="the run's training budget")
    ap.add_argument("--json", type=Path, default=OUT / "api_latency.json", help="output")
    args = ap.parse_args()

    data = Path(tempfile.mkdtemp(prefix="protoscope-latency-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data / "server.log").open("wb")
    cmd = [sys.executable, "-m", "protoscope", "serve", "--port", str(port), "--data", str(data)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTOSCOPE_")}
    server = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start; see {data / 'server.log'}")
            time.sleep(0.2)
        session = requests.Session()
        idle = time_get_runs(session, url, args.requests, args.pause)

        body = {"method": "swav", "dataset": "shapes", "max_minutes": args.minutes}
        run = session.post(f"{url}/runs", json=body, timeout=30).json()
        delays: list[float] = []
        stop = threading.Event()
        follower = threading.Thread(target=follow, args=(url, run["id"], delays, stop))
        follower.start()
        while not delays:  # measure while it really trains, not while it loads
            if not follower.is_alive():
                ended = session.get(f"{url}/runs/{run['id']}", timeout=30).json()
                raise SystemExit(f"the run ended before its first step: {ended['reason']}")
            time.sleep(0.1)
        busy = time_get_runs(session, url, args.requests, args.pause)
        follower.join(timeout=60 * args.minutes + 120)
        stop.set()
        final = session.get(f"{url}/runs/{run['id']}", timeout=30).json()
        steps = session.get(
            f"{url}/runs/{run['id']}/metrics", params={"type": "step", "limit": 5000}, timeout=30
        ).json()["events"]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "get_runs_idle_ms": summary_ms(idle),
        "get_runs_while_training_ms": summary_ms(busy),
        "step_to_sse_client_ms": summary_ms(delays),
        "run": {
            "status": final["status"],
            "reason": final["reason"],
            "steps": final["step"],
            "steps_per_s": round(len(steps) / max(1e-9, steps[-1]["train_seconds"]), 1)
            if steps
            else None,
        },
        "notes": "GET /runs sequential on one keep-alive connection, "
        f"{args.pause * 1000:.0f} ms apart; default server settings (event poll 50 ms, "
        "training process at nice 5); SSE delay = arrival time − the step event's `time`.",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
