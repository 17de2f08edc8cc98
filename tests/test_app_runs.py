"""The Runs page (AppTest, issue 36): a saved name keeps its run selected, accuracies are
rounded and missing ones blank, the table fits a wide page, and names and tags typed by a
user are shown as typed (never as Markdown: no bold, no live link)."""

from __future__ import annotations

import json

import pytest
from app_helpers import by_label, empty_store, open_page

from app.state import as_text
from e2vpt_core import PromptConfig
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig

MARKDOWN_NAME = "[x](http://evil) **bold**"


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    return empty_store(tmp_path, monkeypatch)


def _run(store: RunStore, method: str = "e2vpt", **summary) -> str:
    config = TrainConfig(dataset="builtin:orientation", epochs=1, prompt=PromptConfig(method))
    run_id = store.create_run(config.to_dict(), status="completed")
    store.log_metrics(run_id, 1, 0, {"train/loss": 1.0, "train/lr": 0.1, "val/top1": 20.0})
    store.update_summary(run_id, total_steps=1, **summary)
    return run_id


def test_saving_a_name_keeps_the_selector_on_that_run(store):
    older = _run(store, val_top1=30.0)
    _run(store, method="vpt-deep", val_top1=40.0)  # the newest: the selector's default
    app = open_page("runs.py")
    by_label(app.selectbox, "Run").set_value(older).run()
    app.text_input(key=f"name-{older}").input("baseline").run()
    by_label(app.button, "Save name and tags").click().run()
    assert not app.exception, app.exception
    assert store.get_run(older)["summary"]["display_name"] == "baseline"
    run = by_label(app.selectbox, "Run")
    assert run.value == older and run.format_func(run.value) == "baseline"


def test_accuracies_are_rounded_missing_ones_blank_and_the_table_fits(store):
    _run(store, val_top1=58.333333, test_top1=None, trainable_params=12_345,
         effective_params=6_789)
    app = open_page("runs.py")
    frame = app.dataframe[0]
    table = frame.value
    assert table["val_top1"][0] == pytest.approx(58.333333)  # the figure kept, shown 58.3
    assert table["test_top1"].dtype.kind == "f" and table["test_top1"].isna().all()
    assert frame.proto.placeholder == ""  # a missing figure is blank, not "None"
    columns = json.loads(frame.proto.columns)
    for accuracy in ("val_top1", "test_top1", "chance"):
        assert columns[accuracy]["type_config"]["format"] == "%.1f"
    shown = list(frame.proto.column_order)
    assert "effective_params" in shown and "id" not in shown and "reason" not in shown
    widths = [columns[column]["width"] for column in shown]
    assert all(isinstance(width, int) for width in widths)
    assert sum(widths) <= 1100  # a wide page beside the sidebar: nothing cut off


def test_names_and_tags_are_shown_as_typed(store):
    run_id = _run(store, val_top1=30.0)
    app = open_page("runs.py")
    app.text_input(key=f"name-{run_id}").input(MARKDOWN_NAME).run()
    app.text_input(key=f"tags-{run_id}").input("**tag**").run()
    by_label(app.button, "Save name and tags").click().run()
    assert run_id in set(app.dataframe[0].value["id"])
    assert app.dataframe[0].value["name"][0] == MARKDOWN_NAME  # a cell is text already
    assert MARKDOWN_NAME in [text.value for text in app.main.text]  # above the delete box
    label = app.checkbox(key=f"confirm-{run_id}").label
    assert MARKDOWN_NAME not in label and "**" not in label
    for element in (*app.main.markdown, *app.main.caption, *app.main.success):
        assert MARKDOWN_NAME not in element.value and "](http" not in element.value
    app.checkbox(key=f"confirm-{run_id}").check().run()
    by_label(app.button, "Delete").click().run()
    assert not app.exception, app.exception


def test_as_text_escapes_every_markdown_character():
    assert as_text(MARKDOWN_NAME) == r"\[x\]\(http\://evil\) \*\*bold\*\*"
    assert as_text("a_b `c` :red[d] #e") == r"a\_b \`c\` \:red\[d\] \#e"
    assert as_text("plain words 42") == "plain words 42"
