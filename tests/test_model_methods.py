"""What each method trains, parameter counts, and the backbone staying frozen / in eval."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model

DEPTH, WIDTH = 3, 48
LAST = f"backbone.blocks.{DEPTH - 1}."

# Per method: the exact trainable names outside the backbone, and a rule for backbone names.
EXPECTED_OWN = {
    "linear": {"head.weight", "head.bias"},
    "partial-1": {"head.weight", "head.bias"},
    "mlp-3": {f"head.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")},
    "bias": {"head.weight", "head.bias"},
    "adapter": {"head.weight", "head.bias"}
    | {f"adapters.{b}.{m}.{p}" for b in range(DEPTH) for m in ("down", "up")
       for p in ("weight", "bias")},
    "vpt-shallow": {"head.weight", "head.bias", "visual_prompts"},
    "vpt-deep": {"head.weight", "head.bias", "visual_prompts"},
    "e2vpt": {"head.weight", "head.bias", "visual_prompts", "kv_prompts"},
    "full": {"head.weight", "head.bias"},
}
BACKBONE_RULE = {
    "partial-1": lambda n: n.startswith((LAST, "backbone.norm.", "backbone.fc_norm.")),
    "bias": lambda n: n.endswith("bias"),
    "full": lambda n: True,
}


@pytest.mark.parametrize("method", sorted(EXPECTED_OWN))
def test_each_method_trains_exactly_its_parameters(method, images):
    model = create_model(tiny_vit(drop_rate=0.3, drop_path_rate=0.3), 5, PromptConfig(method))
    rule = BACKBONE_RULE.get(method, lambda n: False)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    expected_backbone = {n for n, _ in model.named_parameters() if n.startswith("backbone.")
                         and rule(n)}
    assert names == EXPECTED_OWN[method] | expected_backbone

    model.train()
    loss = torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad and name not in ("token_mask", "segment_mask"):
            assert param.grad is not None, name
        else:
            assert param.grad is None, name


@pytest.mark.parametrize("method", sorted(EXPECTED_OWN))
def test_backbone_dropout_and_drop_path_stay_off(method, images):
    config = PromptConfig(method, prompt_dropout=0.0)
    model = create_model(tiny_vit(drop_rate=0.5, drop_path_rate=0.5, attn_drop_rate=0.5), 5,
                         config)
    model.train()
    assert model.training and not any(m.training for m in model.backbone.modules())
    with torch.no_grad():
        assert torch.equal(model(images), model(images))


def test_prompt_dropout_is_active_in_training_only(images):
    model = create_model(tiny_vit(), 5, PromptConfig("vpt-deep", prompt_dropout=0.5))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(images), model(images))
        model.eval()
        assert torch.equal(model(images), model(images))


def test_shapes_of_prompts_and_masks():
    model = create_model(tiny_vit(), 5, PromptConfig("e2vpt", visual_prompt_len=6,
                                                   kv_prompt_len=2, num_segments=4))
    assert model.visual_prompts.shape == (DEPTH, 6, WIDTH)
    assert model.kv_prompts.shape == (DEPTH, 3, 2, WIDTH // 3)
    assert model.kv_prompts[0].shape == (3, 2, 16)
    assert model.token_mask.shape == (6,) and model.segment_mask.shape == (6, 4)
    assert model.kv_value_prompts is None
    shallow = create_model(tiny_vit(), 5, PromptConfig("vpt-shallow", visual_prompt_len=6))
    assert shallow.visual_prompts.shape == (1, 6, WIDTH)


def test_init_schemes_follow_their_formulas():
    vit_b_bound = (6 / (3 * 16 * 16 + 768)) ** 0.5
    assert vit_b_bound == pytest.approx(0.0625)
    model = create_model(tiny_vit(), 5, PromptConfig("e2vpt", visual_prompt_len=50,
                                                   kv_prompt_len=40))
    bound = (6 / (3 * 8 * 8 + WIDTH)) ** 0.5
    assert model.visual_prompts.abs().max() <= bound
    assert model.visual_prompts.abs().max() > 0.9 * bound
    kv_bound = (6 / (40 * 16)) ** 0.5  # kaiming-uniform, fan_in = T·d_h
    assert model.kv_prompts.abs().max() <= kv_bound
    assert model.kv_prompts.abs().max() > 0.9 * kv_bound
    normal = create_model(tiny_vit(), 5, PromptConfig("e2vpt", visual_init="trunc-normal",
                                                    kv_init="trunc-normal"))
    assert normal.visual_prompts.std().item() == pytest.approx(0.02, rel=0.3)
    assert normal.kv_prompts.std().item() == pytest.approx(0.02, rel=0.3)


@pytest.fixture(scope="module")
def vit_b() -> VisionTransformer:
    return VisionTransformer(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12)


def _prompt_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and not n.startswith("head."))


def test_vit_b_parameter_counts_match_formulas(vit_b):
    e2vpt = create_model(vit_b, 100, PromptConfig("e2vpt", visual_prompt_len=10, kv_prompt_len=5))
    assert _prompt_params(e2vpt) == 12 * 10 * 768 + 12 * 5 * 768
    summary = e2vpt.parameter_summary()
    assert summary["backbone_params"] == 85_798_656  # ViT-B/16 without its classifier
    assert summary["trainable_params"] == 12 * 15 * 768 + 768 * 100 + 100
    assert summary["trainable_percent"] == pytest.approx(
        100 * summary["trainable_params"] / 85_798_656)
    vpt = create_model(vit_b, 100, PromptConfig("vpt-deep", visual_prompt_len=50))
    assert _prompt_params(vpt) == 460_800
    separate = create_model(vit_b, 100, PromptConfig("e2vpt", kv_sharing="separate"))
    assert _prompt_params(separate) == 12 * 10 * 768 + 2 * 12 * 5 * 768


def test_effective_parameters_count_only_kept_prompt_entries(capsys):
    model = create_model(tiny_vit(), 5, PromptConfig("e2vpt", visual_prompt_len=4,
                                                   kv_prompt_len=2, num_segments=4))
    full = model.parameter_summary()
    assert full["effective_params"] == full["trainable_params"]
    token_mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    segment_mask = torch.ones(4, 4)
    segment_mask[0, 1] = 0.0
    segment_mask[1, 2] = 0.0  # inside an already pruned token: not counted twice
    model.set_masks(token_mask, segment_mask)
    pruned = DEPTH * (WIDTH + WIDTH // 4)
    assert model.parameter_summary()["effective_params"] == full["trainable_params"] - pruned
    model.print_trainable_parameters()
    printed = capsys.readouterr().out
    assert f"trainable params: {full['trainable_params']:,}" in printed
    assert f"{full['trainable_params'] - pruned:,}" in printed
