"""A checkpoint's hash is read once per file version and follows every rewrite."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from models.checkpoints import CheckpointError
from models.disk_cache import _hash_of_version, checkpoint_hash


def test_the_hash_is_remembered_per_version_and_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"first")
    before = _hash_of_version.cache_info().hits
    assert checkpoint_hash(path) == hashlib.sha256(b"first").hexdigest()
    assert checkpoint_hash(path) == hashlib.sha256(b"first").hexdigest()
    assert _hash_of_version.cache_info().hits == before + 1  # the second read no bytes
    # Rewritten as the trainer does (a new file renamed over it): the new bytes' hash.
    tmp = tmp_path / ".last.pt.tmp"
    tmp.write_bytes(b"second!")
    os.replace(tmp, path)
    assert checkpoint_hash(path) == hashlib.sha256(b"second!").hexdigest()
    path.unlink()
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        checkpoint_hash(path)
