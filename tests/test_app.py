"""The Streamlit app (AppTest): every page renders, Start queues a job, Runs lists runs and
the command reproducing them, the budget table follows the formulas."""

from __future__ import annotations

import io
import shlex
import zipfile

import pytest
import torch
from app_helpers import by_label, open_page
from data_fixtures import make_folder_tree

from app.state import (
    adapter_zip,
    final_figures,
    format_seconds,
    progress,
    reproduce_command,
)
from e2vpt_core import METHODS, PromptConfig, load_adapter
from e2vpt_core.cli import build_parser
from e2vpt_core.cli.common import train_config
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("E2VPT_STORE", str(tmp_path))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    return RunStore(tmp_path)


def _stored_run(store: RunStore, **changes) -> str:
    config = TrainConfig(dataset="builtin:position", epochs=3, batch_size=32,
                         prompt=PromptConfig("vpt-deep", visual_prompt_len=4), **changes)
    run_id = store.create_run(config.to_dict())
    store.set_status(run_id, "completed")
    for step in range(1, 4):
        store.log_metrics(run_id, step, step - 1, {"train/loss": 1.0 / step,
                                                   "train/lr": 0.1, "val/top1": 40.0 + step})
    store.update_summary(run_id, total_steps=3, val_top1=43.0)
    return run_id


def test_train_page_renders_its_form(store):
    app = open_page()
    assert app.title[0].value == "Train"
    assert by_label(app.radio, "Backbone").value == "Bundled offline ViT"
    assert by_label(app.selectbox, "Method").value == "e2vpt"
    assert by_label(app.number_input, "Visual prompt length P").value == 10
    assert by_label(app.number_input, "Key-value prompt length T").value == 5
    assert by_label(app.number_input, "Epochs").value == 10
    assert by_label(app.number_input, "Base learning rate (× batch / 256)").value == 0.5
    by_label(app.selectbox, "Method").set_value("linear").run()
    assert by_label(app.number_input, "Base learning rate (× batch / 256)").value == 0.1
    assert any(b.label == "Start" for b in app.button)
    assert "No runs yet" in app.info[0].value


def test_a_bad_dataset_spec_is_an_error_and_queues_nothing(store, tmp_path):
    app = open_page()
    by_label(app.radio, "Dataset").set_value("Dataset on disk").run()
    by_label(app.text_input, "Dataset spec").input(f"vtab:{tmp_path}/missing").run()
    by_label(app.button, "Start").click().run()
    assert not app.exception
    assert "does not exist" in app.error[0].value
    assert store.jobs().empty and store.runs().empty


def test_an_unknown_backbone_is_an_error(store):
    app = open_page()
    by_label(app.radio, "Backbone").set_value("timm name").run()
    by_label(app.text_input, "timm model name").input("not_a_vit_at_all").run()
    by_label(app.button, "Start").click().run()
    assert "unknown timm model" in app.error[0].value
    assert store.jobs().empty


def test_a_checkpoint_file_backbone_is_checked_and_recorded(store, tmp_path):
    import timm
    from safetensors.torch import save_file

    app = open_page()
    by_label(app.radio, "Backbone").set_value("Checkpoint file").run()
    by_label(app.text_input, "timm architecture").input("vit_tiny_patch16_224").run()
    weights = tmp_path / "weights.safetensors"
    by_label(app.text_input, "Weights file (.safetensors, .pth, .npz; MoCo v3 too)").input(
        str(weights)).run()
    by_label(app.button, "Start").click().run()
    assert "checkpoint file not found" in app.error[0].value
    assert store.jobs().empty
    save_file(timm.create_model("vit_tiny_patch16_224", num_classes=0).state_dict(), weights)
    by_label(app.button, "Start").click().run()
    assert not app.exception and not app.error
    config = store.get_run(store.jobs()["run_id"][0])["config"]
    assert (config["backbone"], config["checkpoint"]) == ("vit_tiny_patch16_224", str(weights))


