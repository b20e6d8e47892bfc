"""User-given data set folders must lie inside the allowed roots.

The data root of a run or an analysis is read by the server's processes, so without this check
any client could make the server read (or, with download, write into) any folder it can reach.
Paths are resolved first — `..` segments and symbolic links included — and then compared, so
neither `datasets/../../etc` nor a link out of a root gets through. A relative path is taken
relative to the first allowed root.
"""

from __future__ import annotations

from pathlib import Path

# Data sets that read a folder; the others are generated or bundled.
NEEDS_ROOT = frozenset({"cifar10", "stl10", "imagefolder"})


class DataRootError(ValueError):
    """The path is outside the allowed roots (or not a usable path at all)."""


def resolve_data_root(value: str, allowed: list[Path]) -> Path:
    """`value` as an absolute, resolved path inside one of `allowed`; DataRootError if not."""
    text = value.strip()
    if not text or "\x00" in text:
        raise DataRootError("data_root must be a non-empty path")
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~nobody/…": no such user, so no home folder to expand
        raise DataRootError(
            f"data_root {value!r} names the home folder of an unknown user; give the folder itself"
        ) from None
    if not path.is_absolute():
        path = allowed[0] / path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, say
        raise DataRootError(f"data_root {value!r} cannot be resolved: {e}") from None
    for root in allowed:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    roots = ", ".join(str(r) for r in allowed)
    raise DataRootError(
        f"data_root {value!r} is outside the allowed data folders ({roots}); put the data set "
        "there, or start the server with PROTOSCOPE_DATA_ROOTS naming its folder"
    )


def default_data_root(dataset: str, allowed: list[Path]) -> Path | None:
    """`<first allowed root>/<dataset>` when that folder exists (the documented layout)."""
    if dataset not in NEEDS_ROOT:
        return None
    candidate = allowed[0] / dataset
    return candidate if candidate.is_dir() else None
