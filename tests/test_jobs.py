"""The job queue and its worker: order, cancellation, failures, SIGKILL and resume, one
worker per store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from e2vpt_core import PromptConfig
from e2vpt_core.jobs import (
    cancel_job,
    ensure_worker,
    run_job,
    run_worker,
    submit_embed,
    submit_importance,
    submit_rewind,
    submit_train,
    worker_alive,
    worker_pid,
)
from e2vpt_core.prune.importance import compute_run_importance
from e2vpt_core.store import RunStore
from e2vpt_core.store.leases import Holder
from e2vpt_core.train import TrainConfig
from e2vpt_core.train.checkpoint import CHECKPOINT


def _config(backbone: str, **changes) -> TrainConfig:
    values = dict(backbone=backbone, dataset="builtin:position", epochs=1, batch_size=100,
                  eval_splits=("val",), device="cpu",
                  prompt=PromptConfig("vpt-deep", visual_prompt_len=2, num_segments=4))
    values.update(changes)
    return TrainConfig(**values)


def _drain(store: RunStore) -> int:
    return run_worker(store, idle_exit=0, poll=0.01, log=lambda line: None)


def test_submit_creates_a_queued_run_and_its_job_together(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    job_id, run_id = submit_train(store, _config(tiny_backbone))
    job = store.get_job(job_id)
    assert (job["kind"], job["status"], job["run_id"]) == ("train", "queued", run_id)
    assert store.get_run(run_id)["status"] == "queued"
    assert store.get_run(run_id)["config"]["dataset"] == "builtin:position"


def test_jobs_run_in_order_one_at_a_time(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    submitted = [submit_train(store, _config(tiny_backbone, seed=seed)) for seed in (0, 1)]
    assert _drain(store) == 2
    jobs = store.jobs().set_index("id")
    for job_id, run_id in submitted:
        assert jobs.loc[job_id, "status"] == "done"
        run = store.get_run(run_id)
        assert run["status"] == "completed"
        assert run["summary"]["total_steps"] == 8
    first, second = (jobs.loc[job_id] for job_id, _ in submitted)
    assert first["finished_at"] <= second["started_at"]
    assert worker_alive(store) is False


def test_a_cancelled_queued_job_never_runs(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    job_a, run_a = submit_train(store, _config(tiny_backbone))
    job_b, run_b = submit_train(store, _config(tiny_backbone))
    assert cancel_job(store, job_a) == "cancelled"
    assert _drain(store) == 1
    assert store.get_job(job_a)["status"] == "cancelled"
    assert store.get_run(run_a)["status"] == "cancelled"
    assert store.metrics(run_a).empty
    assert store.get_job(job_b)["status"] == "done"
    assert store.get_run(run_b)["status"] == "completed"


def test_a_running_job_stops_at_the_next_step_when_cancelled(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    job_id, run_id = submit_train(store, _config(tiny_backbone))
    job = store.claim_job()
    assert job["id"] == job_id and job["resumed"] is False
    assert cancel_job(store, job_id) == "cancelling"
    assert run_job(store, job) == "cancelled"
    assert store.get_job(job_id)["status"] == "cancelled"
    run = store.get_run(run_id)
    assert (run["status"], run["reason"]) == ("cancelled", "stop requested")
    assert store.metrics(run_id, ["train/loss"]).empty


def test_failing_jobs_record_their_reason(tmp_path, tiny_backbone):
    store = RunStore(tmp_path / "store")
    empty = tmp_path / "empty"
    empty.mkdir()
    job_id, run_id = submit_train(store, _config(tiny_backbone, dataset=f"folder:{empty}"))
    missing = store.enqueue_job("rewind", {"parent": "no-such-run", "token_ratio": 0.5})[0]
    assert _drain(store) == 2
    job, run = store.get_job(job_id), store.get_run(run_id)
    assert (job["status"], run["status"]) == ("failed", "failed")
    assert job["error"] == run["reason"] and "DatasetError" in job["error"]
    job = store.get_job(missing)
    assert job["status"] == "failed" and "no-such-run" in job["error"]


def test_submit_rewind_refuses_a_run_that_cannot_be_pruned(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    _, linear = submit_train(store, _config(tiny_backbone, prompt=PromptConfig("linear")))
    job, cancelled = submit_train(store, _config(tiny_backbone))
    cancel_job(store, job)
    with pytest.raises(ValueError, match="no visual prompts"):
        submit_rewind(store, linear, 0.5)
    with pytest.raises(ValueError, match="no visual prompts"):
        submit_importance(store, linear)
    with pytest.raises(ValueError, match="cancelled, not completed"):
        submit_rewind(store, cancelled, 0.5)
    with pytest.raises(ValueError, match="outside"):
        submit_rewind(store, cancelled, 1.5)
    with pytest.raises(ValueError, match="token_scores='gradient' is not allowed"):
        submit_rewind(store, cancelled, 0.5, token_scores="gradient")
    assert len(store.jobs()) == 2


def test_jobs_queued_behind_a_training_job_see_its_result(tmp_path, tiny_backbone):
    """Importance and rewind jobs may be queued before their parent trains: they wait for
    its training, so they find it completed, and fail with its state when it did not."""
    store = RunStore(tmp_path / "store")
    _, parent = submit_train(store, _config(tiny_backbone))
    importance = submit_importance(store, parent)
    rewind = submit_rewind(store, parent, 0.5, epochs=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    _, broken = submit_train(store, _config(tiny_backbone, dataset=f"folder:{empty}"))
    orphan = submit_rewind(store, broken, 0.5)
    assert _drain(store) == 5
    assert store.get_job(importance)["status"] == "done"
    stored = store.load_tensors(parent, "importance")
    direct = compute_run_importance(store, parent)
    for key in ("token", "segment"):
        torch.testing.assert_close(stored[key], direct[key], rtol=0, atol=0)
    child = store.get_run(store.get_job(rewind)["run_id"])
    assert (child["status"], child["parent_id"]) == ("completed", parent)
    job = store.get_job(orphan)
    assert job["status"] == "failed" and "failed, not completed" in job["error"]


def test_a_rewind_job_creates_and_trains_the_child_run(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    _, parent = submit_train(store, _config(tiny_backbone))
    _drain(store)
    job_id = submit_rewind(store, parent, 0.5, init="original", mode="remove", epochs=1)
    _drain(store)
    job = store.get_job(job_id)
    child = store.get_run(job["run_id"])
    assert (job["status"], child["status"], child["parent_id"]) == ("done", "completed", parent)
    assert len(child["summary"]["kept_tokens"]) == 1  # 2 prompts, half pruned
    assert (child["summary"]["init"], child["summary"]["mode"]) == ("original", "remove")
    assert child["config"]["init_from_run"] == parent


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_resumed_without_loss(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    config = _config(tiny_backbone, epochs=3, batch_size=50)
    job_id, run_id = submit_train(store, config)
    process = subprocess.Popen([sys.executable, "-m", "e2vpt_core.jobs", "--store",
                                str(tmp_path), "--poll", "0.05"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the epoch's val figure is logged just before its checkpoint is written
        _wait(lambda: store.has_tensors(run_id, CHECKPOINT), 120, "the first checkpoint")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_at = int(store.metrics(run_id, ["train/loss"])["step"].max())
    assert killed_at < 3 * 16, "not killed mid-run"
    assert store.get_run(run_id)["status"] == "running"
    assert store.get_job(job_id)["status"] == "running"
    assert worker_alive(store) is False

    assert _drain(store) == 1
    assert store.get_job(job_id)["status"] == "done"
    assert store.get_run(run_id)["status"] == "completed"
    losses = store.metrics(run_id, ["train/loss"])
    assert list(losses["step"]) == list(range(1, 3 * 16 + 1))
    assert len(store.metrics(run_id, ["val/top1"])) == 3
    assert "resumed after epoch" in " ".join(store.events(run_id)["message"])


@pytest.mark.slow
def test_ensure_worker_starts_one_detached_worker(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    job_id, run_id = submit_train(store, _config(tiny_backbone))
    assert ensure_worker(store, idle_exit=1.0) is True
    try:
        assert ensure_worker(store, idle_exit=1.0) is False
        pid = worker_pid(store)
        assert pid is not None and os.getpgid(pid) == pid  # its own session
        with pytest.raises(RuntimeError, match="another worker"):
            run_worker(store, idle_exit=0)
        _wait(lambda: store.get_job(job_id)["status"] == "done", 120, "the job")
        assert store.get_run(run_id)["status"] == "completed"
        _wait(lambda: not worker_alive(store), 30, "the idle worker to exit")
    finally:
        pid = worker_pid(store)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)


def test_prepare_runs_once_with_the_lock_held_before_the_first_claim(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    job_id, _ = submit_train(store, _config(tiny_backbone))
    seen = []

    def prepare() -> None:
        seen.append((worker_alive(store), store.get_job(job_id)["status"]))

    assert run_worker(store, idle_exit=0, poll=0.01, log=lambda line: None,
                      prepare=prepare) == 1
    assert seen == [(True, "queued")]  # once, locked, and before the job was claimed
    assert store.get_job(job_id)["status"] == "done"


def test_the_worker_process_loads_its_jobs_modules_before_its_first_claim(tmp_path):
    """What `python -m e2vpt_core.jobs` runs between taking the lock and its first claim:
    the modules its jobs import (so a worker the app starts early has them loaded)."""
    script = (
        "import sys\n"
        "import e2vpt_core.jobs as jobs\n"
        "def claim(self):\n"
        "    print(sorted(m for m in ('torch', 'e2vpt_core.train.loop', "
        "'e2vpt_core.prune.importance', 'e2vpt_core.hyperbolic.view') if m in sys.modules))\n"
        "    raise SystemExit(0)\n"
        "jobs.RunStore.claim_job = claim\n"
        f"jobs.main(['--store', {str(tmp_path)!r}, '--create-store'])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=True)
    assert result.stdout.strip() == str(sorted(["e2vpt_core.hyperbolic.view",
                                                "e2vpt_core.prune.importance",
                                                "e2vpt_core.train.loop", "torch"]))


def test_embed_jobs_compute_one_view_or_a_comparison(tmp_path, monkeypatch):
    import e2vpt_core.hyperbolic.view as view

    calls = []
    monkeypatch.setattr(view, "embedding_view", lambda *args, **kw: calls.append(args[1:]))
    monkeypatch.setattr(view, "compare_runs", lambda *args, **kw: calls.append(args[1:]))
    store = RunStore(tmp_path)
    first, second = (store.create_run({}) for _ in range(2))
    with pytest.raises(ValueError, match="one or two runs"):
        submit_embed(store, [])
    with pytest.raises(KeyError):
        submit_embed(store, ["no-such-run"])
    single = submit_embed(store, [first], "val")
    pair = submit_embed(store, [first, second])
    assert _drain(store) == 2
    assert calls == [(first, "val"), (first, second, "test")]
    assert store.get_job(single)["status"] == store.get_job(pair)["status"] == "done"


def _orphan(store: RunStore, job_id: int, run_id: str, worker: str | None) -> None:
    """Leave the job as a worker killed mid-run leaves it, recorded with our own pid: the
    new worker got the dead one's pid (a restarted container)."""
    with sqlite3.connect(store.db_path) as connection:
        connection.execute("UPDATE jobs SET status='running', worker_pid=?, worker=?, "
                           "started_at=? WHERE id=?", (os.getpid(), worker, time.time(), job_id))
        connection.execute("UPDATE runs SET status='running' WHERE id=?", (run_id,))
    connection.close()


