"""The map in columns: `GET /checkpoints/{id}/embedding?format=columns`, paged, over real HTTP.

A real backend, a real tiny checkpoint uploaded to it. The maps asked for are 3 images, which
`models/embedding_map.py` lays out by principal components (no UMAP, so no numba compile):
what is tested here is the answer's form, not the layout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import backend_server, upload_checkpoint

FIELDS = ("index", "x", "y", "label", "cluster", "confidence", "phi")
SMALL = {"max_images": 3}


@pytest.fixture(scope="module")
def api_ckpt(tmp_path_factory: pytest.TempPathFactory, swav_checkpoint: Path) -> Iterator[str]:
    data = tmp_path_factory.mktemp("columns") / "data"
    with backend_server(data) as api:
        r = upload_checkpoint(api, swav_checkpoint.read_bytes())
        assert r.status_code in (200, 201), r.text
        yield f"{api}/checkpoints/{r.json()['id']}/embedding"


def _answer(url: str, **params: Any) -> requests.Response:
    """The 200 answer (the 202s of a computation in progress polled away)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = requests.get(url, params=params, timeout=30)
        if r.status_code != 202:
            return r
        time.sleep(0.2)
    raise AssertionError(f"no answer from {url} {params}")


def test_columns_hold_the_same_map_as_points(api_ckpt: str) -> None:
    points = _answer(api_ckpt, **SMALL).json()
    cols = _answer(api_ckpt, format="columns", **SMALL).json()
    assert "points" not in cols and set(cols["columns"]) == set(FIELDS)
    assert cols["num_points"] == points["num_points"] == 3
    assert all(len(cols["columns"][k]) == 3 for k in FIELDS)
    for row, p in enumerate(points["points"]):
        for key in FIELDS:
            got, want = cols["columns"][key][row], p[key]
            if isinstance(want, float):
                assert got == pytest.approx(want, abs=1e-4)  # rounded to 4 decimals
                assert got == round(got, 4)
            else:
                assert got == want  # ints and None (e.g. φ of a SwAV run) as they are
    assert cols["classes"] == points["classes"] and cols["dataset"] == points["dataset"]


def test_a_page_of_columns_is_a_slice_of_the_whole(api_ckpt: str) -> None:
    whole = _answer(api_ckpt, format="columns", **SMALL).json()["columns"]
    page = _answer(api_ckpt, format="columns", offset=1, limit=1, **SMALL).json()
    assert page["offset"] == 1 and page["limit"] == 1 and page["num_points"] == 3
    assert {k: v for k, v in page["columns"].items()} == {k: whole[k][1:2] for k in FIELDS}
    rest = _answer(api_ckpt, format="columns", offset=2, **SMALL).json()["columns"]
    assert rest["index"] == whole["index"][2:]
    # The per-point answer pages the same way.
    pts = _answer(api_ckpt, offset=1, limit=5, **SMALL).json()["points"]
    assert [p["index"] for p in pts] == whole["index"][1:]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"format": "xml"}, "format"),
        ({"format": "columns", "limit": 0}, "limit"),
        ({"format": "columns", "offset": -1}, "offset"),
        ({"format": "columns", "max_images": 10**9}, "max_images"),
    ],
)
def test_bad_map_parameters_say_what_to_fix(
    api_ckpt: str, params: dict[str, Any], named: str
) -> None:
    r = requests.get(api_ckpt, params=params, timeout=30)
    assert 400 <= r.status_code < 500, r.text
    assert named in r.text and "Traceback" not in r.text
