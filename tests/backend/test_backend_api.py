"""The backend's HTTP API over real HTTP: `protoscope serve` on a free port, a real SQLite file.

Covers every endpoint that needs no training process (those are in test_backend_runs.py):
health, OpenAPI, data sets and their images, validation of POST /runs, unknown ids, checkpoint
uploads (valid, pickle-carrying, truncated, oversized) and every analysis of an uploaded
checkpoint, plus the token and the refusal to listen beyond loopback without one.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.support import ROOT, backend_server, data_files, finished_run, upload_checkpoint

# Small enough that the oversized-upload test sends little, large enough for a tiny checkpoint.
UPLOAD_LIMIT_MB = 2
ANALYSIS_TIMEOUT_S = 180
TIMEOUT = 30


def _clean_env() -> dict[str, str]:
    """Variables of the developer's shell must not change what the tests start."""
    return {k: "" for k in os.environ if k.startswith("PROTOSCOPE_")}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api") / "data"


@pytest.fixture(scope="module")
def api(data_dir: Path) -> Iterator[str]:
    env = {**_clean_env(), "PROTOSCOPE_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB)}
    with backend_server(data_dir, env=env) as url:
        yield url


def _until_ready(url: str, params: dict[str, Any] | None = None) -> requests.Response:
    """GET until the answer is no longer 202, checking every 202's progress shape."""
    deadline = time.monotonic() + ANALYSIS_TIMEOUT_S
    while True:
        r = requests.get(url, params=params, timeout=TIMEOUT)
        if r.status_code != 202:
            return r
        body = r.json()
        assert body["status"] == "running"
        assert 0.0 <= body["progress"] <= 1.0
        assert isinstance(body["message"], str)
        assert time.monotonic() < deadline, f"{url} still computing: {body}"
        time.sleep(0.5)


def _detail(r: requests.Response) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else str(detail)


# --- service -------------------------------------------------------------------------------------
def test_health_and_openapi(api: str) -> None:
    r = requests.get(f"{api}/health", timeout=TIMEOUT)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["token_required"] is False
    assert body["max_concurrent_runs"] == 1
    spec = requests.get(f"{api}/openapi.json", timeout=TIMEOUT).json()
    paths = set(spec["paths"])
    for path in (
        "/health",
        "/datasets",
        "/datasets/{name}/images/{index}",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/stop",
        "/runs/{run_id}/resume",
        "/runs/{run_id}/events",
        "/runs/{run_id}/metrics",
        "/checkpoints",
        "/checkpoints/{checkpoint_id}/diagnostics",
        "/checkpoints/{checkpoint_id}/embedding",
        "/checkpoints/{checkpoint_id}/prototypes",
        "/checkpoints/{checkpoint_id}/prototypes/{k}/gallery",
        "/checkpoints/{checkpoint_id}/images/{index}/neighbours",
        "/compare",
    ):
        assert path in paths, path
    # The bounds of the training config are part of the documented schema.
    epsilon = spec["components"]["schemas"]["RunCreate"]["properties"]["epsilon"]
    assert any("minimum" in s or "exclusiveMinimum" in s for s in epsilon.get("anyOf", [epsilon]))


def test_unknown_path_and_method_are_json(api: str) -> None:
    r = requests.get(f"{api}/nothing-here", timeout=TIMEOUT)
    assert r.status_code == 404 and "detail" in r.json()
    r = requests.delete(f"{api}/runs", timeout=TIMEOUT)
    assert r.status_code == 405 and "detail" in r.json()


# --- data sets -----------------------------------------------------------------------------------
def test_datasets(api: str) -> None:
    r = requests.get(f"{api}/datasets", timeout=TIMEOUT)
    assert r.status_code == 200
    by_name = {d["name"]: d for d in r.json()}
    assert {"shapes", "digits", "cifar10", "stl10", "imagefolder"} <= set(by_name)
    assert by_name["shapes"]["needs_root"] is False
    assert by_name["cifar10"]["needs_root"] is True


def test_dataset_image_png_and_thumbnail(api: str) -> None:
    r = requests.get(f"{api}/datasets/shapes/images/3", timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (32, 32)
    r = requests.get(f"{api}/datasets/shapes/images/3", params={"size": 64}, timeout=TIMEOUT)
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)
    r = requests.get(
        f"{api}/datasets/digits/images/0", params={"split": "train", "size": 8}, timeout=TIMEOUT
    )
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (8, 8)


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/datasets/nope/images/0", {}, 404),
        ("/datasets/shapes/images/99999", {}, 404),
        ("/datasets/shapes/images/-1", {}, 422),
        ("/datasets/shapes/images/0", {"size": 4}, 422),
        ("/datasets/shapes/images/0", {"size": 10_000}, 422),
        ("/datasets/shapes/images/0", {"split": "val"}, 422),
        # A data set root outside the allowed folders, plainly or by `..`.
        ("/datasets/cifar10/images/0", {"data_root": "/etc"}, 400),
        ("/datasets/imagefolder/images/0", {"data_root": "../../../../etc"}, 400),
        ("/datasets/imagefolder/images/0", {"data_root": "datasets/../../.."}, 400),
        # Inside the allowed folders but missing: the data set cannot be loaded.
        ("/datasets/cifar10/images/0", {"data_root": "cifar-missing"}, 400),
    ],
)
def test_dataset_image_errors(api: str, path: str, params: dict[str, Any], status: int) -> None:
    r = requests.get(f"{api}{path}", params=params, timeout=TIMEOUT)
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text and "detail" in r.json()