@pytest.mark.parametrize("recorded", ["pid only (older stores)", "same pid, earlier process"])
def test_an_orphan_with_the_new_workers_pid_is_still_resumed(recorded, tmp_path,
                                                             tiny_backbone):
    store = RunStore(tmp_path)
    job_id, run_id = submit_train(store, _config(tiny_backbone))
    me = Holder.current()
    earlier = Holder(me.namespace, me.pid, str(int(me.start) - 1)).key
    _orphan(store, job_id, run_id, None if recorded.startswith("pid only") else earlier)
    assert _drain(store) == 1
    job = store.get_job(job_id)
    assert (job["status"], job["worker"]) == ("done", me.key)
    assert store.get_run(run_id)["status"] == "completed"


def _hold(store: RunStore, run_id: str) -> subprocess.Popen:
    """Another process that owns the run (as `e2vpt resume` does) until it is killed."""
    code = ("import sys, time\nfrom e2vpt_core.store import RunStore\n"
            "RunStore(sys.argv[1]).set_status(sys.argv[2], 'running')\n"
            "print('owner', flush=True)\ntime.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(store.root), run_id],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "owner"
    return process


def test_a_job_never_trains_a_run_another_process_owns(tmp_path, tiny_backbone):
    """The worker used to restart such a run: metrics truncated, `init` rewritten, while
    its owner was still training it."""
    store = RunStore(tmp_path)
    run_id = store.create_run(_config(tiny_backbone).to_dict())
    store.log_metrics(run_id, 1, 0, {"train/loss": 2.0})
    owner = _hold(store, run_id)
    try:
        job_id = store.enqueue_job("train", {}, run_id=run_id)[0]
        assert _drain(store) == 1
        job = store.get_job(job_id)
        assert job["status"] == "failed" and f"pid {owner.pid}" in job["error"]
        assert store.get_run(run_id)["status"] == "running"  # left to its owner
        assert len(store.metrics(run_id)) == 1 and not store.has_tensors(run_id, "init")
    finally:
        owner.kill()
        owner.wait()
    assert store.owner(run_id) is None  # its holder died: the lease went with it
