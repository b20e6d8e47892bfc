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

from models.config import TrainConfig
from models.train import Trainer


def tiny_run_config(method: str = "swav", **over: object) -> TrainConfig:
    """A configuration that trains in about a second on 2 CPU cores (16-px shapes, 256 images)."""
    base: dict[str, object] = {
        "method": method,
        "width": 8,
        "epochs": 2,
        "batch_size": 32,
        "seed": 3,
        "data": {"name": "shapes", "num_train": 256, "image_size": 16},
        "swav": {
            "num_prototypes": 10,
            "hidden_dim": 32,
            "feat_dim": 16,
            "freeze_prototypes_iters": 2,
        },
        "pcl": {
            "num_clusters": [8, 12],
            "queue_length": 64,
            "warmup_epochs": 1,
            "hidden_dim": 32,
            "feat_dim": 16,
        },
        "optim": {"lr": 0.1},
        "eval_max_images": 200,
        "amp": False,
    }
    base.update(over)
    return TrainConfig.model_validate(base)


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
