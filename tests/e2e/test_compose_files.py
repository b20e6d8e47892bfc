"""The compose files, read as Docker reads them (no engine runs in `make test`).

`make docker-smoke` builds and runs the CPU stack for real; these checks keep the promises that
one cannot see without a GPU or a second host: only loopback ports, the token required, the GPU
reserved in the default file and not in the CPU one, and no gigabytes sent as build context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = "compose.base.yml"
FILES = ("docker-compose.yml", "docker-compose.cpu.yml")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def _resolved(name: str) -> dict[str, dict[str, Any]]:
    """Each service with its `extends` applied (a shallow merge, as compose does for these)."""
    services: dict[str, dict[str, Any]] = {}
    for svc_name, svc in _load(name)["services"].items():
        ext = svc.get("extends")
        merged: dict[str, Any] = {}
        if ext:
            merged.update(_load(ext["file"])["services"][ext["service"]])
        merged.update({k: v for k, v in svc.items() if k != "extends"})
        services[svc_name] = merged
    return services


@pytest.mark.parametrize("name", FILES)
def test_both_services_come_from_the_base_file(name: str) -> None:
    raw = _load(name)["services"]
    assert set(raw) == {"backend", "frontend"}
    for svc_name, svc in raw.items():
        assert svc["extends"] == {"file": BASE, "service": svc_name}
    assert raw["frontend"]["depends_on"] == ["backend"]


@pytest.mark.parametrize("name", FILES)
def test_ports_are_published_on_loopback_only_and_the_token_is_required(name: str) -> None:
    for svc in _resolved(name).values():
        assert svc["ports"], svc
        for port in svc["ports"]:
            assert str(port).startswith("127.0.0.1:"), port
        token = svc["environment"]["PROTOSCOPE_TOKEN"]
        assert token.startswith("${PROTOSCOPE_TOKEN:?"), token  # refuses to start without one
        dockerfile = ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]
        assert dockerfile.is_file(), dockerfile


def test_the_backend_keeps_its_data_on_the_volume() -> None:
    backend = _resolved("docker-compose.yml")["backend"]
    assert [v.split(":")[-1] for v in backend["volumes"]] == ["/data"]
    assert backend["environment"]["PROTOSCOPE_DATA"] == "/data"
    assert _resolved("docker-compose.yml")["frontend"]["environment"]["PROTOSCOPE_API"] == (
        "http://backend:8000"
    )


def test_the_gpu_is_reserved_by_the_default_file_only() -> None:
    gpu = _resolved("docker-compose.yml")["backend"]["deploy"]["resources"]["reservations"]
    assert gpu["devices"] == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in _resolved("docker-compose.cpu.yml")["backend"]


def test_the_build_context_leaves_out_the_virtualenv_and_run_data() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "protoscope-data", "runs"} <= ignored
