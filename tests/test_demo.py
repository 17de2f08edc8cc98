"""The quick demo: one call queues two runs, importance, a rewind and the embedding view,
all at once, each run by the worker after what it needs; the Train page offers it."""

from __future__ import annotations

import json

import pytest
from app_helpers import by_label, open_page

from e2vpt_core.demo import DEMO_SEGMENT_RATIO, DEMO_TOKEN_RATIO, submit_demo
from e2vpt_core.jobs import run_worker
from e2vpt_core.store import RunStore


@pytest.mark.slow
def test_the_demo_fills_every_view(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    demo = submit_demo(store, "position", epochs=1, backbone=tiny_backbone)
    jobs = store.jobs().sort_values("id")
    assert list(jobs["kind"]) == ["train", "train", "importance", "rewind", "embed"]
    e2vpt, vpt = (store.get_run(run_id) for run_id in (demo.e2vpt_run, demo.vpt_run))
    assert (e2vpt["config"]["prompt"]["method"], vpt["config"]["prompt"]["method"]) == (
        "e2vpt", "vpt-deep")
    assert e2vpt["config"]["dataset"] == vpt["config"]["dataset"] == "builtin:position"

    assert run_worker(store, idle_exit=0, poll=0.01, log=lambda line: None) == 5
    statuses = store.jobs().set_index("id")["status"]
    assert (statuses == "done").all(), store.jobs()[["kind", "status", "error"]]
    assert store.has_tensors(demo.e2vpt_run, "importance")
    child = store.get_run(store.get_job(demo.rewind_job)["run_id"])
    assert (child["status"], child["parent_id"]) == ("completed", demo.e2vpt_run)
    assert (child["summary"]["token_ratio"], child["summary"]["segment_ratio"]) == (
        DEMO_TOKEN_RATIO, DEMO_SEGMENT_RATIO)
    for run_id in (demo.e2vpt_run, demo.vpt_run):
        figures = store.get_run(run_id)["summary"]["hyperbolic_test"]
        assert store.has_tensors(run_id, f"poincare_test_{figures['settings_hash']}")
    assert int(store.load_tensors(demo.e2vpt_run, "importance_live")["steps"]) >= 2


def test_a_bad_demo_request_queues_nothing(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    with pytest.raises(ValueError, match="unknown built-in task"):
        submit_demo(store, "cifar", backbone=tiny_backbone)
    with pytest.raises(ValueError, match="epochs"):
        submit_demo(store, "position", epochs=0, backbone=tiny_backbone)
    assert store.jobs().empty and store.runs().empty


def test_the_train_page_offers_the_demo_on_an_empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("E2VPT_STORE", str(tmp_path))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    app = open_page()
    assert any("First time here?" in m.value for m in app.markdown)
    by_label(app.number_input, "Demo epochs").set_value(2).run()
    by_label(app.button, "Run the quick demo").click().run()
    assert not app.exception and not app.error
    store = RunStore(tmp_path)
    jobs = store.jobs().sort_values("id")
    assert list(jobs["kind"]) == ["train", "train", "importance", "rewind", "embed"]
    follow = by_label(app.selectbox, "Follow run").value
    assert store.get_run(follow)["config"]["prompt"]["method"] == "e2vpt"
    assert store.get_run(follow)["config"]["epochs"] == 2
    embed = json.loads(jobs["payload"].iloc[-1])
    assert embed["runs"][1] == follow
    app.run()
    assert not any("First time here?" in m.value for m in app.markdown)
