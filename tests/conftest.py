"""Shared fixtures: tiny real training runs, trained once per test session."""

from __future__ import annotations

import os

# One torch thread per process, for this process and every server, worker and CLI it starts
# (they inherit the environment; set before torch is imported). The suite must pass with a
# second CPU-heavy process beside it: there, a 2-thread step took 352 ms against 245 ms for
# one thread (OpenMP threads spin waiting for a core), while on an idle 2-core machine one
# thread costs only ~20 % (small convolutions scale poorly).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PROTOSCOPE_WORKER_THREADS", "1")

from pathlib import Path

import pytest

from models.train import Trainer
from tests.support import tiny_run_config


def _train(root: Path, method: str, **over: object) -> Path:
    """Train a tiny run into `root` and return its last checkpoint."""
    Trainer(tiny_run_config(method, **over), root).run()
    return root / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def swav_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("swav"), "swav")


@pytest.fixture(scope="session")
def swav_checkpoint_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second SwAV run (another seed), for comparisons."""
    return _train(tmp_path_factory.mktemp("swav_b"), "swav", seed=11)


@pytest.fixture(scope="session")
def pcl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("pcl"), "pcl")
