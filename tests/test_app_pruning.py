"""The Pruning page (AppTest) on a real tiny trained run: live scores, the mask preview and
its parameter count follow the sliders, Rewind queues a job, finished rewinds fill the curve."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import (
    by_label,
    mask_slider_data,
    open_page,
    private_store,
    set_prune_ratios,
    train_tiny_e2vpt,
)
from streamlit.testing.v1 import AppTest

from app.pruning_state import (
    SETTLE,
    importance_scores,
    masked_accuracy,
    ratio_options,
    run_state,
)
from e2vpt_core import PromptConfig, load_adapter
from e2vpt_core.jobs import run_worker, submit_importance
from e2vpt_core.prune import rewind_run, select_masks
from e2vpt_core.prune.importance import compute_run_importance, pick
from e2vpt_core.prune.noretrain import LOO
from e2vpt_core.prune.rewind import MODES
from e2vpt_core.prune.selection import default_min_segments
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run
from e2vpt_core.train.data import eval_loader
from e2vpt_core.train.evaluate import evaluate


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory) -> tuple[Path, str]:
    """One tiny e2vpt run (4 tokens × 4 segments), trained once for the module."""
    root = tmp_path_factory.mktemp("pruning-store")
    run_id = train_tiny_e2vpt(root, tiny_backbone)
    return root, run_id


@pytest.fixture
def store(trained, tmp_path, monkeypatch) -> RunStore:
    return private_store(trained[0], tmp_path, monkeypatch)


def _metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def _chart_titles(app: AppTest) -> list[str]:
    return [json.loads(chart.proto.spec)["layout"]["title"]["text"]
            for chart in app.get("plotly_chart")]


def test_the_page_shows_the_live_snapshot_heatmaps(store, trained):
    assert not store.has_tensors(trained[1], "importance")
    app = open_page("pruning.py")
    assert app.title[0].value == "Pruning"
    assert by_label(app.selectbox, "Run").value == trained[1]
    assert any("live snapshot from training, step" in c.value for c in app.caption)
    titles = _chart_titles(app)
    assert "Segment importance" in titles and "Token importance" in titles
    assert mask_slider_data(app)["start"] == [0, 0]  # the preview: nothing pruned yet
    live = store.load_tensors(trained[1], "importance_live")
    per_layer = next(json.loads(chart.proto.spec)["data"][0] for chart in app.get("plotly_chart")
                     if "per layer" in json.dumps(chart.proto.spec))
    assert len(per_layer["y"]) == live["segment_layer"].shape[0] == 2  # tiny ViT: 2 blocks
    assert len(per_layer["x"]) == 4


def test_the_full_pass_button_queues_a_job_whose_scores_replace_the_live_ones(store, trained):
    app = open_page("pruning.py")
    by_label(app.button, "Compute full-pass importance").click().run()
    assert not app.exception and not app.error
    jobs = store.jobs()
    assert list(jobs["kind"]) == ["importance"] and jobs["status"][0] == "queued"
    assert json.loads(jobs["payload"][0])["run"] == trained[1]
    assert "Queued importance job" in app.success[0].value
    app.run()
    assert any("queued or running" in c.value for c in app.caption)
    assert not any(b.label == "Compute full-pass importance" for b in app.button)
    assert run_worker(store, idle_exit=0, poll=0.01, log=lambda line: None) == 1
    assert store.has_tensors(trained[1], "importance")
    app = open_page("pruning.py")
    assert any("full pass over the training split" in c.value for c in app.caption)


def test_the_token_slider_updates_the_preview_and_the_parameter_count(store, trained):
    app = open_page("pruning.py")
    assert _metric(app, "Kept token × segment entries") == "16 / 16"
    full = int(_metric(app, "Effective parameters").replace(",", ""))
    set_prune_ratios(app, token=0.5)
    assert not app.exception, app.exception
    assert _metric(app, "Kept token × segment entries") == "8 / 16"
    data = mask_slider_data(app)  # the browser's preview starts where the page's state is
    assert data["token_ratios"][data["start"][0]] == 0.5 and not data["per_block"]
    assert data["token_masks"][data["start"][0]][0].count(1) == 2
    layers, _, width = load_adapter(store.run_dir(trained[1]) / "adapter").visual_prompts.shape
    pruned = full - int(_metric(app, "Effective parameters").replace(",", ""))
    assert pruned == 2 * width * layers  # two of four tokens, in every prompted layer


def test_rewind_queues_a_job_with_the_chosen_ratios(store, trained):
    app = open_page("pruning.py")
    set_prune_ratios(app, token=0.25)
    set_prune_ratios(app, segment=0.5)
    by_label(app.selectbox, "Mode").set_value("remove").run()
    by_label(app.number_input, "Rewind epochs").set_value(2).run()
    by_label(app.radio, "Token scores").set_value("segments").run()
    by_label(app.button, "Rewind").click().run()
    assert not app.exception and not app.error
    jobs = store.jobs()
    assert list(jobs["kind"]) == ["rewind"] and jobs["status"][0] == "queued"
    payload = json.loads(jobs["payload"][0])
    assert payload == {"parent": trained[1], "token_ratio": 0.25, "segment_ratio": 0.5,
                       "init": "fresh", "mode": "remove", "epochs": 2,
                       "token_scores": "segments"}
    by_label(app.button, "Sweep 10–90 %").click().run()
    by_label(app.button, "Queue 9 rewinds").click().run()  # after its estimate
    ratios = [json.loads(p)["token_ratio"] for p in store.jobs()["payload"]]
    assert ratios == [0.25, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_the_curve_shows_a_finished_rewind_child(store, trained):
    result = rewind_run(store, trained[1], 0.5, epochs=1)
    assert result.status == "completed", result.reason
    control = rewind_run(store, trained[1], 0.5, epochs=1, order="random", seed=4)
    app = open_page("pruning.py")
    by_label(app.selectbox, "Run").set_value(trained[1]).run()  # not the newest rewind
    assert any("full pass over the training split" in c.value for c in app.caption)
    curve = next(json.loads(chart.proto.spec) for chart in app.get("plotly_chart")
                 if "Pruning trade-off" in json.dumps(chart.proto.spec))
    traces = {trace["name"]: trace for trace in curve["data"]}
    accuracy = traces["scored masks, segments 0%"]
    assert accuracy["x"] == [0.5]
    child = store.get_run(result.run_id)["summary"]
    assert accuracy["y"] == [child.get("test_top1", child.get("val_top1"))]
    parent = store.get_run(trained[1])["summary"]
    assert traces["parent (unpruned)"]["x"] == [0.0]
    assert traces["parent (unpruned)"]["y"] == [parent["test_top1"]]
    random = traces["random masks (mean ± sd), segments 0%"]
    assert random["y"] == [store.get_run(control.run_id)["summary"]["test_top1"]]
    params = next(t for t in curve["data"] if t["name"] == "effective params, segments 0%")
    assert params["yaxis"] == "y2" and accuracy["yaxis"] == "y"  # separate panels
    assert curve["layout"]["yaxis"]["range"] == [0, 100]
    assert curve["layout"]["yaxis"]["title"]["text"] == "test top-1 (%)"  # all points on test
    table = app.dataframe[0].value
    assert table.set_index("id")["test_top1"][result.run_id] == child["test_top1"]
    assert set(table["id"]) == {result.run_id, control.run_id}
    assert set(table["order"]) == {"importance", "random"}
    assert table.set_index("id")["effective_params"][result.run_id] == child["effective_params"]


def test_a_running_run_is_watched_but_not_rewound(store, trained):
    store.set_status(trained[1], "running")
    app = open_page("pruning.py")
    assert any("live snapshot from training" in c.value for c in app.caption)
    assert by_label(app.button, "Rewind").disabled
    assert by_label(app.button, "Sweep 10–90 %").disabled
    assert by_label(app.button, "Compute full-pass importance").disabled


def test_the_run_state_the_live_page_compares_follows_status_and_full_pass(store, trained):
    """What the polling heatmap fragment compares with the state the page was drawn with,
    rerunning the whole page when it differs (AppTest always reruns the whole script, so
    that fragment-initiated rerun is checked by the browser demo test)."""
    store.set_status(trained[1], "running")
    assert run_state(store, trained[1]) == ("running", False)
    store.set_status(trained[1], "completed")
    assert run_state(store, trained[1]) == ("completed", False)
    submit_importance(store, trained[1])
    assert run_state(store, trained[1]) == ("completed", True)


def test_a_run_with_masks_per_block_previews_masks_per_layer(tiny_backbone, tmp_path,
                                                             monkeypatch):
    root = tmp_path / "per-block"
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=64, importance_every=5, device="cpu",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                                             num_segments=4, masks_per_block=True))
    result = train_run(config, RunStore(root))
    assert result.status == "completed", result.reason
    store = private_store(root, tmp_path, monkeypatch)
    app = open_page("pruning.py")
    assert _metric(app, "Kept token × segment entries") == "32 / 32"  # 2 layers × 4 × 4
    full = int(_metric(app, "Effective parameters").replace(",", ""))
    set_prune_ratios(app, token=0.5)
    assert not app.exception, app.exception
    assert _metric(app, "Kept token × segment entries") == "16 / 32"
    data = mask_slider_data(app)
    assert data["per_block"] and sum(map(sum, data["token_masks"][data["start"][0]])) == 4
    width = load_adapter(store.run_dir(result.run_id) / "adapter").visual_prompts.shape[-1]
    pruned = full - int(_metric(app, "Effective parameters").replace(",", ""))
    assert pruned == 4 * width  # four (layer, token) pairs, each in its own layer


def _trace_values(values) -> np.ndarray:
    """Plotly JSON holds arrays as lists or as base64 typed arrays."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values, dtype=float)


