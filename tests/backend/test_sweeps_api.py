"""POST/GET /sweeps on a real server: cells are ordinary queued runs, capped by the cores, and a
finished cell's verdict is the Diagnose report of its last checkpoint (the same cached one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import TINY_RUN_BODY, backend_server, wait_until

VERDICTS = {
    "healthy",
    "partial collapse",
    "uniform collapse",
    "one-cluster collapse",
    "dimensional collapse",
}
# TINY_RUN_BODY's named fields, shared by every cell (its `config` goes as the sweep's).
TINY_FIELDS = {
    k: v for k, v in TINY_RUN_BODY.items() if k not in ("method", "dataset", "epochs", "config")
}


def tiny_sweep(values: list[float], max_steps: int = 4, **extra: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "method": "swav",
        "dataset": "shapes",
        "axes": [{"field": "epsilon", "values": values}],
        "max_steps": max_steps,
        "fields": TINY_FIELDS,
        "config": TINY_RUN_BODY["config"],
        **extra,
    }


def detail_text(r: requests.Response) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else " | ".join(d["msg"] for d in detail)


@pytest.mark.timeout(300)
def test_a_sweep_runs_its_cells_as_runs_and_maps_their_verdicts(tmp_path: Path) -> None:
    env = {"PROTOSCOPE_MAX_CONCURRENT_RUNS": "8"}
    with backend_server(tmp_path / "data", env=env) as api:
        # Bad grids: 4xx naming what to fix, nothing created.
        bad = [
            ({"axes": [{"field": "nope", "values": [1]}]}, 422, "unknown field 'nope'"),
            (tiny_sweep([0.05, 0.001]), 422, "cell 1 (epsilon=0.001)"),
            (tiny_sweep([0.05], max_steps=0), 422, "max_steps"),
            ({**tiny_sweep([0.05]), "dataset": "cifar10"}, 400, "cell 0 (epsilon=0.05)"),
            ({**tiny_sweep([0.05]), "surprise": 1}, 422, "surprise"),
        ]
        for body, status, says in bad:
            r = requests.post(f"{api}/sweeps", json=body, timeout=30)
            assert r.status_code == status, (body, r.text)
            assert says in (detail_text(r) + str(r.json())), r.text
        assert requests.get(f"{api}/runs", timeout=10).json() == []
        assert requests.get(f"{api}/sweeps/99", timeout=10).status_code == 404

        r = requests.post(f"{api}/sweeps", json=tiny_sweep([0.03, 0.3]), timeout=30)
        assert r.status_code == 201, r.text
        sweep = r.json()
        # As many at once as the cores allow, not the 8 asked for.
        assert sweep["max_parallel"] == min(8, os.cpu_count() or 1)
        assert [c["coords"] for c in sweep["cells"]] == [{"epsilon": 0.03}, {"epsilon": 0.3}]
        runs = {r["id"]: r for r in requests.get(f"{api}/runs", timeout=10).json()}
        for cell in sweep["cells"]:  # each cell is a run of its own, on Runs
            run = runs[cell["run_id"]]
            assert run["config"]["swav"]["epsilon"] == cell["coords"]["epsilon"]
            assert run["config"]["max_steps"] == 4 and run["name"].startswith("tiny: epsilon=")

        def ended() -> bool:
            # diagnose=false: looking starts no report, so the reports below are the server's.
            got = requests.get(f"{api}/sweeps/{sweep['id']}?diagnose=false", timeout=30).json()
            running = sum(1 for c in got["cells"] if c["status"] == "running")
            assert running <= got["max_parallel"]
            return all(c["status"] in ("completed", "stopped", "failed") for c in got["cells"])

        wait_until("every cell to end", ended, timeout=240, interval=0.5)
        # Each cell's report is started when its process ends, with nobody asking for it.
        reports = tmp_path / "data" / "cache" / "analysis"
        wait_until(
            "a Diagnose report of each cell, computed unasked",
            lambda: len(list(reports.glob("diagnostics-*.json"))) == 2,
            timeout=240,
            interval=0.5,
        )
        final = requests.get(f"{api}/sweeps/{sweep['id']}", timeout=30).json()
        assert all(c["verdict_source"] == "diagnostics" for c in final["cells"]), final
        assert final["num_finished"] == 2
        for cell in final["cells"]:
            assert cell["status"] == "completed" and cell["step"] == 4
            assert cell["verdict"] in VERDICTS and cell["verdict_reason"]
            assert 0.0 <= cell["knn_top1"] <= 1.0 and cell["loss"] > 0
            # The Diagnose page's request finds the very report the cell shows, ready.
            report = requests.get(
                f"{api}/checkpoints/{cell['checkpoint_id']}/diagnostics", timeout=30
            )
            assert report.status_code == 200
            assert report.json()["verdict"] == cell["verdict"]
            assert report.json()["knn_top1"] == cell["knn_top1"]
        listed = requests.get(f"{api}/sweeps", timeout=10).json()
        assert [(s["id"], s["num_cells"], s["num_finished"]) for s in listed] == [
            (sweep["id"], 2, 2)
        ]

        # A long sweep stops as a whole: every cell ends, none is left queued or running.
        long = requests.post(
            f"{api}/sweeps", json=tiny_sweep([0.05, 0.1, 0.2], max_steps=10**6), timeout=30
        ).json()
        stopped = requests.post(f"{api}/sweeps/{long['id']}/stop", timeout=30)
        assert stopped.status_code == 200

        def all_ended() -> bool:
            got = requests.get(f"{api}/sweeps/{long['id']}?diagnose=false", timeout=30).json()
            return all(c["status"] in ("stopped", "completed") for c in got["cells"])

        wait_until("the stopped sweep's cells to end", all_ended, timeout=120, interval=0.5)
