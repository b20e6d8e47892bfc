"""A map answer as numpy columns: what Explore draws, selects and looks points up in.

The backend sends a large map as one JSON array per field (`GET …/embedding?format=columns`);
here those arrays become numpy columns once, so a 50,000-point map is never turned into 50,000
dicts. The per-point answer (`format=points`, as Compare and older servers send) is read too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NONE_INT = -1  # "no label / no cluster" in the integer columns


def _ints(values: Sequence[Any] | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, NONE_INT, dtype=np.int64)
    return np.array([NONE_INT if v is None else int(v) for v in values], dtype=np.int64)


def _floats(values: Sequence[Any] | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan, dtype=np.float32)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float32)


@dataclass(frozen=True)
class MapColumns:
    """Row i of every column is one point; `index` is its data set index (never a position)."""

    index: np.ndarray  # (N,) int64
    x: np.ndarray  # (N,) float32
    y: np.ndarray  # (N,) float32
    label: np.ndarray  # (N,) int64, NONE_INT where unknown
    cluster: np.ndarray  # (N,) int64, NONE_INT where none
    confidence: np.ndarray  # (N,) float32, NaN where none
    phi: np.ndarray  # (N,) float32, NaN where none

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def values(self, key: str) -> np.ndarray:
        """The column a map is coloured by ('label', 'cluster', 'confidence' or 'phi')."""
        if key not in ("label", "cluster", "confidence", "phi"):
            raise ValueError(f"no column {key!r} to colour by")
        column: np.ndarray = getattr(self, key)
        return column

    def has(self, key: str) -> bool:
        """Whether any point has a value in column `key`."""
        v = self.values(key)
        return bool((v != NONE_INT).any() if v.dtype.kind == "i" else np.isfinite(v).any())

    def point(self, index: int) -> dict[str, Any]:
        """The point with data set index `index` as a dict ({} when it is not on the map)."""
        rows = np.flatnonzero(self.index == index)
        if not rows.size:
            return {}
        r = int(rows[0])

        def opt_int(v: np.integer) -> int | None:
            return int(v) if v != NONE_INT else None

        def opt_float(v: np.floating) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {
            "index": int(self.index[r]),
            "x": float(self.x[r]),
            "y": float(self.y[r]),
            "label": opt_int(self.label[r]),
            "cluster": opt_int(self.cluster[r]),
            "confidence": opt_float(self.confidence[r]),
            "phi": opt_float(self.phi[r]),
        }


def _build(cols: Mapping[str, Any], n: int) -> MapColumns:
    return MapColumns(
        index=np.asarray(cols["index"], dtype=np.int64).reshape(n),
        x=_floats(cols["x"], n),
        y=_floats(cols.get("y"), n),
        label=_ints(cols.get("label"), n),
        cluster=_ints(cols.get("cluster"), n),
        confidence=_floats(cols.get("confidence"), n),
        phi=_floats(cols.get("phi"), n),
    )


def _from_columns(cols: Mapping[str, Any]) -> MapColumns | None:
    index = cols.get("index")
    if not isinstance(index, list) or not isinstance(cols.get("x"), list):
        return None
    n = len(index)
    if any(isinstance(v, list) and len(v) != n for v in cols.values()):
        return None  # ragged columns: not a map
    return _build(cols, n)


FIELDS = ("index", "x", "y", "label", "cluster", "confidence", "phi")


def _from_points(points: Sequence[Any]) -> MapColumns:
    pts = [p for p in points if isinstance(p, Mapping) and "index" in p]
    return _build({k: [p.get(k) for p in pts] for k in FIELDS}, len(pts))


def columns_of(answer: Any) -> MapColumns | None:
    """The map in an embedding answer ({columns: {...}} or {points: [...]}); None if it has none."""
    if not isinstance(answer, Mapping):
        return None
    if isinstance(answer.get("columns"), Mapping):
        return _from_columns(answer["columns"])
    if isinstance(answer.get("points"), list):
        return _from_points(answer["points"])
    return None


def nearest_indices(cols: MapColumns, index: int, k: int) -> np.ndarray:
    """Data set indices of the k points drawn nearest to point `index` on the map (itself first).

    These are the thumbnails worth fetching when the mouse reaches `index`: the mouse moves on
    to neighbours on the screen, not in the embedding. Empty when `index` is not on the map.
    """
    rows = np.flatnonzero(cols.index == index)
    if not rows.size or k < 1:
        return np.zeros(0, dtype=np.int64)
    r = int(rows[0])
    d2 = (cols.x - cols.x[r]) ** 2 + (cols.y - cols.y[r]) ** 2
    d2[r] = -1.0  # the point itself first, even when others share its spot
    k = min(k, len(cols))
    near = np.argpartition(d2, k - 1)[:k]
    order: np.ndarray = cols.index[near[np.argsort(d2[near], kind="stable")]]
    return order
