"""The job rows of the run store (a mixin of `RunStore`): queue, claim, finish, cancel.

Kept apart from `runs.py` only for length; the worker that runs the jobs is `jobs.py`.

Claim order. A job some dead worker left running comes first (it is resumed). Then, of the
queued jobs, short analysis jobs (`importance`, `embed`) go ahead of long training jobs
(`train`, `rewind`), oldest first within each. No long job starves: once `AGE_JOBS` short
jobs in a row, or `AGE_SECONDS` of them, have started while a long job waited, the oldest
long job goes next. No job runs ahead of what it needs: a job that reads a run (a rewind
its parent, importance its run, embed its runs) waits while an older job still writes that
run (its training, or an importance pass of it), so it finds the run completed, or fails
with the state it ended in. Priorities follow from `kind`: no column, no migration.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from .leases import Holder

LONG_KINDS = ("train", "rewind")
AGE_JOBS = 4  # a long job waits behind at most this many short jobs in a row...
AGE_SECONDS = 900.0  # ...or this many seconds of them
ACTIVE = ("queued", "running", "cancelling")
FINISHED = ("done", "failed", "cancelled")
_LONG_SQL = "('" + "', '".join(LONG_KINDS) + "')"


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


@dataclass(frozen=True)
class QueuedJob:
    """What ordering a job needs: its kind, its own run and the runs its payload names."""

    id: int
    kind: str
    run_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    @property
    def long(self) -> bool:
        return self.kind in LONG_KINDS

    def reads(self) -> set[str]:
        """The runs it needs finished: a rewind's parent, importance's run, embed's runs."""
        named = [self.payload.get("parent"), self.payload.get("run"),
                 *self.payload.get("runs", ())]
        return {run for run in named if isinstance(run, str)}

    def writes(self) -> set[str]:
        """The runs it changes: its own (trained), and the one importance scores."""
        runs = {self.run_id} if self.run_id else set()
        return runs | self.reads() if self.kind == "importance" else runs

    def waits_for(self, other: QueuedJob) -> bool:
        return other.id < self.id and bool(self.reads() & other.writes())


def claim_order(queued: Sequence[QueuedJob], streak: int = 0, held: float = 0.0,
                running: Sequence[QueuedJob] = ()) -> list[int]:
    """The ids of the `queued` jobs a worker can take, in the order it takes them; those
    waiting for a `running` job are left out. `streak`: short jobs started in a row while
    a long one waited; `held`: the seconds since the first of them started."""
    pending, order = sorted(queued, key=lambda job: job.id), []
    while pending:
        free = [job for job in pending
                if not any(job.waits_for(other) for other in (*running, *pending))]
        if not free:
            break
        longs = [job for job in free if job.long]
        shorts = [job for job in free if not job.long]
        aged = streak >= AGE_JOBS or (streak > 0 and held >= AGE_SECONDS)
        if longs and (aged or not shorts):
            pick, streak, held = longs[0], 0, 0.0
        else:
            pick, streak = shorts[0], streak + 1 if longs else 0
        order.append(pick.id)
        pending.remove(pick)
    return order


def _queued_job(row: tuple) -> QueuedJob:
    job_id, kind, run_id, payload, created_at = row
    try:
        payload = json.loads(payload)
    except (TypeError, ValueError):
        payload = {}
    return QueuedJob(job_id, kind, run_id, payload if isinstance(payload, dict) else {},
                     created_at or 0.0)


def _streak(connection: sqlite3.Connection, queued: Sequence[QueuedJob],
            now: float) -> tuple[int, float]:
    """Short jobs started since a long job last ran (or the oldest queued one was queued),
    and the seconds since the first of them started."""
    waiting = [job.created_at for job in queued if job.long]
    if not waiting:
        return 0, 0.0
    last_long = connection.execute(
        f"SELECT max(COALESCE(finished_at, started_at)) FROM jobs WHERE kind IN {_LONG_SQL} "
        "AND started_at IS NOT NULL").fetchone()[0]
    since = max(last_long or 0.0, min(waiting))
    count, first = connection.execute(
        f"SELECT count(*), min(started_at) FROM jobs WHERE kind NOT IN {_LONG_SQL} "
        "AND started_at > ?", (since,)).fetchone()
    return count, (now - first) if count else 0.0


def _cancel_orphan(connection: sqlite3.Connection, job_id: int, run_id: str | None) -> None:
    now, reason = time.time(), "cancelled while its worker was down"
    connection.execute("UPDATE jobs SET status='cancelled', error=?, finished_at=? WHERE id=?",
                       (reason, now, job_id))
    connection.execute("UPDATE runs SET status='cancelled', reason=?, finished_at=? "
                       "WHERE id=? AND status IN ('queued', 'running')", (reason, now, run_id))


