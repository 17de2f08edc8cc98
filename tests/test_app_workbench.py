"""The app as a workbench (AppTest): the job queue in the sidebar, following the training
run, readable names with renames and tags, references beside accuracies, prompt-less
configs refused, the parameter budget on the bundled backbone."""

from __future__ import annotations

import json
import sqlite3

import pytest
import streamlit as st
from app_helpers import by_label, open_page, set_prune_ratios
from streamlit.proto.Metric_pb2 import Metric

from app.pruning_state import prompt_runs
from app.state import as_text
from e2vpt_core import PromptConfig
from e2vpt_core.demo import submit_demo
from e2vpt_core.jobs import submit_importance
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig
from e2vpt_core.train.config import DEFAULT_BACKBONE

TASK = "builtin:orientation"


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("E2VPT_STORE", str(tmp_path))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    return RunStore(tmp_path)


def _run(store: RunStore, prompt: PromptConfig, status: str = "completed",
         **summary) -> str:
    run_id = store.create_run(TrainConfig(dataset=TASK, epochs=1, prompt=prompt).to_dict(),
                              status=status)
    store.log_metrics(run_id, 1, 0, {"train/loss": 1.0, "train/lr": 0.1, "val/top1": 20.0})
    store.update_summary(run_id, total_steps=2, **summary)
    return run_id


def _sidebar_text(app) -> str:
    return "\n".join(element.value for element in (*app.sidebar.markdown, *app.sidebar.text))


def test_the_sidebar_queue_shows_the_demos_five_jobs_and_cancels_one(store):
    demo = submit_demo(store, task="orientation")
    app = open_page("runs.py")  # any page: the queue sits in every page's sidebar
    text = _sidebar_text(app)
    assert "**Queued (5)**" in text
    for line in ("1. train e2vpt P10 T5 · orientation",  # in the order the worker takes them
                 "2. importance of e2vpt P10 T5 · orientation",
                 "3. train vpt-deep P10 · orientation",
                 "4. embed vpt-deep P10 · orientation vs e2vpt P10 T5 · orientation",
                 "5. rewind 50 % tok / 25 % seg of e2vpt P10 T5 · orientation"):
        assert line in text
    assert "No worker is running" in app.sidebar.warning[0].value
    app.sidebar.button(key=f"cancel-job-{demo.rewind_job}").click().run()
    assert store.get_job(demo.rewind_job)["status"] == "cancelled"
    assert "**Queued (4)**" in _sidebar_text(app)


def test_the_sidebar_shows_the_running_job_with_its_progress(store):
    run_id = _run(store, PromptConfig("vpt-deep"), status="running")
    job_id, _ = store.enqueue_job("train", {}, run_id=run_id)
    with sqlite3.connect(store.db_path) as connection:  # as a worker's claim leaves it
        connection.execute("UPDATE jobs SET status='running', started_at=1 WHERE id=?",
                           (job_id,))
    app = open_page()
    assert "**Running**\ntrain vpt-deep P10 · orientation" in _sidebar_text(app)
    assert app.sidebar.get("progress")[0].proto.text.startswith("step 1 / 2")
    assert app.sidebar.button(key=f"cancel-job-{job_id}") is not None


def test_a_running_job_without_a_run_of_its_own_is_listed_without_error(store):
    parent = _run(store, PromptConfig("e2vpt"), status="completed")
    job_id = submit_importance(store, parent)
    with sqlite3.connect(store.db_path) as connection:  # its run_id column stays NULL
        connection.execute("UPDATE jobs SET status='running', started_at=1 WHERE id=?",
                           (job_id,))
    app = open_page()
    assert not app.exception, app.exception
    assert "**Running**" in _sidebar_text(app)
    assert app.sidebar.button(key=f"cancel-job-{job_id}") is not None


def test_a_reopened_tab_follows_the_training_run_not_the_newest_queued(store):
    running = _run(store, PromptConfig("e2vpt"), status="running")
    newest = _run(store, PromptConfig("vpt-deep"), status="queued")
    app = open_page()
    follow = by_label(app.selectbox, "Follow run")
    assert follow.value == running
    assert follow.format_func(running) == "e2vpt P10 T5 · orientation"  # no status to go stale
    assert app.get("progress")[0].proto.text.startswith("running: step 1 / 2")
    store.set_status(running, "completed")
    app.run()
    assert app.get("progress")[0].proto.text.startswith("completed: step 1 / 2")
    by_label(app.selectbox, "Follow run").set_value(newest).run()
    app.run()  # a redraw keeps the user's choice
    assert by_label(app.selectbox, "Follow run").value == newest
    assert app.get("progress")[0].proto.text.startswith("queued: step 1 / 2")


