"""The run store: rows in transactions, atomic files, readers during writes."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest
import torch

from e2vpt_core.store import RunStore


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

    monkeypatch.setattr("e2vpt_core.store.save_file", crash_midway)
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
