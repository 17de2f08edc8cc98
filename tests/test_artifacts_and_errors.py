"""Adapter artifacts round trip; bad input gives clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model, load_adapter, save_adapter
from e2vpt_core.artifacts import CONFIG_NAME, WEIGHTS_NAME


def _trained(model, images):
    """Move every trainable tensor away from its init so a round trip proves something."""
    with torch.no_grad():
        for _, param in model.trainable_parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


@pytest.mark.parametrize("method", ["e2vpt", "vpt-deep", "adapter", "bias", "mlp-3", "partial-1"])
def test_round_trip_gives_identical_logits(method, tmp_path, images):
    model = _trained(create_model(tiny_vit(seed=2), 6, PromptConfig(method)), images).eval()
    if model.visual_prompts is not None:
        model.set_masks(torch.tensor([1.0] * 9 + [0.0]))
    save_adapter(model, tmp_path)
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert saved["prompt_config"]["method"] == method
    loaded = load_adapter(tmp_path, backbone=tiny_vit(seed=2)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    assert torch.equal(loaded.token_mask, model.token_mask)


def test_round_trip_rebuilds_backbone_from_checkpoint_file(tmp_path, images):
    backbone_file = tmp_path / "backbone.safetensors"
    save_file(tiny_vit(seed=3).state_dict(), str(backbone_file))
    architecture = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3)
    backbone = VisionTransformer(**architecture)
    model = create_model(backbone, 6, PromptConfig("e2vpt"), checkpoint_path=backbone_file)
    model = _trained(model, images).eval()
    save_adapter(model, tmp_path / "artifact")
    loaded = load_adapter(tmp_path / "artifact", backbone=VisionTransformer(**architecture),
                          checkpoint_path=backbone_file).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_vit_b_artifact_holds_only_the_prompts_and_head(tmp_path):
    backbone = VisionTransformer(img_size=224, patch_size=16, embed_dim=768, depth=12,
                                 num_heads=12)
    model = create_model(backbone, 10, PromptConfig("e2vpt", visual_prompt_len=10,
                                                    kv_prompt_len=5))
    save_adapter(model, tmp_path)
    size = (tmp_path / WEIGHTS_NAME).stat().st_size
    trainable_bytes = 4 * model.parameter_summary()["trainable_params"]
    assert trainable_bytes <= size < trainable_bytes + 8_000
    assert size < 0.01 * 4 * model.backbone_parameter_count()


def test_load_adapter_refuses_a_mismatched_backbone(tmp_path):
    save_adapter(create_model(tiny_vit(), 6, PromptConfig("e2vpt")), tmp_path)
    with pytest.raises(ValueError, match="does not match the artifact"):
        load_adapter(tmp_path, backbone=tiny_vit(depth=4))
    with pytest.raises(FileNotFoundError, match="not an adapter artifact"):
        load_adapter(tmp_path / "missing")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(method="prefix"), "method='prefix' is not allowed"),
        (dict(visual_prompt_len=-1), "visual_prompt_len=-1 must be >= 0"),
        (dict(kv_prompt_len=-3), "kv_prompt_len=-3 must be >= 0"),
        (dict(method="vpt-deep", kv_prompt_len=5), "only used by methods"),
        (dict(kv_sharing="tied"), "kv_sharing"),
        (dict(segment_layout="random"), "segment_layout"),
        (dict(prompt_dropout=1.5), "prompt_dropout"),
        (dict(num_segments=0), "num_segments"),
    ],
)
def test_invalid_config_values_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        PromptConfig(**changes)


def test_num_segments_must_divide_width():
    with pytest.raises(ValueError, match="num_segments=5 must divide the backbone width 48"):
        create_model(tiny_vit(), 6, PromptConfig("e2vpt", num_segments=5))


def test_unknown_and_unsupported_backbones():
    with pytest.raises(ValueError, match="unknown timm model 'vit_nonexistent_patch3'"):
        create_model("vit_nonexistent_patch3", 10)
    with pytest.raises(ValueError, match="only timm VisionTransformer"):
        create_model("resnet18", 10)
    with pytest.raises(TypeError, match="timm model name or a timm VisionTransformer"):
        create_model(42, 10)
    with pytest.raises(ValueError, match="num_classes"):
        create_model(tiny_vit(), 0)


def test_kv_prompts_refuse_nonstandard_blocks():
    from timm.models.vision_transformer import ParallelScalingBlock
    parallel = tiny_vit(block_fn=ParallelScalingBlock)
    with pytest.raises(ValueError, match="block 0 is ParallelScalingBlock"):
        create_model(parallel, 6, PromptConfig("e2vpt"))
    create_model(tiny_vit(block_fn=ParallelScalingBlock), 6, PromptConfig("vpt-deep"))


def test_checkpoint_errors_name_the_problem(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_model(tiny_vit(), 6, checkpoint_path=missing)
    wrong = tmp_path / "wrong.safetensors"
    save_file(tiny_vit(embed_dim=60, num_heads=3).state_dict(), str(wrong))
    with pytest.raises(ValueError, match="does not match the backbone's shapes"):
        create_model(tiny_vit(), 6, checkpoint_path=wrong)
    partial = tmp_path / "partial.safetensors"
    state = tiny_vit().state_dict()
    del state["blocks.1.mlp.fc1.weight"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(partial))
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.mlp.fc1.weight'\]"):
        create_model(tiny_vit(), 6, checkpoint_path=partial)


def test_checkpoint_loads_pytorch_files_and_ignores_only_the_head(tmp_path, images):
    source = tiny_vit(seed=9)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_model(tiny_vit(seed=1), 7, PromptConfig("linear"), checkpoint_path=path)
    model.head.load_state_dict(source.head.state_dict())
    with torch.no_grad():
        assert torch.allclose(model.eval()(images), source(images), atol=1e-6)


def test_timm_name_with_checkpoint_file(tmp_path, images):
    import timm
    source = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    path = tmp_path / "vit_tiny.safetensors"
    save_file(source.state_dict(), str(path))
    model = create_model("vit_tiny_patch16_224", 4, PromptConfig("e2vpt"), checkpoint_path=path)
    assert model.backbone_name == "vit_tiny_patch16_224"
    assert torch.equal(model.backbone.pos_embed, source.pos_embed)


def test_for_method_applies_lengths_only_where_the_method_has_prompts():
    assert PromptConfig.for_method("linear", 10, 5).visual_prompt_len == 0
    vpt = PromptConfig.for_method("vpt-deep", 20, 5)
    assert (vpt.visual_prompt_len, vpt.kv_prompt_len) == (20, 0)
    e2vpt = PromptConfig.for_method("e2vpt", 20, 3, kv_sharing="separate")
    assert (e2vpt.visual_prompt_len, e2vpt.kv_prompt_len, e2vpt.kv_sharing) == (20, 3, "separate")
    with pytest.raises(ValueError, match="visual_prompt_len=-1"):
        PromptConfig.for_method("e2vpt", -1, 3)
