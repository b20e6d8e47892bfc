"""Training jobs: one OS process per run, a queue in front of a concurrency limit, a monitor.

The store is the queue: a run is `queued` until a slot frees, then `running` with its pid. A
monitor thread polls the processes (every `monitor_interval_s`): a worker that died without
reporting its end — kill -9, the OOM killer, a crash in C code — gets its run finalised with
the reason, and an `end` event so SSE clients stop waiting. Workers run in their own session,
so Ctrl-C on the server reaches only the server; on shutdown the server asks them to stop
(they checkpoint) and marks them `interrupted`. A server that died without shutting down
finds, on start-up, runs whose worker is still alive (it adopts them) or dead (`interrupted`,
resumable from the last checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from backend import processes
from backend.settings import Settings
from backend.store import ACTIVE_STATUSES, Store

log = logging.getLogger("protoscope.jobs")

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
RESUME_HINT = "resume continues from the last checkpoint"


class JobError(Exception):
    """A request the run's state does not allow; `status_code` is the HTTP answer."""

    def __init__(self, message: str, status_code: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def _log_tail(path: Path, max_bytes: int = 4096) -> str:
    """The last non-empty line of a worker's log (the exception line of a traceback)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - max_bytes))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    tail = deque((ln.strip() for ln in lines if ln.strip()), maxlen=1)
    return tail[0][:300] if tail else ""


class JobManager:
    """Starts, watches, stops and resumes training processes for the runs in `store`."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[int, IO[bytes]] = {}
        self._adopted: dict[int, tuple[int, str | None]] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._accepting = True
        # Told the id of each run whose training process has ended (its status final by then).
        self.on_ended: Callable[[int], None] | None = None

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self.tick()
        self._thread = threading.Thread(target=self._monitor, name="job-monitor", daemon=True)
        self._thread.start()

    def recover(self) -> None:
        """Runs the store says are running, from a server that is gone: adopt or interrupt."""
        with self._lock:
            for run in self.store.runs_with_status(["running"]):
                pid, token = run["pid"], run["pid_start"]
                if processes.is_alive(pid, token):
                    log.info("run %s: adopting its training process %s", run["id"], pid)
                    self._adopted[run["id"]] = (pid, token)
                    continue
                self.store.finalize(
                    run["id"],
                    "interrupted",
                    f"its training process (pid {pid}) ended while the server was down; "
                    + RESUME_HINT,
                    only_from=("running",),
                )

    def shutdown(self) -> None:
        """Stop the monitor; ask every training process to checkpoint and end; then kill."""
        self._accepting = False
        self._quit.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            running = {**{k: (p.pid, None) for k, p in self._children.items()}, **self._adopted}
            for run_id, (pid, token) in running.items():
                self.store.request_stop(run_id, "shutdown")
                processes.send(pid, signal.SIGTERM, token)
            deadline = time.monotonic() + self.settings.shutdown_grace_s
            while time.monotonic() < deadline and any(self._alive(run_id) for run_id in running):
                time.sleep(0.1)
            for run_id, (pid, token) in running.items():
                if self._alive(run_id):
                    log.warning("run %s: no checkpoint within the grace period; killing it", run_id)
                    processes.send(pid, signal.SIGKILL, token)
            for proc in self._children.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            self._reap()
            for fh in self._logs.values():
                fh.close()
            self._logs.clear()

    def _alive(self, run_id: int) -> bool:
        proc = self._children.get(run_id)
        if proc is not None:
            return proc.poll() is None
        pid, token = self._adopted.get(run_id, (None, None))
        return processes.is_alive(pid, token)

    # --- the monitor ----------------------------------------------------------------------------
    def _monitor(self) -> None:
        while not self._quit.is_set():
            try:
                self.tick()
            except Exception:  # the monitor must survive a locked database or a full disk
                log.exception("job monitor")
            self._wake.wait(self.settings.monitor_interval_s)
            self._wake.clear()

    def tick(self) -> None:
        """Notice ended processes, enforce stop time-outs, start queued runs."""
        with self._lock:
            self._reap()
            self._enforce_stop_timeouts()
            self._schedule()

    def _reap(self) -> None:
        for run_id, proc in list(self._children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._children[run_id]
            fh = self._logs.pop(run_id, None)
            if fh is not None:
                fh.close()
            self.store.set_exit_code(run_id, code)
            self._finalize_dead(run_id, code)
            self._ended(run_id)
        for run_id, (pid, token) in list(self._adopted.items()):
            if not processes.is_alive(pid, token):
                del self._adopted[run_id]
                self._finalize_dead(run_id, None)
                self._ended(run_id)

    def _ended(self, run_id: int) -> None:
        # Not while shutting down: the runs ended then are interrupted, to be resumed, and work
        # started for them would only hold up the server's exit.
        if self.on_ended is None or not self._accepting:
            return
        try:
            self.on_ended(run_id)
        except Exception:  # a listener's failure must not stop the monitor from scheduling
            log.exception("run %s: on_ended", run_id)

    def _finalize_dead(self, run_id: int, code: int | None) -> None:
        """A process ended; if its run is still `running` it ended without saying why."""
        run = self.store.get_run(run_id)
        if run is None or run["status"] != "running":
            return  # the worker reported its own end (completed, stopped, failed)
        status, reason = self._death(run, code)
        if self.store.finalize(run_id, status, reason, only_from=("running",)):
            log.warning("run %s: %s (%s)", run_id, status, reason)

    def _death(self, run: dict[str, Any], code: int | None) -> tuple[str, str]:
        what = "the training process"
        if run["stop_requested"] == "shutdown":
            return "interrupted", f"the server shut down during training; {RESUME_HINT}"
        if run["stop_requested"] == "user":
            return "stopped", f"stopped on request ({what} had to be killed)"
        if code is None:
            return "interrupted", f"{what} ended without reporting; {RESUME_HINT}"
        if code < 0:
            # A signal nobody here sent: kill -9 by hand, or the OOM killer. The run failed,
            # but its checkpoints are intact, so it stays resumable.
            return "failed", (
                f"{what} exited with code {code} ({processes.describe_exit(code)}, by hand or "
                f"by the system when memory ran out) without reporting; {RESUME_HINT}"
            )
        tail = _log_tail(self.store.absolute(run["out_dir"]) / "worker.log")
        detail = f": {tail}" if tail else ""
        return "failed", f"{what} exited with code {code} without reporting why{detail}"

    def _enforce_stop_timeouts(self) -> None:
        limit = self.settings.stop_timeout_s
        now = time.time()
        for run in self.store.runs_with_status(["running"]):
            asked = run["stop_requested_at"]
            if asked is None or now - asked < limit:
                continue
            proc = self._children.get(run["id"])
            pid, token = (
                (proc.pid, None) if proc is not None else self._adopted.get(run["id"], (None, None))
            )
            if processes.send(pid, signal.SIGKILL, token):
                log.warning("run %s ignored its stop request for %.0f s: killed", run["id"], limit)

    def _schedule(self) -> None:
        if not self._accepting:
            return
        active = len(self._children) + len(self._adopted)
        for run in self.store.runs_with_status(["queued"]):
            if active >= self.slots:
                return
            if self._spawn(run):
                active += 1

    def _spawn(self, run: dict[str, Any]) -> bool:
        run_id = int(run["id"])
        out = self.store.absolute(run["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        # Without a checkpoint there is nothing to continue: the run starts again from step 0.
        resume = bool(run["resume"]) and (out / "checkpoints" / "last.pt").is_file()
        cmd = [sys.executable, "-m", "backend.worker", "--data", str(self.settings.data_path)]
        cmd += ["--run", str(run_id), "--nice", str(self.settings.worker_nice)]
        if resume:
            cmd.append("--resume")
        env = dict(os.environ)
        share = max(1, (os.cpu_count() or 1) // self.slots)
        env.setdefault("PROTOSCOPE_WORKER_THREADS", str(share))
        # The worker must import this very code, wherever the server was started from.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
        )
        logfile = (out / "worker.log").open("ab")
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.settings.data_path),
                start_new_session=True,  # Ctrl-C on the server must not hit the training
            )
        except OSError as exc:
            logfile.close()
            self.store.finalize(run_id, "failed", f"cannot start the training process: {exc}")
            return False
        if not self.store.mark_running(run_id, proc.pid, processes.start_token(proc.pid)):
            # Stopped while it was being started: take the process back down.
            proc.kill()
            proc.wait()
            logfile.close()
            return False
        self._children[run_id] = proc
        self._logs[run_id] = logfile
        log.info("run %s: started pid %s%s", run_id, proc.pid, " (resume)" if resume else "")
        return True

    @property
    def slots(self) -> int:
        """Training processes at once: max_concurrent_runs, but never more than the cores.

        Each process gets cores // slots torch threads; more processes than cores would only
        share them and each finish later (a sweep queues its cells behind this limit).
        """
        return max(1, min(self.settings.max_concurrent_runs, os.cpu_count() or 1))

    # --- requests -------------------------------------------------------------------------------
    def submitted(self) -> None:
        """A run was queued: start it now if a slot is free (not at the next monitor tick)."""
        if self._accepting:
            self.tick()

    def stop(self, run_id: int) -> dict[str, Any]:
        with self._lock:
            run = self._get(run_id)
            if run["status"] == "queued":
                self.store.finalize(
                    run_id, "stopped", "stopped before it started", only_from=("queued",)
                )
            elif run["status"] == "running":
                if run["stop_requested"] is None:
                    self.store.request_stop(run_id, "user")
                # The flag alone would do (the worker polls it); the signal makes it prompt.
                proc = self._children.get(run_id)
                pid, token = (
                    (proc.pid, None)
                    if proc is not None
                    else self._adopted.get(run_id, (None, None))
                )
                processes.send(pid, signal.SIGTERM, token)
            else:
                raise JobError(f"run {run_id} is already {run['status']}; there is nothing to stop")
            return self._get(run_id)

    def resume(self, run_id: int) -> dict[str, Any]:
        with self._lock:
            run = self._get(run_id)
            status = run["status"]
            if status in ACTIVE_STATUSES:
                raise JobError(f"run {run_id} is {status}; only a finished run can be resumed")
            if status == "completed":
                raise JobError(
                    f"run {run_id} completed ({run['reason'] or 'all epochs done'}); there is "
                    "nothing to resume — start a new run with more epochs or a larger budget"
                )
            out = self.store.absolute(run["out_dir"])
            has_checkpoint = (out / "checkpoints" / "last.pt").is_file()
            if not self.store.queue_again(run_id, resume=has_checkpoint):
                raise JobError(f"run {run_id} changed state meanwhile; try again")
        self.submitted()
        return self._get(run_id)

    def _get(self, run_id: int) -> dict[str, Any]:
        run = self.store.get_run(run_id)
        if run is None:
            raise JobError(f"no run {run_id}", status_code=404)
        return run

    def active_pids(self) -> dict[int, int]:
        with self._lock:
            out = {k: p.pid for k, p in self._children.items()}
            out.update({k: pid for k, (pid, _) in self._adopted.items()})
            return out
