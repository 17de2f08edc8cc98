"""Run ownership: one process at a time may train (or change the state of) a run.

The owner holds a lease, a row of the store's `leases` table naming the process. A holder
is identified by its pid namespace, pid and the kernel's start time of that process, so a
reused pid (another process, or a restarted container) is never mistaken for the holder.
A lease ends when its holder releases it, when its holder is seen dead (same namespace:
immediately), or, for holders in another namespace, when its heartbeat stops for `TTL`
seconds. Every check and change happens in one `BEGIN IMMEDIATE` transaction, so two
processes can never both take one run.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TTL = 60.0  # seconds a lease from another pid namespace outlives its last heartbeat
HEARTBEAT = 15.0  # seconds between renewals by a live holder
ACTIVE_JOBS = ("queued", "running", "cancelling")

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    command TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""


class RunOwned(RuntimeError):
    """The run is trained by another live process, or queued for the worker."""


def _namespace() -> str:
    """This machine and pid namespace: pids are only comparable within one."""
    try:
        space = os.readlink("/proc/self/ns/pid")
    except OSError:
        space = "-"
    return f"{socket.gethostname()}:{space}"


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), None if it does not run (gone,
    or a zombie its parent has not reaped yet) or the platform has no /proc: with the pid,
    it names one process for the machine's life."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]  # state; start time (field 22)


@dataclass(frozen=True)
class Holder:
    """One process, as leases and jobs record it: `namespace/pid/start`."""

    namespace: str
    pid: int
    start: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pid}/{self.start}"

    @classmethod
    def parse(cls, key: str) -> Holder:
        namespace, pid, start = key.rsplit("/", 2)
        return cls(namespace, int(pid), start)

    @classmethod
    def current(cls) -> Holder:
        pid = os.getpid()
        return cls(_namespace(), pid, process_start(pid) or "?")

    def alive(self, expires_at: float, now: float) -> bool:
        """Same namespace with /proc: the process itself is checked; else the heartbeat."""
        if self.namespace == _namespace() and self.start != "?":
            return process_start(self.pid) == self.start
        return expires_at > now


def describe(pid: int, command: str, since: float) -> str:
    clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    return f"pid {pid} ({command}), since {clock}"


def _command() -> str:
    """The owner's command line as typed (`python3 -m e2vpt_core resume ...`), shortened."""
    words = [Path(word).name if i < 2 and not word.startswith("-") else word
             for i, word in enumerate(sys.orig_argv)]
    return " ".join(words)[:200]


def acquire(connection: sqlite3.Connection, run_id: str) -> None:
    """Make this process the run's owner, inside the caller's `BEGIN IMMEDIATE`; raises
    RunOwned naming the live owner, or the job that will train the run.

    A job of this process is its own; a queued job, or a running one whose worker lives,
    blocks; a running job whose worker died is ended, its run taken over."""
    me, now = Holder.current(), time.time()
    row = connection.execute("SELECT holder, pid, command, acquired_at, expires_at "
                             "FROM leases WHERE run_id=?", (run_id,)).fetchone()
    if row is not None and row[0] != me.key and Holder.parse(row[0]).alive(row[4], now):
        raise RunOwned(f"run {run_id} is being trained by {describe(*row[1:4])}; "
                       "wait for it to finish or stop that process")
    jobs = connection.execute(
        f"SELECT id, status, worker FROM jobs WHERE run_id=? AND status IN "
        f"({','.join('?' * len(ACTIVE_JOBS))}) ORDER BY id", (run_id, *ACTIVE_JOBS)).fetchall()
    for job_id, status, worker in jobs:
        if worker == me.key:
            continue
        if status == "queued":
            raise RunOwned(f"run {run_id} is queued as job {job_id} for the worker; cancel "
                           f"job {job_id} first to train it here")
        # No heartbeat on jobs: a worker in another namespace counts as alive through its
        # lease on the run (checked above), which it takes as it starts training.
        if worker is not None and Holder.parse(worker).alive(0.0, now):
            raise RunOwned(f"run {run_id} is being trained by the worker (pid "
                           f"{Holder.parse(worker).pid}) as job {job_id}")
        connection.execute("UPDATE jobs SET status='cancelled', error=?, finished_at=? "
                           "WHERE id=?", (f"taken over by pid {me.pid}", now, job_id))
    connection.execute(
        "INSERT INTO leases (run_id, holder, pid, command, acquired_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET holder=excluded.holder, "
        "pid=excluded.pid, command=excluded.command, acquired_at=excluded.acquired_at, "
        "expires_at=excluded.expires_at WHERE leases.holder != excluded.holder",
        (run_id, me.key, me.pid, _command(), now, now + TTL))


def check_not_owned(connection: sqlite3.Connection, run_id: str) -> None:
    """Raise RunOwned if another live process holds the run."""
    row = connection.execute("SELECT holder, pid, command, acquired_at, expires_at "
                             "FROM leases WHERE run_id=?", (run_id,)).fetchone()
    if row is not None and row[0] != Holder.current().key \
            and Holder.parse(row[0]).alive(row[4], time.time()):
        raise RunOwned(f"run {run_id} is being trained by {describe(*row[1:4])}")


def release(connection: sqlite3.Connection, run_id: str) -> None:
    connection.execute("DELETE FROM leases WHERE run_id=? AND holder=?",
                       (run_id, Holder.current().key))


# (pid, database) pairs: with a heartbeat thread; asked for since its last renewal
_beating: set[tuple[int, str]] = set()
_asked: set[tuple[int, str]] = set()
_heartbeats_lock = threading.Lock()


def start_heartbeat(db_path: Path) -> None:
    """Renew this process's leases in `db_path` every HEARTBEAT seconds, from one daemon
    thread per store, while it holds any there (called after each lease is taken)."""
    key = (os.getpid(), str(db_path))  # a forked child has no thread of its parent's
    with _heartbeats_lock:
        _asked.add(key)
        if key in _beating:
            return
        _beating.add(key)
    threading.Thread(target=_beat, args=(db_path, key), daemon=True,
                     name=f"lease heartbeat {db_path}").start()


def _renew(db_path: Path) -> int | None:
    """Leases renewed; None while the database is busy (try again at the next beat)."""
    uri = f"{db_path.resolve().as_uri()}?mode=rw"  # never creates a database
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=HEARTBEAT)
        try:
            with connection:
                return connection.execute("UPDATE leases SET expires_at=? WHERE holder=?",
                                          (time.time() + TTL, Holder.current().key)).rowcount
        finally:
            connection.close()
    except sqlite3.OperationalError as error:
        return None if "locked" in str(error) or "busy" in str(error) else 0
    except sqlite3.Error:  # the store is gone or damaged: nothing left to renew
        return 0


def _beat(db_path: Path, key: tuple[int, str]) -> None:
    """Ends when a renewal finds no lease of ours and none was taken meanwhile (a lease
    committed just after that renewal has asked again, so the thread goes on)."""
    while True:
        time.sleep(HEARTBEAT)
        with _heartbeats_lock:
            _asked.discard(key)
        if _renew(db_path) != 0:
            continue
        with _heartbeats_lock:
            if key not in _asked:
                _beating.discard(key)
                return
