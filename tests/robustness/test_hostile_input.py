"""Hostile input against the real server (over HTTP) and `models.checkpoints`.

- a checkpoint whose pickle would run a command (create a marker file): refused with a 400
  naming the reason, by the upload and by `load_model`, and the marker never appears;
- truncated and random-bytes checkpoints: 400 with a message, nothing kept;
- a zip bomb (a checkpoint-shaped zip whose 1 MB member inflates to 1 GiB): refused from the
  archive's directory, in well under a second, without inflating anything;
- path traversal (`..`, absolute paths, `%2e%2e`, NUL, `~`, a symbolic link out of the root)
  in every path-like field: 4xx, and a real image folder planted outside the allowed root is
  never served (the same folder inside the root is: the control that gives the test teeth);
- huge numbers (1e308, 2**63, -2**63, -1, NaN, Infinity, 5,000-digit literals) in every
  numeric field of POST /runs and of every GET's parameters (read from the OpenAPI document,
  so a new field is covered automatically): 422 naming the field, never a 5xx.

tests/models/test_checkpoints.py covers the loader alone with more broken files; here the same
attacks come through the API.
"""

from __future__ import annotations

import io
import os
import random
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from PIL import Image

from models.checkpoints import CheckpointError, load_checkpoint, load_model
from tests.support import backend_server, data_files, upload_checkpoint

TIMEOUT = 30


