"""One training run in its own process: `python -m backend.worker --data DIR --run ID [--resume]`.

The server starts one of these per run, so a crash, a NaN or a kill -9 here can never take the
server down. The worker reads its configuration from the SQLite store, trains with
`models.train.Trainer`, and writes every event straight into the store (the server's SSE
streams pick them up from there). It stops when the store says so or on SIGTERM/SIGINT: the
trainer then saves a checkpoint and emits `end`, so a stopped run can be resumed exactly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from backend.store import Store

# How often the worker asks the store whether someone requested a stop (seconds).
STOP_POLL_S = 0.5
SHUTDOWN_REASON = "the server shut down during training; resume continues from the last checkpoint"


class StopWatch:
    """`should_stop` for the trainer: a signal, or the store's stop flag (checked at most
    every STOP_POLL_S, so a step costs no database read)."""

    def __init__(self, store: Store, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self.signalled = False
        self._flag = False
        self._checked = 0.0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True

    def __call__(self) -> bool:
        if self.signalled or self._flag:
            return True
        now = time.monotonic()
        if now - self._checked >= STOP_POLL_S:
            self._checked = now
            self._flag = self.store.stop_requested(self.run_id) is not None
        return self._flag


class Emitter:
    """The trainer's `emit`: stores each event, registering checkpoints as they are written."""

    def __init__(self, store: Store, run: dict[str, Any]) -> None:
        self.store = store
        self.run = run
        self.ended = False

    def _checkpoint_row(self, event: dict[str, Any]) -> dict[str, Any]:
        path = Path(str(event.get("path", "")))
        cfg = self.run["config"]
        complete = bool(event.get("epoch_complete", True))
        epoch = event.get("epoch")
        size = path.stat().st_size if path.is_file() else None
        return {
            "run_id": self.run["id"],
            "kind": "run",
            "path": self.store.relative(path),
            "name": self.run.get("name"),
            "filename": path.name,
            "method": cfg.get("method"),
            "dataset": (cfg.get("data") or {}).get("name"),
            "source": "protoscope",
            # Completed epochs: the trainer counts epochs from 0 and a partial one is unfinished.
            "epoch": (epoch + 1 if complete else epoch) if isinstance(epoch, int) else None,
            "step": event.get("step"),
            "epochs_done": event.get("epochs_done"),
            "partial": not complete,
            "num_prototypes": (cfg.get("swav") or {}).get("num_prototypes")
            if cfg.get("method") == "swav"
            else None,
            "size_bytes": size,
        }

    def _final(self, event: dict[str, Any]) -> dict[str, Any]:
        """The end event with the run's final status: a stop for shutdown is an interruption."""
        why = self.store.stop_requested(self.run["id"])
        if event.get("status") == "stopped":
            if why == "shutdown":
                return {**event, "status": "interrupted", "reason": SHUTDOWN_REASON}
            if why == "user":
                return {**event, "reason": "stopped on request"}
        return event

    def __call__(self, event: dict[str, Any]) -> None:
        checkpoint = None
        if event.get("type") == "checkpoint":
            checkpoint = self._checkpoint_row(event)
            # Clients see paths relative to the data dir, never the server's file system.
            event = {**event, "path": checkpoint["path"]}
        elif event.get("type") == "checkpoint_removed":
            event = {**event, "path": self.store.relative(Path(str(event.get("path", ""))))}
        elif event.get("type") == "end":
            event = self._final(event)
            self.ended = True
        self.store.add_event(self.run["id"], event, checkpoint)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # Domain errors carry user-facing messages; anything else gets its type for context.
    from models.checkpoints import CheckpointError
    from models.data import DatasetError
    from models.train import TrainingError

    if isinstance(exc, DatasetError | CheckpointError | TrainingError):
        return text
    return f"{type(exc).__name__}: {text}"


# Set by the server: this worker's share of the cores. Two runs with torch's default (every
# core each) on a 2-core machine oversubscribed it so badly that each ran ~35x slower.
THREADS_ENV = "PROTOSCOPE_WORKER_THREADS"


def run_worker(data_dir: Path, run_id: int, resume: bool) -> int:
    store = Store(data_dir / "protoscope.sqlite3", data_dir)
    run = store.get_run(run_id)
    if run is None:
        print(f"worker: no run {run_id} in {store.path}", file=sys.stderr)
        return 2
    stop = StopWatch(store, run_id)
    signal.signal(signal.SIGTERM, stop.on_signal)
    signal.signal(signal.SIGINT, stop.on_signal)
    emit = Emitter(store, run)
    try:
        from models.config import TrainConfig
        from models.train import Trainer, TrainingError
    except Exception as exc:
        emit({"type": "end", "status": "failed", "reason": f"cannot load the trainer: {exc}"})
        raise
    try:
        cfg = TrainConfig.model_validate(run["config"])
        threads = os.environ.get(THREADS_ENV)
        if cfg.num_threads is None and threads:
            import torch

            torch.set_num_threads(int(threads))
        trainer = Trainer(
            cfg,
            store.absolute(run["out_dir"]),
            resume=resume,
            emit=emit,
            progress=False,
            should_stop=stop,
        )
        trainer.run()
        return 0
    except BaseException as exc:
        # The trainer emits `end` itself for errors inside its loop (a NaN loss, say); errors
        # while setting up (data set, checkpoint) end the run here, with the same message.
        if not emit.ended:
            now = store.get_run(run_id) or {}
            emit(
                {"type": "end", "status": "failed", "reason": _reason(exc), "step": now.get("step")}
            )
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return 130
        if not isinstance(exc, TrainingError):
            raise  # the traceback goes to the run's worker.log for whoever debugs it
        print(f"worker: run {run_id} failed: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.worker", description=__doc__)
    ap.add_argument("--data", required=True, type=Path, help="the backend's data dir")
    ap.add_argument("--run", required=True, type=int, help="run id")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    ap.add_argument("--nice", type=int, default=0, help="lower the CPU priority by this much")
    args = ap.parse_args(argv)
    if args.nice > 0:
        os.nice(args.nice)
    return run_worker(args.data.resolve(), args.run, args.resume)


if __name__ == "__main__":
    sys.exit(main())