# --- POST /runs validation -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field", "allowed"),
    [
        ({"method": "swav", "dataset": "shapes", "epochs": 1, "epsilon": 0.0}, "epsilon", "≤"),
        ({"method": "swav", "dataset": "shapes", "epochs": 0, "epsilon": 0.05}, "epochs", "≤"),
        ({"method": "swav", "dataset": "shapes", "batch_size": 1}, "batch_size", "≤"),
        ({"method": "swav", "dataset": "shapes", "num_prototypes": 1}, "num_prototypes", "≤"),
        ({"method": "mocov9", "dataset": "shapes"}, "method", None),
        ({"method": "swav", "dataset": "mnist-9"}, "dataset", None),
        ({"method": "swav", "dataset": "shapes", "colour": "red"}, "colour", None),
        ({"method": "swav", "overrides": {"swav.epsilon": 99.0}}, "epsilon", "≤"),
        ({"method": "swav", "overrides": {"swav.nonsense": 1}}, "nonsense", None),
        ({"method": "swav", "overrides": {"bad key!": 1}}, "overrides", None),
    ],
)
def test_create_run_rejects_bad_config(
    api: str, body: dict[str, Any], field: str, allowed: str | None
) -> None:
    before = requests.get(f"{api}/runs", timeout=TIMEOUT).json()
    r = requests.post(f"{api}/runs", json=body, timeout=TIMEOUT)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(field in ".".join(map(str, e["loc"])) for e in errors), errors
    if allowed is not None:
        assert any(allowed in e["msg"] and field in e["msg"] for e in errors), errors
    assert requests.get(f"{api}/runs", timeout=TIMEOUT).json() == before  # nothing was created


