"""The run store: rows in transactions, atomic files, readers during writes."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from e2vpt_core.jobs import worker_alive
from e2vpt_core.store import DamagedFileError, RunStore, StoreError, leases
from e2vpt_core.store.leases import Holder, RunOwned, process_start


def test_run_lifecycle_and_summary(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run({"dataset": "builtin:digits", "prompt": {"method": "e2vpt"}})
    assert store.get_run(run_id)["status"] == "queued"
    store.set_status(run_id, "running")
    store.update_summary(run_id, val_top1=51.5)
    store.update_summary(run_id, test_top1=50.0)
    store.set_status(run_id, "failed", "non-finite loss")
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["reason"] == "non-finite loss"
    assert run["summary"] == {"val_top1": 51.5, "test_top1": 50.0}
    assert run["started_at"] <= run["finished_at"]
    queued = store.create_run({"dataset": "builtin:counting"})  # no summary yet
    table = store.runs().set_index("id")
    assert table.loc[run_id, "method"] == "e2vpt" and table.loc[run_id, "val_top1"] == 51.5
    assert table.loc[queued, "status"] == "queued"
    with pytest.raises(ValueError, match="unknown run status"):
        store.set_status(run_id, "exploded")
    with pytest.raises(KeyError, match="no run 'nope'"):
        store.get_run("nope")


def test_metrics_truncate_and_query(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run({})
    for step in range(1, 11):
        store.log_metrics(run_id, step, step // 5, {"train/loss": 1.0 / step, "train/lr": 0.1})
    store.log_metrics(run_id, 10, 1, {"train/loss": 0.5})  # same step again: replaced
    frame = store.metrics(run_id, ["train/loss"])
    assert list(frame["step"]) == list(range(1, 11))
    assert frame["value"].iloc[-1] == 0.5
    store.truncate_metrics(run_id, after_step=4)
    assert store.metrics(run_id)["step"].max() == 4
    assert len(store.metrics(run_id)) == 8


def test_tensor_files_are_atomic_and_round_trip(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    run_id = store.create_run({})
    store.save_tensors(run_id, "prompts", {"a": torch.arange(6.0).view(2, 3)},
                       metadata={"epoch": "3"})
    assert torch.equal(store.load_tensors(run_id, "prompts")["a"], torch.arange(6.0).view(2, 3))

    def crash_midway(tensors, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("e2vpt_core.fileio.save_file", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        store.save_tensors(run_id, "prompts", {"a": torch.zeros(2)})
    assert torch.equal(store.load_tensors(run_id, "prompts")["a"], torch.arange(6.0).view(2, 3))
    assert not [p for p in store.run_dir(run_id).iterdir() if p.suffix == ".tmp"]
    with pytest.raises(FileNotFoundError, match="has no missing.safetensors"):
        store.load_tensors(run_id, "missing")


def test_delete_run_removes_rows_and_files(tmp_path):
    store = RunStore(tmp_path)
    parent = store.create_run({})
    child = store.create_run({}, parent_id=parent)
    store.log_metrics(parent, 1, 0, {"x": 1.0})
    store.save_tensors(parent, "t", {"x": torch.zeros(1)})
    store.delete_run(parent)
    assert not store.run_dir(parent).exists()
    assert store.metrics(parent).empty
    assert store.get_run(child)["parent_id"] is None


def _writer(root: str, run_id: str, steps: int) -> None:
    store = RunStore(root)
    for step in range(steps):
        store.log_metrics(run_id, step, 0, {"train/loss": float(step)})


@pytest.mark.slow
def test_readers_query_while_a_writer_writes(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run({})
    writer = multiprocessing.get_context("spawn").Process(
        target=_writer, args=(str(tmp_path), run_id, 150))
    writer.start()
    seen = []
    while writer.is_alive():
        seen.append(len(store.metrics(run_id)))
    writer.join()
    assert writer.exitcode == 0
    assert seen == sorted(seen)  # reads never fail and never go backwards
    assert len(store.metrics(run_id)) == 150
    mode = sqlite3.connect(store.db_path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


# ------------------------------------------------------------- damaged and read-only stores
def test_a_damaged_database_is_one_error_naming_the_file(tmp_path):
    store = RunStore(tmp_path)
    store.create_run({})
    store.db_path.write_bytes(b"this is not a database" * 100)
    for name in ("store.sqlite-wal", "store.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(StoreError, match="damaged") as raised:
        RunStore(tmp_path)
    assert str(store.db_path) in str(raised.value) and "\n" not in str(raised.value)
    for read in (store.runs, store.jobs, lambda: store.get_run("x")):  # opened before
        with pytest.raises(StoreError, match="damaged") as raised:
            read()
        assert str(raised.value).startswith(f"{store.db_path}: file is not a database")


def test_a_damaged_tensor_file_is_one_error_naming_the_file(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run({})
    path = store.save_tensors(run_id, "importance", {"token": torch.ones(4)})
    path.write_bytes(path.read_bytes()[:-3])  # truncated
    with pytest.raises(DamagedFileError, match="importance.safetensors is damaged"):
        store.load_tensors(run_id, "importance")
    path.write_bytes(b"")
    with pytest.raises(DamagedFileError, match="importance.safetensors is damaged"):
        store.load_tensors(run_id, "importance")


# ------------------------------------------------------------------------ run ownership
def _lease(store: RunStore, run_id: str, holder: str, pid: int, expires_in: float) -> None:
    """A lease row as another process would have left it."""
    with sqlite3.connect(store.db_path) as connection:
        connection.execute(
            "INSERT OR REPLACE INTO leases (run_id, holder, pid, command, acquired_at, "
            "expires_at) VALUES (?, ?, ?, 'e2vpt resume', ?, ?)",
            (run_id, holder, pid, time.time(), time.time() + expires_in))
    connection.close()


def test_running_takes_the_lease_and_a_final_status_releases_it(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run({})
    store.set_status(run_id, "running")
    store.set_status(run_id, "running")  # the owner again: fine
    with sqlite3.connect(store.db_path) as connection:
        holder = connection.execute("SELECT holder FROM leases WHERE run_id=?",
                                    (run_id,)).fetchone()[0]
    assert holder == Holder.current().key and store.owner(run_id) is None  # ours
    store.set_status(run_id, "completed")
    with sqlite3.connect(store.db_path) as connection:
        assert connection.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
    with pytest.raises(KeyError, match="no run 'nope'"):
        store.set_status("nope", "running")


def test_a_live_owner_keeps_the_run_until_it_dies(tmp_path):
    """Another process in this namespace: alive while its pid has its recorded start time,
    dead at once otherwise (pid reused by another process, or gone)."""
    store = RunStore(tmp_path)
    run_id = store.create_run({})
    me = Holder.current()
    parent = os.getppid()
    alive = Holder(me.namespace, parent, process_start(parent))
    _lease(store, run_id, alive.key, parent, expires_in=-10)  # heartbeat irrelevant here
    for attempt in (lambda: store.set_status(run_id, "running"),
                    lambda: store.set_status(run_id, "failed"),
                    lambda: store.delete_run(run_id)):
        with pytest.raises(RunOwned, match=f"pid {parent} \\(e2vpt resume\\)"):
            attempt()
    assert f"pid {parent}" in store.owner(run_id)
    reused = Holder(me.namespace, parent, str(int(process_start(parent)) + 1))
    _lease(store, run_id, reused.key, parent, expires_in=60)
    assert store.owner(run_id) is None
    store.set_status(run_id, "running")
    assert store.get_run(run_id)["status"] == "running"


def test_an_owner_in_another_namespace_lives_while_its_heartbeat_does(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run({})
    foreign = "otherhost:pid:[1]/7/12345"
    _lease(store, run_id, foreign, 7, expires_in=30)
    with pytest.raises(RunOwned, match="pid 7"):
        store.set_status(run_id, "running")
    _lease(store, run_id, foreign, 7, expires_in=-1)  # its heartbeat stopped
    store.set_status(run_id, "running")


def test_the_heartbeat_renews_this_process_leases(tmp_path, monkeypatch):
    monkeypatch.setattr(leases, "HEARTBEAT", 0.05)
    store = RunStore(tmp_path)
    run_id = store.create_run({})
    store.set_status(run_id, "running")

    def expiry() -> float:
        with sqlite3.connect(store.db_path) as connection:
            return connection.execute("SELECT expires_at FROM leases").fetchone()[0]

    def beating() -> bool:
        name = f"lease heartbeat {store.db_path}"
        return any(thread.name == name for thread in threading.enumerate())

    first = expiry()
    deadline = time.monotonic() + 10
    while expiry() == first:
        assert time.monotonic() < deadline, "the lease was never renewed"
        time.sleep(0.05)
    store.set_status(run_id, "completed")
    while beating():  # no lease left: the thread ends
        assert time.monotonic() < deadline + 10, "the heartbeat outlived the lease"
        time.sleep(0.05)
    store.set_status(store.create_run({}), "running")  # a new lease: a new heartbeat
    assert beating()


READ_ONLY_USER = '''
import os, sys, torch
from e2vpt_core.jobs import ensure_worker, run_worker, worker_alive
from e2vpt_core.store import RunStore, StoreError
if os.getuid() == 0:  # root writes anywhere: read as `nobody`
    os.setgid(65534)
    os.setuid(65534)
store = RunStore(sys.argv[1])
print(store.read_only, list(store.runs()["id"]), store.load_tensors(sys.argv[2], "t")["x"].item())
print("worker", worker_alive(store), ensure_worker(store))  # what the app's pages call
try:
    run_worker(store)
except RuntimeError as error:
    print(error)
for write in (lambda: store.save_tensors(sys.argv[2], "t", {"x": torch.ones(1)}),
              lambda: store.create_run({})):
    try:
        write()
    except StoreError as error:
        print(error)
'''


@pytest.mark.slow
def test_a_read_only_store_reads_and_refuses_writes_in_one_line():
    """Files 0444 and directories 0555, as another user sees them: nothing is opened for
    writing (not even the init lock), and a write is one StoreError saying so."""
    directory = Path(tempfile.mkdtemp())
    try:
        store = RunStore(directory / "store")
        run_id = store.create_run({})
        store.save_tensors(run_id, "t", {"x": torch.tensor([3.0])})
        (directory / "store" / ".init.lock").unlink()
        assert worker_alive(store) is False  # creates the worker's lock files
        for path in [directory, *directory.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        result = subprocess.run([sys.executable, "-c", READ_ONLY_USER, str(store.root), run_id],
                                capture_output=True, text=True, timeout=120)
    finally:
        for path in [directory, *directory.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(directory)
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"True ['{run_id}'] 3.0", "worker False False"], result.stderr
    assert len(lines) == 5 and all("is read-only" in line for line in lines[2:]), lines


def test_a_killed_owner_not_yet_reaped_has_lost_the_run(tmp_path):
    """A worker started by the app stays a zombie until the app reaps it: its /proc entry
    (and start time) remain, but it trains nothing."""
    store = RunStore(tmp_path)
    run_id = store.create_run({})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        start = process_start(child.pid)
        assert start is not None
        holder = Holder(Holder.current().namespace, child.pid, start)
        _lease(store, run_id, holder.key, child.pid, expires_in=60)
        with pytest.raises(RunOwned):
            store.set_status(run_id, "running")
        child.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        store.set_status(run_id, "running")  # not reaped yet, and yet taken over
    finally:
        child.kill()
        child.wait()


def test_a_store_opened_while_another_process_writes_tensors_leaves_its_file(
        tmp_path, monkeypatch):
    """The write's temporary file stays locked until its rename, so opening the store
    (which deletes the temporary files of killed writers) in that window spares it."""
    import os

    store = RunStore(tmp_path)
    run_id = store.create_run({})
    rename = os.replace

    def open_store_then_rename(source, target):
        RunStore(tmp_path)  # another process opening the store mid-write
        rename(source, target)

    monkeypatch.setattr(os, "replace", open_store_then_rename)
    store.save_tensors(run_id, "init", {"x": torch.ones(3)})
    assert torch.equal(store.load_tensors(run_id, "init")["x"], torch.ones(3))
