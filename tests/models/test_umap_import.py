"""umap-learn's compiled code is kept on disk: a fresh process loads the layout optimiser that
an earlier one compiled instead of compiling it again."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

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