@pytest.mark.parametrize(
    "body",
    [
        {"method": "swav", "dataset": "imagefolder", "data_root": "/etc"},
        {"method": "swav", "dataset": "imagefolder", "data_root": "../../../../../etc"},
        {"method": "swav", "dataset": "cifar10", "data_root": "datasets/../../../"},
        # A path smuggled in through the free-form config tree is checked as well.
        {"method": "swav", "dataset": "imagefolder", "config": {"data": {"root": "/etc"}}},
        {"method": "swav", "dataset": "imagefolder", "overrides": {"data.root": "/"}},
        # Needs a root and has none (no default folder exists).
        {"method": "pcl", "dataset": "stl10"},
    ],
)
def test_create_run_rejects_data_roots_outside(api: str, body: dict[str, Any]) -> None:
    r = requests.post(f"{api}/runs", json=body, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    assert "data" in _detail(r)


def test_unknown_ids_are_404(api: str) -> None:
    for method, path in [
        ("get", "/runs/4242"),
        ("post", "/runs/4242/stop"),
        ("post", "/runs/4242/resume"),
        ("get", "/runs/4242/events"),
        ("get", "/runs/4242/metrics"),
        ("get", "/checkpoints/4242/diagnostics"),
        ("get", "/checkpoints/4242/embedding"),
        ("get", "/checkpoints/4242/prototypes"),
        ("get", "/checkpoints/4242/prototypes/0/gallery"),
        ("get", "/checkpoints/4242/images/0/neighbours"),
        ("get", "/compare?a=4242&b=4243"),
    ]:
        r = requests.request(method, f"{api}{path}", timeout=TIMEOUT)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert isinstance(r.json()["detail"], str)
    r = requests.get(f"{api}/runs/abc", timeout=TIMEOUT)
    assert r.status_code == 422
    r = requests.get(f"{api}/runs/1/metrics", params={"limit": 5001}, timeout=TIMEOUT)
    assert r.status_code == 422


# --- uploads -------------------------------------------------------------------------------------
class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned > /tmp/protoscope-pwned",))


def test_upload_refuses_pickle_truncated_and_junk(
    api: str, data_dir: Path, swav_checkpoint: Path
) -> None:
    before = data_files(data_dir)
    good = swav_checkpoint.read_bytes()
    # torch.save of a real state dict with an object whose unpickling runs a command.
    import torch

    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}, "evil": _Evil()}, buf)
    cases = {
        "pickle-carrying": buf.getvalue(),
        "plain pickle": pickle.dumps(_Evil()),
        "truncated": good[: len(good) // 2],
        "junk": b"definitely not a checkpoint" * 100,
    }
    for what, payload in cases.items():
        r = upload_checkpoint(api, payload, filename=f"{what}.pt")
        assert r.status_code == 400, (what, r.status_code, r.text)
        detail = _detail(r)
        assert "checkpoint" in detail and "Traceback" not in detail, (what, detail)
        assert str(data_dir) not in detail  # no server paths leak
    assert not Path("/tmp/protoscope-pwned").exists()
    assert data_files(data_dir) == before  # nothing kept, not even a temp file
    r = requests.post(f"{api}/checkpoints", data=b"raw", timeout=TIMEOUT)
    assert r.status_code in (400, 415)
    r = requests.post(f"{api}/checkpoints", files={"other": ("x", b"1")}, timeout=TIMEOUT)
    assert r.status_code == 400
    assert data_files(data_dir) == before


def test_upload_too_large_is_413(api: str, data_dir: Path) -> None:
    before = data_files(data_dir)
    payload = os.urandom((UPLOAD_LIMIT_MB + 1) * 2**20)
    r = upload_checkpoint(api, payload, filename="big.pt")
    assert r.status_code == 413, r.text
    assert "limit" in _detail(r)

    # Without Content-Length (chunked), the limit is enforced while streaming.
    def chunks() -> Iterator[bytes]:
        boundary = b"--xyz"
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="b.pt"\r\n'
        yield b"Content-Type: application/octet-stream\r\n\r\n"
        for _ in range(UPLOAD_LIMIT_MB + 1):
            yield os.urandom(2**20)
        yield b"\r\n" + boundary + b"--\r\n"

    r = requests.post(
        f"{api}/checkpoints",
        data=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 413, r.text
    assert data_files(data_dir) == before


@pytest.fixture(scope="module")
def uploaded(api: str, swav_checkpoint: Path, swav_checkpoint_b: Path) -> tuple[int, int]:
    ids = []
    for path, name in ((swav_checkpoint, "tiny A"), (swav_checkpoint_b, "tiny B")):
        r = upload_checkpoint(api, path.read_bytes(), filename="last.pt", name=name)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids[0], ids[1]


def test_upload_valid_is_listed(api: str, data_dir: Path, uploaded: tuple[int, int]) -> None:
    listing = requests.get(f"{api}/checkpoints", timeout=TIMEOUT).json()
    by_id = {c["id"]: c for c in listing}
    a = by_id[uploaded[0]]
    assert a["kind"] == "upload" and a["name"] == "tiny A" and a["run_id"] is None
    assert a["method"] == "swav" and a["dataset"] == "shapes" and a["source"] == "protoscope"
    assert a["epoch"] == 2 and a["num_prototypes"] == 10
    assert (data_dir / a["path"]).is_file() and a["path"].startswith("uploads/")
    one = requests.get(f"{api}/checkpoints/{uploaded[0]}", timeout=TIMEOUT).json()
    assert one == a


# --- analyses ------------------------------------------------------------------------------------
def test_diagnostics_first_202_then_cached(api: str, uploaded: tuple[int, int]) -> None:
    url = f"{api}/checkpoints/{uploaded[0]}/diagnostics"
    params = {"max_images": 300}
    r = _until_ready(url, params)
    assert r.status_code == 200, r.text
    report = r.json()
    for key in ("verdict", "active_prototypes", "usage_entropy", "effective_rank", "knn_top1"):
        assert key in report
    t0 = time.perf_counter()
    again = requests.get(url, params=params, timeout=TIMEOUT)
    assert again.status_code == 200 and again.json() == report
    assert time.perf_counter() - t0 < 1.0  # served from the cache


def test_embedding_prototypes_gallery_neighbours(api: str, uploaded: tuple[int, int]) -> None:
    ck = uploaded[0]
    small = {"max_images": 300}
    r = _until_ready(f"{api}/checkpoints/{ck}/embedding", {**small, "max_fit": 300})
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    assert len(points) == 300 and {"index", "x", "y", "cluster"} <= set(points[0])

    r = _until_ready(f"{api}/checkpoints/{ck}/prototypes", {**small, "top_k": 4})
    assert r.status_code == 200, r.text
    protos = r.json()["prototypes"]
    assert len(protos) == 10 and all(len(p["images"]) <= 4 for p in protos)
    k = protos[0]["prototype"]
    r = _until_ready(f"{api}/checkpoints/{ck}/prototypes/{k}/gallery", {**small, "top_k": 4})
    assert r.status_code == 200 and r.json()["images"] == protos[0]["images"]
    r = _until_ready(f"{api}/checkpoints/{ck}/prototypes/10/gallery", {**small, "top_k": 4})
    assert r.status_code == 404 and "prototype" in _detail(r)

    r = _until_ready(f"{api}/checkpoints/{ck}/images/7/neighbours", {**small, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["index"] == 7 and len(body["images"]) == 5
    r = _until_ready(f"{api}/checkpoints/{ck}/images/5000/neighbours", small)
    assert r.status_code == 404 and "Traceback" not in r.text


def test_analysis_bad_input_is_400(api: str, uploaded: tuple[int, int]) -> None:
    ck = uploaded[0]
    r = requests.get(
        f"{api}/checkpoints/{ck}/diagnostics", params={"data_root": "/etc"}, timeout=TIMEOUT
    )
    assert r.status_code == 400 and "allowed" in _detail(r)
    # cifar10 with no data set folder: the computation fails, reported as a 400 with a message.
    r = _until_ready(f"{api}/checkpoints/{ck}/diagnostics", {"dataset": "cifar10"})
    assert r.status_code == 400, r.text
    assert "Traceback" not in r.text and _detail(r)
    r = requests.get(
        f"{api}/checkpoints/{ck}/embedding", params={"n_neighbors": 1}, timeout=TIMEOUT
    )
    assert r.status_code == 422


def test_compare(api: str, uploaded: tuple[int, int]) -> None:
    a, b = uploaded
    r = _until_ready(f"{api}/compare", {"a": a, "b": b, "max_images": 300})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0.0 <= body["agreement"] <= 1.0 and 0.0 <= body["nmi"] <= 1.0
    assert body["a_id"] == a and body["b_id"] == b
    r = requests.get(f"{api}/compare", params={"a": a}, timeout=TIMEOUT)
    assert r.status_code == 422


def test_analysis_results_are_cached_on_disk(api: str, data_dir: Path) -> None:
    cached = list((data_dir / "cache").rglob("*.json"))
    assert cached, "analysis answers are kept as JSON files under the data dir"


# --- token and binding ---------------------------------------------------------------------------
def test_token_required_when_set(tmp_path: Path) -> None:
    env = {**_clean_env(), "PROTOSCOPE_TOKEN": "s3cret-token"}
    good = {"Authorization": "Bearer s3cret-token"}
    # backend_server waits for /health to answer 200, which it never does here: start by hand.
    from tests.support import free_port, stop

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "protoscope",
            "serve",
            "--port",
            str(port),
            "--data",
            str(tmp_path / "locked2"),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_401(f"{url}/health", proc)
        for path in ("/health", "/runs", "/datasets", "/runs/1/events", "/openapi.json"):
            r = requests.get(f"{url}{path}", timeout=TIMEOUT)
            assert r.status_code == 401, path
            assert "token" in r.json()["detail"]
        bad = {"Authorization": "Bearer wrong"}
        assert requests.get(f"{url}/runs", headers=bad, timeout=TIMEOUT).status_code == 401
        assert requests.get(f"{url}/runs", headers=good, timeout=TIMEOUT).status_code == 200
        r = requests.get(f"{url}/health", params={"token": "s3cret-token"}, timeout=TIMEOUT)
        assert r.status_code == 200 and r.json()["token_required"] is True
    finally:
        stop(proc)


def _wait_401(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            if requests.get(url, timeout=2).status_code == 401:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def test_refuses_other_host_without_token(tmp_path: Path) -> None:
    env = {**os.environ, **_clean_env()}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "protoscope",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "1",
            "--data",
            str(tmp_path / "d"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "PROTOSCOPE_TOKEN" in lines[0], r.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything


def test_metrics_pages_carry_the_collapse_alert(api: str, data_dir: Path) -> None:
    """The backend judges a run's latest steps (models/collapse_rules.py) and says so with
    every metrics page; a page that holds no step still carries it."""
    config = {"method": "swav", "swav": {"num_prototypes": 10}}
    ids = [
        finished_run(
            data_dir,
            config,
            [{"type": "step", "step": s, "loss": 1.0, "active_prototypes": a} for s in range(1, 6)],
        )
        for a in (8, 1)
    ]
    healthy, collapsed = (
        requests.get(f"{api}/runs/{i}/metrics", timeout=TIMEOUT).json() for i in ids
    )
    assert healthy["alert"] is None
    assert collapsed["alert"]["kind"] == "one-cluster"
    assert "1 prototype of 10" in collapsed["alert"]["message"]  # K from the run's config
    later = requests.get(
        f"{api}/runs/{ids[1]}/metrics", params={"since": collapsed["next"]}, timeout=TIMEOUT
    ).json()
    assert later["events"] == [] and later["alert"] == collapsed["alert"]
