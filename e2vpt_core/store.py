"""The run store: SQLite (WAL) for rows, safetensors files under `<root>/<run id>/`.

It is the single source of truth shared by the CLI, the worker and the app: readers query
while a writer trains (WAL), every row change is a transaction, and every file is written
to a temporary name and renamed, so a kill at any point leaves the store consistent.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process initialises at a time
    fcntl = None

from .fileio import atomic_write

DB_NAME = "store.sqlite"
RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
# A running job asked to stop is `cancelling` until its worker sees the flag.
JOB_STATUSES = ("queued", "running", "cancelling", "done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    parent_id TEXT REFERENCES runs(id),
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    reason TEXT,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (run_id, name, step)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT REFERENCES runs(id) ON DELETE CASCADE,
    time REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT REFERENCES runs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    worker_pid INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics(run_id, name, step);
"""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _insert_run(connection: sqlite3.Connection, config: dict[str, Any], kind: str,
                parent_id: str | None, status: str) -> str:
    run_id = new_run_id()
    while connection.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone():
        run_id = new_run_id()
    connection.execute(
        "INSERT INTO runs (id, kind, status, config, parent_id, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, kind, status, json.dumps(config), parent_id, time.time()),
    )
    return run_id


def _cancel_orphan(connection: sqlite3.Connection, job_id: int, run_id: str | None) -> None:
    now, reason = time.time(), "cancelled while its worker was down"
    connection.execute("UPDATE jobs SET status='cancelled', error=?, finished_at=? WHERE id=?",
                       (reason, now, job_id))
    connection.execute("UPDATE runs SET status='cancelled', reason=?, finished_at=? "
                       "WHERE id=? AND status IN ('queued', 'running')", (reason, now, run_id))


