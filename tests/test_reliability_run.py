"""A run stopped by SIGTERM, writes killed half-way and data broken after submission
(issue 14, items 3 and 9)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import last_json
from data_fixtures import make_vtab_task

from e2vpt_core.fileio import atomic_write, remove_orphan_tmp
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run
from e2vpt_core.train.preflight import check_sources

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "e2vpt_core", *args]


@pytest.mark.slow
def test_sigterm_cancels_the_run_and_leaves_it_resumable(tmp_path: Path,
                                                         tiny_backbone: str) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = RunStore(store_dir)
    args = ["--store", str(store_dir), "--json", "--quiet"]
    process = subprocess.Popen(
        _cli("train", "--backbone", tiny_backbone, "-P", "2", "-T", "1", "--num-segments", "4",
             "--epochs", "3", "--batch-size", "8", "--device", "cpu", *args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        runs = store.runs()
        if len(runs) and store.has_tensors(runs.iloc[0]["id"], "checkpoint"):
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "SIGTERM" in err
    run_id = store.runs().iloc[0]["id"]
    run = store.get_run(run_id)
    assert run["status"] == "cancelled", run
    assert "SIGTERM" in run["reason"] and f"e2vpt resume {run_id}" in run["reason"]

    resumed = subprocess.run(_cli("resume", run_id, *args), capture_output=True, text=True,
                             cwd=ROOT, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert last_json(resumed.stdout)["status"] == "completed"


def test_orphan_temporary_files_are_removed_when_the_store_opens(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = store.create_run(TrainConfig().to_dict())
    orphans = [tmp_path / run_id / ".checkpoint.safetensors.k1ll3d.tmp",
               tmp_path / run_id / "adapter" / ".adapter.safetensors.x.tmp"]
    for orphan in orphans:
        orphan.parent.mkdir(exist_ok=True)
        orphan.write_bytes(b"half a checkpoint")
    keep = tmp_path / run_id / "notes.tmp"  # not a temporary file of ours
    keep.write_text("x")
    RunStore(tmp_path)
    assert not any(orphan.exists() for orphan in orphans)
    assert keep.exists()


def test_a_file_being_written_is_not_taken_for_an_orphan(tmp_path: Path) -> None:
    seen: list[list[Path]] = []

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(b"partial")
        seen.append(remove_orphan_tmp(tmp_path))  # another process opening the store now

    atomic_write(tmp_path / "run" / "checkpoint.safetensors", write)
    assert seen == [[]]
    assert (tmp_path / "run" / "checkpoint.safetensors").read_bytes() == b"partial"
    assert list((tmp_path / "run").iterdir()) == [tmp_path / "run" / "checkpoint.safetensors"]


def test_images_broken_after_submission_fail_the_run_before_its_first_epoch(
    tmp_path: Path, tiny_backbone: str, monkeypatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    task = make_vtab_task(tmp_path / "data")
    config = TrainConfig(backbone=tiny_backbone, dataset=f"vtab:{task}", epochs=2,
                         batch_size=2, device="cpu", num_workers=0)
    check_sources(config)  # passes at submission
    victim = task / "images/test/000003.jpg"
    victim.write_bytes(victim.read_bytes()[:30])
    store = RunStore(tmp_path / "store")
    result = train_run(config, store)
    assert result.status == "failed" and str(victim) in result.reason
    assert store.metrics(result.run_id).empty, "it trained before finding the bad image"
