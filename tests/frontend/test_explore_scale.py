"""Explore's big-map pieces without a server: the columns, the WebGL figure, the neighbours.

The figure is built at 50,000 points, the size the page promises to keep interactive.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import plotly.io as pio
import pytest

from frontend import figures
from frontend.map_columns import NONE_INT, MapColumns, columns_of, nearest_indices

BIG = 50_000


def _random_map(n: int, clusters: int = 10, seed: int = 0) -> MapColumns:
    rng = np.random.default_rng(seed)
    return MapColumns(
        index=rng.permutation(n * 3)[:n].astype(np.int64),  # data set indices, not positions
        x=rng.standard_normal(n).astype(np.float32),
        y=rng.standard_normal(n).astype(np.float32),
        label=rng.integers(0, 10, n),
        cluster=rng.integers(NONE_INT, clusters, n),
        confidence=rng.random(n, dtype=np.float32),
        phi=np.full(n, np.nan, dtype=np.float32),
    )


def _array(spec: Any) -> np.ndarray:
    """A plotly JSON array: a typed one {dtype, bdata[, shape]} (what large maps must use)."""
    assert isinstance(spec, dict) and "bdata" in spec, "expected a typed binary array"
    flat = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))
    shape = spec.get("shape")
    if isinstance(shape, str):
        shape = [int(s) for s in shape.split(",")]
    return flat.reshape(shape) if shape else flat


def test_columns_and_points_answers_give_the_same_map() -> None:
    cols: dict[str, list[Any]] = {
        "index": [4, 9, 2],
        "x": [0.5, -1.0, 2.25],
        "y": [1.0, 0.0, -0.5],
        "label": [1, None, 0],
        "cluster": [3, 3, None],
        "confidence": [0.9, None, 0.5],
        "phi": [None, None, None],
    }
    points = [{k: cols[k][i] for k in cols} for i in range(3)]
    a, b = columns_of({"columns": cols}), columns_of({"points": points})
    assert a is not None and b is not None
    for key in ("index", "x", "y", "label", "cluster", "confidence", "phi"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.point(9) == {**points[1], "x": -1.0, "y": 0.0}  # by data set index
    assert a.point(5) == {}
    assert a.has("label") and a.has("confidence") and not a.has("phi")
    ragged = {**cols, "y": [1.0]}
    assert columns_of({"columns": ragged}) is None and columns_of([1, 2]) is None


def test_nearest_points_on_the_map_start_with_the_point_itself() -> None:
    m = _random_map(2000)
    hovered = int(m.index[17])
    near = nearest_indices(m, hovered, 25)
    assert near[0] == hovered and len(set(near.tolist())) == 25
    d = np.hypot(m.x - m.x[17], m.y - m.y[17])
    brute = m.index[np.argsort(d, kind="stable")[:25]]
    assert set(near.tolist()) == set(brute.tolist())
    assert nearest_indices(m, -5, 10).size == 0  # not on the map
    assert len(nearest_indices(m, hovered, 10**6)) == len(m)


def test_a_map_of_50000_points_is_webgl_with_binary_arrays() -> None:
    m = _random_map(BIG)
    fig = figures.webgl_map_figure(m, "label", label_names=[f"shape{i}" for i in range(10)])
    spec = json.loads(pio.to_json(fig, validate=False))
    assert {t["type"] for t in spec["data"]} == {"scattergl"}
    names = sorted(t["name"] for t in spec["data"])
    assert names == sorted(f"{i}: shape{i}" for i in range(10))  # a legend of the labels
    custom = np.concatenate([_array(t["customdata"]) for t in spec["data"]])
    assert custom.shape == (BIG, 3)
    # customdata[0] is each point's data set index (selection relies on it), never a position.
    assert sorted(custom[:, 0].tolist()) == sorted(m.index.tolist())
    xs = np.concatenate([_array(t["x"]) for t in spec["data"]])
    assert xs.shape == (BIG,)
    by_index = dict(zip(m.index.tolist(), m.label.tolist(), strict=True))
    assert all(by_index[int(i)] == int(lab) for i, lab, _ in custom[:500])


@pytest.mark.parametrize("colour", ["cluster", "confidence"])
def test_other_colourings_keep_one_binary_trace(colour: str) -> None:
    m = _random_map(BIG, clusters=40)  # more clusters than a legend holds
    spec = json.loads(pio.to_json(figures.webgl_map_figure(m, colour), validate=False))
    assert len(spec["data"]) == 1 and spec["data"][0]["type"] == "scattergl"
    colours = _array(spec["data"][0]["marker"]["color"])
    assert colours.shape == (BIG,)
    if colour == "confidence":
        np.testing.assert_allclose(colours, m.confidence)
        assert spec["data"][0]["marker"]["showscale"] is True
    else:  # one colour per cluster, the points without one grey (the scale's last step)
        assert len(np.unique(colours[m.cluster != NONE_INT])) > 20
        assert set(np.unique(colours[m.cluster == NONE_INT]).tolist()) == {
            float(len(figures.PALETTE))
        }


def test_a_selection_of_typed_customdata_rows_gives_data_set_indices() -> None:
    # The browser sends each selected point's row of a typed array as JSON.stringify writes one.
    event = {
        "selection": {
            "points": [{"customdata": {"0": 41, "1": 2, "2": 7}}, {"customdata": [5, 1, 1]}]
        }
    }
    assert figures.selected_indices(event) == [41, 5]


def test_a_small_map_sends_its_coordinates_as_plain_lists() -> None:
    m = _random_map(2000)
    spec = json.loads(pio.to_json(figures.webgl_map_figure(m, "cluster"), validate=False))
    xs = [x for t in spec["data"] for x in t["x"]]  # lists: what scripts reading the chart get
    assert len(xs) == 2000 and all(isinstance(x, float) for x in xs)
    assert {t["type"] for t in spec["data"]} == {"scattergl"}
    assert sum(len(_array(t["customdata"])) for t in spec["data"]) == 2000
