"""Prototype usage over epochs: counts per (epoch, prototype), births and deaths.

Usage is counted on the model's predictions (argmax), as everywhere in this app.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def usage_matrix(clusters: Sequence[np.ndarray], num_prototypes: int) -> np.ndarray:
    """(E, K) int64: images predicted for prototype k at epoch e. Ids < 0 (none) are skipped."""
    out = np.zeros((len(clusters), max(0, num_prototypes)), dtype=np.int64)
    for e, c in enumerate(clusters):
        c = np.asarray(c, dtype=np.int64)
        c = c[(c >= 0) & (c < num_prototypes)]
        out[e] = np.bincount(c, minlength=num_prototypes)[:num_prototypes]
    return out


def births_and_deaths(usage: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """([(prototype, epoch index)] born, [(prototype, epoch index)] died).

    Born at e: unused at e − 1, used at e. Died at e: used at e − 1, unused at e. The first
    epoch has no before, so nothing is born or dies there.
    """
    u = np.asarray(usage) > 0
    born: list[tuple[int, int]] = []
    died: list[tuple[int, int]] = []
    for e in range(1, u.shape[0]):
        born += [(int(k), e) for k in np.flatnonzero(u[e] & ~u[e - 1])]
        died += [(int(k), e) for k in np.flatnonzero(~u[e] & u[e - 1])]
    return born, died
