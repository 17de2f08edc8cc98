"""The quick demo's first screen (AppTest, issue 36): no empty chart pushes the demo's
message down; a fresh tab opens Pruning on the demo's E²VPT run and says in words what it
waits for, with one-line captions instead of empty charts; a run trained from the command
line shows its progress and ETA; the trade-off chart reads every point on one split."""

from __future__ import annotations

import pytest
import torch
from app_helpers import by_label, empty_store, open_page

from app.pruning_state import default_run, prompt_runs
from app.state import progress, progress_bar
from e2vpt_core import PromptConfig
from e2vpt_core.demo import submit_demo
from e2vpt_core.report.tradeoff import trade_off
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    return empty_store(tmp_path, monkeypatch)


def _texts(app) -> str:
    return "\n".join(element.value for kind in ("markdown", "caption", "info", "warning")
                     for element in getattr(app.main, kind))


def test_the_demos_message_is_not_pushed_below_the_fold_by_an_empty_chart(store):
    app = open_page()
    by_label(app.button, "Run the quick demo").click().run()
    assert not app.exception, app.exception
    assert "Queued the demo" in app.success[0].value
    assert not app.get("plotly_chart")  # the followed run has logged nothing yet
    assert "Curves appear here once the run logs its first step." in _texts(app)


def test_a_fresh_tab_opens_pruning_on_the_demos_e2vpt_run_and_says_it_in_words(store):
    demo = submit_demo(store, task="orientation")  # its VPT-deep run is the newer one
    app = open_page("pruning.py")
    assert not app.exception, app.exception
    assert by_label(app.selectbox, "Run").value == demo.e2vpt_run
    text = _texts(app)
    every = store.get_run(demo.e2vpt_run)["config"]["importance_every"]
    assert "importance_every" not in text and f"snapshot of them every {every} steps" in text
    assert not app.get("plotly_chart")  # captions, not "not computed yet" charts
    assert "Not computed yet: the curve appears here once computed." in text
    assert "No rewinds yet: the trade-off appears once the run completes." in text
    assert "val top-1 not yet measured" in text  # the split the page evaluates masks on


def _stored(store: RunStore, method: str, status: str = "completed", **summary) -> str:
    config = TrainConfig(dataset="builtin:orientation", epochs=3,
                         prompt=PromptConfig(method, visual_prompt_len=4))
    run_id = store.create_run(config.to_dict(), status=status)
    store.update_summary(run_id, **summary)
    return run_id


def test_pruning_prefers_scored_runs_then_e2vpt_and_the_followed_one_first(store):
    e2vpt = _stored(store, "e2vpt")
    scored = _stored(store, "vpt-deep")
    _stored(store, "vpt-deep")  # the newest, with nothing to show
    runs = prompt_runs(store.runs())
    assert default_run(store, runs, None) == e2vpt
    store.save_tensors(scored, "importance_live", {"token": torch.zeros(4)})
    assert default_run(store, runs, None) == scored
    store.save_tensors(e2vpt, "importance", {"token": torch.zeros(4)})
    assert default_run(store, runs, None) == e2vpt  # a full pass beats a live snapshot
    assert default_run(store, runs, scored) == scored  # what the Train page followed


def test_a_run_from_the_command_line_shows_progress_and_an_eta(store):
    """`e2vpt train` records no total: it is read from the metrics once an epoch ends."""
    run_id = _stored(store, "e2vpt", status="running")
    for step in (1, 2):
        store.log_metrics(run_id, step, 0, {"train/loss": 1.0})
    fraction, text = progress_bar(progress(store, run_id))
    assert text == "running: step 2 · epoch 1 / 3 · ETA once the first epoch ends"
    assert fraction == 0.0
    store.log_metrics(run_id, 4, 0, {"train/loss": 1.0, "train/epoch_loss": 1.0})
    store.log_metrics(run_id, 5, 1, {"train/loss": 1.0})
    state = progress(store, run_id)
    assert (state["done"], state["total"]) == (5, 12) and state["eta_seconds"] is not None
    app = open_page()
    assert app.get("progress")[0].proto.text.startswith("running: step 5 / 12 · ETA ")


def test_the_trade_off_reads_the_parent_and_its_rewinds_on_one_split(store):
    parent = _stored(store, "e2vpt", val_top1=60.0, test_top1=67.5, effective_params=100)
    child = store.create_run(store.get_run(parent)["config"], kind="rewind", parent_id=parent,
                             status="completed")
    store.update_summary(child, token_ratio=0.5, val_top1=58.0, test_top1=66.0,
                         effective_params=50)
    results, point, split = trade_off(store.runs(), parent)
    assert (split, point["accuracy"], list(results["accuracy"])) == ("test", 67.5, [66.0])
    store.update_summary(child, test_top1=None)  # a rewind without test: all on val
    results, point, split = trade_off(store.runs(), parent)
    assert (split, point["accuracy"], list(results["accuracy"])) == ("val", 60.0, [58.0])
