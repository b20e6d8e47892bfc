"""Every epoch's map in one frame: a Procrustes chain over the per-checkpoint UMAP maps.

Each checkpoint's map is Explore's own (cached, `embedding_map.map_of`); map t is rotated (or
mirrored), scaled and shifted onto the *aligned* map t − 1 over the same images, so the chain
ends in the first map's frame and a point moves on screen only as far as its neighbourhood
changed. Chaining onto the previous epoch rather than onto the first keeps late epochs, which
may look nothing like the first, aligned to the one they grew from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.compare import procrustes_align


def procrustes_chain(maps: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """(aligned maps, disparities): map 0 unchanged, map t aligned onto aligned map t − 1.

    Row i of every map must be the same image. disparities[t] is scipy's Procrustes disparity
    of step t (0 for map 0): 0 when the map only turned, near 1 when it was redrawn.
    """
    if not maps:
        return [], []
    first = np.asarray(maps[0], dtype=np.float64)
    for m in maps:
        if np.shape(m) != first.shape:
            raise ValueError(f"maps must share one (N, 2) shape: {first.shape} vs {np.shape(m)}")
    aligned = [first]
    disparities = [0.0]
    for m in maps[1:]:
        out, disparity = procrustes_align(aligned[-1], np.asarray(m, dtype=np.float64))
        aligned.append(out)
        disparities.append(disparity)
    return aligned, disparities