class _Marker:
    """Unpickling this runs `touch <marker>` (os.system): the payload of the evil checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _error(resp: requests.Response, *statuses: int) -> str:
    assert resp.status_code in statuses, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    detail = str(resp.json()["detail"])
    assert detail and "Traceback" not in resp.text
    return detail


def _image_folder(root: Path) -> None:
    for cls, colour in (("reds", (220, 20, 20)), ("blues", (20, 20, 220))):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), colour).save(root / cls / f"{i}.png")


# --- the zip bomb ---------------------------------------------------------------------------------
def zip_bomb(inflated: int = 2**30) -> bytes:
    """A torch checkpoint (zip) whose tensor record is `inflated` zero bytes, deflated to ~1 MB.

    Built in a second: deflate output after a full flush does not depend on earlier input, so
    the compressed form of one 16 MiB block of zeros is repeated. The zip is written by hand,
    since zipfile cannot store data that is already compressed.
    """
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(8, dtype=torch.uint8)}, buf)
    members = {i.filename: zipfile.ZipFile(buf).read(i) for i in zipfile.ZipFile(buf).infolist()}
    block = bytes(2**24)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    once = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    deflated = once * (inflated // len(block)) + comp.flush()
    crc = 0
    for _ in range(inflated // len(block)):
        crc = zlib.crc32(block, crc)

    out = io.BytesIO()
    central = []
    for name, data in members.items():
        bomb = name.endswith("/data/0")
        body, method = (deflated, 8) if bomb else (data, 0)
        usize, ucrc = (inflated, crc) if bomb else (len(data), zlib.crc32(data))
        raw = name.encode()
        offset = out.tell()
        out.write(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50, 20, 0, method, 0, 0x21, ucrc, len(body), usize, len(raw), 0,
            )
        )  # fmt: skip
        out.write(raw + body)
        central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50, 20, 20, 0, method, 0, 0x21, ucrc, len(body), usize,
                len(raw), 0, 0, 0, 0, 0, offset,
            )
            + raw
        )  # fmt: skip
    start = out.tell()
    for entry in central:
        out.write(entry)
    size = out.tell() - start
    n = len(central)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, size, start, 0))
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.pt"
    path.write_bytes(zip_bomb())
    with zipfile.ZipFile(path) as z:  # really what it claims: a 1 GiB member in a ~1 MB file
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("/data/0")))
        assert info.file_size == 2**30 and info.compress_size < 2**21
        with z.open(info) as f:
            assert f.read(2**20) == bytes(2**20)  # it inflates (the first MiB is enough)
    return path


def test_the_zip_bomb_is_refused_unexpanded(bomb: Path) -> None:
    t0 = time.monotonic()
    for loader in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError, match="zip bomb") as err:
            loader(bomb)
        assert "nothing was decompressed" in str(err.value)
    # Inflating 1 GiB takes seconds and a GiB of memory; reading the directory takes neither.
    assert time.monotonic() - t0 < 2.0


def _settled(r: requests.Response) -> requests.Response:
    """An analysis answers 202 while it computes: ask again until it has the answer."""
    deadline = time.monotonic() + 60
    while r.status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.2)
        r = requests.get(r.url, timeout=TIMEOUT)
    return r


# --- the server -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("hostile")
    data = base / "data"
    outside = base / "outside"  # a perfectly usable image folder the server must never read
    _image_folder(outside)
    inside = data / "datasets" / "inside"  # the same, where it is allowed: the control
    _image_folder(inside)
    (data / "datasets" / "link").symlink_to(outside, target_is_directory=True)
    env = {"PROTOSCOPE_MAX_UPLOAD_MB": "4", "PROTOSCOPE_ANALYSIS_WAIT_S": "0"}
    with backend_server(data, env) as url:
        yield {"api": url, "data": data, "outside": outside, "base": base}


@pytest.fixture(scope="module")
def checkpoint_id(world: dict[str, Any], swav_checkpoint: Path) -> int:
    r = upload_checkpoint(world["api"], swav_checkpoint.read_bytes(), filename="good.pt")
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_checkpoints_that_would_run_code_or_are_broken_are_refused(
    world: dict[str, Any], swav_checkpoint: Path, bomb: Path
) -> None:
    api, data, base = world["api"], world["data"], world["base"]
    marker = base / "pwned.marker"
    evil = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}, "x": _Marker(marker)}, evil)
    good = swav_checkpoint.read_bytes()
    cases = {
        "evil": (evil.getvalue(), "refused"),
        "truncated": (good[: len(good) // 3], "not a readable PyTorch checkpoint"),
        # Random bytes read as a pickle may name a global (then: refused) or be garbage.
        "random": (random.Random(0).randbytes(64 * 1024), "checkpoint"),
        "zip bomb": (bomb.read_bytes(), "zip bomb"),
    }
    before = data_files(data)
    for what, (payload, needle) in cases.items():
        t0 = time.monotonic()
        detail = _error(upload_checkpoint(api, payload, filename=f"{what}.pt"), 400)
        assert needle in detail and "not a usable checkpoint" in detail, (what, detail)
        assert str(data) not in detail, "no server paths in messages"
        assert time.monotonic() - t0 < 10, what
    assert not marker.exists(), "the checkpoint's pickle ran"
    assert data_files(data) == before, "a refused upload left something behind"
    # The loader itself refuses the evil file the same way (the upload goes through it).
    path = base / "evil.pt"
    path.write_bytes(evil.getvalue())
    with pytest.raises(CheckpointError, match="refused") as err:
        load_model(path)
    assert "system" in str(err.value)
    assert not marker.exists()


TRAVERSALS = [
    "../../../../etc",
    "/etc",
    "datasets/../../..",
    "%2e%2e/%2e%2e/%2e%2e/etc",
    "..%2f..%2f..%2fetc",
    "....//....//etc",
    "~",
    "~no-such-user-of-protoscope/data",  # an unknown user's home: nothing to expand
    "/etc\x00",
    "link",  # a symbolic link inside the root, pointing out of it
]


def test_path_traversal_in_every_path_field(world: dict[str, Any], checkpoint_id: int) -> None:
    api, data, outside = world["api"], world["data"], world["outside"]
    # The control: inside the root, the image folder is served (so a 200 below would mean the
    # outside folder was read).
    r = requests.get(
        f"{api}/datasets/imagefolder/images/0", params={"data_root": "inside"}, timeout=TIMEOUT
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    for value in [*TRAVERSALS, str(outside), f"{data}/datasets/../../outside"]:
        # Data roots: the image endpoint, every analysis, and POST /runs three ways.
        gets = [
            ("/datasets/imagefolder/images/0", {}),
            (f"/checkpoints/{checkpoint_id}/diagnostics", {"dataset": "imagefolder"}),
            (f"/checkpoints/{checkpoint_id}/embedding", {"dataset": "imagefolder"}),
            (f"/checkpoints/{checkpoint_id}/prototypes", {"dataset": "imagefolder"}),
            (f"/checkpoints/{checkpoint_id}/prototypes/0/gallery", {"dataset": "imagefolder"}),
            (f"/checkpoints/{checkpoint_id}/images/0/neighbours", {"dataset": "imagefolder"}),
            ("/compare", {"a": checkpoint_id, "b": checkpoint_id, "dataset": "imagefolder"}),
        ]
        for path, params in gets:
            r = _settled(requests.get(f"{api}{path}", params={**params, "data_root": value}))
            _error(r, 400, 422)  # never 200: the outside folder is never read
        bodies = [
            {"data_root": value},
            {"config": {"data": {"root": value}}},
            {"overrides": {"data.root": value}},
        ]
        for extra in bodies:
            body = {"method": "swav", "dataset": "imagefolder", **extra}
            r = requests.post(f"{api}/runs", json=body, timeout=TIMEOUT)
            _error(r, 400, 422)
    # Data set names are names, not paths.
    for name in ("..", "../../etc", "..%2f..%2fetc", "%2e%2e", "/etc/passwd"):
        r = requests.get(f"{api}/datasets/{name}/images/0", timeout=TIMEOUT)
        _error(r, 404, 422)
        r = requests.post(f"{api}/runs", json={"method": "swav", "dataset": name}, timeout=30)
        _error(r, 422)
        url = f"{api}/checkpoints/{checkpoint_id}/diagnostics"
        _error(_settled(requests.get(url, params={"dataset": name}, timeout=30)), 400, 404, 422)
    # Ids in paths are integers: a path there is no id.
    for path in ("/checkpoints/..%2f..%2fetc%2fpasswd", "/runs/..%2f1", "/checkpoints/%2e%2e"):
        _error(requests.get(f"{api}{path}", timeout=TIMEOUT), 404, 422)
    # Upload file names are labels: the file is stored under a name the server picks.
    before = {p for p in world["base"].rglob("*") if p.is_file() and data not in p.parents}
    for filename in ("../../../escape.pt", "/tmp/escape.pt", "..\\..\\escape.pt", "..%2fescape"):
        _error(upload_checkpoint(api, b"junk" * 10, filename=filename), 400)
    payload = next((data / "uploads").glob("*.pt")).read_bytes()
    r = upload_checkpoint(api, payload, filename="../../../../escape.pt", name="../../escape")
    assert r.status_code == 201, r.text
    row = r.json()
    assert row["filename"] == "escape.pt" and row["name"] == "../../escape"
    assert row["path"].startswith("uploads/") and (data / row["path"]).is_file()
    assert "/" not in row["path"][len("uploads/") :]
    after = {p for p in world["base"].rglob("*") if p.is_file() and data not in p.parents}
    assert after == before, "a file was written outside the data dir"
    assert not Path("/tmp/escape.pt").exists()


# --- huge numbers ---------------------------------------------------------------------------------
HUGE = ["1e308", "-1e308", str(2**63), str(-(2**63)), str(2**64), "-1", "NaN", "Infinity"]
LONG_DIGITS = "9" * 5000  # a JSON number Python refuses to parse: 400, "error parsing the body"
LONG_STRING = '"' + "9" * 5000 + '"'


def _numeric_fields(schema: dict[str, Any]) -> list[str]:
    props = schema["components"]["schemas"]["RunCreate"]["properties"]
    out = []
    for name, prop in props.items():
        kinds = {s.get("type") for s in prop.get("anyOf", [prop])}
        if kinds & {"integer", "number"}:
            out.append(name)
    return out


def test_huge_numbers_in_every_run_field_are_422(world: dict[str, Any]) -> None:
    api = world["api"]
    schema = requests.get(f"{api}/openapi.json", timeout=TIMEOUT).json()
    fields = _numeric_fields(schema)
    assert {"seed", "max_steps", "max_minutes", "lr", "epochs", "num_train"} <= set(fields)
    for name in fields:
        for value in [*HUGE, LONG_STRING, LONG_DIGITS]:
            raw = f'{{"method": "swav", "{name}": {value}}}'
            r = requests.post(
                f"{api}/runs", data=raw, headers={"content-type": "application/json"}, timeout=30
            )
            if value == LONG_DIGITS:
                assert "parsing the body" in _error(r, 400)
                continue
            detail = _error(r, 422)
            assert name in detail, (name, value, detail)
    # The list field, and the same numbers through `config` and `overrides`.
    for value in HUGE:
        raw = f'{{"method": "pcl", "num_clusters": [10, {value}]}}'
        r = requests.post(
            f"{api}/runs", data=raw, headers={"content-type": "application/json"}, timeout=30
        )
        assert "num_clusters" in _error(r, 422)
        for body in (
            f'{{"method": "swav", "config": {{"seed": {value}}}}}',
            f'{{"method": "swav", "config": {{"data": {{"seed": {value}}}}}}}',
            f'{{"method": "swav", "overrides": {{"max_minutes": {value}}}}}',
            f'{{"method": "swav", "overrides": {{"optim.weight_decay": {value}}}}}',
        ):
            r = requests.post(
                f"{api}/runs", data=body, headers={"content-type": "application/json"}, timeout=30
            )
            _error(r, 400, 422)
    assert requests.get(f"{api}/runs", timeout=TIMEOUT).json() == [], "nothing was created"


def test_huge_numbers_in_every_query_and_path_number_are_422(
    world: dict[str, Any], checkpoint_id: int
) -> None:
    api = world["api"]
    schema = requests.get(f"{api}/openapi.json", timeout=TIMEOUT).json()
    checked = 0
    for path, item in schema["paths"].items():
        for method, op in item.items():
            params = [
                p
                for p in op.get("parameters", [])
                if p["in"] in ("query", "path")
                and {s.get("type") for s in p["schema"].get("anyOf", [p["schema"]])}
                & {"integer", "number"}
            ]
            for param in params:
                for value in ["1e308", str(2**63), str(-(2**63)), "-1", "nan", "inf"]:
                    url = path
                    for p in op.get("parameters", []):
                        if p["in"] == "path":
                            fill = value if p is param else "0"
                            if p["name"] in ("checkpoint_id", "run_id") and p is not param:
                                fill = str(checkpoint_id)
                            url = url.replace("{" + p["name"] + "}", fill)
                    query = {param["name"]: value} if param["in"] == "query" else {}
                    if path == "/compare" and param["name"] not in ("a", "b"):
                        query.update(a=checkpoint_id, b=checkpoint_id)
                    if path == "/compare":
                        query.setdefault("a", checkpoint_id)
                        query.setdefault("b", checkpoint_id)
                    r = requests.request(
                        method, f"{api}{url}", params=query, timeout=TIMEOUT, stream=True
                    )
                    detail = _error(r, 422)
                    assert param["name"] in detail, (method, path, param["name"], value, detail)
                    r.close()
                    checked += 1
    assert checked >= 150, checked
    # The SSE resume header: a number beyond 64 bits is refused up front (it broke the stream).
    r = requests.get(f"{api}/runs/1/events", headers={"Last-Event-ID": "9" * 40}, timeout=TIMEOUT)
    _error(r, 400, 404)
