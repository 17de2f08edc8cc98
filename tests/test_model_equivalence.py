"""Numerical equivalence of prompted models with timm and with hand-written references."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block
from vit_helpers import VARIANTS, tiny_vit

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.models.layers import kv_prompted_attention

NO_PROMPT_METHODS = ["linear", "partial-1", "bias", "full", "vpt-shallow", "vpt-deep", "e2vpt"]


def _with_timm_head(model, timm_model):
    model.head.load_state_dict(timm_model.head.state_dict())
    return model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("method", NO_PROMPT_METHODS)
def test_no_prompts_equals_timm(variant, method, images):
    reference = tiny_vit(**VARIANTS[variant])
    expected = reference(images)
    config = PromptConfig.for_method(method, visual_prompt_len=0, kv_prompt_len=0)
    model = _with_timm_head(create_model(copy.deepcopy(reference), 7, config), reference)
    model.eval()
    assert torch.allclose(model(images), expected, atol=1e-6, rtol=0)


def test_adapter_at_init_equals_timm(images):
    """Adapters start as the identity (zero-initialised up-projection)."""
    reference = tiny_vit()
    model = _with_timm_head(
        create_model(copy.deepcopy(reference), 7, PromptConfig(method="adapter")), reference
    ).eval()
    assert torch.allclose(model(images), reference(images), atol=1e-5, rtol=0)


def _hand_attention(attn: Attention, x, key_prompt, value_prompt):
    """softmax(Q·[P_k; K]ᵀ / √d_h) · [P_v; V], then the output projection."""
    batch, length, width = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    qkv_weight, qkv_bias = attn.qkv.weight, attn.qkv.bias
    q = x @ qkv_weight[:width].T + qkv_bias[:width]
    k = x @ qkv_weight[width:2 * width].T + qkv_bias[width:2 * width]
    v = x @ qkv_weight[2 * width:].T + qkv_bias[2 * width:]
    out = torch.empty(batch, length, width, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            values = torch.cat([value_prompt[h], v[b, :, cols]])
            queries = attn.q_norm(q[b, :, cols])  # qk-norm acts per head, not on prompts
            keys = torch.cat([key_prompt[h], attn.k_norm(k[b, :, cols])])
            scores = queries @ keys.T / head_dim**0.5  # (N, T + N)
            out[b, :, cols] = torch.softmax(scores, dim=-1) @ values
    return out @ attn.proj.weight.T + attn.proj.bias


def _attention_case(seed=0):
    torch.manual_seed(seed)
    block = Block(dim=48, num_heads=3, qkv_bias=True).double().eval()
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    key_prompt = torch.randn(3, 4, 16, dtype=torch.float64)
    value_prompt = torch.randn(3, 4, 16, dtype=torch.float64)
    return block.attn, x, key_prompt, value_prompt


def test_kv_attention_matches_explicit_softmax():
    attn, x, key_prompt, _ = _attention_case()
    expected = _hand_attention(attn, x, key_prompt, key_prompt)  # shared: same tensor
    actual = kv_prompted_attention(attn, x, key_prompt, key_prompt, "before")
    assert torch.allclose(actual, expected, atol=1e-10)


def test_kv_attention_separate_values_match_explicit_softmax():
    attn, x, key_prompt, value_prompt = _attention_case(seed=1)
    expected = _hand_attention(attn, x, key_prompt, value_prompt)
    actual = kv_prompted_attention(attn, x, key_prompt, value_prompt, "before")
    assert torch.allclose(actual, expected, atol=1e-10)
    shared = kv_prompted_attention(attn, x, key_prompt, key_prompt, "before")
    assert not torch.allclose(actual, shared, atol=1e-3)


def test_kv_position_before_and_after_agree():
    attn, x, key_prompt, value_prompt = _attention_case(seed=2)
    before = kv_prompted_attention(attn, x, key_prompt, value_prompt, "before")
    after = kv_prompted_attention(attn, x, key_prompt, value_prompt, "after")
    assert torch.allclose(before, after, atol=1e-10)


def _hand_block(block, x, kv):
    h = block.norm1(x)
    if kv is not None:
        h = _hand_attention(block.attn, h, *kv)
    else:
        h = block.attn(h)
    x = x + block.ls1(h)
    return x + block.ls2(block.mlp(block.norm2(x)))


def _hand_e2vpt_forward(model, images):
    """Reference forward written from the paper's description, token by token."""
    backbone, prefix = model.backbone, model.num_prefix_tokens
    x = backbone._pos_embed(backbone.patch_embed(images))
    prompts = model.visual_prompts * model.prompt_mask()
    num_prompts = prompts.shape[1]
    for index, block in enumerate(backbone.blocks):
        layer_prompts = prompts[index].unsqueeze(0).expand(x.shape[0], -1, -1)
        patches = x[:, prefix + num_prompts:] if index else x[:, prefix:]
        x = torch.cat([x[:, :prefix], layer_prompts, patches], dim=1)
        keys = model.kv_prompts[index]
        values = keys if model.kv_value_prompts is None else model.kv_value_prompts[index]
        x = _hand_block(block, x, (keys, values))
    x = torch.cat([x[:, :prefix], x[:, prefix + num_prompts:]], dim=1)
    x = backbone.norm(x)
    pooled = x[:, prefix:].mean(1) if backbone.global_pool == "avg" else x[:, 0]
    return model.head(backbone.fc_norm(pooled))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_e2vpt_forward_matches_hand_reference(variant, sharing, images):
    backbone = tiny_vit(**VARIANTS[variant]).double()
    config = PromptConfig(method="e2vpt", visual_prompt_len=4, kv_prompt_len=3,
                          kv_sharing=sharing, num_segments=4)
    model = create_model(backbone, 5, config).double().eval()
    with torch.no_grad():
        model.token_mask[1] = 0.0
        model.segment_mask[2, 3] = 0.0
    images = images.double()
    with torch.no_grad():
        assert torch.allclose(model(images), _hand_e2vpt_forward(model, images), atol=1e-9)