def test_start_queues_a_job_and_follows_its_run(store):
    app = open_page()
    by_label(app.selectbox, "Task").set_value("counting").run()
    by_label(app.selectbox, "Method").set_value("vpt-deep").run()
    by_label(app.number_input, "Visual prompt length P").set_value(7).run()
    by_label(app.number_input, "Epochs").set_value(3).run()
    by_label(app.checkbox, "Masks per block").check().run()
    by_label(app.button, "Start").click().run()
    assert not app.exception and not app.error
    jobs = store.jobs()
    assert len(jobs) == 1 and jobs["kind"][0] == "train" and jobs["status"][0] == "queued"
    run = store.get_run(jobs["run_id"][0])
    config = run["config"]
    assert (run["status"], config["dataset"], config["epochs"]) == (
        "queued", "builtin:counting", 3)
    assert config["prompt"]["method"] == "vpt-deep"
    assert config["prompt"]["visual_prompt_len"] == 7
    assert config["prompt"]["kv_prompt_len"] == 0
    assert config["prompt"]["masks_per_block"] is True
    assert run["id"] in app.success[0].value
    assert "No worker is running" in app.warning[0].value
    by_label(app.button, "Cancel").click().run()
    assert store.get_job(int(jobs["id"][0]))["status"] == "cancelled"


def test_a_folder_tree_run_takes_the_chosen_augmentation(store, tmp_path):
    tree = make_folder_tree(tmp_path / "tree", {"left": 6, "right": 6})
    app = open_page()
    by_label(app.radio, "Dataset").set_value("Dataset on disk").run()
    by_label(app.text_input, "Dataset spec").input(f"folder:{tree}").run()
    by_label(app.selectbox, "Training augmentation").set_value("crop").run()
    by_label(app.number_input, "Batch size").set_value(4).run()
    by_label(app.button, "Start").click().run()
    assert not app.exception and not app.error
    config = store.get_run(store.jobs()["run_id"][0])["config"]
    assert (config["dataset"], config["augment"]) == (f"folder:{tree}", "crop")


def test_train_page_shows_a_runs_progress(store):
    run_id = _stored_run(store)
    app = open_page()
    assert by_label(app.selectbox, "Follow run").value == run_id
    assert "step 3 / 3" in app.get("progress")[0].proto.text
    assert len(app.get("plotly_chart")) == 1


def test_runs_page_lists_runs_with_the_reproducing_command(store):
    run_id = _stored_run(store, seed=3)
    app = open_page("runs.py")
    assert app.title[0].value == "Runs"
    table = app.dataframe[0].value
    assert list(table["id"]) == [run_id] and table["val_top1"][0] == 43.0
    command = app.code[0].value
    assert command.startswith("e2vpt train --backbone builtin-vit-tiny")
    assert "--seed 3" in command and "-P 4" in command
    assert len(app.get("plotly_chart")) == 1


def test_runs_page_deletes_only_after_confirmation(store):
    run_id = _stored_run(store)
    app = open_page("runs.py")
    assert by_label(app.button, "Delete").disabled
    app.checkbox(key=f"confirm-{run_id}").check().run()
    by_label(app.button, "Delete").click().run()
    assert not app.exception
    assert store.runs().empty


def test_budget_page_lists_every_method_with_its_budget(store):
    app = open_page("budget.py")
    by_label(app.selectbox, "Backbone").set_value("vit_base_patch16_224").run()
    table = app.dataframe[0].value.set_index("method")
    assert list(table.index) == list(METHODS)
    assert table.loc["e2vpt", "trainable params"] == 12 * 15 * 768 + 768 * 100 + 100
    assert table.loc["linear", "trainable params"] == 768 * 100 + 100
    assert table.loc["lora", "trainable params"] == 12 * 8 * 4 * 768 + 768 * 100 + 100
    assert table.loc["ssf", "trainable params"] == 2 * 134 * 768 + 768 * 100 + 100
    assert table.loc["adapter-plus", "trainable params"] == 12 * 13_832 + 768 * 100 + 100
    app.slider[0].set_value(50).run()
    table = app.dataframe[0].value.set_index("method")
    assert table.loc["vpt-deep", "trainable params"] == 460_800 + 768 * 100 + 100