class RunStore:
    """Runs, metrics, events and jobs of one store directory."""

    def __init__(self, root: str | os.PathLike = "runs") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / DB_NAME
        # Processes opening one store at once (DDP ranks, app sessions, the worker) take
        # turns here: switching to WAL needs the database to themselves.
        with open(self.root / ".init.lock", "w") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            connection = sqlite3.connect(self.db_path, timeout=60.0)
            try:
                connection.execute("PRAGMA journal_mode=WAL")  # stored in the file
                connection.executescript(_SCHEMA)
            finally:
                connection.close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.db_path, timeout=60.0)
        try:
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            with connection:  # one transaction: commit, or roll back on error
                yield connection
        finally:
            connection.close()

    # ------------------------------------------------------------------------ runs
    def create_run(
        self, config: dict[str, Any], kind: str = "train", parent_id: str | None = None,
        status: str = "queued",
    ) -> str:
        with self._connect() as connection:
            run_id = _insert_run(connection, config, kind, parent_id, status)
        self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return run_id

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self._connect() as connection:
            connection.row_factory = sqlite3.Row
            row = connection.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in store {self.root}")
        run = dict(row)
        run["config"] = json.loads(run["config"])
        run["summary"] = json.loads(run["summary"]) if run["summary"] else {}
        return run

    def set_status(self, run_id: str, status: str, reason: str | None = None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; one of {RUN_STATUSES}")
        now = time.time()
        with self._connect() as connection:
            if status == "running":
                connection.execute(
                    "UPDATE runs SET status=?, started_at=COALESCE(started_at, ?), reason=NULL, "
                    "finished_at=NULL WHERE id=?", (status, now, run_id))
            else:
                finished = now if status in ("completed", "failed", "cancelled") else None
                connection.execute(
                    "UPDATE runs SET status=?, reason=?, finished_at=? WHERE id=?",
                    (status, reason, finished, run_id))

    def update_summary(self, run_id: str, **values: Any) -> None:
        with self._connect() as connection:
            row = connection.execute("SELECT summary FROM runs WHERE id=?", (run_id,)).fetchone()
            summary = json.loads(row[0]) if row and row[0] else {}
            summary.update(values)
            connection.execute("UPDATE runs SET summary=? WHERE id=?",
                               (json.dumps(summary), run_id))

    def runs(self) -> pd.DataFrame:
        """All runs, newest first, with the summary's figures as columns."""
        with self._connect() as connection:
            frame = pd.read_sql_query("SELECT * FROM runs ORDER BY created_at DESC", connection)
        summaries = [json.loads(s) if isinstance(s, str) and s else {} for s in frame["summary"]]
        configs = [json.loads(c) for c in frame["config"]]
        frame["method"] = [c.get("prompt", {}).get("method") for c in configs]
        frame["dataset"] = [c.get("dataset") for c in configs]
        extra = pd.DataFrame(summaries, index=frame.index)
        return pd.concat([frame.drop(columns=["summary"]), extra], axis=1)

    def delete_run(self, run_id: str) -> None:
        with self._connect() as connection:
            connection.execute("UPDATE runs SET parent_id=NULL WHERE parent_id=?", (run_id,))
            connection.execute("DELETE FROM runs WHERE id=?", (run_id,))
        directory = self.run_dir(run_id)
        if directory.exists():
            for path in sorted(directory.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            directory.rmdir()

    # --------------------------------------------------------------------- metrics
    def log_metrics(self, run_id: str, step: int, epoch: int, values: dict[str, float]) -> None:
        now = time.time()
        rows = [(run_id, step, epoch, name, float(v), now) for name, v in values.items()]
        with self._connect() as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO metrics (run_id, step, epoch, name, value, time) "
                "VALUES (?, ?, ?, ?, ?, ?)", rows)

    def truncate_metrics(self, run_id: str, after_step: int) -> None:
        """Drop rows logged after a checkpoint, so a resumed run does not duplicate them."""
        with self._connect() as connection:
            connection.execute("DELETE FROM metrics WHERE run_id=? AND step>?",
                               (run_id, after_step))

    def metrics(self, run_id: str, names: list[str] | None = None) -> pd.DataFrame:
        query = "SELECT step, epoch, name, value, time FROM metrics WHERE run_id=?"
        params: list[Any] = [run_id]
        if names:
            query += f" AND name IN ({','.join('?' * len(names))})"
            params += names
        with self._connect() as connection:
            return pd.read_sql_query(query + " ORDER BY step, name", connection, params=params)

    # ---------------------------------------------------------------------- events
    def log_event(self, run_id: str | None, message: str, level: str = "info") -> None:
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO events (run_id, time, level, message) VALUES (?, ?, ?, ?)",
                (run_id, time.time(), level, message))

    def events(self, run_id: str) -> pd.DataFrame:
        with self._connect() as connection:
            return pd.read_sql_query(
                "SELECT time, level, message FROM events WHERE run_id=? ORDER BY id",
                connection, params=[run_id])

    # ----------------------------------------------------------------------- files
    def save_tensors(
        self, run_id: str, name: str, tensors: dict[str, torch.Tensor],
        metadata: dict[str, str] | None = None,
    ) -> Path:
        path = self.run_dir(run_id) / f"{name}.safetensors"
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        return path

    def load_tensors(self, run_id: str, name: str) -> dict[str, torch.Tensor]:
        path = self.run_dir(run_id) / f"{name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"run {run_id} has no {name}.safetensors ({path})")
        return load_file(str(path))

    def has_tensors(self, run_id: str, name: str) -> bool:
        return (self.run_dir(run_id) / f"{name}.safetensors").is_file()

    # ------------------------------------------------------------------------ jobs
    def enqueue_job(self, kind: str, payload: dict[str, Any], run_id: str | None = None,
                    new_run: dict[str, Any] | None = None) -> tuple[int, str | None]:
        """Queue a job; with `new_run` (a run's config) its `queued` run is created in the
        same transaction, so a job never exists without its run or the other way round."""
        with self._connect() as connection:
            if new_run is not None:
                run_id = _insert_run(connection, new_run, kind, None, "queued")
            cursor = connection.execute(
                "INSERT INTO jobs (run_id, kind, status, payload, created_at) "
                "VALUES (?, ?, 'queued', ?, ?)", (run_id, kind, json.dumps(payload), time.time()))
            job_id = int(cursor.lastrowid)
        if run_id is not None:
            self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return job_id, run_id

    def claim_job(self, worker_pid: int) -> dict[str, Any] | None:
        """The next job for `worker_pid`, marked running: first a job some other (dead)
        worker left running, flagged `resumed`, else the oldest queued one.

        Each candidate is taken with a conditional UPDATE, so two workers can never both
        claim one job. Call it only while holding the store's worker lock
        (`e2vpt_core.jobs`): any other worker's `running` job is then an orphan."""
        with self._connect() as connection:
            candidates = connection.execute(
                "SELECT id, status, run_id FROM jobs WHERE status='queued' OR "
                "(status IN ('running', 'cancelling') AND worker_pid IS NOT ?) "
                "ORDER BY status='queued', id", (worker_pid,)).fetchall()
            for job_id, status, run_id in candidates:
                if status == "cancelling":  # its worker died before it saw the flag
                    _cancel_orphan(connection, job_id, run_id)
                    continue
                taken = connection.execute(
                    "UPDATE jobs SET status='running', worker_pid=?, "
                    "started_at=COALESCE(started_at, ?) WHERE id=? AND status=?",
                    (worker_pid, time.time(), job_id, status)).rowcount
                if taken:
                    return {**self._job_row(connection, job_id), "resumed": status == "running"}
        return None

    def _job_row(self, connection: sqlite3.Connection, job_id: int) -> dict[str, Any]:
        connection.row_factory = sqlite3.Row
        row = connection.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        connection.row_factory = None
        if row is None:
            raise KeyError(f"no job {job_id} in store {self.root}")
        job = dict(row)
        job["payload"] = json.loads(job["payload"])
        return job

    def get_job(self, job_id: int) -> dict[str, Any]:
        with self._connect() as connection:
            return self._job_row(connection, job_id)

    def set_job_run(self, job_id: int, run_id: str) -> None:
        """Attach the run a job created while running (a rewind's child run)."""
        with self._connect() as connection:
            connection.execute("UPDATE jobs SET run_id=? WHERE id=?", (run_id, job_id))

    def finish_job(self, job_id: int, status: str, error: str | None = None) -> None:
        if status not in ("done", "failed", "cancelled"):
            raise ValueError(f"a job finishes as done, failed or cancelled, not {status!r}")
        with self._connect() as connection:
            connection.execute("UPDATE jobs SET status=?, error=?, finished_at=? WHERE id=?",
                               (status, error, time.time(), job_id))

    def cancel_job(self, job_id: int) -> str:
        """Cancel a queued job (and its queued run) at once, or flag a running one
        `cancelling` for its worker to stop; returns the job's status afterwards."""
        now = time.time()
        with self._connect() as connection:
            row = connection.execute("SELECT status, run_id FROM jobs WHERE id=?",
                                     (job_id,)).fetchone()
            if row is None:
                raise KeyError(f"no job {job_id} in store {self.root}")
            status, run_id = row
            if status == "queued":
                status = "cancelled"
                connection.execute(
                    "UPDATE jobs SET status=?, finished_at=?, error=? WHERE id=?",
                    (status, now, "cancelled before it started", job_id))
                connection.execute(
                    "UPDATE runs SET status='cancelled', reason=?, finished_at=? "
                    "WHERE id=? AND status='queued'", ("cancelled before it started", now, run_id))
            elif status == "running":
                status = "cancelling"
                connection.execute("UPDATE jobs SET status=? WHERE id=?", (status, job_id))
        return status

    def jobs(self) -> pd.DataFrame:
        """All jobs in queue order, payload as JSON text."""
        with self._connect() as connection:
            return pd.read_sql_query("SELECT * FROM jobs ORDER BY id", connection)
