"""Live views cost nothing while the store stands still: the store's change signal
(`e2vpt_core.store.changes`), incremental metric reads, and the Train page's live view, the
sidebar queue and the Pruning page's heatmaps redrawn from their last read (AppTest, with
spies on the reads and on the figure builds)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import streamlit
from app_helpers import open_page, private_store, train_tiny_e2vpt

import app.jobs_view
import app.live
import e2vpt_core.report.figures
import e2vpt_core.store.changes
from app.live import aged_eta, live_read
from e2vpt_core import PromptConfig
from e2vpt_core.demo import submit_demo
from e2vpt_core.store import RunStore
from e2vpt_core.store.changes import newer_metrics, version
from e2vpt_core.train import TrainConfig


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("E2VPT_STORE", str(tmp_path))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    return RunStore(tmp_path)


def _running_run(store: RunStore, steps: int = 3) -> str:
    """A run marked running without taking its lease (no heartbeat commits meanwhile)."""
    config = TrainConfig(dataset="builtin:orientation", epochs=2,
                         prompt=PromptConfig("vpt-deep", visual_prompt_len=4))
    run_id = store.create_run(config.to_dict(), status="running")
    store.update_summary(run_id, total_steps=10)
    for step in range(1, steps + 1):
        store.log_metrics(run_id, step, 0, {"train/loss": 1.0 / step, "train/lr": 0.1})
    return run_id


# ------------------------------------------------------------------ the change signal
def test_the_version_stays_while_nothing_is_committed(store):
    run_id = _running_run(store)
    first = version(store)
    store.runs(), store.metrics(run_id), store.jobs(), store.get_run(run_id)  # reads only
    assert version(store) == version(store) == first


def test_the_version_grows_with_each_commit_of_another_connection(store):
    run_id = _running_run(store)
    first = version(store)
    store.log_metrics(run_id, 4, 0, {"train/loss": 0.2})
    second = version(store)
    store.update_summary(run_id, note="x")
    assert first < second < version(store)


def test_the_version_sees_a_commit_of_another_process(store, tmp_path):
    run_id = _running_run(store)
    first = version(store)
    subprocess.run([sys.executable, "-c", "import sys; from e2vpt_core.store import RunStore; "
                    "RunStore(sys.argv[1]).log_event(sys.argv[2], 'from elsewhere')",
                    str(tmp_path), run_id], check=True)
    assert version(store) > first


# ------------------------------------------------------------ incremental metric reads
def _same(tail_frame: pd.DataFrame, store: RunStore, run_id: str) -> bool:
    expected = store.metrics(run_id)
    return tail_frame.reset_index(drop=True).equals(expected.reset_index(drop=True))


def test_newer_metrics_reads_only_what_came_after_and_equals_a_full_read(store):
    run_id = _running_run(store)
    tail = newer_metrics(store, None, run_id)
    assert _same(tail.frame, store, run_id) and len(tail.frame) == 6
    assert newer_metrics(store, tail, run_id) is tail  # nothing new: the same object back
    store.log_metrics(run_id, 4, 0, {"train/loss": 0.25, "train/lr": 0.1})
    store.log_metrics(run_id, 4, 0, {"val/top1": 50.0})  # an epoch end at the same step
    newer = newer_metrics(store, tail, run_id)
    assert newer.last_row > tail.last_row
    assert _same(newer.frame, store, run_id) and len(newer.frame) == 9


def test_newer_metrics_takes_a_rewritten_row_and_notices_deleted_ones(store):
    run_id = _running_run(store, steps=5)
    tail = newer_metrics(store, None, run_id)
    store.log_metrics(run_id, 2, 0, {"train/loss": 7.0})  # a replay rewrites step 2
    tail = newer_metrics(store, tail, run_id)
    assert _same(tail.frame, store, run_id)
    assert tail.frame.query("step == 2 and name == 'train/loss'")["value"].item() == 7.0
    store.truncate_metrics(run_id, after_step=3)  # a resume drops steps 4 and 5
    tail = newer_metrics(store, tail, run_id)
    assert _same(tail.frame, store, run_id) and tail.frame["step"].max() == 3
    store.truncate_metrics(run_id, after_step=0)
    assert newer_metrics(store, tail, run_id).frame.empty


# ------------------------------------------------------------------------- app.live
def test_live_reads_again_only_when_the_signature_changes():
    reads: list[object] = []

    def read(previous):
        reads.append(previous)
        return len(reads)

    key = ("test-live", object())
    assert live_read(key, 1, read) == 1 and live_read(key, 1, read) == 1
    assert live_read(key, 2, read) == 2 and reads == [None, 1]  # the previous result is passed


def test_live_with_every_reads_a_changed_signature_once_that_time_has_passed(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(app.live.time, "monotonic", lambda: clock[0])
    key, reads = ("test-every", object()), []
    read = lambda previous: reads.append(previous) or len(reads)  # noqa: E731
    assert live_read(key, "a", read, every=10.0) == 1
    clock[0] += 4.0
    assert live_read(key, "b", read, every=10.0) == 1  # changed, but read 4 s ago
    clock[0] += 6.0
    assert live_read(key, "b", read, every=10.0) == 2
    assert live_read(key, "c", read) == 3  # without `every`, at once


def test_an_eta_drawn_from_the_cache_counts_down():
    state = {"done": 3, "total": 10, "eta_seconds": 30.0}
    assert aged_eta(state, read_at=100.0, now=112.0)["eta_seconds"] == 18.0
    assert aged_eta(state, read_at=100.0, now=200.0)["eta_seconds"] == 0.0
    assert aged_eta({**state, "eta_seconds": None}, 100.0, 200.0)["eta_seconds"] is None


# ------------------------------------------------------- the fragments, through AppTest
@pytest.fixture
def spies(monkeypatch) -> dict[str, int]:
    """Counts of the live views' reads and figure builds (the pages import these names
    from their modules on every run; the sidebar's module is imported once)."""
    counts = {"metrics": 0, "curves": 0, "queue": 0}

    def spy(name, function):
        def counted(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)
        return counted

    monkeypatch.setattr(e2vpt_core.store.changes, "newer_metrics",
                        spy("metrics", e2vpt_core.store.changes.newer_metrics))
    monkeypatch.setattr(e2vpt_core.report.figures, "training_curves",
                        spy("curves", e2vpt_core.report.figures.training_curves))
    monkeypatch.setattr(app.jobs_view, "read_queue", spy("queue", app.jobs_view.read_queue))
    return counts


