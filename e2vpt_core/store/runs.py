"""The run store: SQLite (WAL) for rows, safetensors files under `<root>/<run id>/`.

It is the single source of truth shared by the CLI, the worker and the app: readers query
while a writer trains (WAL), every row change is a transaction, and every file is written
to a temporary name and renamed, so a kill at any point leaves the store consistent. One
process at a time owns a run (`ownership`): setting a run `running` takes its lease.
A damaged database or tensor file is reported naming the file (`StoreError`,
`DamagedFileError`), never repaired (an emptied database is not rebuilt); a store the
process cannot write is opened read-only. Paths are built only from ids of `RUN_ID`'s form
and plain file names, so a crafted row cannot lead outside the store.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # torch is imported where tensors are read or written, not with the store
    import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process initialises at a time
    fcntl = None

from ..fileio import DamagedFileError, read_safetensors, remove_orphan_tmp, write_safetensors
from . import leases
from .jobs_table import JobQueue, insert_run
from .leases import RunOwned

DB_NAME = "store.sqlite"
RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")

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
    error TEXT,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics(run_id, name, step);
""" + leases.SCHEMA
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
# The ids `jobs_table.new_run_id` makes (YYYYmmdd-HHMMSS-xxxx); nothing else names a folder.
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")

__all__ = ["DamagedFileError", "RunOwned", "RunStore", "StoreError", "read_safetensors"]


class StoreError(RuntimeError):
    """The store's database cannot be opened or used; the message names the file."""


def _store_error(db_path: Path, error: Exception) -> StoreError:
    """One line naming the database, from sqlite's (or pandas' wrapped) error."""
    message = str(error.__cause__ or error).splitlines()[0]
    if "readonly" in message or "read-only" in message:
        return StoreError(f"the run store {db_path.parent} is read-only ({db_path}: "
                          f"{message}); this command needs to write to it")
    if any(sign in message for sign in ("not a database", "malformed", "no such table")):
        message += "; the store database is damaged (restore it from a backup)"
    return StoreError(f"{db_path}: {message}")


