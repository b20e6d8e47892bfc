"""SQLite store: runs, their event log and checkpoints, shared by the server and the workers.

The event log is the single source of truth the API serves: every event gets a global,
strictly increasing id (SQLite's AUTOINCREMENT rowid) that doubles as the SSE id. WAL mode lets
the server read while training processes write; every write is a `BEGIN IMMEDIATE`
transaction, so writers queue on SQLite's lock (busy_timeout) instead of failing mid-way, and
ids become visible in commit order — a reader never sees id n+1 before id n.

A `Store` opens one connection per thread (sqlite3 connections must not cross threads); it has
no module-level state, so the server, each worker process and each test hold their own.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.collapse_rules import RECENT_STEPS

ACTIVE_STATUSES = ("queued", "running")
TERMINAL_STATUSES = ("completed", "stopped", "failed", "interrupted")
# Ended before its budget: POST /runs/{id}/resume queues it again from its last checkpoint.
RESUMABLE_STATUSES = ("stopped", "failed", "interrupted")
# A writer waits this long for another writer's transaction before giving up (ms).
BUSY_TIMEOUT_MS = 20_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    config TEXT NOT NULL,            -- TrainConfig as JSON
    request TEXT NOT NULL,           -- the POST /runs body as received
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    pid_start TEXT,                  -- process start time: tells a reused pid apart
    resume INTEGER NOT NULL DEFAULT 0,
    stop_requested TEXT,             -- NULL, 'user' or 'shutdown'
    stop_requested_at REAL,
    step INTEGER,
    epoch INTEGER,
    starts INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    out_dir TEXT NOT NULL,           -- relative to the data dir
    created_at REAL NOT NULL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, queued_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    type TEXT NOT NULL,
    time REAL,
    data TEXT NOT NULL               -- the event as JSON (including "type")
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id),
    kind TEXT NOT NULL,              -- 'run' or 'upload'
    path TEXT NOT NULL UNIQUE,       -- relative to the data dir
    name TEXT,
    filename TEXT,
    method TEXT,
    dataset TEXT,
    source TEXT,                     -- protoscope | swav_official | pcl_official
    epoch INTEGER,
    step INTEGER,
    epochs_done REAL,                -- epochs of training behind it, fractional (0.4)
    partial INTEGER NOT NULL DEFAULT 0,
    num_prototypes INTEGER,
    size_bytes INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_run ON checkpoints(run_id, id);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT,
    grid TEXT NOT NULL,              -- models.sweep.SweepGrid as JSON
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_cells (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
    cell INTEGER NOT NULL,           -- row-major index in the grid (models/sweep.py)
    position TEXT NOT NULL,          -- index along each axis, JSON
    coords TEXT NOT NULL,            -- {field: value}, JSON
    run_id INTEGER NOT NULL UNIQUE REFERENCES runs(id),
    PRIMARY KEY (sweep_id, cell)
);
"""