def _progress(app_test) -> str:
    return app_test.get("progress")[0].proto.text


def _loss_points(app_test) -> int:
    spec = json.loads(app_test.get("plotly_chart")[0].proto.spec)
    return len(spec["data"][0]["x"])


def test_an_unchanged_store_is_redrawn_without_reads_or_figure_builds(store, spies):
    _running_run(store)
    app_test = open_page()
    assert spies == {"metrics": 1, "curves": 1, "queue": 1}
    drawn = (_progress(app_test), _loss_points(app_test))
    app_test.run()
    app_test.run()
    assert spies == {"metrics": 1, "curves": 1, "queue": 1}  # nothing read, nothing built
    assert not app_test.exception
    assert (_progress(app_test), _loss_points(app_test)) == drawn  # still all on screen
    assert "running: step 3 / 10" in drawn[0] and drawn[1] == 3


def test_a_new_metric_row_is_read_and_drawn(store, spies, monkeypatch):
    monkeypatch.setattr(app.live, "FIGURE_SECONDS", 0.0)
    run_id = _running_run(store)
    app_test = open_page()
    store.log_metrics(run_id, 4, 0, {"train/loss": 0.2, "train/lr": 0.1})
    app_test.run()
    assert spies == {"metrics": 2, "curves": 2, "queue": 2}
    assert "running: step 4 / 10" in _progress(app_test) and _loss_points(app_test) == 4


def test_while_a_run_trains_its_curves_wait_but_its_progress_does_not(store, spies):
    """Curves are rebuilt at most every FIGURE_SECONDS while the run trains, at once when
    it ends; the progress line follows every step."""
    run_id = _running_run(store)
    app_test = open_page()
    store.log_metrics(run_id, 4, 0, {"train/loss": 0.2, "train/lr": 0.1})
    app_test.run()
    assert "running: step 4 / 10" in _progress(app_test)
    assert spies["curves"] == 1 and _loss_points(app_test) == 3
    store.log_metrics(run_id, 5, 0, {"train/loss": 0.1, "train/lr": 0.1})
    store.set_status(run_id, "completed")
    app_test.run()
    assert "completed: step 5 / 10" in _progress(app_test)
    assert spies["curves"] == 2 and _loss_points(app_test) == 5


def test_views_poll_fast_only_while_something_is_under_way(store, monkeypatch):
    """The Train view and the sidebar queue register their fast timers (3 s and 10 s) while
    their run or jobs are under way and the idle one otherwise (each timer is set by a page
    run)."""
    timers: dict[str, float | None] = {}
    fragment = streamlit.fragment

    def recording(func=None, *, run_every=None, **options):
        def register(function):
            timers[function.__name__] = run_every
            return fragment(function, run_every=run_every, **options)
        return register if func is None else register(func)

    monkeypatch.setattr(streamlit, "fragment", recording)
    run_id = _running_run(store)
    app_test = open_page()
    assert timers == {"queue_view": app.live.IDLE_SECONDS, "live_view": 3}
    store.set_status(run_id, "completed")
    submit_demo(store, task="orientation")
    app_test.run()
    assert timers == {"queue_view": 10, "live_view": app.live.IDLE_SECONDS}
    assert "completed: step 3 / 10" in _progress(app_test)


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory) -> tuple:
    """One tiny e2vpt run with its live importance snapshot."""
    root = tmp_path_factory.mktemp("live-pruning-store")
    run_id = train_tiny_e2vpt(root, tiny_backbone)
    return root, run_id


def test_the_pruning_heatmaps_are_built_again_only_for_new_score_files(trained, tmp_path,
                                                                       monkeypatch):
    store = private_store(trained[0], tmp_path, monkeypatch)
    built = []
    heatmap = e2vpt_core.report.figures.importance_heatmap
    monkeypatch.setattr(e2vpt_core.report.figures, "importance_heatmap",
                        lambda scores: built.append(scores) or heatmap(scores))
    app_test = open_page("pruning.py")
    app_test.run()
    assert len(built) == 1 and len(app_test.get("plotly_chart")) >= 2
    snapshot = store.load_tensors(trained[1], "importance_live")
    store.save_tensors(trained[1], "importance_live",
                       {**snapshot, "segment": snapshot["segment"] + 1}, metadata={"step": "99"})
    app_test.run()
    assert len(built) == 2 and not app_test.exception
    assert "Scores: live snapshot from training, step 99." in \
        [caption.value for caption in app_test.caption]
