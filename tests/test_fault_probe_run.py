"""The fault probe's training findings (issue 36, "The store and the data", 8a and 8b): a
resume that finds no checkpoint says it starts over, and a full disk ends the run
`failed` with the reason instead of leaving it `running`."""

from __future__ import annotations

import errno
import os

import pytest

from e2vpt_core import PromptConfig, fileio
from e2vpt_core.cli import main
from e2vpt_core.store import RunStore, StoreError
from e2vpt_core.train import TrainConfig, train_run
from e2vpt_core.train.checkpoint import CHECKPOINT


def _config(backbone: str) -> TrainConfig:
    return TrainConfig(backbone=backbone, dataset="builtin:position", epochs=1, batch_size=100,
                       eval_splits=("val",), device="cpu",
                       prompt=PromptConfig("vpt-deep", visual_prompt_len=2, num_segments=4))


def test_a_resume_without_its_checkpoint_says_it_starts_over(
        tmp_path, tiny_backbone, capsys: pytest.CaptureFixture) -> None:
    store = RunStore(tmp_path)
    run_id = store.create_run(_config(tiny_backbone).to_dict(), status="cancelled")
    assert not store.has_tensors(run_id, CHECKPOINT)  # deleted, or never written
    capsys.readouterr()
    assert main(["resume", run_id, "--store", str(tmp_path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"warning: run {run_id} has no checkpoint: resuming starts it over from epoch 0" \
        in err, err
    events = store.events(run_id)
    assert any("has no checkpoint" in message and level == "warning"
               for level, message in zip(events["level"], events["message"], strict=True))
    assert store.get_run(run_id)["status"] == "completed"


def test_a_full_disk_ends_the_run_failed_with_the_reason(
        tmp_path, tiny_backbone, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """The checkpoint's write fails with ENOSPC; the database then has room for the small
    status update but not for the traceback (what a full disk did to the probe's run)."""
    save_file, log_event = fileio.save_file, RunStore.log_event

    def full(tensors, path, metadata=None) -> None:
        if os.path.basename(path).startswith(f".{CHECKPOINT}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        save_file(tensors, path, metadata=metadata)

    def no_room(self, run_id, message, level="info") -> None:
        if level == "error":
            raise StoreError(f"{self.db_path}: database or disk is full")
        log_event(self, run_id, message, level)

    monkeypatch.setattr(fileio, "save_file", full)
    monkeypatch.setattr(RunStore, "log_event", no_room)
    store = RunStore(tmp_path)
    result = train_run(_config(tiny_backbone), store)
    run = store.get_run(result.run_id)
    assert (result.status, run["status"]) == ("failed", "failed")
    assert "No space left on device" in run["reason"]
    assert store.owner(result.run_id) is None
    assert not [p for p in tmp_path.rglob(".*.tmp")], "the failed write left its temporary file"
    assert "could not record an event" in capsys.readouterr().err