def test_prompts_change_the_output(images):
    reference = tiny_vit()
    model = create_model(copy.deepcopy(reference), 7, PromptConfig(method="e2vpt")).eval()
    _with_timm_head(model, reference)
    assert not torch.allclose(model(images), reference(images), atol=1e-3)


def test_vpt_shallow_keeps_first_prompts_through_blocks(images):
    """Shallow prompts enter once and are carried (not replaced) through later blocks."""
    backbone = tiny_vit().double()
    model = create_model(backbone, 5, PromptConfig(method="vpt-shallow", visual_prompt_len=2))
    model = model.double().eval()
    images = images.double()
    x = backbone._pos_embed(backbone.patch_embed(images))
    prompts = model.visual_prompts[0].unsqueeze(0).expand(x.shape[0], -1, -1)
    x = torch.cat([x[:, :1], prompts, x[:, 1:]], dim=1)
    for block in backbone.blocks:
        x = block(x)
    x = backbone.norm(torch.cat([x[:, :1], x[:, 3:]], dim=1))
    with torch.no_grad():
        assert torch.allclose(model(images), model.head(x[:, 0]), atol=1e-10)


def test_plain_timm_models_are_unaffected(images):
    attention_forward, block_forward = Attention.forward, Block.forward
    plain = tiny_vit(seed=3)
    before = plain(images)
    model = create_model(tiny_vit(seed=3), 7, PromptConfig(method="e2vpt"))
    model.train()
    model(images).sum().backward()
    assert Attention.forward is attention_forward and Block.forward is block_forward
    assert type(plain.blocks[0].attn) is Attention
    assert torch.equal(plain(images), before)
    assert all(p.requires_grad for p in plain.parameters())
