"""The Pruning page (AppTest) on a real tiny trained run: live scores, the mask preview and
its parameter count follow the sliders, Rewind queues a job, finished rewinds fill the curve."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from app_helpers import by_label, open_page, private_store
from streamlit.testing.v1 import AppTest

from e2vpt_core import PromptConfig, load_adapter
from e2vpt_core.jobs import run_worker
from e2vpt_core.prune import rewind_run
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory) -> tuple[Path, str]:
    """One tiny e2vpt run (4 tokens × 4 segments), trained once for the module."""
    root = tmp_path_factory.mktemp("pruning-store")
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=64, device="cpu",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                                             num_segments=4))
    result = train_run(config, RunStore(root))
    assert result.status == "completed", result.reason
    return root, result.run_id


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
    assert "Mask preview: 16 of 16 segments kept" in titles
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
    by_label(app.select_slider, "Token prune ratio").set_value(0.5).run()
    assert not app.exception, app.exception
    assert _metric(app, "Kept token × segment entries") == "8 / 16"
    assert "Mask preview: 8 of 16 segments kept" in _chart_titles(app)
    layers, _, width = load_adapter(store.run_dir(trained[1]) / "adapter").visual_prompts.shape
    pruned = full - int(_metric(app, "Effective parameters").replace(",", ""))
    assert pruned == 2 * width * layers  # two of four tokens, in every prompted layer


def test_rewind_queues_a_job_with_the_chosen_ratios(store, trained):
    app = open_page("pruning.py")
    by_label(app.select_slider, "Token prune ratio").set_value(0.3).run()
    by_label(app.select_slider, "Segment prune ratio").set_value(0.2).run()
    by_label(app.selectbox, "Mode").set_value("remove").run()
    by_label(app.number_input, "Rewind epochs").set_value(2).run()
    by_label(app.radio, "Token scores").set_value("segments").run()
    by_label(app.button, "Rewind").click().run()
    assert not app.exception and not app.error
    jobs = store.jobs()
    assert list(jobs["kind"]) == ["rewind"] and jobs["status"][0] == "queued"
    payload = json.loads(jobs["payload"][0])
    assert payload == {"parent": trained[1], "token_ratio": 0.3, "segment_ratio": 0.2,
                       "init": "fresh", "mode": "remove", "epochs": 2,
                       "token_scores": "segments"}
    by_label(app.button, "Sweep 10–90 %").click().run()
    ratios = [json.loads(p)["token_ratio"] for p in store.jobs()["payload"]]
    assert ratios == [0.3, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_the_curve_shows_a_finished_rewind_child(store, trained):
    result = rewind_run(store, trained[1], 0.5, epochs=1)
    assert result.status == "completed", result.reason
    app = open_page("pruning.py")
    assert any("full pass over the training split" in c.value for c in app.caption)
    curve = next(json.loads(chart.proto.spec) for chart in app.get("plotly_chart")
                 if "Pruning trade-off" in json.dumps(chart.proto.spec))
    accuracy = next(trace for trace in curve["data"] if trace["name"] == "accuracy")
    assert accuracy["x"] == [0.5]
    child = store.get_run(result.run_id)["summary"]
    assert accuracy["y"] == [child.get("test_top1", child.get("val_top1"))]
    table = app.dataframe[0].value
    assert list(table["id"]) == [result.run_id]
    assert table["effective_params"][0] == child["effective_params"]


def test_a_running_run_is_watched_but_not_rewound(store, trained):
    store.set_status(trained[1], "running")
    app = open_page("pruning.py")
    assert any("live snapshot from training" in c.value for c in app.caption)
    assert by_label(app.button, "Rewind").disabled
    assert by_label(app.button, "Sweep 10–90 %").disabled
    assert by_label(app.button, "Compute full-pass importance").disabled


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
    by_label(app.select_slider, "Token prune ratio").set_value(0.5).run()
    assert not app.exception, app.exception
    assert _metric(app, "Kept token × segment entries") == "16 / 32"
    assert "Mask preview per layer: 4 of 8 tokens, 16 of 32 segments kept" in _chart_titles(app)
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
