"""Writing checkpoints atomically and reading them as untrusted input.

Only ever `torch.load(weights_only=True)` (no pickle can run code), zip bombs refused, a
write either lands whole or leaves the previous file as it was.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class CheckpointError(ValueError):
    """A checkpoint cannot be written, read or used; the message says what is wrong."""


# --- writing ------------------------------------------------------------------------------------
def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = _current_umask()

# What `torch.load(weights_only=True)` rebuilds without extra allow-listing.
_SAFE_LEAVES: tuple[type, ...] = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    torch.dtype,
    torch.device,
    torch.Size,
)
_SAFE_TENSORS: tuple[type, ...] = (Tensor, nn.Parameter)
_SAFE_MAPPINGS: tuple[type, ...] = (dict, collections.OrderedDict)
_SAFE_SEQUENCES: tuple[type, ...] = (list, tuple, set)


def _check_loadable(obj: Any, where: str) -> None:
    """Refuse, before writing, anything a weights_only load would refuse later.

    A payload holding e.g. a numpy array or a numpy scalar saves without complaint but can never
    be read back safely; catching it here names the offending entry instead of breaking a
    resume days later.
    """
    kind = type(obj)
    if kind in _SAFE_LEAVES or kind in _SAFE_TENSORS:
        return
    if kind in _SAFE_MAPPINGS:
        for key, value in obj.items():
            if type(key) not in _SAFE_LEAVES:
                raise CheckpointError(
                    f"cannot save: {where} has a key of type {type(key).__name__} "
                    f"({key!r}), which torch.load(weights_only=True) refuses"
                )
            _check_loadable(value, f"{where}[{key!r}]")
        return
    if kind in _SAFE_SEQUENCES:
        for i, value in enumerate(obj):
            _check_loadable(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"cannot save: {where} is a {kind.__module__}.{kind.__qualname__}, which "
        "torch.load(weights_only=True) refuses; store tensors, dicts, lists, tuples, str, "
        "int, float, bool or None"
    )


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, and only then
    renamed over `path` (`os.replace`, atomic on POSIX). A crash, an exception or a full disk
    mid-write leaves the previous file at `path` byte-identical, and the temporary file is
    removed. Raises CheckpointError, before touching the disk, when the payload holds anything
    `torch.load(weights_only=True)` could not read back.
    """
    path = Path(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"cannot save {path}: the payload must be a dict")
    _check_loadable(payload, "payload")
    if path.is_dir():
        raise CheckpointError(f"cannot save {path}: it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, kept on disk on purpose
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with tmp as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        # NamedTemporaryFile creates the file 0600; give it the mode a plain open() would.
        os.chmod(tmp.name, 0o666 & ~_UMASK)
        os.replace(tmp.name, path)
    except BaseException as e:
        written = _size_or_none(tmp.name)
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        if isinstance(e, RuntimeError):
            # torch's zip writer reports a short write (a full disk, a file-size limit) as
            # "[enforce fail at inline_container.cc:…] unexpected pos …": say what happened.
            raise CheckpointError(
                f"cannot save {path}: writing failed after {written} bytes — is the disk full? "
                f"({_free_space(path.parent)}); the previous checkpoint is untouched "
                f"[{_first_line(e, 200)}]"
            ) from None
        raise
    _fsync_dir(path.parent)


def _size_or_none(name: str) -> int | None:
    try:
        return os.stat(name).st_size
    except OSError:
        return None


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free} bytes free"
    except OSError:
        return "free space unknown"


# --- reading ------------------------------------------------------------------------------------
def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return (line[:limit] + "…") if len(line) > limit else line


# A zip checkpoint may declare at most this much more uncompressed data than the file holds.
# torch.save stores its records uncompressed, so a genuine file declares about its own size;
# torch.load would otherwise allocate and inflate whatever the archive declares (a 1 MB upload
# expanding to gigabytes of memory) before it could notice anything was wrong.
ZIP_SLACK_BYTES = 64 * 2**20
ZIP_MAX_RATIO = 4


def _refuse_zip_bomb(path: Path, size: int) -> None:
    """CheckpointError when a zip archive declares far more data than the file contains."""
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy (pickle) format, or not a checkpoint at all: torch.load decides
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # a damaged archive: torch.load reports it as corrupt
    declared = sum(max(i.file_size, 0) for i in infos)
    if declared > max(ZIP_MAX_RATIO * size, size + ZIP_SLACK_BYTES):
        biggest = max(infos, key=lambda i: i.file_size)
        raise CheckpointError(
            f"{path}: refused: the archive declares {declared} bytes of content in a "
            f"{size}-byte file ({biggest.filename!r}: {biggest.file_size} bytes from "
            f"{biggest.compress_size}); a checkpoint's records are stored uncompressed, so this "
            "looks like a zip bomb — nothing was decompressed"
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file with `torch.load(weights_only=True)` and nothing else.

    A missing path, a directory, an empty, truncated or corrupt file, random bytes, a plain
    pickle and a pickle that needs non-allow-listed globals (e.g. ``os.system``) all raise
    CheckpointError naming `path`; no code from the file is ever executed.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot access the file: {e.strerror or e}") from None
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    _refuse_zip_bomb(path, st.st_size)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", text, re.IGNORECASE)
        what = f" (it needs {found.group(1)})" if found else ""
        if found or "Weights only load failed" in text:
            raise CheckpointError(
                f"{path}: refused: the file holds objects other than tensors and plain "
                f"containers{what}; only weights are accepted, nothing in it was executed"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or not a checkpoint at all): "
            f"{_first_line(e)}"
        ) from None
    except MemoryError:
        raise CheckpointError(f"{path}: too large to load into memory") from None
    except Exception as e:  # zip, EOF, magic-number, storage errors: all mean "corrupt"
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{type(e).__name__}: {_first_line(e)}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: expected a dict (a state dict or a checkpoint), found {type(state).__name__}"
        )
    return state
