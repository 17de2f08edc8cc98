"""Readable run and job names, the references beside an accuracy, the queue's rows: plain
functions of the store's frames (no Streamlit session needed)."""

from __future__ import annotations

import pytest
from data_fixtures import make_folder_tree

from app.context import accuracy_text, class_names, labelled_references, references
from app.jobs_view import queue_rows
from app.names import (
    config_name,
    parse_tags,
    rename,
    run_names,
    run_tags,
    task_name,
)
from e2vpt_core import PromptConfig
from e2vpt_core.demo import submit_demo
from e2vpt_core.jobs import submit_embed, submit_importance, submit_rewind, submit_train
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "store")


def _run(store: RunStore, method: str = "e2vpt", dataset: str = "builtin:orientation",
         status: str = "completed", kind: str = "train", parent: str | None = None,
         **summary) -> str:
    config = TrainConfig(dataset=dataset, prompt=PromptConfig(method))
    run_id = store.create_run(config.to_dict(), kind=kind, parent_id=parent, status=status)
    if summary:
        store.update_summary(run_id, **summary)
    return run_id


def test_task_names_come_from_the_dataset_spec():
    assert task_name("builtin:orientation") == "orientation"
    assert task_name("vtab:/data/vtab-1k/cifar/") == "cifar"
    assert task_name("folder:/images/birds") == "birds"


def test_a_config_is_named_by_method_prompt_lengths_and_task():
    def name(**changes) -> str:
        return config_name(TrainConfig(dataset="builtin:digits", **changes).to_dict())

    assert name() == "e2vpt P10 T5 · digits"
    assert name(prompt=PromptConfig("vpt-deep", visual_prompt_len=7)) == "vpt-deep P7 · digits"
    assert name(prompt=PromptConfig("linear")) == "linear · digits"
    assert name(prompt=PromptConfig("e2vpt", visual_prompt_len=0, kv_prompt_len=0)) == \
        "e2vpt P0 T0 (head only) · digits"
    assert name(backbone="vit_base_patch16_224").endswith("· vit_base_patch16_224")


def test_a_rewind_is_named_by_its_ratios_and_its_parent(store):
    parent = _run(store)
    child = _run(store, kind="rewind", parent=parent, token_ratio=0.5, segment_ratio=0.25)
    names = run_names(store.runs())
    assert names[parent] == "e2vpt P10 T5 · orientation"
    assert names[child] == "rewind 50 % tok / 25 % seg of e2vpt P10 T5 · orientation"


def test_equal_names_get_the_ids_suffix_and_a_users_name_wins(store):
    first, second = _run(store), _run(store)
    names = run_names(store.runs())
    assert names[first] != names[second]
    assert names[first] == f"e2vpt P10 T5 · orientation #{first.rsplit('-', 1)[1]}"
    rename(store, first, "  baseline  ", parse_tags("paper, ,cpu, paper"))
    runs = store.runs()
    assert run_names(runs)[first] == "baseline"
    assert run_names(runs)[second] == "e2vpt P10 T5 · orientation"
    assert run_tags(runs) == {first: ["paper", "cpu"], second: []}
    rename(store, first, "", [])
    assert run_names(store.runs())[first].startswith("e2vpt P10 T5")
    with pytest.raises(KeyError):
        rename(store, "20990101-000000-dead", "x", [])


def test_the_queue_lists_the_demos_five_jobs_by_name(store):
    demo = submit_demo(store, task="orientation")
    rows = queue_rows(store.jobs(), store.runs())
    assert rows["running"] == [] and rows["finished"] == []
    assert [(row["kind"], row["name"]) for row in rows["queued"]] == [
        ("train", "train e2vpt P10 T5 · orientation"),
        ("train", "train vpt-deep P10 · orientation"),
        ("importance", "importance of e2vpt P10 T5 · orientation"),
        ("rewind", "rewind 50 % tok / 25 % seg of e2vpt P10 T5 · orientation"),
        ("embed", "embed vpt-deep P10 · orientation vs e2vpt P10 T5 · orientation (test)")]
    assert [row["id"] for row in rows["queued"]] == [*demo.train_jobs, demo.importance_job,
                                                     demo.rewind_job, demo.embed_job]