def _finite(value: Any) -> Any:
    """NaN and ±inf become None, recursively: they are not JSON and break browsers' parsers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Compact JSON; non-finite floats become null."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)


def event_json(event_id: int, run_id: int, data: str) -> str:
    """The stored event with its id and run id in front, without a decode/encode round trip."""
    head = f'{{"id":{int(event_id)},"run_id":{int(run_id)}'
    body = data.strip()
    if body.startswith("{") and body != "{}":
        return f"{head},{body[1:]}"
    return head + "}"


# What a checkpoint row shows of its run: the name, and the recipe it started from (older
# configs have none: "cpu").
_RUN_COLUMNS = (
    "r.name AS run_name, CASE WHEN r.id IS NULL THEN NULL "
    "ELSE coalesce(json_extract(r.config, '$.recipe'), 'cpu') END AS recipe"
)


class Store:
    """The database at `path`; paths stored in it are relative to `data_dir`."""

    def __init__(self, path: Path, data_dir: Path) -> None:
        self.path = Path(path)
        self.data_dir = Path(data_dir)
        self._local = threading.local()

    # --- connections ----------------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # NORMAL is durable across process crashes in WAL mode; only power loss can drop
            # the last transactions, which for a training log is an acceptable trade for speed.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's state is freed)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its first statement."""
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def init_schema(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connect()
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        conn.executescript(_SCHEMA)
        self._migrate(conn)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Columns added after a data folder was created (CREATE TABLE IF NOT EXISTS keeps the
        old table as it was)."""
        have = {row[1] for row in conn.execute("PRAGMA table_info(checkpoints)")}
        if "epochs_done" not in have:
            conn.execute("ALTER TABLE checkpoints ADD COLUMN epochs_done REAL")

    # --- runs -----------------------------------------------------------------------------------
    @staticmethod
    def _run(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        run = dict(row)
        run["config"] = json.loads(run["config"])
        run["request"] = json.loads(run["request"])
        run["resume"] = bool(run["resume"])
        return run

    def create_run(
        self,
        *,
        name: str | None,
        method: str,
        dataset: str,
        config: dict[str, Any],
        request: dict[str, Any],
    ) -> dict[str, Any]:
        with self.transaction() as conn:
            run_id = self._insert_run(conn, name, method, dataset, config, request)
        run = self.get_run(run_id)
        assert run is not None
        return run

    @staticmethod
    def _insert_run(
        conn: sqlite3.Connection,
        name: str | None,
        method: str,
        dataset: str,
        config: dict[str, Any],
        request: dict[str, Any],
    ) -> int:
        now = time.time()
        cur = conn.execute(
            "INSERT INTO runs (name, method, dataset, config, request, status, out_dir, "
            "created_at, queued_at) VALUES (?, ?, ?, ?, ?, 'queued', '', ?, ?)",
            (name, method, dataset, dumps(config), dumps(request), now, now),
        )
        run_id = int(cur.lastrowid or 0)
        conn.execute("UPDATE runs SET out_dir = ? WHERE id = ?", (f"runs/{run_id}", run_id))
        return run_id

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        row = self.connect().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return self._run(row)

    def list_runs(
        self, limit: int = 200, offset: int = 0, status: str | None = None
    ) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM runs", []
        if status is not None:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        rows = self.connect().execute(sql, (*args, limit, offset)).fetchall()
        return [r for r in map(self._run, rows) if r is not None]

    def runs_with_status(self, statuses: Iterable[str]) -> list[dict[str, Any]]:
        wanted = list(statuses)
        marks = ",".join("?" * len(wanted))
        rows = (
            self.connect()
            .execute(f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY queued_at, id", wanted)
            .fetchall()
        )
        return [r for r in map(self._run, rows) if r is not None]

    def count_status(self) -> dict[str, int]:
        rows = self.connect().execute("SELECT status, count(*) FROM runs GROUP BY status")
        return {str(s): int(n) for s, n in rows}

    def mark_running(self, run_id: int, pid: int, pid_start: str | None) -> bool:
        """queued → running with its process; False when it is no longer queued."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET status = 'running', pid = ?, pid_start = ?, started_at = ?, "
                "starts = starts + 1, reason = '', exit_code = NULL "
                "WHERE id = ? AND status = 'queued'",
                (pid, pid_start, time.time(), run_id),
            )
            return cur.rowcount == 1

    def set_exit_code(self, run_id: int, code: int | None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET exit_code = ? WHERE id = ?", (code, run_id))

    def request_stop(self, run_id: int, why: str) -> bool:
        """Flag a running run to stop ('user' or 'shutdown'); the worker polls the flag."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET stop_requested = ?, stop_requested_at = ? "
                "WHERE id = ? AND status = 'running'",
                (why, time.time(), run_id),
            )
            return cur.rowcount == 1

    def stop_requested(self, run_id: int) -> str | None:
        row = (
            self.connect()
            .execute("SELECT stop_requested FROM runs WHERE id = ?", (run_id,))
            .fetchone()
        )
        return None if row is None else row[0]

    def queue_again(self, run_id: int, resume: bool) -> bool:
        """A finished run → queued, to continue from its last checkpoint (or start afresh)."""
        placeholders = ",".join("?" * len(TERMINAL_STATUSES))
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET status = 'queued', reason = '', resume = ?, queued_at = ?, "
                "stop_requested = NULL, stop_requested_at = NULL, pid = NULL, pid_start = NULL, "
                "finished_at = NULL, exit_code = NULL "
                f"WHERE id = ? AND status IN ({placeholders})",
                (int(resume), time.time(), run_id, *TERMINAL_STATUSES),
            )
            return cur.rowcount == 1

    def finalize(
        self, run_id: int, status: str, reason: str, only_from: Iterable[str] = ACTIVE_STATUSES
    ) -> bool:
        """End a run the server decides about (dead process, stop while queued, …).

        In one transaction: the status changes only if the run is still in `only_from`, and an
        `end` event is appended, so every finished run's last event is `end` — SSE streams
        close on it — and a worker that finalised first is never overwritten.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"not a final status: {status!r}")
        allowed = list(only_from)
        marks = ",".join("?" * len(allowed))
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT step, epoch FROM runs WHERE id = ? AND status IN ({marks})",
                (run_id, *allowed),
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                "UPDATE runs SET status = ?, reason = ?, finished_at = ? WHERE id = ?",
                (status, reason, now, run_id),
            )
            event = {
                "type": "end",
                "status": status,
                "reason": reason,
                "step": row["step"],
                "epoch": row["epoch"],
                "time": now,
                "by": "server",
            }
            conn.execute(
                "INSERT INTO events (run_id, type, time, data) VALUES (?, 'end', ?, ?)",
                (run_id, now, dumps(event)),
            )
            return True

    # --- sweeps ---------------------------------------------------------------------------------
    def create_sweep(
        self, name: str | None, grid: dict[str, Any], cells: list[dict[str, Any]]
    ) -> int:
        """A sweep and one queued run per cell, in one transaction (never half a grid).

        Each of `cells` holds `cell`, `position`, `coords` and the run's `name`, `method`,
        `dataset`, `config`, `request` (as `create_run` takes them). Returns the sweep id.
        """
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO sweeps (name, grid, created_at) VALUES (?, ?, ?)",
                (name, dumps(grid), time.time()),
            )
            sweep_id = int(cur.lastrowid or 0)
            for c in cells:
                run_id = self._insert_run(
                    conn, c["name"], c["method"], c["dataset"], c["config"], c["request"]
                )
                conn.execute(
                    "INSERT INTO sweep_cells (sweep_id, cell, position, coords, run_id) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (sweep_id, c["cell"], dumps(c["position"]), dumps(c["coords"]), run_id),
                )
        return sweep_id

    def get_sweep(self, sweep_id: int) -> dict[str, Any] | None:
        row = self.connect().execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        return None if row is None else {**dict(row), "grid": json.loads(row["grid"])}

    def list_sweeps(self, limit: int = 200) -> list[dict[str, Any]]:
        """Sweeps, newest first, with how many cells each has and how many have finished."""
        finished = ",".join(f"'{s}'" for s in TERMINAL_STATUSES)
        rows = self.connect().execute(
            "SELECT s.*, count(c.cell) AS num_cells, "
            f"sum(CASE WHEN r.status IN ({finished}) THEN 1 ELSE 0 END) AS num_finished "
            "FROM sweeps s LEFT JOIN sweep_cells c ON c.sweep_id = s.id "
            "LEFT JOIN runs r ON r.id = c.run_id GROUP BY s.id ORDER BY s.id DESC LIMIT ?",
            (limit,),
        )
        return [
            {**dict(r), "grid": json.loads(r["grid"]), "num_finished": int(r["num_finished"] or 0)}
            for r in rows
        ]

    def is_sweep_cell(self, run_id: int) -> bool:
        """Whether the run is a cell of some sweep."""
        query = "SELECT 1 FROM sweep_cells WHERE run_id = ? LIMIT 1"
        return self.connect().execute(query, (run_id,)).fetchone() is not None

    def sweep_cells(self, sweep_id: int) -> list[dict[str, Any]]:
        """The sweep's cells in grid order, each with its run's state, newest checkpoint id,
        last loss and last kNN top-1 (whichever event carried it last)."""
        rows = self.connect().execute(
            "SELECT c.cell, c.position, c.coords, c.run_id, r.name AS run_name, r.status, "
            "r.reason, r.step, "
            "(SELECT max(k.id) FROM checkpoints k WHERE k.run_id = c.run_id) AS checkpoint_id, "
            "(SELECT json_extract(e.data, '$.loss') FROM events e WHERE e.run_id = c.run_id "
            " AND e.type = 'step' ORDER BY e.id DESC LIMIT 1) AS loss, "
            # Only the two event types that carry a kNN: the JSON of every step is not read.
            "(SELECT json_extract(e.data, '$.knn_top1') FROM events e WHERE e.run_id = c.run_id "
            " AND e.type IN ('epoch', 'knn') AND json_extract(e.data, '$.knn_top1') IS NOT NULL "
            " ORDER BY e.id DESC LIMIT 1) "
            "AS knn_top1 "
            "FROM sweep_cells c JOIN runs r ON r.id = c.run_id WHERE c.sweep_id = ? "
            "ORDER BY c.cell",
            (sweep_id,),
        )
        out = []
        for r in rows:
            cell = dict(r)
            cell["position"] = json.loads(cell["position"])
            cell["coords"] = json.loads(cell["coords"])
            out.append(cell)
        return out

    # --- events ---------------------------------------------------------------------------------
    def add_event(
        self, run_id: int, event: dict[str, Any], checkpoint: dict[str, Any] | None = None
    ) -> int:
        """Append one trainer event; keep the run's step/epoch/status in step with it.

        `checkpoint` (for `checkpoint` events): a row for the checkpoints table, registered in
        the same transaction; its id is added to the event as `checkpoint_id`. An `end` event
        sets the run's final status and reason from its own `status` / `reason`.
        """
        kind = str(event.get("type", "event"))
        when = event.get("time")
        when = float(when) if isinstance(when, int | float) else time.time()
        with self.transaction() as conn:
            if checkpoint is not None:
                event = {**event, "checkpoint_id": self._upsert_checkpoint(conn, checkpoint)}
            if kind == "checkpoint_removed" and isinstance(event.get("path"), str):
                # The trainer's retention deleted the file: its row goes in the same transaction.
                conn.execute(
                    "DELETE FROM checkpoints WHERE run_id = ? AND path = ?",
                    (run_id, event["path"]),
                )
            cur = conn.execute(
                "INSERT INTO events (run_id, type, time, data) VALUES (?, ?, ?, ?)",
                (run_id, kind, when, dumps(event)),
            )
            step, epoch = event.get("step"), event.get("epoch")
            if kind in ("step", "epoch", "checkpoint") and isinstance(step, int):
                conn.execute(
                    "UPDATE runs SET step = ?, epoch = coalesce(?, epoch) WHERE id = ?",
                    (step, epoch if isinstance(epoch, int) else None, run_id),
                )
            elif kind == "end":
                conn.execute(
                    "UPDATE runs SET status = ?, reason = ?, finished_at = ?, "
                    "step = coalesce(?, step) WHERE id = ?",
                    (
                        str(event.get("status") or "failed"),
                        str(event.get("reason") or ""),
                        when,
                        step if isinstance(step, int) else None,
                        run_id,
                    ),
                )
            return int(cur.lastrowid or 0)

    def events_after(
        self,
        run_id: int,
        after: int,
        limit: int,
        types: Iterable[str] | None = None,
    ) -> list[tuple[int, str, str]]:
        """(id, type, event JSON with id and run_id) of the run's events with id > `after`."""
        sql = "SELECT id, type, data FROM events WHERE run_id = ? AND id > ?"
        args: list[Any] = [run_id, after]
        wanted = list(types or [])
        if wanted:
            sql += f" AND type IN ({','.join('?' * len(wanted))})"
            args += wanted
        sql += " ORDER BY id LIMIT ?"
        rows = self.connect().execute(sql, (*args, limit)).fetchall()
        return [(int(i), str(t), event_json(i, run_id, d)) for i, t, d in rows]

    def recent_steps(
        self, run_id: int, up_to_step: int | None = None, limit: int = RECENT_STEPS
    ) -> list[dict[str, Any]]:
        """The run's last `limit` step events (only steps ≤ `up_to_step` when given), oldest
        first: what the collapse rules read (models/collapse_rules.py)."""
        sql = "SELECT data FROM events WHERE run_id = ? AND type = 'step'"
        args: list[Any] = [run_id]
        if up_to_step is not None:
            sql += " AND json_extract(data, '$.step') <= ?"
            args.append(up_to_step)
        rows = self.connect().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [json.loads(r[0]) for r in reversed(rows.fetchall())]

    def max_event_id(self, run_id: int | None = None) -> int:
        if run_id is None:
            row = self.connect().execute("SELECT max(id) FROM events").fetchone()
        else:
            row = (
                self.connect()
                .execute("SELECT max(id) FROM events WHERE run_id = ?", (run_id,))
                .fetchone()
            )
        return int(row[0] or 0)

    def last_event(self, run_id: int, kind: str | None = None) -> dict[str, Any] | None:
        sql = "SELECT id, data FROM events WHERE run_id = ?"
        args: list[Any] = [run_id]
        if kind is not None:
            sql += " AND type = ?"
            args.append(kind)
        row = self.connect().execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        if row is None:
            return None
        return {"id": int(row[0]), **json.loads(row[1])}

    # --- checkpoints ----------------------------------------------------------------------------
    @staticmethod
    def _upsert_checkpoint(conn: sqlite3.Connection, ck: dict[str, Any]) -> int:
        cols = (
            "run_id",
            "kind",
            "path",
            "name",
            "filename",
            "method",
            "dataset",
            "source",
            "epoch",
            "step",
            "epochs_done",
            "partial",
            "num_prototypes",
            "size_bytes",
        )
        values = [ck.get(c) for c in cols]
        values[cols.index("partial")] = int(bool(ck.get("partial")))
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "path")
        row = conn.execute(
            f"INSERT INTO checkpoints ({', '.join(cols)}, created_at) "
            f"VALUES ({', '.join('?' * len(cols))}, ?) "
            f"ON CONFLICT(path) DO UPDATE SET {updates}, created_at = excluded.created_at "
            "RETURNING id",
            (*values, time.time()),
        ).fetchone()
        return int(row[0])

    def add_checkpoint(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        with self.transaction() as conn:
            ck_id = self._upsert_checkpoint(conn, checkpoint)
        out = self.get_checkpoint(ck_id)
        assert out is not None
        return out

    def get_checkpoint(self, ck_id: int) -> dict[str, Any] | None:
        row = (
            self.connect()
            .execute(
                f"SELECT c.*, {_RUN_COLUMNS} FROM checkpoints c "
                "LEFT JOIN runs r ON r.id = c.run_id WHERE c.id = ?",
                (ck_id,),
            )
            .fetchone()
        )
        return None if row is None else {**dict(row), "partial": bool(row["partial"])}

    def list_checkpoints(
        self, run_id: int | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        sql = f"SELECT c.*, {_RUN_COLUMNS} FROM checkpoints c LEFT JOIN runs r ON r.id = c.run_id"
        args: list[Any] = []
        if run_id is not None:
            sql += " WHERE c.run_id = ?"
            args.append(run_id)
        sql += " ORDER BY c.id DESC LIMIT ?"
        rows = self.connect().execute(sql, (*args, limit)).fetchall()
        return [{**dict(r), "partial": bool(r["partial"])} for r in rows]

    def latest_checkpoint_id(self, run_id: int) -> int | None:
        row = (
            self.connect()
            .execute("SELECT max(id) FROM checkpoints WHERE run_id = ?", (run_id,))
            .fetchone()
        )
        return None if row is None or row[0] is None else int(row[0])

    def latest_checkpoint_ids(self) -> dict[int, int]:
        """run id → id of its newest checkpoint, for every run that has one."""
        rows = self.connect().execute(
            "SELECT run_id, max(id) FROM checkpoints WHERE run_id IS NOT NULL GROUP BY run_id"
        )
        return {int(r): int(c) for r, c in rows}

    def absolute(self, relative: str) -> Path:
        """A path stored relative to the data dir, made absolute."""
        return self.data_dir / relative

    def relative(self, path: Path) -> str:
        """`path` relative to the data dir when inside it (what the tables store)."""
        try:
            return str(Path(path).resolve().relative_to(self.data_dir.resolve()))
        except ValueError:
            return str(path)
