"""Slow analyses (diagnostics, maps, galleries, comparisons) off the event loop, cached.

A request names a computation by a key (its kind, the checkpoint files' identities and the
parameters). The answer comes from memory, else from a JSON file under the data dir, else a
job is started on a small thread pool; the request waits briefly for it (quick answers need no
second round trip) and otherwise answers 202 with the job's progress. Every later request for
the same key finds the same job — never a second computation — until it finishes.

The results are serialised to JSON bytes once and kept that way: a 5,000-point map is then
served without re-encoding it for every request.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.store import dumps

log = logging.getLogger("protoscope.analysis")

Progress = Callable[[float, str], None]
# Results kept in memory (the files keep all of them).
MEMORY_ENTRIES = 48


class AnalysisFailed(Exception):
    """The computation failed; `status_code` and `message` are what the client gets."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass
class Ready:
    body: bytes


@dataclass
class Running:
    progress: float
    message: str


@dataclass
class _Job:
    key: str
    progress: float = 0.0
    message: str = "waiting for a free analysis worker"
    started: float = field(default_factory=time.monotonic)
    future: concurrent.futures.Future[bytes] | None = None

    def update(self, fraction: float, message: str) -> None:
        # Called from the computing thread; plain attribute writes are atomic in CPython.
        self.progress = min(1.0, max(0.0, float(fraction)))
        self.message = str(message)


def classify(exc: BaseException, scrub: Callable[[str], str]) -> AnalysisFailed:
    """The HTTP status and message for an exception raised by an analysis."""
    from models.checkpoints import CheckpointError
    from models.data import DatasetError

    text = scrub(str(exc).strip()) or type(exc).__name__
    if isinstance(exc, AnalysisFailed):
        return exc
    if isinstance(exc, CheckpointError):
        return AnalysisFailed(400, f"the checkpoint cannot be used: {text}")
    if isinstance(exc, DatasetError):
        return AnalysisFailed(400, f"the data set cannot be loaded: {text}")
    if isinstance(exc, IndexError):
        return AnalysisFailed(404, text)
    if isinstance(exc, ValueError):
        return AnalysisFailed(400, text)
    if isinstance(exc, MemoryError):
        return AnalysisFailed(507, "the analysis ran out of memory; try fewer images")
    return AnalysisFailed(500, f"the analysis failed: {type(exc).__name__}: {text}")


class AnalysisService:
    def __init__(self, cache_dir: Path, workers: int, scrub: Callable[[str], str]) -> None:
        self.cache_dir = cache_dir
        self.scrub = scrub
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="analysis")
        self._jobs: dict[str, _Job] = {}
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def warm_up(self) -> None:
        """Compile UMAP's numba code on a throwaway map, on one of the analysis threads.

        The first map in a process otherwise pays the compile (about 7 s of CPU; ~2 s once
        models/umap_import.py has it cached on disk) on top of its own work; at start-up
        nobody waits for it. A failure here only costs that.
        """

        def run() -> None:
            import numpy as np

            from models.embedding_map import umap_2d

            t0 = time.monotonic()
            try:
                umap_2d(np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
            except Exception as exc:  # warm-up only: the real request reports real errors
                log.warning("UMAP warm-up failed: %s", exc)
                return
            log.info("UMAP compiled in %.1f s", time.monotonic() - t0)

        self._pool.submit(run)

    @staticmethod
    def key(kind: str, identity: dict[str, Any]) -> str:
        blob = json.dumps(identity, sort_keys=True, default=str)
        return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"

    def _file(self, key: str) -> Path:
        return self.cache_dir / f"{key}.json"

    def _remember(self, key: str, body: bytes) -> None:
        with self._lock:
            self._memory[key] = body
            self._memory.move_to_end(key)
            while len(self._memory) > MEMORY_ENTRIES:
                self._memory.popitem(last=False)

    def _cached(self, key: str) -> bytes | None:
        with self._lock:
            body = self._memory.get(key)
            if body is not None:
                self._memory.move_to_end(key)
                return body
        path = self._file(key)
        try:
            body = path.read_bytes()
            json.loads(body)  # a damaged file is recomputed, not served
        except (OSError, ValueError):
            return None
        self._remember(key, body)
        return body

    def view(self, key: str, name: str, body: bytes, make: Callable[[bytes], bytes]) -> bytes:
        """`make(body)` of the answer under `key`, kept in memory beside it under `name`.

        For a route that serves a part of a larger answer (a timeline without its galleries,
        one prototype's galleries, a page of a map): cutting a 2 MB answer took ~0.1 s of CPU
        on every request. Made again when the memory has let it go, never stored on disk.
        """
        view_key = f"{key}:{name}"
        with self._lock:
            made = self._memory.get(view_key)
            if made is not None:
                self._memory.move_to_end(view_key)  # a view read on every poll stays in memory
        if made is None:
            made = make(body)
            self._remember(view_key, made)
        return made

    def _compute(self, job: _Job, compute: Callable[[Progress], Any]) -> bytes:
        job.update(0.0, "starting")
        result = compute(job.update)
        body = dumps(result).encode()
        path = self._file(job.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
        self._remember(job.key, body)
        with self._lock:  # served from memory from now on; only failures wait to be reported
            self._jobs.pop(job.key, None)
        log.info("%s computed in %.1f s", job.key, time.monotonic() - job.started)
        return body

    def get(self, key: str, compute: Callable[[Progress], Any], wait_s: float) -> Ready | Running:
        """The cached answer, or the running job's progress; raises AnalysisFailed."""
        body = self._cached(key)
        if body is not None:
            return Ready(body)
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = _Job(key)
                job.future = self._pool.submit(self._compute, job, compute)
                self._jobs[key] = job
        assert job.future is not None
        concurrent.futures.wait([job.future], timeout=wait_s)
        if not job.future.done():
            return Running(job.progress, job.message)
        with self._lock:
            self._jobs.pop(key, None)  # a failure is reported once; the next request retries
        exc = job.future.exception()
        if exc is not None:
            if not isinstance(exc, AnalysisFailed | ValueError | IndexError):
                log.error("%s failed", key, exc_info=exc)
            raise classify(exc, self.scrub)
        return Ready(job.future.result())
