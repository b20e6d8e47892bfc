"""`scripts/demo.py` (what `make demo` runs): it prints the app's URL on a line of its own, and
stopping it — Ctrl-C, or a plain `kill` — stops both servers it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "signals",
    [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
    ids=["ctrl-c", "kill", "ctrl-c-twice"],
)
def test_the_demo_prints_its_url_and_stops_both_servers(
    tmp_path: Path, signals: list[signal.Signals]
) -> None:
    cmd = [sys.executable, "scripts/demo.py", "--no-runs", "--data", str(tmp_path / "data")]
    cmd += ["--backend-port", str(free_port()), "--port", str(free_port())]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # as a terminal would: the signal goes to demo.py alone
    )
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"demo.py ended early:\n{''.join(lines)}"
            lines.append(line)
            if re.fullmatch(r"http://127\.0\.0\.1:\d+\n", line):
                break
        else:
            pytest.fail(f"no URL line within {START_TIMEOUT_S:.0f} s:\n{''.join(lines)}")
        app = lines[-1].strip()
        backend = re.search(r"backend on (http://127\.0\.0\.1:\d+)", "".join(lines))
        assert backend, lines
        api = backend.group(1)
        assert _answers(f"{app}/_stcore/health") and _answers(f"{api}/health")

        for i, sig in enumerate(signals):
            if i:  # an impatient second Ctrl-C, while the servers are being stopped
                time.sleep(0.3)
            os.kill(proc.pid, sig)
        rc = proc.wait(timeout=STOP_TIMEOUT_S)
        out = "".join(lines) + proc.stdout.read()
        assert rc == 0, out
        assert "demo: stopped" in out and "Traceback" not in out, out
        assert not _answers(f"{app}/_stcore/health"), "the app still answers"
        assert not _answers(f"{api}/health"), "the backend still answers"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
