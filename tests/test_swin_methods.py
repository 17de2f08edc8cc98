"""PromptedSwin: what each method trains, shapes, parameter counts, masks and refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from score_helpers import direct_taylor
from swin_helpers import tiny_swin
from timm.models.swin_transformer import SwinTransformer

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.models import compact_prompts
from e2vpt_core.prune.importance import importance_pass, pick
from e2vpt_core.prune.noretrain import leave_one_out

DEPTHS, WIDTHS, HEADS = (2, 2), (24, 48), (2, 4)
LAST = "backbone.layers.1.blocks.1."

EXPECTED_OWN = {
    "linear": {"head.weight", "head.bias"},
    "partial-1": {"head.weight", "head.bias"},
    "mlp-3": {f"head.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")},
    "bias": {"head.weight", "head.bias"},
    "adapter": {"head.weight", "head.bias"}
    | {f"adapters.{s}.{b}.{m}.{p}" for s in range(2) for b in range(2) for m in ("down", "up")
       for p in ("weight", "bias")},
    "vpt-shallow": {"head.weight", "head.bias", "visual_prompts"},
    "vpt-deep": {"head.weight", "head.bias", "visual_prompts", "later_visual_prompts.0"},
    "e2vpt": {"head.weight", "head.bias", "visual_prompts", "later_visual_prompts.0",
              "kv_prompts.0", "kv_prompts.1"},
    "full": {"head.weight", "head.bias"},
}
BACKBONE_RULE = {
    "partial-1": lambda n: n.startswith((LAST, "backbone.norm.")),
    "bias": lambda n: n.endswith("bias"),
    "full": lambda n: True,
}


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _config(method: str, **options) -> PromptConfig:
    return PromptConfig(method, num_segments=4, **options)


@pytest.mark.parametrize("method", sorted(EXPECTED_OWN))
def test_each_method_trains_exactly_its_parameters(method, images):
    backbone = tiny_swin(drop_rate=0.3, drop_path_rate=0.3)
    model = create_model(backbone, 5, _config(method))
    rule = BACKBONE_RULE.get(method, lambda n: False)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    expected_backbone = {n for n, _ in model.named_parameters()
                         if n.startswith("backbone.") and rule(n)}
    assert names == EXPECTED_OWN[method] | expected_backbone
    if method == "partial-1":
        assert any(n.startswith(LAST + "attn.") for n in names)
        assert not any(n.startswith("backbone.layers.1.blocks.0.") for n in names)

    model.train()
    assert not any(m.training for m in model.backbone.modules())
    loss = torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name


def test_backbone_dropout_stays_off_and_prompt_dropout_trains(images):
    backbone = tiny_swin(drop_rate=0.5, drop_path_rate=0.5, attn_drop_rate=0.5)
    model = create_model(backbone, 5, _config("e2vpt", prompt_dropout=0.5)).train()
    with torch.no_grad():
        assert not torch.equal(model(images), model(images))
        model.eval()
        assert torch.equal(model(images), model(images))
        model.config = model.config.replace(prompt_dropout=0.0)
        model.prompt_dropout.p = 0.0
        model.train()
        assert torch.equal(model(images), model(images))


def test_prompt_and_mask_shapes_per_stage():
    model = create_model(tiny_swin(), 5, _config("e2vpt", visual_prompt_len=6, kv_prompt_len=2,
                                                 kv_sharing="separate"))
    assert model.visual_prompts.shape == (2, 6, 24)
    assert [tuple(p.shape) for p in model.later_visual_prompts] == [(2, 6, 48)]
    assert [[tuple(p.shape) for p in stage] for stage in model.stage_prompts()] == [
        [(6, 24)] * 2, [(6, 48)] * 2]
    assert [tuple(p.shape) for p in model.kv_prompts] == [(2, 2, 2, 12), (2, 4, 2, 12)]
    assert model.kv_prompts[1][0].shape == (4, 2, 12)  # one block: (H, T, d_h)
    assert [tuple(p.shape) for p in model.kv_value_prompts] == [(2, 2, 2, 12), (2, 4, 2, 12)]
    assert model.token_mask.shape == (6,) and model.segment_mask.shape == (6, 4)
    assert model.prompt_mask().shape == (6, 24)
    shallow = create_model(tiny_swin(), 5, _config("vpt-shallow", visual_prompt_len=6))
    assert shallow.visual_prompts.shape == (1, 6, 24) and len(shallow.later_visual_prompts) == 0
    assert shallow.kv_prompts is None


def _prompt_params(model) -> int:
    return sum(p.numel() for n, p in model.trainable_parameters() if not n.startswith("head."))


def test_tiny_parameter_counts_follow_the_formulas():
    blocks_by_width = sum(d * w for d, w in zip(DEPTHS, WIDTHS, strict=True))  # Σ depth·d
    e2vpt = create_model(tiny_swin(), 5, _config("e2vpt", visual_prompt_len=4, kv_prompt_len=3))
    assert _prompt_params(e2vpt) == 4 * blocks_by_width + 3 * blocks_by_width
    shallow = create_model(tiny_swin(), 5, _config("vpt-shallow", visual_prompt_len=4))
    assert _prompt_params(shallow) == 4 * 24
    adapter = create_model(tiny_swin(), 5, _config("adapter", adapter_bottleneck=3))
    assert _prompt_params(adapter) == sum(
        d * (w * 3 + 3 + 3 * w + w) for d, w in zip(DEPTHS, WIDTHS, strict=True))
    summary = e2vpt.parameter_summary()
    assert summary["trainable_params"] == 7 * blocks_by_width + 48 * 5 + 5
    assert summary["backbone_params"] == sum(p.numel() for p in e2vpt.backbone.parameters())


def test_swin_b_parameter_counts():
    """Swin-B (built on the meta device: no memory, no init cost)."""
    backbone = SwinTransformer(img_size=224, patch_size=4, window_size=7, embed_dim=128,
                               depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), device="meta")
    model = create_model(backbone, 100, PromptConfig("e2vpt", visual_prompt_len=10,
                                                   kv_prompt_len=5))
    blocks_by_width = 2 * 128 + 2 * 256 + 18 * 512 + 2 * 1024
    assert _prompt_params(model) == 10 * blocks_by_width + 5 * blocks_by_width == 180_480
    summary = model.parameter_summary()
    assert summary["backbone_params"] == 86_743_224  # Swin-B without its classifier
    assert summary["trainable_params"] == 180_480 + 1024 * 100 + 100


def test_effective_parameters_count_pruned_first_stage_entries(capsys):
    model = create_model(tiny_swin(), 5, _config("e2vpt", visual_prompt_len=4, kv_prompt_len=2))
    full = model.parameter_summary()
    segment_mask = torch.ones(4, 4)
    segment_mask[0, 1] = 0.0
    segment_mask[1, 2] = 0.0  # inside a pruned token: not counted twice
    model.set_masks(torch.tensor([1.0, 0.0, 1.0, 1.0]), segment_mask)
    pruned = DEPTHS[0] * (24 + 24 // 4)  # first stage only
    assert model.parameter_summary()["effective_params"] == full["trainable_params"] - pruned
    model.print_trainable_parameters()
    assert f"{full['trainable_params'] - pruned:,}" in capsys.readouterr().out


def test_mask_gradients_expose_first_stage_importance(images):
    model = create_model(tiny_swin(), 5, _config("e2vpt", visual_prompt_len=3, kv_prompt_len=1))
    model.eval()
    with model.mask_gradients():
        model(images).sum().backward()
    assert model.token_mask.grad.shape == (3,) and model.segment_mask.grad.shape == (3, 4)
    assert model.token_mask.grad.abs().sum() > 0
    assert not model.token_mask.requires_grad
    with pytest.raises(ValueError, match="only 0 and 1"):
        model.set_masks(torch.tensor([0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="mask shape"):
        model.set_masks(torch.ones(4))


def test_per_layer_mask_gradients_cover_the_first_stage_blocks(images):
    model = create_model(tiny_swin(), 5, _config("e2vpt", visual_prompt_len=3, kv_prompt_len=1))
    model.eval()
    with model.mask_gradients(per_layer=True):
        model(images).sum().backward()
    token_layer, segment_layer = model.layer_mask_grads()
    assert token_layer.shape == (DEPTHS[0], 3) and segment_layer.shape == (DEPTHS[0], 3, 4)
    torch.testing.assert_close(token_layer.sum(0), model.token_mask.grad)
    torch.testing.assert_close(segment_layer.sum(0), model.segment_mask.grad)
    prompts, grads = model.visual_prompts.detach(), model.visual_prompts.grad
    torch.testing.assert_close(token_layer, (prompts * grads).sum(-1))


def test_compact_shallow_equals_remove_mode_and_deep_is_refused(images):
    model = create_model(tiny_swin(), 5, _config("vpt-shallow", visual_prompt_len=4,
                                                 prune_mode="remove")).eval()
    model.set_masks(torch.tensor([1.0, 0.0, 1.0, 0.0]))
    model.backbone_source = {"pretrained": True, "checkpoint_path": None}
    compacted = compact_prompts(model)
    assert compacted.visual_prompts.shape == (1, 2, 24)
    assert compacted.backbone is model.backbone
    assert compacted.backbone_source == model.backbone_source
    with torch.no_grad():
        assert torch.allclose(compacted(images), model(images), atol=1e-6)
    deep = create_model(tiny_swin(), 5, _config("vpt-deep", visual_prompt_len=4))
    with pytest.raises(ValueError, match="compact\\(\\) on Swin supports vpt-shallow only"):
        compact_prompts(deep)
    with pytest.raises(ValueError, match="compact\\(\\) on Swin supports vpt-shallow only"):
        deep.compact()  # the documented method delegates to compact_prompts


def test_all_first_stage_tokens_removed_still_runs(images):
    model = create_model(tiny_swin(), 5, _config("e2vpt", visual_prompt_len=2, kv_prompt_len=1,
                                                 prune_mode="remove")).eval()
    model.set_masks(torch.zeros(2))
    with torch.no_grad():
        assert model(images).shape == (4, 5)


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="num_segments=5 must divide the first Swin stage's "
                                         "width 24"):
        create_model(tiny_swin(), 5, PromptConfig("e2vpt", num_segments=5))
    with pytest.raises(ValueError, match="num_classes"):
        create_model(tiny_swin(), 0, _config("linear"))
    from timm.models.vision_transformer import VisionTransformer

    from e2vpt_core.models import PromptedSwin
    with pytest.raises(ValueError, match="PromptedSwin needs a timm SwinTransformer"):
        PromptedSwin(VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=1,
                                       num_heads=3), 5, _config("linear"))


def test_taylor_and_leave_one_out_score_swin_prompts(images):
    model = create_model(tiny_swin(), 5, _config("e2vpt", visual_prompt_len=3,
                                                 kv_prompt_len=1)).double().eval()
    labels = torch.tensor([0, 1, 2, 3])
    batches = [(images[:2].double(), labels[:2]), (images[2:].double(), labels[2:])]
    expected = direct_taylor(model, batches)  # (first-stage blocks, P)
    scores = importance_pass(model, batches)
    torch.testing.assert_close(scores["taylor_layer"], expected)
    torch.testing.assert_close(pick(scores, token_scores="taylor").token, expected.sum(0))

    def mean_loss(net) -> float:
        with torch.no_grad():
            losses = [torch.nn.functional.cross_entropy(net(x), y) for x, y in batches]
        return float(torch.stack(losses).mean())

    removed = copy.deepcopy(model)
    removed.config = removed.config.replace(prune_mode="remove")
    removed.set_masks(torch.tensor([1.0, 0.0, 1.0]))
    loo = leave_one_out(model, batches)["loo"]
    assert loo[1].item() == pytest.approx(mean_loss(removed) - mean_loss(model), rel=1e-4)
