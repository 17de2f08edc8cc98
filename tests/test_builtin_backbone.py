"""The bundled offline backbone loads through the same path as timm models."""

from __future__ import annotations

import json

import pytest
import torch
from timm.data import resolve_model_data_config
from timm.models.vision_transformer import VisionTransformer

from e2vpt_core import METHODS, PromptConfig, create_model
from e2vpt_core.models.factory import BUILTIN_BACKBONES
from e2vpt_core.pretrain import BUILTIN_MEAN, BUILTIN_STD, BUILTIN_VIT_TINY_KWARGS
from e2vpt_core.pretrain.files import hub_config

DIRECTORY = BUILTIN_BACKBONES["builtin-vit-tiny"]


@pytest.mark.parametrize("name", sorted(BUILTIN_BACKBONES))
def test_config_is_what_pretraining_writes(name):
    directory = BUILTIN_BACKBONES[name]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_args"] == BUILTIN_VIT_TINY_KWARGS
    tag = config["pretrained_cfg"]["tag"]
    assert config == hub_config(BUILTIN_VIT_TINY_KWARGS, BUILTIN_MEAN, BUILTIN_STD, tag)


def test_bundled_weights_load_offline_and_differ_from_random():
    assert (DIRECTORY / "model.safetensors").is_file(), "the bundled checkpoint is missing"
    assert (DIRECTORY / "recipe.json").is_file(), "the bundled recipe is missing"
    torch.manual_seed(0)
    pretrained = create_model("builtin-vit-tiny", 10, PromptConfig("linear"), pretrained=True)
    random_init = create_model("builtin-vit-tiny", 10, PromptConfig("linear"), pretrained=False)
    assert isinstance(pretrained.backbone, VisionTransformer)
    weight = pretrained.backbone.blocks[0].attn.qkv.weight
    assert not torch.allclose(weight, random_init.backbone.blocks[0].attn.qkv.weight)
    data_config = resolve_model_data_config(pretrained.backbone)
    assert tuple(data_config["input_size"]) == (3, 32, 32)
    assert tuple(data_config["mean"]) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_the_bundled_backbone(method):
    model = create_model("builtin-vit-tiny", 6, PromptConfig(method), pretrained=True)
    model.train()
    logits = model(torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    assert logits.shape == (2, 6)
    assert any(p.grad is not None for _, p in model.trainable_parameters())


def test_the_glyph_scene_backbone_continues_the_fractal_one_and_loads_offline():
    directory = BUILTIN_BACKBONES["builtin-vit-tiny-scenes"]
    recipe = json.loads((directory / "recipe.json").read_text())
    assert recipe["args"]["data"] == "scenes"
    assert "DejaVu glyph scenes" in recipe["data"]["generator"]
    assert recipe["continuation_of"]["recipe"]["total_steps"] == json.loads(
        (DIRECTORY / "recipe.json").read_text())["total_steps"]
    assert not set("0123456789") & set(recipe["data"]["glyphs"])
    scenes = create_model("builtin-vit-tiny-scenes", 4, PromptConfig("e2vpt"), pretrained=True)
    fractal = create_model("builtin-vit-tiny", 4, PromptConfig("e2vpt"), pretrained=True)
    assert not torch.equal(scenes.backbone.blocks[5].mlp.fc1.weight,
                           fractal.backbone.blocks[5].mlp.fc1.weight)


def test_the_layout_backbone_continues_the_scenes_one_with_its_cls_layout_target():
    directory = BUILTIN_BACKBONES["builtin-vit-tiny-layout"]
    recipe = json.loads((directory / "recipe.json").read_text())
    parent = json.loads((BUILTIN_BACKBONES["builtin-vit-tiny-scenes"] / "recipe.json")
                        .read_text())
    # one or more legs with the layout target, the first continuing the scenes backbone
    legs, ancestor = [], recipe
    while ancestor["args"].get("layout_weight", 0) > 0:
        assert ancestor["complete"]
        legs.append(ancestor)
        ancestor = ancestor["continuation_of"]["recipe"]
    assert legs and ancestor["total_steps"] == parent["total_steps"]
    assert sum(leg["steps_done"] for leg in legs) + parent["total_steps"] == recipe["total_steps"]
    assert "foreground" in recipe["data"]["targets"]
    assert not set("0123456789") & set(recipe["data"]["glyphs"])
    layout = create_model("builtin-vit-tiny-layout", 4, PromptConfig("e2vpt"), pretrained=True)
    scenes = create_model("builtin-vit-tiny-scenes", 4, PromptConfig("e2vpt"), pretrained=True)
    assert not torch.equal(layout.backbone.blocks[0].attn.qkv.weight,
                           scenes.backbone.blocks[0].attn.qkv.weight)