def test_token_scores_can_be_the_summed_segment_scores(store, trained):
    app = open_page("pruning.py")
    by_label(app.radio, "Token scores").set_value("segments").run()
    assert not app.exception, app.exception
    bar = next(json.loads(chart.proto.spec)["data"][0] for chart in app.get("plotly_chart")
               if json.loads(chart.proto.spec)["layout"]["title"]["text"] == "Token importance")
    live = store.load_tensors(trained[1], "importance_live")
    np.testing.assert_allclose(_trace_values(bar["y"]), live["segment"].sum(-1).numpy(),
                               rtol=1e-5)
    assert not np.allclose(live["segment"].sum(-1).numpy(), live["token"].numpy())


def test_sliders_step_one_token_and_one_segment(store, trained):
    app = open_page("pruning.py")
    data = mask_slider_data(app)  # P = R = 4, floor 1 of 4
    assert data["token_ratios"] == data["segment_ratios"] == [0.0, 0.25, 0.5, 0.75]
    assert 0.25 in ratio_options(8, default_min_segments(8))  # the demo's R = 8
    assert ratio_options(16, default_min_segments(16)) == [k / 16 for k in range(13)]
    assert ratio_options(10, 1) == [k / 10 for k in range(10)]


def test_the_preview_shows_the_masks_accuracy_without_retraining(store, trained):
    app = open_page("pruning.py")
    set_prune_ratios(app, token=0.5)
    by_label(app.radio, "Evaluate with").set_value("remove").run()
    assert not app.exception, app.exception
    shown = _metric(app, "Top-1 without retraining")
    for _ in range(600):  # evaluated in the background; the fragment polls
        if shown != "evaluating…":
            break
        time.sleep(0.05)
        app.run()
        shown = _metric(app, "Top-1 without retraining")
    model = load_adapter(store.run_dir(trained[1]) / "adapter")
    config = TrainConfig.from_dict(store.get_run(trained[1])["config"])
    loader = eval_loader(config, model.backbone, "val")
    parent = evaluate(model, loader, model.num_classes, torch.device("cpu"))["top1"]
    scores = pick(store.load_tensors(trained[1], "importance_live"))
    selection = select_masks(scores.token, scores.segment, 0.5)
    model.set_masks(selection.token_mask, selection.segment_mask)
    model.config = model.config.replace(prune_mode="remove")
    masked = evaluate(model, loader, model.num_classes, torch.device("cpu"))["top1"]
    assert shown == f"{masked:.1f} %"
    delta = next(m.delta for m in app.metric if m.label == "Top-1 without retraining")
    assert delta == f"{masked - parent:+.1f} points vs unpruned, both on val ({parent:.1f} %)"
    summary = store.get_run(trained[1])["summary"]  # the caption: val as well, never test
    assert f"val top-1 {summary['val_top1']:.1f} % (chance 12.5 %)" in \
        [caption.value for caption in app.caption]


