"""Rows nothing reads are not computed (`skip_unread_tokens`), and that changes no logit and
no gradient: every ViT method, prefix-token and pooling variant, and prune mode, in float64
against the same model computing every row."""

from __future__ import annotations

import pytest
import torch
from vit_helpers import VARIANTS, tiny_vit

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.methods import REGISTRY

CASES = [(name, variant, mode) for name, method in REGISTRY.items() if method.supports("vit")
         for variant in VARIANTS
         for mode in (("zero", "remove") if method.prunable else ("zero",))]


def _model(name: str, variant: str, mode: str, deep_masks: bool = False):
    config = PromptConfig(name, num_segments=4, prompt_dropout=0.3, prune_mode=mode,
                          masks_per_block=deep_masks)
    model = create_model(tiny_vit(**VARIANTS[variant]), 5, config).double().train()
    if model.visual_prompts is not None:
        token = torch.ones_like(model.token_mask)
        token[..., 1] = 0
        if deep_masks:
            token[0, 3] = 0  # layers keep different numbers of tokens
        segment = torch.ones_like(model.segment_mask)
        segment[..., 0, 2] = 0
        model.set_masks(token, segment)
    return model


def _logits_and_grads(model, skip: bool):
    model.skip_unread_tokens = skip
    model.zero_grad(set_to_none=True)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2),
                         dtype=torch.float64)
    torch.manual_seed(7)  # the same prompt dropout draw on both sides
    logits = model(images)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3, 4])).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def _assert_same(model) -> None:
    plain_logits, plain = _logits_and_grads(model, skip=False)
    logits, grads = _logits_and_grads(model, skip=True)
    assert torch.allclose(logits, plain_logits, rtol=0, atol=1e-12)
    assert grads.keys() == plain.keys() and grads
    for key, grad in grads.items():
        assert torch.allclose(grad, plain[key], rtol=1e-10, atol=1e-12), key


@pytest.mark.parametrize(("name", "variant", "mode"), CASES)
def test_skipping_unread_rows_changes_no_logit_and_no_gradient(name, variant, mode):
    _assert_same(_model(name, variant, mode))


@pytest.mark.parametrize("mode", ["zero", "remove"])
def test_masks_per_block_with_different_kept_counts(mode):
    _assert_same(_model("e2vpt", "cls-token", mode, deep_masks=True))


def _query_rows(model, monkeypatch) -> list[int]:
    """Query rows of each block's attention in one forward."""
    rows: list[int] = []
    attention = torch.nn.functional.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        rows.append(q.shape[2])
        return attention(q, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    monkeypatch.undo()
    return rows


def test_which_rows_each_block_computes(monkeypatch):
    """Deep prompts: the next block replaces them, so blocks before the last skip their
    rows; the token-pooled last block computes the class token only. Patches: 16."""
    deep = _model("e2vpt", "cls-token", "zero")
    assert _query_rows(deep, monkeypatch) == [1 + 16, 1 + 16, 1]
    shallow = _model("vpt-shallow", "cls-token", "zero")
    prompts = shallow.config.visual_prompt_len
    assert _query_rows(shallow, monkeypatch) == [1 + prompts + 16, 1 + prompts + 16, 1]
    pooled = _model("vpt-deep", "avg-pool-no-cls", "zero")
    assert _query_rows(pooled, monkeypatch) == [16, 16, 16]
    deep.skip_unread_tokens = False
    assert _query_rows(deep, monkeypatch) == [1 + deep.config.visual_prompt_len + 16] * 3


def test_a_block_with_a_forward_hook_is_run_whole(monkeypatch):
    """A hook expects timm's call with every row, so a hooked block is not trimmed."""
    model = _model("vpt-deep", "cls-token", "zero")
    seen = []
    model.backbone.blocks[2].register_forward_hook(lambda _m, _a, out: seen.append(out.shape[1]))
    full = 1 + model.config.visual_prompt_len + 16
    assert _query_rows(model, monkeypatch) == [1 + 16, 1 + 16, full]
    assert seen == [full]
