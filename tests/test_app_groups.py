"""Seed groups in the app (AppTest): the Runs page shows a group as one row with its mean ±
sd and the verdict on two groups; the Train page's "Repeat over N seeds" queues one job
per seed, all of one group."""

from __future__ import annotations

import pytest
from app_helpers import by_label, empty_store, open_page
from group_helpers import stored_group

from app.state import as_text
from e2vpt_core import PromptConfig
from e2vpt_core.store import RunStore
from e2vpt_core.store.groups import compare_stored_groups
from e2vpt_core.train import TrainConfig


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    return empty_store(tmp_path, monkeypatch)


def test_a_group_is_one_row_with_mean_and_sd_and_two_groups_get_a_verdict(store):
    e2vpt = stored_group(store, "e2vpt-orientation-00aa", [70.0, 72.0, 71.0])
    stored_group(store, "vpt-deep-orientation-00bb", [60.0, 61.5, 59.0], method="vpt-deep")
    single = store.create_run(TrainConfig(dataset="builtin:orientation",
                                          prompt=PromptConfig("linear")).to_dict())
    store.set_status(single, "completed")
    store.update_summary(single, test_top1=58.25, val_top1=50.0)
    app = open_page("runs.py")
    table = app.dataframe[0].value.set_index("name")
    assert len(table) == 3  # two groups and the run on its own
    group = table.loc["e2vpt P10 T5 · orientation"]
    assert group["test_top1_seeds"] == "71.0 ± 1.0 (3 seeds)"
    assert group["test_top1"] == pytest.approx(71.0) and group["val_top1"] == pytest.approx(61.0)
    assert group["status"] == "3 completed" and group["id"] == "e2vpt-orientation-00aa"
    assert table.loc["linear · orientation", "test_top1_seeds"] == "58.2 (1 seed)"
    assert "test_top1_seeds" in app.dataframe[0].proto.column_order

    seeds = app.dataframe[1].value  # in the "Seeds of each group" expander
    assert len(seeds) == 6
    assert list(seeds[seeds["group"] == "e2vpt P10 T5 · orientation"]["test_top1"]) == [
        70.0, 72.0, 71.0]

    verdict = compare_stored_groups(store, "vpt-deep-orientation-00bb",
                                    "e2vpt-orientation-00aa")  # newest first: B − A
    assert by_label(app.selectbox, "Group A").value == "vpt-deep-orientation-00bb"
    assert f"test top-1: {as_text(verdict.sentence)}" in [box.value for box in app.success]
    assert "e2vpt P10 T5 · orientation is higher" in verdict.sentence
    by_label(app.selectbox, "Group B").set_value("vpt-deep-orientation-00bb").run()
    assert "Pick two different groups." in [caption.value for caption in app.caption]

    overlay = by_label(app.multiselect, "Overlay curves of")
    assert overlay.value == ["vpt-deep-orientation-00bb"]  # the newest group, as a band
    overlay.set_value(["e2vpt-orientation-00aa", single]).run()
    assert not app.exception, app.exception
    figures = app.dataframe[-1].value  # the compared runs' figures: a group's seeds each
    assert len(figures) == len(e2vpt) + 1


def test_repeat_over_n_seeds_queues_one_job_per_seed_in_one_group(store):
    app = open_page()
    by_label(app.selectbox, "Task").set_value("counting").run()
    by_label(app.number_input, "Epochs").set_value(2).run()
    by_label(app.number_input, "Seed").set_value(4).run()
    by_label(app.number_input, "Repeat over N seeds").set_value(3).run()
    by_label(app.button, "Start").click().run()
    assert not app.exception and not app.error
    jobs = store.jobs()
    assert len(jobs) == 3 and set(jobs["kind"]) == {"train"}
    assert set(jobs["status"]) == {"queued"}
    configs = [store.get_run(run_id)["config"] for run_id in jobs["run_id"]]
    groups = {config["group_id"] for config in configs}
    assert len(groups) == 1 and None not in groups
    assert sorted(config["seed"] for config in configs) == [4, 5, 6]
    assert len({str({**config, "seed": None}) for config in configs}) == 1
    [group] = groups
    assert group.startswith("e2vpt-counting-") and group in app.success[0].value
