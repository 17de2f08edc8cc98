"""Self-supervised backbones: MoCo v3 checkpoints by path, MAE's pooling, every method on them."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from vit_helpers import TINY_DIR_ARGS, tiny_vit

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.models import create_mae_backbone, load_moco_v3_checkpoint
from e2vpt_core.models.ssl import moco_v3_encoder_state

TINY = dict(img_size=32, patch_size=8, embed_dim=48, num_heads=3)
MAE_STYLE = dict(global_pool="avg", fc_norm=True)



@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def write_moco_checkpoint(path, encoder: torch.nn.Module, momentum_shift: float = 1.0):
    """The official MoCo v3 pretraining layout: DDP-wrapped MoCo with a projection head."""
    backbone = {k: v for k, v in encoder.state_dict().items() if not k.startswith("head.")}
    width = encoder.embed_dim
    projection = {"head.0.weight": torch.randn(64, width), "head.1.weight": torch.ones(64),
                  "head.1.running_mean": torch.zeros(64), "head.3.weight": torch.randn(16, 64)}
    state = {}
    for key, value in {**backbone, **projection}.items():
        state[f"module.base_encoder.{key}"] = value
        if momentum_shift:
            state[f"module.momentum_encoder.{key}"] = value + momentum_shift
    state["module.predictor.0.weight"] = torch.randn(64, 16)
    torch.save({"epoch": 300, "arch": "vit_base", "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1.5e-4, "params": [0]}]},
                "scaler": {"scale": 65536.0, "_growth_tracker": 10}}, path)
    return backbone


def _assert_backbone_equals(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(expected) <= set(state)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_moco_encoder_state_keeps_only_the_base_encoder(tmp_path):
    source = tiny_vit(seed=1)
    expected = write_moco_checkpoint(tmp_path / "moco.pth.tar", source)
    state = torch.load(tmp_path / "moco.pth.tar", weights_only=True)["state_dict"]
    encoder = moco_v3_encoder_state(state)
    assert set(encoder) == set(expected)
    with pytest.raises(ValueError, match="no MoCo v3 base-encoder weights"):
        moco_v3_encoder_state({"module.predictor.0.weight": torch.zeros(1)})


def test_load_moco_v3_checkpoint_equals_the_source_weights(tmp_path, images):
    source = tiny_vit(seed=1)
    expected = write_moco_checkpoint(tmp_path / "moco.pth.tar", source)
    target = tiny_vit(seed=2)
    load_moco_v3_checkpoint(target, tmp_path / "moco.pth.tar")
    _assert_backbone_equals(target, expected)
    with torch.no_grad():
        assert torch.equal(target.forward_features(images), source.forward_features(images))


def test_create_model_detects_moco_checkpoints(tmp_path, tiny_backbone):
    source = tiny_vit(seed=1)
    expected = write_moco_checkpoint(tmp_path / "moco.pth.tar", source)
    model = create_model(tiny_vit(seed=3), 5, PromptConfig("e2vpt"),
                         checkpoint_path=tmp_path / "moco.pth.tar")
    _assert_backbone_equals(model.backbone, expected)
    assert model.backbone_source["checkpoint_path"].endswith("moco.pth.tar")

    torch.manual_seed(4)  # a name (here the tiny hub directory) plus a checkpoint path
    dir_source = VisionTransformer(**TINY_DIR_ARGS, num_classes=0)
    dir_expected = write_moco_checkpoint(tmp_path / "dir-moco.pth.tar", dir_source)
    named = create_model(tiny_backbone, 5, PromptConfig("vpt-deep"),
                         checkpoint_path=tmp_path / "dir-moco.pth.tar")
    _assert_backbone_equals(named.backbone, dir_expected)


def test_create_model_with_a_timm_name_and_a_moco_checkpoint(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    expected = write_moco_checkpoint(tmp_path / "moco.pth.tar", source, momentum_shift=0.0)
    model = create_model("vit_tiny_patch16_224", 10, PromptConfig("linear"),
                         checkpoint_path=tmp_path / "moco.pth.tar")
    _assert_backbone_equals(model.backbone, expected)


def test_wrong_shapes_and_wrong_formats_are_clear_errors(tmp_path):
    write_moco_checkpoint(tmp_path / "narrow.pth.tar", tiny_vit(embed_dim=24, num_heads=3))
    with pytest.raises(ValueError, match="does not match the backbone's shapes: cls_token"):
        load_moco_v3_checkpoint(tiny_vit(), tmp_path / "narrow.pth.tar")
    with pytest.raises(ValueError, match="does not match the backbone's shapes"):
        create_model(tiny_vit(), 5, checkpoint_path=tmp_path / "narrow.pth.tar")
    write_moco_checkpoint(tmp_path / "shallow.pth.tar", tiny_vit(depth=2))
    with pytest.raises(ValueError, match="missing keys \\['blocks.2"):
        load_moco_v3_checkpoint(tiny_vit(), tmp_path / "shallow.pth.tar")
    torch.save(tiny_vit().state_dict(), tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="not a MoCo v3 pretraining checkpoint"):
        load_moco_v3_checkpoint(tiny_vit(), tmp_path / "plain.pth")
    with pytest.raises(FileNotFoundError):
        load_moco_v3_checkpoint(tiny_vit(), tmp_path / "missing.pth.tar")


def test_moco_linear_probe_layout_loads_as_a_plain_checkpoint(tmp_path):
    """`linear-vit-b-300ep.pth.tar`: `module.<timm keys>` plus a linear head."""
    source = tiny_vit(seed=1)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"epoch": 90, "state_dict": state}, tmp_path / "linear.pth.tar")
    model = create_model(tiny_vit(seed=2), 5, PromptConfig("linear"),
                         checkpoint_path=tmp_path / "linear.pth.tar")
    _assert_backbone_equals(model.backbone, {k: v for k, v in source.state_dict().items()
                                             if not k.startswith("head.")})


# ------------------------------------------------------------------------------- MAE
def test_timm_mae_tag_builds_token_pooling_without_a_head():
    """What timm's `vit_base_patch16_224.mae` gives (pretrained=False): CLS pooling."""
    model = timm.create_model("vit_base_patch16_224.mae", pretrained=False, depth=1)
    assert model.pretrained_cfg["tag"] == "mae" and model.num_classes == 0
    assert model.global_pool == "token" and isinstance(model.fc_norm, torch.nn.Identity)
    assert isinstance(model.norm, torch.nn.LayerNorm)