def test_scores_are_read_once_per_version_of_their_files(store, trained):
    first = importance_scores(store, trained[1])
    assert importance_scores(store, trained[1]) is first  # a slider move reads no file
    live = store.load_tensors(trained[1], "importance_live")
    store.save_tensors(trained[1], "importance_live", {**live, "token": live["token"] + 1},
                       metadata={"step": "99"})
    again = importance_scores(store, trained[1])
    assert again is not first and again.source == "live snapshot from training, step 99"
    torch.testing.assert_close(again.scores.token, live["token"] + 1)


def test_a_mask_is_evaluated_once_it_stayed_under_the_sliders(store, trained):
    app = open_page("pruning.py")
    set_prune_ratios(app, token=0.75)
    token, segment, _ = app.session_state[f"mask:{trained[1]}"]

    def asked() -> tuple[str, float] | None:  # the result, if the pass was ever started
        return masked_accuracy(str(store.root), trained[1], token, segment, MODES[0],
                               start=False)

    assert asked() is None  # only passed over so far: no pass over val started
    time.sleep(SETTLE)
    app.run()
    for _ in range(600):
        if asked() is not None:
            break
        time.sleep(0.05)
    assert asked() is not None


def test_random_mask_controls_queue_three_seeded_rewinds(store, trained):
    app = open_page("pruning.py")
    set_prune_ratios(app, token=0.5)
    by_label(app.button, "Random-mask controls").click().run()
    assert not app.exception and not app.error
    payloads = [json.loads(p) for p in store.jobs()["payload"]]
    assert [(p["order"], p["seed"], p["token_ratio"]) for p in payloads] == [
        ("random", 0, 0.5), ("random", 1, 0.5), ("random", 2, 0.5)]