@pytest.mark.parametrize("changes", [
    {},
    {"backbone": "vit_base_patch16_224.augreg_in21k", "dataset": "builtin:digits",
     "epochs": 7, "base_lr": 2.5, "weight_decay": 0.0, "seed": 4, "pretrained": False,
     "prompt": PromptConfig("e2vpt", visual_prompt_len=3, kv_prompt_len=1,
                            kv_sharing="separate")},
    {"prompt": PromptConfig("bias"), "batch_size": 16, "grad_clip": 1.0, "amp": False},
    {"augment": "crop"},
    {"prompt": PromptConfig("vpt-deep", masks_per_block=True)},
    {"prompt": PromptConfig("lora", lora_rank=4, lora_alpha=2.5, lora_targets="qkv,fc2")},
    {"prompt": PromptConfig("adapter-plus", adapter_bottleneck=16)},
    {"prompt": PromptConfig("linear"), "base_lr": 0.5},
    {"prompt": PromptConfig("e2vpt"), "base_lr": 0.1},
    {"grad_checkpointing": True},
])
def test_the_reproduce_command_rebuilds_the_config(changes):
    config = TrainConfig(**changes)
    command, missing = reproduce_command(config.to_dict())
    args = build_parser().parse_args(shlex.split(command)[1:])
    rebuilt = train_config(args, base_lr=args.lr, weight_decay=args.wd)
    assert rebuilt.to_dict() == config.to_dict() and missing == []


def test_the_reproduce_command_names_what_the_cli_cannot_set():
    config = TrainConfig(momentum=0.8, prompt=PromptConfig(prune_mode="remove"))
    assert reproduce_command(config.to_dict())[1] == ["momentum", "prompt.prune_mode"]


def test_progress_estimates_the_remaining_time(store):
    run_id = store.create_run(TrainConfig().to_dict())
    store.set_status(run_id, "running")
    store.update_summary(run_id, total_steps=10)
    for step in (1, 2, 3):
        store.log_metrics(run_id, step, 0, {"train/loss": 1.0})
    last = store.metrics(run_id)["time"].max()
    state = progress(store, run_id, now=last)
    assert (state["done"], state["total"], state["status"]) == (3, 10, "running")
    assert state["eta_seconds"] is not None and state["eta_seconds"] >= 0
    assert format_seconds(75) == "1:15" and format_seconds(3725) == "1:02:05"
    assert format_seconds(None) == "–"


def test_the_exported_adapter_zip_loads_back_to_the_same_model(store, tmp_path, tiny_backbone):
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=100, eval_splits=("val",), device="cpu",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=2, kv_prompt_len=1,
                                             num_segments=4))
    run_id = train_run(config, store).run_id
    with zipfile.ZipFile(io.BytesIO(adapter_zip(store, run_id))) as archive:
        archive.extractall(tmp_path / "unzipped")
    images = torch.randn(3, 3, 32, 32)
    original = load_adapter(store.run_dir(run_id) / "adapter").eval()
    restored = load_adapter(tmp_path / "unzipped").eval()
    assert torch.equal(original(images), restored(images))
    app = open_page("runs.py")
    assert by_label(app.get("download_button"), "Export adapter (.zip)") is not None
    with pytest.raises(ValueError, match="no adapter"):
        adapter_zip(store, _stored_run(store))


def test_final_figures_lists_the_compared_runs_in_order(store):
    first, second = _stored_run(store), _stored_run(store, seed=1)
    table = final_figures(store.runs(), [second, first])
    assert list(table["id"]) == [second, first]
    assert list(table["val_top1"]) == [43.0, 43.0]
    assert "test_top1" not in table or table["test_top1"].isna().all()
