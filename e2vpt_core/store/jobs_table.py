"""The job rows of the run store (a mixin of `RunStore`): queue, claim, finish, cancel.

Kept apart from `store.py` only for length; the worker that runs the jobs is `jobs.py`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from typing import Any

import pandas as pd

from .leases import Holder


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def insert_run(connection: sqlite3.Connection, config: dict[str, Any], kind: str,
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


class JobQueue:
    """Jobs of one store; `RunStore` provides `_connect`, `root` and `run_dir`."""

    def enqueue_job(self, kind: str, payload: dict[str, Any], run_id: str | None = None,
                    new_run: dict[str, Any] | None = None) -> tuple[int, str | None]:
        """Queue a job; with `new_run` (a run's config) its `queued` run is created in the
        same transaction, so a job never exists without its run or the other way round."""
        with self._connect() as connection:
            if new_run is not None:
                run_id = insert_run(connection, new_run, kind, None, "queued")
            cursor = connection.execute(
                "INSERT INTO jobs (run_id, kind, status, payload, created_at) "
                "VALUES (?, ?, 'queued', ?, ?)", (run_id, kind, json.dumps(payload), time.time()))
            job_id = int(cursor.lastrowid)
        if run_id is not None:
            self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return job_id, run_id

    def claim_job(self) -> dict[str, Any] | None:
        """The next job for this process, marked running: first a job some other (dead)
        worker left running, flagged `resumed`, else the oldest queued one.

        Each candidate is taken with a conditional UPDATE, so two workers can never both
        claim one job. Call it only while holding the store's worker lock
        (`e2vpt_core.jobs`): any other worker's `running` job is then an orphan. Workers
        are told apart by pid *and* process start time, so a new worker that happens to
        get a dead one's pid (a restarted container) still resumes its jobs."""
        worker = Holder.current()
        with self._connect() as connection:
            candidates = connection.execute(
                "SELECT id, status, run_id FROM jobs WHERE status='queued' OR "
                "(status IN ('running', 'cancelling') AND worker IS NOT ?) "
                "ORDER BY status='queued', id", (worker.key,)).fetchall()
            for job_id, status, run_id in candidates:
                if status == "cancelling":  # its worker died before it saw the flag
                    _cancel_orphan(connection, job_id, run_id)
                    continue
                taken = connection.execute(
                    "UPDATE jobs SET status='running', worker_pid=?, worker=?, "
                    "started_at=COALESCE(started_at, ?) WHERE id=? AND status=?",
                    (worker.pid, worker.key, time.time(), job_id, status)).rowcount
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
