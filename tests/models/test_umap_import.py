"""umap-learn's compiled code is kept on disk: a fresh process loads the layout optimiser that
an earlier one compiled instead of compiling it again."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from models.embedding_map import umap_2d

LAYOUT = "_nb_optimize_layout_euclidean_single_epoch"
# A fresh process maps 300 points and says how numba found the layout optimiser.
CHILD = f"""
import json, numpy as np
from models.embedding_map import umap_2d
import umap.layouts as layouts
umap_2d(np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32))
d = layouts.{LAYOUT}
print(json.dumps({{"hits": sum(d.stats.cache_hits.values()),
                  "misses": sum(d.stats.cache_misses.values())}}))
"""


def test_umap_functions_are_cached_and_a_new_process_loads_them() -> None:
    from models.umap_import import CACHED_FUNCTIONS, umap

    assert CACHED_FUNCTIONS > 100  # umap-learn's and pynndescent's jitted functions
    umap_2d(np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32))
    layout = getattr(umap.layouts, LAYOUT)
    # Found on disk, or compiled here and written there: either way numba looked in its cache.
    assert sum(layout.stats.cache_hits.values()) + sum(layout.stats.cache_misses.values()) >= 1
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"hits": 1, "misses": 0}, out.stderr[-2000:]


def test_without_a_writable_cache_folder_maps_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from numba.core.registry import CPUDispatcher

    from models.umap_import import cache_compiled_functions

    def no_locator(self: CPUDispatcher) -> None:  # what numba raises with nowhere to write
        raise RuntimeError("cannot cache function: no locator available")

    monkeypatch.setattr(CPUDispatcher, "enable_caching", no_locator)
    assert cache_compiled_functions() == 0
    xy = umap_2d(np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32))
    assert xy.shape == (300, 2) and np.isfinite(xy).all()
