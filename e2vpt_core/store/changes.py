"""What changed in a store since a reader last looked, for readers that poll (the app's
live views redraw every second or two while a run trains).

`version(store)` answers "has anything been committed since?" with one tiny query: SQLite's
`PRAGMA data_version` on a connection kept open for the purpose, which changes whenever
another connection (any process, this one included) commits to the database; the watching
connection itself never writes. `newer_metrics` reads only the metric rows added or
replaced since the last read, so a poll costs no more as a run's history grows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .runs import RunStore, _store_error

COLUMNS = ["step", "epoch", "name", "value", "time"]


class _Watch:
    """One read-only connection to a database, shared by the threads of this process."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.lock = threading.Lock()
        self.connection: sqlite3.Connection | None = None
        self.seen: int | None = None
        self.count = 0

    def connect(self) -> sqlite3.Connection:
        """Opened on first use; `mode=ro` sees other connections' commits, `immutable` (a
        read-only directory without the WAL's shared-memory file) has none to see."""
        if self.connection is None:
            base = self.db_path.resolve().as_uri()
            for uri in (f"{base}?mode=ro", f"{base}?immutable=1"):
                try:
                    connection = sqlite3.connect(uri, uri=True, timeout=60.0,
                                                 isolation_level=None, check_same_thread=False)
                    connection.execute("PRAGMA data_version").fetchone()
                except sqlite3.Error as error:
                    failure = error
                    continue
                self.connection = connection
                break
            else:
                raise _store_error(self.db_path, failure)
        return self.connection

    def version(self) -> int:
        with self.lock:
            try:
                seen = self.connect().execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as error:  # reopened on the next look, counted as a change
                self.close()
                self.count += 1
                raise _store_error(self.db_path, error) from error
            if seen != self.seen:
                self.seen, self.count = seen, self.count + 1
            return self.count

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one read transaction: every query sees the same state."""
        with self.lock:
            connection = self.connect()
            try:
                connection.execute("BEGIN")
                try:
                    yield connection
                finally:
                    connection.execute("COMMIT")
            except sqlite3.Error as error:
                self.close()
                raise _store_error(self.db_path, error) from error

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection, self.seen = None, None


_WATCHES: dict[Path, _Watch] = {}
_WATCHES_LOCK = threading.Lock()


def _watch(store: RunStore) -> _Watch:
    with _WATCHES_LOCK:
        return _WATCHES.setdefault(store.db_path, _Watch(store.db_path))


def version(store: RunStore) -> int:
    """A number that grows each time the store's database has had a commit since the last
    call in this process (from any connection or process); equal numbers mean no change."""
    return _watch(store).version()


@dataclass
class MetricsTail:
    """A run's metrics as last read (`RunStore.metrics`' columns, by step and name) and
    the newest row read, so the next read asks only for what came after."""

    run_id: str
    frame: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COLUMNS))
    last_row: int = 0


def _merged(frame: pd.DataFrame, rows: list[tuple]) -> pd.DataFrame:
    """`frame` with `rows` (rowid first) added; a row of a step and name already there
    replaces it, as `INSERT OR REPLACE` did in the store."""
    new = pd.DataFrame([row[1:] for row in rows], columns=COLUMNS)
    if frame.empty or new.empty:
        return new if frame.empty else frame
    return pd.concat([frame, new]).drop_duplicates(["name", "step"], keep="last")


def newer_metrics(store: RunStore, tail: MetricsTail | None, run_id: str) -> MetricsTail:
    """`tail` brought up to date: the rows written (or rewritten, as a replay does) since
    it was read, merged in. Rows deleted meanwhile (a resume drops those after its
    checkpoint) make the row count disagree, and the run is then read whole."""
    if tail is None or tail.run_id != run_id:
        tail = MetricsTail(run_id)
    query = ("SELECT rowid, step, epoch, name, value, time FROM metrics "
             "WHERE run_id=? AND rowid>? ORDER BY rowid")
    with _watch(store).snapshot() as connection:
        rows = connection.execute(query, (run_id, tail.last_row)).fetchall()
        total = connection.execute("SELECT count(*) FROM metrics WHERE run_id=?",
                                   (run_id,)).fetchone()[0]
        if not rows and total == len(tail.frame):
            return tail
        frame, last = _merged(tail.frame, rows), rows[-1][0] if rows else tail.last_row
        if len(frame) != total:
            rows = connection.execute(query, (run_id, 0)).fetchall()
            frame, last = _merged(tail.frame.iloc[:0], rows), rows[-1][0] if rows else 0
    return MetricsTail(run_id, frame.sort_values(["step", "name"], ignore_index=True), last)