def _lines(chart) -> list[str]:
    """The texts on a training-curves chart: subplot titles and reference lines."""
    return [note["text"] for note in json.loads(chart.proto.spec)["layout"]["annotations"]]


def test_the_live_view_sits_above_the_form_and_reads_accuracy_against_chance(store):
    """The caption reads test against test; the val curve's lines are val figures."""
    run_id = _run(store, PromptConfig("e2vpt"), val_top1=30.0, test_top1=25.0)
    _run(store, PromptConfig("linear"), val_top1=22.0, test_top1=20.0)
    app = open_page()
    labels = [box.label for box in app.selectbox]
    assert labels.index("Follow run") < labels.index("Method")
    by_label(app.selectbox, "Follow run").set_value(run_id).run()
    assert "test top-1 25.0 % (chance 12.5 %, linear probe 20.0 %)" in \
        [caption.value for caption in app.caption]
    chart = app.get("plotly_chart")[0]
    assert json.loads(chart.proto.spec)["data"][0]["name"] == "e2vpt P10 T5 · orientation"
    lines = _lines(chart)
    assert "Validation top-1" in lines and "chance 12.5 %" in lines
    assert "linear probe (val) 22.0 %" in lines and not any("20.0" in line for line in lines)


def test_reference_lines_on_the_validation_chart_are_val_figures(store):
    """Train and Runs pages: a rewind's val curve is drawn against its parent's val top-1
    and the probe's val top-1 (not their test figures, which differ here), each line
    saying "val"; a line from another split fails this test."""
    parent = _run(store, PromptConfig("e2vpt"), val_top1=60.0, test_top1=67.5)
    _run(store, PromptConfig("linear"), val_top1=55.0, test_top1=65.0)
    child = store.create_run(TrainConfig(dataset=TASK, epochs=1).to_dict(), kind="rewind",
                             parent_id=parent, status="completed")
    store.log_metrics(child, 1, 0, {"train/loss": 1.0, "train/lr": 0.1, "val/top1": 50.0})
    store.update_summary(child, total_steps=2, token_ratio=0.5, val_top1=58.0, test_top1=66.0)
    expected = {"chance 12.5 %", "linear probe (val) 55.0 %", "parent (val) 60.0 %"}
    app = open_page("runs.py")
    lines = set(_lines(app.get("plotly_chart")[0])) - {"Loss", "Learning rate",
                                                       "Validation top-1"}
    assert by_label(app.multiselect, "Overlay curves of").value == [child]  # the newest
    assert lines == expected
    train = open_page()
    by_label(train.selectbox, "Follow run").set_value(child).run()
    assert set(_lines(train.get("plotly_chart")[0])) >= expected
    assert not any(figure in line for line in _lines(train.get("plotly_chart")[0])
                   for figure in ("67.5", "65.0"))


def test_a_cancelled_run_is_no_error(store):
    run_id = _run(store, PromptConfig("e2vpt"), status="running")
    store.set_status(run_id, "cancelled", "cancelled before it started")
    app = open_page()
    assert not app.error
    assert app.info[0].value == "cancelled: cancelled before it started"
    store.set_status(run_id, "failed", "ValueError: **boom**")
    app.run()
    assert app.error[0].value == f"failed: {as_text('ValueError: **boom**')}"  # not bold


@pytest.mark.parametrize("method, words", [("e2vpt", "P = 0 and T = 0"), ("vpt-deep", "P = 0")])
def test_a_prompt_method_without_prompts_is_refused(store, method, words):
    app = open_page()
    by_label(app.selectbox, "Method").set_value(method).run()
    by_label(app.number_input, "Visual prompt length P").set_value(0).run()
    if method == "e2vpt":
        by_label(app.number_input, "Key-value prompt length T").set_value(0).run()
    by_label(app.button, "Start").click().run()
    assert words in app.error[0].value and "linear" in app.error[0].value
    assert store.jobs().empty and store.runs().empty


def test_pruning_lists_only_runs_with_visual_prompts(store):
    prompted = _run(store, PromptConfig("e2vpt"))
    _run(store, PromptConfig("e2vpt", visual_prompt_len=0, kv_prompt_len=0))
    _run(store, PromptConfig("e2vpt", visual_prompt_len=0, kv_prompt_len=3))
    _run(store, PromptConfig("linear"))
    assert list(prompt_runs(store.runs())["id"]) == [prompted]


