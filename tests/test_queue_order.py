"""The queue's order and groups, without training: short jobs ahead of long ones, no
starvation, no job before the run it reads, duplicates merged, cancel all or a group, and
the estimate the sweep shows. Jobs are claimed and finished by hand, as a worker would."""

from __future__ import annotations

import sqlite3
import time

import pytest

from e2vpt_core import PromptConfig
from e2vpt_core.demo import submit_demo
from e2vpt_core.jobs import (
    cancel_jobs,
    estimate_rewinds,
    queued_rewinds,
    submit_embed,
    submit_importance,
    submit_rewind,
    submit_train,
)
from e2vpt_core.store import RunStore
from e2vpt_core.store.jobs_table import AGE_JOBS, AGE_SECONDS, QueuedJob, claim_order
from e2vpt_core.train import TrainConfig


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path)


def _rewind(store: RunStore, parent: str = "p") -> int:
    return store.enqueue_job("rewind", {"parent": parent, "token_ratio": 0.5})[0]


def _embed(store: RunStore, run: str = "x") -> int:
    return store.enqueue_job("embed", {"runs": [run], "split": "test", "options": {}})[0]


def _claims(store: RunStore, limit: int = 50) -> list[int]:
    """Claim and finish jobs until none can start: the ids in the order they started."""
    started = []
    while len(started) < limit and (job := store.claim_job()) is not None:
        started.append(job["id"])
        store.finish_job(job["id"], "done")
    return started


def _config() -> TrainConfig:
    return TrainConfig(dataset="builtin:digits", prompt=PromptConfig("vpt-deep"))


def test_short_jobs_run_ahead_of_long_ones_oldest_first(store):
    long_jobs = [_rewind(store), _rewind(store)]
    short_jobs = [_embed(store), _embed(store)]
    assert store.queue_order() == [*short_jobs, *long_jobs]
    assert _claims(store) == [*short_jobs, *long_jobs]


def test_a_long_job_waits_behind_at_most_age_jobs_short_ones(store):
    waiting = _rewind(store)
    shorts = [_embed(store) for _ in range(AGE_JOBS + 2)]
    expected = [*shorts[:AGE_JOBS], waiting, *shorts[AGE_JOBS:]]
    assert store.queue_order() == expected
    assert _claims(store) == expected


def test_short_jobs_queued_after_a_long_job_ran_go_first_again(store):
    """The count restarts when a long job runs: a sweep's next rewind waits for the new
    embedding, not the other way round."""
    sweep = [_rewind(store) for _ in range(3)]
    shorts = [_embed(store) for _ in range(AGE_JOBS)]
    assert _claims(store, AGE_JOBS + 1) == [*shorts, sweep[0]]
    late = _embed(store)
    assert _claims(store) == [late, *sweep[1:]]


def test_a_long_job_goes_next_once_short_ones_held_the_worker_age_seconds(store):
    waiting = _rewind(store)
    first = _embed(store)
    assert _claims(store, 1) == [first]
    with sqlite3.connect(store.db_path) as connection:  # it started AGE_SECONDS ago
        then = time.time() - AGE_SECONDS - 1
        connection.execute("UPDATE jobs SET created_at=? WHERE id=?", (then - 1, waiting))
        connection.execute("UPDATE jobs SET started_at=? WHERE id=?", (then, first))
    connection.close()
    later = _embed(store)
    assert _claims(store) == [waiting, later]


def test_a_job_waits_for_the_training_of_the_run_it_reads(store):
    train, run = submit_train(store, _config())
    embed = submit_embed(store, [run])
    importance = submit_importance(store, run)
    rewind = submit_rewind(store, run, 0.5)
    assert store.claim_job()["id"] == train  # the short ones need its run: they wait
    assert store.claim_job() is None
    store.finish_job(train, "done")
    # importance writes the run's scores: the younger rewind waits for it, the older embed not
    assert _claims(store) == [embed, importance, rewind]


def test_the_demo_queue_runs_each_job_after_what_it_needs(store, tiny_backbone):
    demo = submit_demo(store, "position", epochs=1, backbone=tiny_backbone)
    e2vpt_train, vpt_train = demo.train_jobs
    expected = [e2vpt_train, demo.importance_job, vpt_train, demo.embed_job, demo.rewind_job]
    assert store.queue_order() == expected
    assert _claims(store) == expected


def test_claim_order_is_a_pure_function_of_kinds_reads_and_writes():
    train = QueuedJob(1, "train", "r")
    importance = QueuedJob(2, "importance", None, {"run": "r"})
    rewind = QueuedJob(3, "rewind", None, {"parent": "r"})
    embed = QueuedJob(4, "embed", None, {"runs": ["other"]})
    assert claim_order([train, importance, rewind, embed]) == [4, 1, 2, 3]
    assert claim_order([importance, rewind, embed], running=[train]) == [4]
    assert claim_order([rewind, embed], streak=AGE_JOBS) == [3, 4]
    assert claim_order([rewind, embed], streak=1, held=AGE_SECONDS) == [3, 4]
    assert claim_order([rewind, embed], streak=1, held=1.0) == [4, 3]