def _cancel(connection: sqlite3.Connection, job_id: int, status: str,
            run_id: str | None) -> str:
    """Cancel one job inside the caller's transaction; its status afterwards."""
    if status == "queued":
        now, reason = time.time(), "cancelled before it started"
        connection.execute("UPDATE jobs SET status='cancelled', finished_at=?, error=? "
                           "WHERE id=?", (now, reason, job_id))
        connection.execute("UPDATE runs SET status='cancelled', reason=?, finished_at=? "
                           "WHERE id=? AND status='queued'", (reason, now, run_id))
        return "cancelled"
    if status == "running":
        connection.execute("UPDATE jobs SET status='cancelling' WHERE id=?", (job_id,))
        return "cancelling"
    return status


def _equal_job(connection: sqlite3.Connection, kind: str, payload: dict[str, Any],
               key: Callable[[dict[str, Any]], Any]) -> tuple[int, str | None] | None:
    """A queued or running job of `kind` whose payload has the same `key`."""
    wanted = key(json.loads(json.dumps(payload)))
    for job_id, run_id, stored in connection.execute(
            "SELECT id, run_id, payload FROM jobs WHERE kind=? AND status IN "
            "('queued', 'running') ORDER BY id", (kind,)):
        if key(json.loads(stored)) == wanted:
            return job_id, run_id
    return None


