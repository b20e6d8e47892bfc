"""umap-learn, imported once per process with its numba functions cached on disk.

umap-learn JIT-compiles its layout optimiser and graph code on the first map of every process
(about 7 s of CPU on a 2-core Xeon, measured under AVX2) and, unlike pynndescent, asks numba to
keep none of it. Every backend start, every `protoscope diagnose` / `compare` and every test
process paid that again. Here each of its compiled functions gets numba's own on-disk cache
(the `cache=True` of its decorator, switched on afterwards): the first process compiles and
writes, the next ones load (a fresh process's first 300-point map: 7.1 s → 1.8 s).

Numba keys each cache entry by the function's source file (path and modification time), its
argument types and the CPU's name and features, so an upgraded umap-learn or another CPU model
compiles afresh instead of loading code that does not fit it. Entries go to `__pycache__`
beside umap-learn's sources, or numba's user cache folder when that is read-only
(`NUMBA_CACHE_DIR` overrides both).

The module's body runs once, under Python's import lock, before any map can compile: threads
of the analysis pool that import it meanwhile wait for it.
"""

from __future__ import annotations

import sys
import warnings

with warnings.catch_warnings():
    # umap-learn announces its optional TensorFlow-based ParametricUMAP, unused here.
    warnings.filterwarnings("ignore", message="Tensorflow not installed")
    import umap
from numba.core.registry import CPUDispatcher

CACHED_PACKAGES = ("umap", "pynndescent")


def cache_compiled_functions(packages: tuple[str, ...] = CACHED_PACKAGES) -> int:
    """Turn on numba's on-disk cache for every jitted function of the loaded `packages`'
    modules (ones already compiled keep what they have). How many functions it covers: where
    numba finds no folder it may write (a read-only install, no home), none, and every map
    still works, compiling in each process as it did before."""
    seen: set[int] = set()
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and id(value) not in seen:
                try:
                    value.enable_caching()
                except RuntimeError:  # no writable cache folder anywhere: compiles as before
                    continue
                seen.add(id(value))
    return len(seen)


CACHED_FUNCTIONS = cache_compiled_functions()

__all__ = ["CACHED_FUNCTIONS", "cache_compiled_functions", "umap"]