def test_runs_are_renamed_tagged_and_grouped_by_task(store):
    first = _run(store, PromptConfig("e2vpt"), test_top1=25.0)
    other = store.create_run(TrainConfig(dataset="builtin:digits").to_dict())
    app = open_page("runs.py")
    assert [frame.value["name"].tolist() for frame in app.dataframe[:2]] == [
        ["e2vpt P10 T5 · digits"], ["e2vpt P10 T5 · orientation"]]  # one table per task
    table = app.dataframe[1].value
    assert (table["test_top1"][0], table["chance"][0]) == (25.0, 12.5)
    assert "linear probe" not in table and "parent" not in table  # no run has one
    by_label(app.selectbox, "Run").set_value(first).run()
    app.text_input(key=f"name-{first}").input("baseline").run()
    app.text_input(key=f"tags-{first}").input("paper, cpu").run()
    by_label(app.button, "Save name and tags").click().run()
    assert not app.exception
    assert store.get_run(first)["summary"]["display_name"] == "baseline"
    by_label(app.multiselect, "Only runs tagged").select("paper").run()
    assert [frame.value["name"].tolist() for frame in app.dataframe[:1]] == [["baseline"]]
    assert app.dataframe[0].value["tags"][0] == "paper, cpu"
    by_label(app.radio, "Group by").set_value("none").run()
    by_label(app.multiselect, "Only runs tagged").unselect("paper").run()
    assert set(app.dataframe[0].value["name"]) == {"baseline", "e2vpt P10 T5 · digits"}
    assert other in set(app.dataframe[0].value["id"])


def test_the_budget_opens_on_the_bundled_backbone_with_every_row_in_view(store, monkeypatch):
    drawn, dataframe = [], st.dataframe  # the height is layout, not in the element's proto

    def recorded(*args, **kwargs):
        drawn.append(kwargs)
        return dataframe(*args, **kwargs)

    monkeypatch.setattr(st, "dataframe", recorded)
    app = open_page("budget.py")
    assert by_label(app.selectbox, "Backbone").value == DEFAULT_BACKBONE  # not ViT-B
    table = app.dataframe[0].value.set_index("method")
    # the bundled ViT: 6 blocks of width 192; E²VPT P10 T5 shares K and V prompts
    assert table.loc["e2vpt", "trainable params"] == 6 * 15 * 192 + 192 * 100 + 100
    columns = json.loads(app.dataframe[0].proto.columns)  # thousands separators
    assert columns["trainable params"]["type_config"]["format"] == "localized"
    # as tall as its rows (35 px each, and the header): e2vpt and full need no scrolling
    assert drawn[0]["height"] >= 35 * (len(table) + 1)


def test_pruning_names_the_run_recomputes_and_shows_fewer_parameters_as_a_gain(
        tiny_backbone, store):
    from e2vpt_core.prune import rewind_run
    from e2vpt_core.prune.importance import compute_run_importance
    from e2vpt_core.train import train_run

    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=64, device="cpu",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                                             num_segments=4))
    run_id = train_run(config, store).run_id
    app = open_page("pruning.py")
    assert by_label(app.selectbox, "Run").format_func(run_id).startswith("e2vpt P4 T2 · position")
    assert any(caption.value.endswith("(chance 12.5 %)") for caption in app.caption)
    assert by_label(app.button, "Compute full-pass importance") is not None
    compute_run_importance(store, run_id, max_batches=1)
    app.run()
    assert by_label(app.button, "Recompute full-pass importance") is not None
    set_prune_ratios(app, token=0.5)
    metric = next(m for m in app.metric if m.label == "Effective parameters")
    assert metric.delta.startswith("-")
    assert Metric.MetricColor.Name(metric.proto.color) == "GREEN"  # fewer is the gain
    result = rewind_run(store, run_id, 0.5, epochs=1)
    assert result.status == "completed", result.reason
    child = result.run_id
    app = open_page("pruning.py")  # after the Train page, which showed the newest run
    assert by_label(app.selectbox, "Run").value == run_id  # the trained run, not its rewind
    table = app.dataframe[-1].value  # the finished rewinds
    assert list(table["id"]) == [child]
    assert table["name"][0].startswith("rewind 50 % tok / 0 % seg of e2vpt P4 T2 · position")