def _same(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


class JobQueue:
    """Jobs of one store; `RunStore` provides `_connect`, `root` and `run_dir`."""

    def enqueue_job(self, kind: str, payload: dict[str, Any], run_id: str | None = None,
                    new_run: dict[str, Any] | None = None, merge: bool = False,
                    key: Callable[[dict[str, Any]], Any] = _same) -> tuple[int, str | None]:
        """Queue a job; with `new_run` (a run's config) its `queued` run is created in the
        same transaction, so a job never exists without its run or the other way round.

        With `merge`, a queued or running job of the same kind whose payload has the same
        `key` (default: equal payloads) is returned instead of queueing a duplicate."""
        with self._connect(immediate=merge) as connection:
            found = _equal_job(connection, kind, payload, key) if merge else None
            if found is not None:
                return found
            if new_run is not None:
                run_id = insert_run(connection, new_run, kind, None, "queued")
            cursor = connection.execute(
                "INSERT INTO jobs (run_id, kind, status, payload, created_at) "
                "VALUES (?, ?, 'queued', ?, ?)", (run_id, kind, json.dumps(payload), time.time()))
            job_id = int(cursor.lastrowid)
        if run_id is not None:
            self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return job_id, run_id

    def find_job(self, kind: str, payload: dict[str, Any],
                 key: Callable[[dict[str, Any]], Any] = _same) -> int | None:
        """The queued or running job `enqueue_job(..., merge=True)` would return, or None."""
        with self._connect() as connection:
            found = _equal_job(connection, kind, payload, key)
        return None if found is None else found[0]

    def _active(self, connection: sqlite3.Connection) -> list[tuple[QueuedJob, str, Any]]:
        rows = connection.execute("SELECT id, kind, run_id, payload, created_at, status, "
                                  "worker FROM jobs WHERE status IN ('queued', 'running', "
                                  "'cancelling') ORDER BY id").fetchall()
        return [(_queued_job(row[:5]), row[5], row[6]) for row in rows]

    def claim_job(self) -> dict[str, Any] | None:
        """The next job for this process, marked running: first a job some other (dead)
        worker left running, flagged `resumed`, else the first queued one in claim order
        (the module's docstring); None when nothing can start.

        The order is decided and the job taken in one write transaction, the job with a
        conditional UPDATE, so two workers can never both claim one job. Call it only while
        holding the store's worker lock (`e2vpt_core.jobs`): any other worker's `running`
        job is then an orphan. Workers are told apart by pid *and* process start time, so a
        new worker that happens to get a dead one's pid still resumes its jobs."""
        worker, now = Holder.current(), time.time()
        with self._connect(immediate=True) as connection:
            active, candidates = self._active(connection), []
            for job, status, holder in active:
                if status == "cancelling" and holder != worker.key:
                    _cancel_orphan(connection, job.id, job.run_id)  # died before it saw it
                elif status == "running" and holder != worker.key:
                    candidates.append((job.id, status))
            queued = [job for job, status, _ in active if status == "queued"]
            running = [job for job, status, holder in active
                       if status != "queued" and holder == worker.key]
            order = claim_order(queued, *_streak(connection, queued, now), running=running)
            for job_id, status in [*candidates, *((job_id, "queued") for job_id in order)]:
                taken = connection.execute(
                    "UPDATE jobs SET status='running', worker_pid=?, worker=?, "
                    "started_at=COALESCE(started_at, ?) WHERE id=? AND status=?",
                    (worker.pid, worker.key, now, job_id, status)).rowcount
                if taken:
                    return {**self._job_row(connection, job_id), "resumed": status == "running"}
        return None

    def queue_order(self) -> list[int]:
        """The queued jobs' ids in the order the worker will take them, as things stand
        (the running job assumed to finish first)."""
        with self._connect() as connection:
            queued = [job for job, status, _ in self._active(connection) if status == "queued"]
            return claim_order(queued, *_streak(connection, queued, time.time()))

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
        if status not in FINISHED:
            raise ValueError(f"a job finishes as done, failed or cancelled, not {status!r}")
        with self._connect() as connection:
            connection.execute("UPDATE jobs SET status=?, error=?, finished_at=? WHERE id=?",
                               (status, error, time.time(), job_id))

    def cancel_job(self, job_id: int) -> str:
        """Cancel a queued job (and its queued run) at once, or flag a running one
        `cancelling` for its worker to stop; returns the job's status afterwards."""
        with self._connect() as connection:
            row = connection.execute("SELECT status, run_id FROM jobs WHERE id=?",
                                     (job_id,)).fetchone()
            if row is None:
                raise KeyError(f"no job {job_id} in store {self.root}")
            return _cancel(connection, job_id, *row)

    def cancel_jobs(self, kind: str | None = None, run: str | None = None,
                    ids: Iterable[int] | None = None) -> dict[int, str]:
        """Cancel, in one transaction, every queued and running job, or those of one
        `kind`, of one `run` (its own run or one it reads: `kind='rewind'` and the parent
        is a sweep's rewinds) or listed in `ids`, all given filters applying; returns the
        new status of each by id."""
        wanted = None if ids is None else set(ids)
        cancelled = {}
        with self._connect(immediate=True) as connection:
            for job, status, _ in self._active(connection):
                if (status == "cancelling" or (kind is not None and job.kind != kind)
                        or (wanted is not None and job.id not in wanted)
                        or (run is not None and run not in job.reads() | {job.run_id})):
                    continue
                cancelled[job.id] = _cancel(connection, job.id, status, job.run_id)
        return cancelled

    def jobs(self) -> pd.DataFrame:
        """All jobs in queue order, payload as JSON text."""
        with self._connect() as connection:
            return pd.read_sql_query("SELECT * FROM jobs ORDER BY id", connection)

    def current_jobs(self, recent: int = 5) -> pd.DataFrame:
        """The queued and running jobs and the last `recent` finished ones, by id: what the
        app's queue shows, read without the whole history."""
        with self._connect() as connection:
            return pd.read_sql_query(
                "SELECT * FROM jobs WHERE status NOT IN ('done', 'failed', 'cancelled') OR id "
                "IN (SELECT id FROM jobs WHERE status IN ('done', 'failed', 'cancelled') "
                "ORDER BY id DESC LIMIT ?) ORDER BY id", connection, params=(recent,))

    def step_timing(self, run_id: str) -> tuple[float, int] | None:
        """The run's measured seconds per training step and its steps: the pace from its
        `train/loss` timestamps (first to last step, evaluations between epochs included),
        else from its start and finish; None when neither was measured."""
        with self._connect() as connection:
            first, last, start, end = connection.execute(
                "SELECT min(step), max(step), min(time), max(time) FROM metrics "
                "WHERE run_id=? AND name='train/loss'", (run_id,)).fetchone()
            row = connection.execute("SELECT started_at, finished_at, summary FROM runs "
                                     "WHERE id=?", (run_id,)).fetchone()
        steps = row and (json.loads(row[2] or "{}").get("total_steps") or last)
        if not steps:
            return None
        if first is not None and last > first:
            return (end - start) / (last - first), steps
        if row[0] is not None and row[1] is not None:
            return (row[1] - row[0]) / steps, steps
        return None


@dataclass(frozen=True)
class Estimate:
    """What a batch of rewinds costs: `seconds` None when no step time was measured."""

    count: int
    epochs: int
    seconds: float | None

    def __str__(self) -> str:
        what = (f"{self.count} rewind{'s' * (self.count != 1)} × {self.epochs} "
                f"epoch{'s' * (self.epochs != 1)}")
        if self.seconds is None:
            return f"{what} (no step time measured on the parent yet)"
        seconds = self.seconds
        return f"{what} ≈ " + (f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"
                               if seconds < 90 * 60 else f"{seconds / 3600:.1f} h")


class _TimedRuns(Protocol):
    """What the estimate reads of a `RunStore`."""

    def get_run(self, run_id: str) -> dict[str, Any]: ...
    def step_timing(self, run_id: str) -> tuple[float, int] | None: ...


def estimate_rewinds(store: _TimedRuns, parent_run_id: str, count: int,
                     epochs: int | None = None) -> Estimate:
    """`count` rewinds of the parent, `epochs` each (None: the parent's): the parent's
    measured seconds per step × its steps per epoch × epochs × count. A rewind trains the
    same model on the same data and batch size, so the parent's pace is its own."""
    run = store.get_run(parent_run_id)
    parent_epochs = int(run["config"].get("epochs") or 1)
    epochs = parent_epochs if epochs is None else epochs
    timing = store.step_timing(parent_run_id)
    if timing is None:
        return Estimate(count, epochs, None)
    pace, steps = timing
    return Estimate(count, epochs, pace * steps / parent_epochs * epochs * count)