def _check_existing(connection: sqlite3.Connection, db_path: Path) -> None:
    """A database file that is there but holds no run store (emptied, overwritten, another
    program's) is damage to report: building a fresh store in it would orphan the runs."""
    tables = {row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    if "runs" not in tables:
        what = "is empty (0 bytes)" if db_path.stat().st_size == 0 else "holds no run table"
        raise StoreError(f"{db_path} {what}: the store database is damaged (restore it from a "
                         "backup); it is left as it is, and so are the run folders beside it")


def _check_new(root: Path, db_path: Path) -> None:
    """No database yet: a new store, unless run folders are there (its database was lost)."""
    folders = [p.name for p in root.iterdir() if RUN_ID.fullmatch(p.name) and p.is_dir()]
    if folders:
        raise StoreError(f"{db_path} is missing but {root} holds {len(folders)} run folder(s) "
                         f"(e.g. {folders[0]}): restore the database from a backup, or move "
                         "the folders away to start a new store")


class RunStore(JobQueue):
    """Runs, metrics, events and jobs of one store directory."""

    def __init__(self, root: str | os.PathLike = "runs") -> None:
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        self._uri: str | None = None  # set for a read-only store
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = open(self.root / ".init.lock", "a")
        except OSError as error:
            if error.errno not in _READ_ONLY or not self.db_path.is_file():
                raise StoreError(f"cannot open the run store {self.root}: "
                                 f"{error.strerror}") from error
            self._open_read_only()
            return
        if not os.access(self.db_path, os.W_OK) and self.db_path.is_file():
            lock.close()
            self._open_read_only()
            return
        # Processes opening one store at once (DDP ranks, app sessions, the worker) take
        # turns here: switching to WAL needs the database to themselves.
        with lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            existed = self.db_path.exists()
            if not existed:
                _check_new(self.root, self.db_path)
            try:
                connection = sqlite3.connect(self.db_path, timeout=60.0)
                try:
                    if existed:  # checked before anything writes to it
                        _check_existing(connection, self.db_path)
                    connection.execute("PRAGMA journal_mode=WAL")  # stored in the file
                    connection.executescript(_SCHEMA)
                    columns = {row[1] for row in connection.execute("PRAGMA table_info(jobs)")}
                    if "worker" not in columns:  # stores from before worker identities
                        connection.execute("ALTER TABLE jobs ADD COLUMN worker TEXT")
                finally:
                    connection.close()
            except sqlite3.DatabaseError as error:
                raise _store_error(self.db_path, error) from error
        remove_orphan_tmp(self.root)  # left by writers killed mid-write

    @property
    def read_only(self) -> bool:
        return self._uri is not None

    def _open_read_only(self) -> None:
        """Read a store this process may not write: `mode=ro` needs the WAL's shared-memory
        file to exist or be creatable; without it (a clean, read-only directory) nothing
        can be writing, and the database is read as immutable."""
        base = self.db_path.resolve().as_uri()
        for uri in (f"{base}?mode=ro", f"{base}?immutable=1"):
            self._uri = uri
            try:
                with self._connect() as connection:
                    connection.execute("SELECT count(*) FROM runs").fetchone()
                return
            except StoreError as error:
                failure = error
        raise failure

    @contextmanager
    def _connect(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction (BEGIN IMMEDIATE: write-locked from its first statement, for a
        read-then-write that must be atomic); sqlite's errors become StoreError."""
        try:
            connection = (sqlite3.connect(self._uri, uri=True, timeout=60.0) if self._uri
                          else sqlite3.connect(self.db_path, timeout=60.0))
        except sqlite3.Error as error:
            raise _store_error(self.db_path, error) from error
        try:
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            with connection:  # one transaction: commit, or roll back on error
                if immediate:
                    connection.execute("BEGIN IMMEDIATE")
                yield connection
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as error:
            raise _store_error(self.db_path, error) from error
        finally:
            connection.close()

    # ------------------------------------------------------------------------ runs
    def create_run(
        self, config: dict[str, Any], kind: str = "train", parent_id: str | None = None,
        status: str = "queued",
    ) -> str:
        with self._connect() as connection:
            run_id = insert_run(connection, config, kind, parent_id, status)
        self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return run_id

    def run_dir(self, run_id: str) -> Path:
        """`<root>/<run id>`. Ids come from rows anyone with the file can edit, so one not
        of `RUN_ID`'s form (`../victim`) is refused rather than joined to a path."""
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise StoreError(f"{self.db_path}: {run_id!r} is not a run id (YYYYmmdd-HHMMSS-"
                             "xxxx); no file is read or changed for it")
        return self.root / run_id

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether `path`, links followed, is the store's directory or inside it."""
        return Path(path).resolve().is_relative_to(self.root.resolve())

    def _tensor_path(self, run_id: str, name: str) -> Path:
        """A run's `<name>.safetensors`; `name` must be a plain file name."""
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"{name!r} is not a tensor file name")
        return self.run_dir(run_id) / f"{name}.safetensors"

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
        """`running` makes this process the run's owner (RunOwned if another live process
        is, or a job will train it); a final status ends the ownership. Only the owner, or
        anyone while there is none, may change a run's status."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; one of {RUN_STATUSES}")
        now = time.time()
        with self._connect(immediate=True) as connection:
            if status == "running":
                self._take(connection, run_id)
                connection.execute(
                    "UPDATE runs SET status=?, started_at=COALESCE(started_at, ?), reason=NULL, "
                    "finished_at=NULL WHERE id=?", (status, now, run_id))
            else:
                leases.check_not_owned(connection, run_id)
                finished = now if status in ("completed", "failed", "cancelled") else None
                connection.execute(
                    "UPDATE runs SET status=?, reason=?, finished_at=? WHERE id=?",
                    (status, reason, finished, run_id))
                if finished is not None:
                    leases.release(connection, run_id)
        if status == "running":
            leases.start_heartbeat(self.db_path)

    def _take(self, connection: sqlite3.Connection, run_id: str) -> None:
        if connection.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
            raise KeyError(f"no run {run_id!r} in store {self.root}")
        leases.acquire(connection, run_id)

    @contextmanager
    def own_run(self, run_id: str) -> Iterator[None]:
        """Own the run for the block (RunOwned naming the owner if another process does),
        so a caller can prepare it (discard a checkpoint) before training it."""
        with self._connect(immediate=True) as connection:
            self._take(connection, run_id)
        leases.start_heartbeat(self.db_path)
        try:
            yield
        finally:
            with self._connect() as connection:
                leases.release(connection, run_id)

    def owner(self, run_id: str) -> str | None:
        """Who trains the run now (pid, command, since when), or None."""
        with self._connect() as connection:
            try:
                leases.check_not_owned(connection, run_id)
            except RunOwned as owned:
                return str(owned)
        return None

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
        """Rows, then folder; one leading outside the store (a link) is refused first."""
        directory = self.run_dir(run_id)
        if directory.is_symlink() or not self.contains(directory):
            raise StoreError(f"{directory} leads outside the run store {self.root} (a link); "
                             "nothing was deleted")
        with self._connect(immediate=True) as connection:
            leases.check_not_owned(connection, run_id)
            connection.execute("UPDATE runs SET parent_id=NULL WHERE parent_id=?", (run_id,))
            connection.execute("DELETE FROM runs WHERE id=?", (run_id,))
        if directory.exists():
            shutil.rmtree(directory)

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
        if self.read_only:
            raise StoreError(f"the run store {self.root} is read-only; this command needs to "
                             f"write {name}.safetensors to it")
        path = self._tensor_path(run_id, name)
        write_safetensors(path, tensors, metadata)
        return path

    def load_tensors(self, run_id: str, name: str) -> dict[str, torch.Tensor]:
        return self.load_tensors_with_metadata(run_id, name)[0]

    def load_tensors_with_metadata(
        self, run_id: str, name: str,
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        path = self._tensor_path(run_id, name)
        if not path.is_file():
            raise FileNotFoundError(f"run {run_id} has no {name}.safetensors ({path})")
        return read_safetensors(path)

    def delete_tensors(self, run_id: str, name: str) -> None:
        self._tensor_path(run_id, name).unlink(missing_ok=True)

    def has_tensors(self, run_id: str, name: str) -> bool:
        return self._tensor_path(run_id, name).is_file()
