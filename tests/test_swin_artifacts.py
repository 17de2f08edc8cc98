"""Swin through the existing paths: create_model dispatch, adapter artifacts, a training run."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from cli_helpers import last_json
from safetensors.torch import load_file
from swin_helpers import tiny_swin
from timm.models.swin_transformer import SwinTransformer
from vit_helpers import write_backbone_dir

from e2vpt_core import PromptConfig, create_model, load_adapter, save_adapter
from e2vpt_core.models import PromptedSwin
from e2vpt_core.prune import prune_run
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

SWIN_DIR_ARGS = dict(img_size=32, patch_size=2, window_size=4, embed_dim=24, depths=[2, 2],
                     num_heads=[2, 4])


def write_tiny_swin_dir(directory, seed: int = 0):
    torch.manual_seed(seed)
    model = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, **SWIN_DIR_ARGS)
    return write_backbone_dir(directory, "swin_tiny_patch4_window7_224", SWIN_DIR_ARGS, model)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ["e2vpt", "vpt-shallow", "adapter", "partial-1", "mlp-3"])
def test_adapter_round_trip_gives_identical_logits(tmp_path, images, method):
    options = dict(visual_prompt_len=3, kv_prompt_len=2) if method == "e2vpt" else {}
    model = create_model(tiny_swin(), 5, PromptConfig(method, num_segments=4, **options)).eval()
    with torch.no_grad():
        for _, param in model.trainable_parameters():
            param.add_(0.1 * torch.randn_like(param))  # as if trained
    if method == "e2vpt":
        model.set_masks(torch.tensor([1.0, 0.0, 1.0]))
    save_adapter(model, tmp_path / "adapter")
    loaded = load_adapter(tmp_path / "adapter", backbone=tiny_swin()).eval()
    assert isinstance(loaded, PromptedSwin)
    assert torch.equal(loaded.token_mask, model.token_mask)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_adapter_refuses_another_swin(tmp_path):
    model = create_model(tiny_swin(), 5, PromptConfig("vpt-deep", num_segments=4))
    save_adapter(model, tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert meta["backbone_signature"]["depths"] == [2, 2]
    other = tiny_swin(depths=(2, 4), num_heads=(2, 4))
    with pytest.raises(ValueError, match="backbone does not match the artifact"):
        load_adapter(tmp_path / "adapter", backbone=other)


def test_create_model_dispatches_instances_and_names_to_swin():
    model = create_model(tiny_swin(), 5, PromptConfig("linear"))
    assert isinstance(model, PromptedSwin) and isinstance(model.backbone, SwinTransformer)
    named = create_model("swin_tiny_patch4_window7_224", 7, PromptConfig("vpt-deep"),
                         pretrained=False)
    assert isinstance(named, PromptedSwin)
    assert named.backbone_name == "swin_tiny_patch4_window7_224"
    assert [(len(stage), stage[0].shape[-1]) for stage in named.stage_prompts()] == [
        (2, 96), (2, 192), (6, 384), (2, 768)]
    assert named.head.out_features == 7 and named.head.in_features == 768


def test_checkpoint_file_and_directory_load_into_swin(tmp_path, images):
    source = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, **SWIN_DIR_ARGS)
    source.eval()
    torch.save(source.state_dict(), tmp_path / "swin.pth")
    model = create_model(tiny_swin(seed=9), 5, PromptConfig("linear"),
                         checkpoint_path=tmp_path / "swin.pth")
    with torch.no_grad():
        assert torch.equal(model.backbone.forward_features(images),
                           source.forward_features(images))

    directory = write_tiny_swin_dir(tmp_path / "swin-dir", seed=4)
    from_dir = create_model(str(directory), 5, PromptConfig("vpt-deep", num_segments=4),
                            pretrained=True)
    assert isinstance(from_dir, PromptedSwin)
    stored = load_file(str(directory / "model.safetensors"))
    assert all(torch.equal(from_dir.backbone.state_dict()[k], v) for k, v in stored.items())

    stored = dict(source.state_dict())
    stored["layers.0.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save(stored, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not match the backbone's shapes"):
        create_model(tiny_swin(), 5, PromptConfig("linear"), checkpoint_path=tmp_path / "bad.pth")


@pytest.mark.slow
def test_train_run_on_a_tiny_swin_directory(tmp_path):
    directory = write_tiny_swin_dir(tmp_path / "swin-backbone")
    config = TrainConfig(backbone=str(directory), dataset="builtin:position", epochs=1,
                         batch_size=50, base_lr=2.0, weight_decay=0.0, eval_splits=("val",),
                         prompt=PromptConfig("e2vpt", visual_prompt_len=2, kv_prompt_len=1,
                                             num_segments=4), device="cpu")
    store = RunStore(tmp_path / "runs")
    result = train_run(config, store)
    assert result.status == "completed", result.reason
    run = store.get_run(result.run_id)
    assert run["summary"]["trainable_params"] > 0 and "val_top1" in run["summary"]
    model = load_adapter(store.run_dir(result.run_id) / "adapter")
    assert isinstance(model, PromptedSwin)
    init = store.load_tensors(result.run_id, "init")
    assert set(init) >= {"visual_prompts", "later_visual_prompts.0", "kv_prompts.0"}
    assert not torch.equal(model.visual_prompts.detach(), init["visual_prompts"])

    pruned = prune_run(store, result.run_id, 0.5, token_scores="kv", evaluate=True,
                       mode="remove")  # a column score, stored and read back on Swin
    kv = store.load_tensors(result.run_id, "importance")["kv"]
    assert pruned["token_scores"] == "kv" and kv.shape == (2,)
    assert pruned["kept_tokens"] == [int(kv.argmax())]
    assert 0 <= pruned["val_top1_masked"] <= 100


@pytest.mark.slow
def test_cli_trains_a_swin_backbone(tmp_path, capsys):

    from e2vpt_core.cli import main

    directory = write_tiny_swin_dir(tmp_path / "swin-backbone")
    code = main(["train", "--backbone", str(directory), "--dataset", "builtin:orientation",
                 "--method", "vpt-deep", "-P", "2", "--num-segments", "4", "--epochs", "1",
                 "--batch-size", "50", "--lr", "1.0", "--store", str(tmp_path / "runs"),
                 "--create-store", "--json", "--quiet"])
    result = last_json(capsys.readouterr().out)
    assert code == 0 and result["status"] == "completed", result
    assert result["effective_params"] == result["trainable_params"]