def test_the_no_retrain_curve_compares_scores_with_random_and_reverse(store, trained):
    compute_run_importance(store, trained[1])
    app = open_page("pruning.py")
    by_label(app.button, "Compute the curve").click().run()
    assert not app.exception, app.exception
    for _ in range(1200):  # computed in the background; a fragment shows its progress
        if "no_retrain_curve" in store.get_run(trained[1])["summary"]:
            break
        time.sleep(0.05)
    app.run()
    assert not app.exception, app.exception
    curve = store.get_run(trained[1])["summary"]["no_retrain_curve"]
    rows = curve["rows"]
    assert {row["order"] for row in rows} == {"importance", "reverse", "random"}
    assert len({row["seed"] for row in rows if row["order"] == "random"}) == 5
    assert sorted({row["token_ratio"] for row in rows}) == [0.0, 0.25, 0.5, 0.75]
    chart = next(json.loads(c.proto.spec) for c in app.get("plotly_chart")
                 if "Accuracy without retraining" in json.dumps(c.proto.spec))
    names = {trace["name"] for trace in chart["data"]}
    assert {"scores", "reverse (most important first)", "random (mean of 5)"} <= names
    reverse = next(t for t in chart["data"] if t["name"].startswith("reverse"))
    assert _trace_values(reverse["y"])[0] == pytest.approx(
        next(r["top1"] for r in rows if r["order"] == "reverse" and r["token_ratio"] == 0))


def test_new_token_scores_say_what_they_need_and_leave_one_out_is_computed_here(
        store, trained):
    app = open_page("pruning.py")
    by_label(app.radio, "Token scores").set_value("kv").run()
    assert not app.exception, app.exception
    assert len(app.warning) == 1 and "compute the full pass" in app.warning[0].value
    by_label(app.radio, "Token scores").set_value("loo").run()
    by_label(app.button, "Compute leave-one-out scores").click().run()
    assert not app.exception, app.exception
    loo = store.load_tensors(trained[1], LOO)["loo"]
    bar = next(json.loads(chart.proto.spec)["data"][0] for chart in app.get("plotly_chart")
               if json.loads(chart.proto.spec)["layout"]["title"]["text"] == "Token importance")
    np.testing.assert_allclose(_trace_values(bar["y"]), loo.numpy(), rtol=1e-5)
    assert any(b.label == "Recompute leave-one-out scores" for b in app.button)
