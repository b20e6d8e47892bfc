"""The on-disk cache every analysis shares: content-hash keys and atomic .npz files.

Entries are plain numpy arrays in .npz files, read with allow_pickle=False (never pickle: a
cache folder is as untrusted as any file). Keys hash the checkpoint's bytes (not its path or
mtime: a checkpoint rewritten in place is a new entry) and every parameter that changes the
content. A damaged entry reads as missing and is recomputed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


def cache_root() -> Path:
    """$PROTOSCOPE_CACHE, else ~/.cache/protoscope (the backend passes its own data folder's)."""
    base = os.environ.get("PROTOSCOPE_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "protoscope"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file, read in chunks (checkpoints can be hundreds of MB)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_hash(checkpoint: str | Path) -> str:
    """sha256 of the checkpoint file's bytes; CheckpointError when there is no such file.

    Remembered per file version (path, inode, size, modification time): a timeline hashes
    every checkpoint of its run each time the run gains one, and a cache miss hashes it again
    for the features; a ResNet-50 checkpoint is ~100 MB read each time. Checkpoints are written
    by atomic rename, so a rewritten file has another inode and modification time.
    """
    from models.checkpoints import CheckpointError

    path = Path(checkpoint)
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is None or not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return _hash_of_version(str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _hash_of_version(path: str, inode: int, size: int, mtime_ns: int) -> str:
    # The process's only memo here: pure (the same file version has the same bytes), bounded.
    return file_sha256(path)


def cache_key(version: int, checkpoint_sha256: str, **params: Any) -> str:
    """A file-name-safe key over a format version, the checkpoint's hash and every parameter."""
    blob = json.dumps({"v": version, "ckpt": checkpoint_sha256, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def save_arrays(path: Path, arrays: Arrays) -> None:
    """Atomic .npz write: a crash mid-write leaves no half file for the next reader."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    os.replace(tmp, path)


def load_arrays(path: Path) -> Arrays | None:
    """The cached arrays, or None when the entry is missing or damaged (it is recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def cached_arrays(path: Path, compute: Callable[[], Arrays]) -> tuple[Arrays, bool]:
    """(arrays, True) from the cache file at `path`, else (compute(), False), saved there."""
    arrays = load_arrays(path) if path.exists() else None
    if arrays is not None:
        return arrays, True
    arrays = compute()
    save_arrays(path, arrays)
    return arrays, False
