"""Real (tiny) training runs: loss goes down, events are written, resume is exact, CLI errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoints import load_checkpoint
from models.config import TrainConfig
from models.train import Trainer, TrainingError
from protoscope.cli import main as cli_main
from tests.support import tiny_run_config


def tiny_config(method: str = "swav", **over: object) -> TrainConfig:
    return tiny_run_config(method, **over)


def read_events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_swav_loss_goes_down_and_events_are_complete(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=4, augment={"num_large": 2, "num_small": 2, "small_frac": 0.5})
    end = Trainer(cfg, tmp_path, progress=False).run()
    assert end["status"] == "completed"
    events = read_events(tmp_path)
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) == 4 * (256 // 32)
    first = sum(e["loss"] for e in steps[:4]) / 4
    last = sum(e["loss"] for e in steps[-4:]) / 4
    assert last < first, (first, last)
    for key in ("loss", "lr", "usage", "usage_entropy", "active_prototypes", "assignment_entropy"):
        assert key in steps[-1]
    assert len(steps[-1]["usage"]) == 10 and sum(steps[-1]["usage"]) == 32
    epochs = [e for e in events if e["type"] == "epoch"]
    assert len(epochs) == 4
    assert 0.0 <= epochs[-1]["knn_top1"] <= 1.0
    assert len(epochs[-1]["assignments"]) == 200
    assert events[-1]["type"] == "end"
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 3 and ckpt["step"] == len(steps)


def test_pcl_runs_warmup_then_estep_with_phi(tmp_path: Path) -> None:
    cfg = tiny_config("pcl", epochs=2)
    Trainer(cfg, tmp_path, progress=False).run()
    events = read_events(tmp_path)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert "phi" not in epochs[0]  # warm-up: InfoNCE only
    phi = epochs[1]["phi"]
    assert [len(p) for p in phi] == [8, 12]
    assert all(math.isclose(sum(p) / len(p), 0.2, rel_tol=1e-4) for p in phi)
    steps = [e for e in events if e["type"] == "step"]
    assert "loss_protonce" in steps[-1] and steps[-1]["active_prototypes"] >= 1


def test_resume_is_exact(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=2)
    straight = tmp_path / "straight"
    Trainer(cfg, straight, progress=False).run()
    # Same run, stopped mid-epoch after 3 steps, resumed and stopped again in epoch 2 (step 11),
    # then resumed to the end: the stop request leaves a partial checkpoint each time.
    split = tmp_path / "split"
    for stop_at, resume in ((3, False), (11, True), (None, True)):
        trainer = Trainer(cfg, split, resume=resume, progress=False)
        if stop_at is not None:
            trainer.should_stop = lambda t=trainer, s=stop_at: t.step >= s
        end = trainer.run()
        assert end["status"] == ("stopped" if stop_at else "completed")
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps_a = [e["loss"] for e in read_events(straight) if e["type"] == "step"]
    steps_b = [e["loss"] for e in read_events(split) if e["type"] == "step"]
    assert steps_a == steps_b


def test_nan_loss_fails_the_run_with_a_reason(tmp_path: Path, monkeypatch) -> None:
    import models.swav as swav

    real = swav.swapped_prediction_loss
    calls = {"n": 0}

    def poisoned(*args: object, **kw: object) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*args, **kw)
        return loss * float("nan") if calls["n"] > 10 else loss  # diverges in epoch 2

    monkeypatch.setattr(swav, "swapped_prediction_loss", poisoned)
    cfg = tiny_config(epochs=2)
    with pytest.raises(TrainingError, match="loss became nan"):
        Trainer(cfg, tmp_path, progress=False).run()
    end = read_events(tmp_path)[-1]
    assert end["type"] == "end" and end["status"] == "failed" and "nan" in end["reason"]
    # The epoch-1 checkpoint written before the failure is intact and loadable.
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["step"] == 8
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_supervised_baseline_learns(tmp_path: Path) -> None:
    cfg = tiny_config("supervised", epochs=3)
    Trainer(cfg, tmp_path, progress=False).run()
    steps = [e for e in read_events(tmp_path) if e["type"] == "step"]
    assert steps[-1]["loss"] < steps[0]["loss"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "protoscope", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--method", "byol"], "invalid choice"),
        (["train", "--epochs", "0"], "epochs"),
        (["train", "--epsilon", "-1"], "swav.epsilon"),
        (["train", "--set", "swav.bogus=3"], "bogus"),
        (
            ["train", "--dataset", "cifar10", "--data-root", "/nonexistent/cifar"],
            "/nonexistent/cifar",
        ),
        (["train", "--num-clusters", "a,b"], "--num-clusters"),
    ],
)
def test_cli_bad_options_exit_2_with_message(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = run_cli(*args, "--out", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_train_tiny(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = cli_main(
        [
            "train",
            "--method",
            "swav",
            "--num-train",
            "128",
            "--image-size",
            "16",
            "--width",
            "4",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--num-prototypes",
            "8",
            "--out",
            str(out),
            "--quiet",
            "--no-amp",
        ]
    )
    assert code == 0
    assert (out / "checkpoints" / "epoch_0001.pt").exists()
    assert (out / "config.json").exists()
    proc = run_cli("train", "--out", str(out), "--quiet")
    assert proc.returncode == 2 and "--resume" in proc.stderr


def test_lr_warmup_counts_steps_even_when_epochs_is_only_a_bound() -> None:
    from models.train import _lr_at

    # A time-budgeted run sets epochs far beyond what it reaches; the warm-up must still last
    # warmup_epochs · steps_per_epoch steps, then follow the cosine.
    cfg = TrainConfig(epochs=1000, optim={"lr": 0.01, "warmup_epochs": 2, "final_lr_frac": 0.0})
    ramp = [_lr_at(cfg, 0.0, step, steps_per_epoch=100) for step in (0, 99, 199, 300)]
    assert ramp[0] == pytest.approx(0.01 / 200)
    assert ramp[1] == pytest.approx(0.01 * 100 / 200)
    assert ramp[2] == pytest.approx(0.01)
    assert ramp[3] == pytest.approx(0.01)
    assert _lr_at(cfg, 0.5, 1000, 100) == pytest.approx(0.005)
    assert _lr_at(cfg, 1.0, 5000, 100) == pytest.approx(0.0, abs=1e-12)
    no_warmup = TrainConfig(epochs=1000, optim={"lr": 0.01})
    assert _lr_at(no_warmup, 0.0, 0, 100) == pytest.approx(0.01)


def test_checkpoints_on_a_clock_keep_a_spread_and_say_their_epoch_fraction(tmp_path: Path) -> None:
    # 2 epochs of 8 steps; a timed checkpoint every 3 steps and at most 4 files kept.
    cfg = tiny_config(epochs=2, checkpoint_every_steps=3, keep_checkpoints=4)
    Trainer(cfg, tmp_path, progress=False).run()
    events = read_events(tmp_path)
    written = [e for e in events if e["type"] == "checkpoint"]
    assert [(e["step"], e["kind"]) for e in written] == [
        (3, "timed"),
        (6, "timed"),
        (8, "epoch"),
        (11, "timed"),
        (14, "timed"),
        (16, "epoch"),
    ]
    assert [e["epochs_done"] for e in written] == [3 / 8, 6 / 8, 1.0, 11 / 8, 14 / 8, 2.0]
    removed = [Path(e["path"]).name for e in events if e["type"] == "checkpoint_removed"]
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt") if p.name != "last.pt")
    assert len(kept) == 4 and len(removed) == 2
    assert "step_0000003.pt" in kept and "epoch_0002.pt" in kept  # the first and the newest
    assert not set(removed) & set(kept)
    for name in kept:  # every file left is a whole checkpoint
        ckpt = load_checkpoint(tmp_path / "checkpoints" / name)
        assert ckpt["extra"]["epochs_done"] == ckpt["step"] / 8


def test_resume_from_a_timed_checkpoint_after_a_crash_is_exact(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=2, checkpoint_every_steps=5)
    straight = tmp_path / "straight"
    Trainer(cfg, straight, progress=False).run()

    class Crash(Exception):
        pass

    def crash_after_step_6(event: dict) -> None:
        if event["type"] == "step" and event["step"] == 6:
            raise Crash  # the process dies: last.pt is the timed checkpoint of step 5

    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        Trainer(cfg, crashed, emit=crash_after_step_6, progress=False).run()
    assert load_checkpoint(crashed / "checkpoints" / "last.pt")["step"] == 5
    Trainer(cfg, crashed, resume=True, progress=False).run()
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(crashed / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = [e["loss"] for e in read_events(straight) if e["type"] == "step"]
    resumed = [e for e in read_events(crashed) if e["type"] == "step"]
    assert [e["loss"] for e in resumed if e["step"] > 6] == losses[6:]


def test_a_quick_knn_on_fixed_subsets_every_few_steps(tmp_path: Path) -> None:
    cfg = tiny_config(
        epochs=2, knn_every_steps=4, knn_query_images=100, knn_bank_images=128, knn_max_overhead=1
    )
    Trainer(cfg, tmp_path, progress=False).run()
    events = read_events(tmp_path)
    quick = [e for e in events if e["type"] == "knn"]
    assert [e["step"] for e in quick] == [4, 8, 12]
    for e in quick:
        assert 0.0 <= e["knn_top1"] <= 1.0
        assert (e["knn_bank"], e["knn_queries"]) == (128, 100)
        assert e["epochs_done"] == e["step"] / 8
    epoch = [e for e in events if e["type"] == "epoch"][-1]
    assert (epoch["knn_bank"], epoch["knn_queries"]) == (256, 200)  # the full evaluation's sets
    # Over budget: quick kNN costing more than 0 % of training time is skipped after the first.
    cfg = tiny_config(epochs=1, knn_every_steps=2, knn_max_overhead=0.0, knn_query_images=50)
    Trainer(cfg, tmp_path / "capped", progress=False).run()
    capped = [e for e in read_events(tmp_path / "capped") if e["type"] == "knn"]
    assert [e["step"] for e in capped] == [2]