METHODS = ["linear", "partial-1", "mlp-3", "bias", "adapter", "vpt-shallow", "vpt-deep",
           "e2vpt", "full"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_the_mae_style_vit(method, images):
    reference = tiny_vit(**MAE_STYLE)
    model = create_model(copy.deepcopy(reference), 5, PromptConfig(method, num_segments=4))
    model.train()
    torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for _, p in model.trainable_parameters())
    assert all(p.grad is None for p in model.backbone.parameters() if not p.requires_grad)

    if method in ("mlp-3", "adapter"):
        return
    config = PromptConfig.for_method(method, visual_prompt_len=0, kv_prompt_len=0)
    plain = create_model(copy.deepcopy(reference), 7, config).eval()
    plain.head.load_state_dict(reference.head.state_dict())
    with torch.no_grad():
        assert torch.allclose(plain(images), reference(images), atol=1e-6, rtol=0)


def test_create_mae_backbone_drops_the_pretraining_norm(tmp_path, images):
    source = timm.create_model("vit_base_patch16_224.mae", **TINY, depth=2).eval()
    state = dict(source.state_dict())
    state.update({"mask_token": torch.zeros(1, 1, 48), "decoder_embed.weight": torch.ones(8, 48)})
    torch.save({"model": state}, tmp_path / "mae_pretrain.pth")
    model = create_mae_backbone(checkpoint_path=tmp_path / "mae_pretrain.pth", **TINY, depth=2)
    assert model.global_pool == "avg" and isinstance(model.norm, torch.nn.Identity)
    assert torch.equal(model.fc_norm.weight, torch.ones(48))
    assert torch.equal(model.fc_norm.bias, torch.zeros(48))
    _assert_backbone_equals(model, {k: v for k, v in source.state_dict().items()
                                    if not k.startswith("norm.")})
    prompted = create_model(model, 5, PromptConfig("e2vpt", num_segments=4)).eval()
    with torch.no_grad():
        assert prompted(images).shape == (2, 5)
    assert isinstance(create_mae_backbone(**TINY, depth=1), VisionTransformer)
