"""The Embeddings page (AppTest) on two real tiny runs: the default vpt-deep / e2vpt pair,
Compute queues an embed job, cached views (one small real fit) show two disks and a table."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from app_helpers import by_label, open_page, private_store

from app.names import rename
from app.pruning_state import default_pair
from app.state import as_text
from e2vpt_core import PromptConfig
from e2vpt_core.hyperbolic import (
    DEFAULT_MAX_POINTS,
    HeadConfig,
    ProjectionConfig,
    compare_runs,
)
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

POINTS = 60


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory) -> tuple[Path, str, str]:
    """A vpt-deep and an e2vpt run on one dataset, trained once for the module."""
    root = tmp_path_factory.mktemp("embeddings-store")
    store, ids = RunStore(root), []
    for prompt in (PromptConfig("vpt-deep", visual_prompt_len=4),
                   PromptConfig("e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                                num_segments=4)):
        result = train_run(TrainConfig(backbone=tiny_backbone, dataset="builtin:position",
                                       epochs=1, batch_size=64, device="cpu", prompt=prompt),
                           store)
        assert result.status == "completed", result.reason
        ids.append(result.run_id)
    return root, ids[0], ids[1]


@pytest.fixture
def store(trained, tmp_path, monkeypatch) -> RunStore:
    return private_store(trained[0], tmp_path, monkeypatch)


def _length(values: list | dict) -> int:
    """Plotly writes numpy arrays as base64 (`bdata`) with their dtype."""
    if isinstance(values, list):
        return len(values)
    return len(np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]))


def test_the_default_pair_is_the_newest_vpt_deep_and_e2vpt_runs(store, trained):
    app = open_page("embeddings.py")
    assert app.title[0].value == "Embeddings"
    assert by_label(app.selectbox, "Left run").value == trained[1]
    assert by_label(app.selectbox, "Right run").value == trained[2]
    assert "Not computed yet" in app.info[0].value and "press Compute" in app.info[0].value
    assert not app.get("plotly_chart")
    assert default_pair(store.runs()[lambda runs: runs["method"] != "vpt-deep"]) is None


def test_run_names_in_messages_are_text_not_markdown(store, trained):
    rename(store, trained[1], "[vpt](http://evil) **deep**", [])
    app = open_page("embeddings.py")
    assert "**deep**" not in app.info[0].value and "](http" not in app.info[0].value
    assert as_text("[vpt](http://evil) **deep**") in app.info[0].value


def test_a_rewind_child_does_not_displace_its_parent_from_the_default_pair(store, trained):
    parent = store.get_run(trained[2])
    child = store.create_run(parent["config"], kind="rewind", parent_id=trained[2])
    store.set_status(child, "completed")
    assert store.runs()["id"].iloc[0] == child  # the newest completed e2vpt run
    assert default_pair(store.runs()) == (trained[1], trained[2])


def test_compute_queues_an_embed_job_for_the_pair(store, trained):
    app = open_page("embeddings.py")
    by_label(app.selectbox, "Split").set_value("val").run()
    by_label(app.number_input, "Points (0: all)").set_value(POINTS).run()
    by_label(app.button, "Compute").click().run()
    assert not app.exception and not app.error
    jobs = store.jobs()
    assert list(jobs["kind"]) == ["embed"] and jobs["status"][0] == "queued"
    assert json.loads(jobs["payload"][0]) == {
        "runs": [trained[1], trained[2]], "split": "val", "options": {"max_points": POINTS}}
    assert "1 embed job(s) queued or running" in app.info[0].value


@pytest.mark.slow
def test_cached_views_show_two_disks_and_the_separability_table(store, trained):
    app = open_page("embeddings.py")
    assert by_label(app.number_input, "Points (0: all)").value == DEFAULT_MAX_POINTS
    compare_runs(store, trained[1], trained[2], "test", max_points=POINTS,
                 head=HeadConfig(steps=3), projection=ProjectionConfig(n_epochs=20))
    app.run()  # as the page's poll finds the views: the field now says what is drawn
    assert not app.info
    charts = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    backbone = Path(store.get_run(trained[1])["config"]["backbone"]).name
    assert [chart["layout"]["title"]["text"] for chart in charts] == [
        f"vpt-deep P4 · position · {backbone} (test)",
        f"e2vpt P4 T2 · position · {backbone} (test)"]
    assert sum(_length(trace["x"]) for trace in charts[0]["data"][1:]) == POINTS
    legend = {trace["name"] for trace in charts[0]["data"][1:]}
    assert legend and legend <= {f"x{i}" for i in range(8)}  # position's class names
    assert by_label(app.number_input, "Points (0: all)").value == POINTS  # what is drawn
    captions = [caption.value for caption in app.caption]
    assert any("chance 12.5 %" in caption for caption in captions)
    assert sum(caption.startswith(f"{POINTS} points drawn · ") for caption in captions) == 2
    assert not any("settings" in caption for caption in captions)  # the hash: an expander
    assert app.expander[-1].label == "Cache settings"
    table = app.dataframe[0].value
    assert list(table["run"].unique()) == [f"vpt-deep P4 · position · {backbone}",
                                           f"e2vpt P4 T2 · position · {backbone}"]
    assert set(table["space"]) == {"ball", "disk", "euclidean"}
    assert table["knn_accuracy"].between(0, 1).all()