def test_equal_jobs_are_merged_while_queued_or_running(store):
    _, run = submit_train(store, _config())
    importance = submit_importance(store, run)
    assert submit_importance(store, run) == importance
    assert submit_importance(store, run, max_batches=2) != importance
    embed = submit_embed(store, [run], "val", max_points=100)
    assert submit_embed(store, [run], "val", max_points=100) == embed
    assert submit_embed(store, [run], "test", max_points=100) != embed
    rewind = submit_rewind(store, run, 0.5, 0.25, epochs=2)
    assert submit_rewind(store, run, 0.5, 0.25, epochs=2, init="fresh", mode="zero") == rewind
    assert submit_rewind(store, run, 0.5, 0.25, epochs=3) != rewind
    store.finish_job(rewind, "done")
    assert submit_rewind(store, run, 0.5, 0.25, epochs=2) != rewind  # finished: a new one
    assert submit_train(store, _config())[0] != submit_train(store, _config())[0]
    assert (store.jobs()["kind"] == "importance").sum() == 2


def test_queued_rewinds_names_the_ratios_a_sweep_leaves_out(store):
    _, run = submit_train(store, _config())
    job = submit_rewind(store, run, 0.5, 0.25, epochs=2)
    ratios = [(0.4, 0.25), (0.5, 0.25), (0.6, 0.25)]
    assert queued_rewinds(store, run, ratios, epochs=2) == {(0.5, 0.25): job}
    assert queued_rewinds(store, run, ratios, epochs=3) == {}
    with pytest.raises(ValueError, match="unknown rewind option"):
        submit_rewind(store, run, 0.5, epoch=2)


def test_cancel_jobs_cancels_all_or_one_group(store):
    _, parent = submit_train(store, _config())
    _, other = submit_train(store, _config())
    sweep = [submit_rewind(store, parent, ratio) for ratio in (0.1, 0.2)]
    elsewhere = submit_rewind(store, other, 0.1)
    embed = submit_embed(store, [other])
    assert cancel_jobs(store, kind="rewind", run=parent) == dict.fromkeys(sweep, "cancelled")
    assert cancel_jobs(store, ids=[embed]) == {embed: "cancelled"}
    running = store.claim_job()["id"]
    result = cancel_jobs(store)
    assert result[running] == "cancelling" and result[elsewhere] == "cancelled"
    assert set(store.jobs()["status"]) == {"cancelled", "cancelling"}
    assert cancel_jobs(store) == {}


def _timed_run(store: RunStore, seconds_per_step: float) -> str:
    """A completed run of 20 steps over 2 epochs, its losses logged that far apart."""
    run = store.create_run({"epochs": 2}, status="completed")
    store.update_summary(run, total_steps=20)
    for step in range(1, 21):
        store.log_metrics(run, step, 0, {"train/loss": 1.0})
    with sqlite3.connect(store.db_path) as connection:
        connection.execute("UPDATE metrics SET time=step*? WHERE run_id=?",
                           (seconds_per_step, run))
    connection.close()
    return run


def test_the_estimate_is_the_parents_measured_pace_times_the_batch(store):
    run = _timed_run(store, 0.5)
    estimate = estimate_rewinds(store, run, 9, epochs=5)
    assert estimate.seconds == pytest.approx(9 * 5 * 10 * 0.5)
    assert str(estimate) == "9 rewinds × 5 epochs ≈ 4 min"
    assert str(estimate_rewinds(store, run, 1)) == "1 rewind × 2 epochs ≈ 10 s"
    assert str(estimate_rewinds(store, _timed_run(store, 60.0), 9, 5)).endswith("≈ 7.5 h")
    unsummed = store.create_run({"epochs": 2}, status="completed")  # trained outside a job
    for step in (1, 2, 3):
        store.log_metrics(unsummed, step, 0, {"train/loss": 1.0})
    assert store.step_timing(unsummed)[1] == 3
    fresh = store.create_run({"epochs": 2})
    assert str(estimate_rewinds(store, fresh, 9)) == \
        "9 rewinds × 2 epochs (no step time measured on the parent yet)"


def test_without_metrics_the_pace_comes_from_start_and_finish(store):
    run = store.create_run({"epochs": 1}, status="completed")
    store.update_summary(run, total_steps=10)
    with sqlite3.connect(store.db_path) as connection:
        connection.execute("UPDATE runs SET started_at=100, finished_at=130 WHERE id=?",
                           (run,))
    connection.close()
    assert store.step_timing(run) == (pytest.approx(3.0), 10)
