"""The method registry: every entry is what the model built from it trains, end to end.

Walks `REGISTRY` on a tiny ViT and, where the entry supports it, a tiny Swin: the trainable
set follows the entry's traits, one training step moves exactly those parameters, and the
adapter artifact reloads to the same logits. Adding a method is one entry plus its layers;
this test then covers it without edits.
"""

from __future__ import annotations

import pytest
import torch
from swin_helpers import tiny_swin
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model, load_adapter, save_adapter
from e2vpt_core.methods import (
    FAMILIES,
    METHODS,
    REGISTRY,
    Method,
    describe_default_base_lr,
    get_method,
    methods_for,
    methods_where,
)
from e2vpt_core.train import TrainConfig

# What the product promises: the paper's baselines and today's strongest PEFT methods.
PROMISED = {"linear", "partial-1", "mlp-3", "bias", "adapter", "adapter-plus", "lora", "ssf",
            "vpt-shallow", "vpt-deep", "e2vpt", "full"}
BACKBONES = {"vit": tiny_vit, "swin": tiny_swin}
CASES = [(name, family) for name, method in REGISTRY.items() for family in FAMILIES
         if method.supports(family)]
MASKS = ("token_mask", "segment_mask")


def _build(name: str, family: str, seed: int = 0):
    config = PromptConfig(name, num_segments=4)
    return create_model(BACKBONES[family](seed=seed), 5, config)


def _own(model) -> set[str]:
    """Trainable names outside the backbone, without the (frozen by default) masks."""
    return {n for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith("backbone.") and n not in MASKS}


def test_every_promised_method_is_registered():
    assert set(REGISTRY) == PROMISED
    assert METHODS == tuple(REGISTRY)


@pytest.mark.parametrize(("name", "family"), CASES)
def test_the_model_trains_what_the_entry_says(name, family):
    method, model = get_method(name), _build(name, family)
    own = _own(model)
    heads = {n for n in own if n.startswith("head.")}
    expected_heads = ({"head.weight", "head.bias"} if method.head == "linear" else
                      {f"head.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")})
    assert heads == expected_heads
    assert (model.visual_prompts is not None) == method.visual_prompts
    assert (model.kv_prompts is not None) == method.kv_prompts
    if method.visual_prompts:
        first_stage = model.visual_prompts.shape[0]
        blocks = (len(model.backbone.blocks) if family == "vit"
                  else len(model.backbone.layers[0].blocks))
        assert (first_stage == blocks) == method.deep_prompts
    modules = {None: set(), "adapter": {"adapters"}, "adapter-plus": {"post_adapters"},
               "lora": {"tuners"}, "ssf": {"tuners", "ssf_patch_embed", "ssf_norm"}}
    added = {n.split(".")[0] for n in own} - {"head", "visual_prompts", "later_visual_prompts",
                                                "kv_prompts"}
    assert added == modules[method.block_modules]
    if method.head_only:
        assert own == heads

    backbone = {n: p.requires_grad for n, p in model.backbone.named_parameters()}
    trained = {n for n, on in backbone.items() if on}
    rule = {"none": set(), "all": set(backbone),
            "biases": {n for n in backbone if n.endswith("bias")}}
    if method.backbone_params == "last-block":
        assert trained and trained != set(backbone)
        assert all(".norm." in f".{n}" or n.startswith(("blocks.", "layers.")) for n in trained)
    else:
        assert trained == rule[method.backbone_params]


@pytest.mark.parametrize(("name", "family"), CASES)
def test_one_step_moves_exactly_the_trainable_parameters_and_the_artifact_reloads(
        name, family, tmp_path):
    model = _build(name, family)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for _, p in model.trainable_parameters()], lr=0.5)
    model.train()
    for _ in range(2):  # two: a zero-initialised branch (adapter up, LoRA B) frees the other
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved and moved <= trainable
    assert {n for n in trainable if n not in MASKS} - moved <= {
        n for n in trainable if n.startswith("backbone.")}  # e.g. a norm with zero grad

    model.eval()
    save_adapter(model, tmp_path / "adapter")
    loaded = load_adapter(tmp_path / "adapter", backbone=BACKBONES[family](seed=0)).eval()
    assert loaded.config.method == name
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-6)


@pytest.mark.parametrize("name", [n for n in METHODS if not get_method(n).supports("swin")])
def test_a_backbone_family_the_entry_does_not_name_is_refused(name):
    with pytest.raises(ValueError, match="not for Swin"):
        _build(name, "swin")


@pytest.mark.parametrize("name", METHODS)
def test_config_and_recipe_read_the_entry(name):
    method = get_method(name)
    config = PromptConfig(name)
    assert config.spec is method
    assert (config.visual_prompt_len > 0) == method.visual_prompts
    assert (config.kv_prompt_len > 0) == method.kv_prompts
    assert config.deep_prompts == method.deep_prompts
    assert TrainConfig(prompt=config).base_lr == method.base_lr
    if not method.visual_prompts:
        with pytest.raises(ValueError, match="only used by methods"):
            PromptConfig(name, visual_prompt_len=3)
    if not method.kv_prompts:
        with pytest.raises(ValueError, match="only used by methods"):
            PromptConfig(name, kv_prompt_len=3)


def test_lookups_and_help_text():
    with pytest.raises(ValueError, match="unknown method 'vpt'"):
        get_method("vpt")
    assert methods_where(prunable=True) == ("vpt-shallow", "vpt-deep", "e2vpt")
    assert methods_where(kv_prompts=True) == ("e2vpt",)
    assert set(methods_for("vit")) == set(METHODS)
    assert set(METHODS) - set(methods_for("swin")) == {"lora", "ssf"}
    assert describe_default_base_lr() == (
        "0.5 for vpt-deep and e2vpt, 0.1 for every other method")


def test_an_inconsistent_entry_is_refused():
    with pytest.raises(ValueError, match="backbone_params"):
        Method("x", "X", "?", backbone_params="some")
    with pytest.raises(ValueError, match="come with visual prompts"):
        Method("x", "X", "?", kv_prompts=True)
    with pytest.raises(ValueError, match="families"):
        Method("x", "X", "?", families=("convnext",))