def test_the_queue_splits_running_from_queued_and_finished(store):
    config = TrainConfig(dataset="builtin:digits", prompt=PromptConfig("vpt-deep"))
    jobs = [submit_train(store, config)[0] for _ in range(3)]
    frame = store.jobs()  # as the worker would leave it: one running, one failed
    frame.loc[0, ["status", "started_at"]] = ["running", 1.0]
    frame.loc[1, ["status", "error"]] = ["failed", "boom"]
    rows = queue_rows(frame, store.runs())
    assert [row["id"] for row in rows["running"]] == [jobs[0]]
    assert [row["id"] for row in rows["queued"]] == [jobs[2]]
    assert [(row["id"], row["error"]) for row in rows["finished"]] == [(jobs[1], "boom")]


def test_job_names_follow_their_payload(store):
    parent = _run(store)
    other = _run(store, method="vpt-deep")
    submit_rewind(store, parent, 0.3)
    submit_importance(store, parent)
    submit_embed(store, [parent], "val")
    names = [row["name"] for row in queue_rows(store.jobs(), store.runs())["queued"]]
    assert names == ["rewind 30 % tok / 0 % seg of e2vpt P10 T5 · orientation",
                     "importance of e2vpt P10 T5 · orientation",
                     "embed e2vpt P10 T5 · orientation (val)"]
    assert other not in names


def test_chance_is_one_over_the_classes_and_the_linear_probe_is_the_best_one(store):
    run = _run(store, test_top1=60.0)
    _run(store, method="linear", test_top1=30.0)
    _run(store, method="linear", test_top1=25.0, val_top1=35.0)
    _run(store, method="linear", dataset="builtin:digits", test_top1=90.0)  # another task
    _run(store, method="linear", status="running")
    runs = store.runs()
    assert references(runs, run, "test") == {"chance": 12.5, "linear probe": 30.0}
    assert references(runs, run, "val") == {"chance": 12.5, "linear probe": 35.0}
    assert references(runs, run, None) == {"chance": 12.5}  # chance has no split
    assert accuracy_text(runs, run) == "test top-1 60.0 % (chance 12.5 %, linear probe 30.0 %)"


def test_a_rewind_is_read_against_its_parent_on_the_same_split(store):
    parent = _run(store, val_top1=50.0, test_top1=48.0, num_classes=4)
    child = _run(store, kind="rewind", parent=parent, token_ratio=0.5, val_top1=47.0)
    runs = store.runs()
    assert references(runs, child, "test") == {"chance": 12.5, "parent": 48.0}
    assert references(runs, child, "val") == {"chance": 12.5, "parent": 50.0}
    assert labelled_references(runs, child, "val") == {"chance": 12.5, "parent (val)": 50.0}
    # the child has only val: its line reads val against the parent's val, never test
    assert accuracy_text(runs, child) == "val top-1 47.0 % (chance 12.5 %, parent 50.0 %)"
    assert accuracy_text(runs, parent, "val") == "val top-1 50.0 % (chance 25.0 %)"
    assert references(runs, parent, "test") == {"chance": 25.0}  # the recorded count wins
    queued = _run(store, dataset="folder:/somewhere", status="queued")
    assert accuracy_text(store.runs(), queued) == "top-1 not yet measured"
    assert accuracy_text(store.runs(), queued, "val") == "val top-1 not yet measured"


def test_class_names_come_from_the_task_or_the_datasets_files(tmp_path):
    assert class_names("builtin:orientation")[:2] == ("0-22.5deg", "22.5-45deg")
    tree = make_folder_tree(tmp_path / "birds", {"owl": 2, "crow": 2})
    assert class_names(f"folder:{tree}") == ("crow", "owl")
    assert class_names(f"folder:{tmp_path / 'missing'}") is None
    assert class_names(None) is None
