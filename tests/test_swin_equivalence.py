"""PromptedSwin against timm's Swin and against hand-written, window-by-window references."""

from __future__ import annotations

import copy

import pytest
import torch
from swin_helpers import tiny_swin
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.models.swin_layers import prompted_swin_block, prompted_window_attention

# 28 px → a 14×14 grid: windows of 4 need padding, as timm pads.
VARIANTS = {"divisible": {}, "padded": dict(img_size=28)}
NO_PROMPT_METHODS = ["linear", "partial-1", "bias", "full", "vpt-shallow", "vpt-deep", "e2vpt"]


def _images(size: int = 32, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)).to(dtype)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("method", NO_PROMPT_METHODS)
def test_no_prompts_equals_timm(variant, method):
    reference = tiny_swin(**VARIANTS[variant])
    images = _images(reference.patch_embed.img_size[0])
    expected = reference(images)
    config = PromptConfig.for_method(method, visual_prompt_len=0, kv_prompt_len=0)
    model = create_model(copy.deepcopy(reference), 5, config).eval()
    model.head.load_state_dict(reference.head.fc.state_dict())
    assert torch.allclose(model(images), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_adapter_at_init_equals_timm(variant):
    """The re-sequenced block (used by adapters) matches timm's own block."""
    reference = tiny_swin(**VARIANTS[variant])
    images = _images(reference.patch_embed.img_size[0])
    model = create_model(copy.deepcopy(reference), 5, PromptConfig("adapter")).eval()
    model.head.load_state_dict(reference.head.fc.state_dict())
    assert torch.allclose(model(images), reference(images), atol=1e-5, rtol=0)


# ----------------------------------------------------------------- hand references
def _bias_by_hand(attn: WindowAttention) -> torch.Tensor:
    """(H, N, N) relative-position bias, indexing the table from the coordinates directly."""
    win_h, win_w = attn.window_size
    coords = [(i, j) for i in range(win_h) for j in range(win_w)]
    bias = torch.empty(attn.num_heads, len(coords), len(coords), dtype=torch.float64)
    for r, (i1, j1) in enumerate(coords):
        for c, (i2, j2) in enumerate(coords):
            index = (i1 - i2 + win_h - 1) * (2 * win_w - 1) + (j1 - j2 + win_w - 1)
            bias[:, r, c] = attn.relative_position_bias_table[index]
    return bias


def _hand_window(attn, tokens, num_prompts, mask, kv, rel):
    """One window: softmax(q·[P_k; K]ᵀ/√d_h + B)·[P_v; V], B zero except patch × patch."""
    length, width = tokens.shape
    heads = attn.num_heads
    head_dim = width // heads
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q, k, v = (tokens @ weight[i * width:(i + 1) * width].T + bias[i * width:(i + 1) * width]
               for i in range(3))
    out = torch.empty(length, width, dtype=torch.float64)
    for h in range(heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        keys, values = k[:, cols], v[:, cols]
        num_kv = 0
        if kv is not None:
            num_kv = kv[0].shape[1]
            keys, values = torch.cat([kv[0][h], keys]), torch.cat([kv[1][h], values])
        scores = q[:, cols] @ keys.T / head_dim**0.5  # (P + N, T + P + N)
        patch_bias = rel[h] if mask is None else rel[h] + mask
        scores[num_prompts:, num_kv + num_prompts:] += patch_bias
        out[:, cols] = torch.softmax(scores, dim=-1) @ values
    return out @ attn.proj.weight.T + attn.proj.bias


def _hand_block(block: SwinTransformerBlock, x, prompts, kv):
    """Window by window, image by image: prompts copied into each window, outputs averaged."""
    batch, height, width, channels = x.shape
    win_h, win_w = block.window_size
    shift = block.shift_size
    num_prompts = 0 if prompts is None else prompts.shape[1]
    h = torch.roll(block.norm1(x), shifts=(-shift[0], -shift[1]), dims=(1, 2))
    padded_h, padded_w = -(-height // win_h) * win_h, -(-width // win_w) * win_w
    grid = torch.zeros(batch, padded_h, padded_w, channels, dtype=x.dtype)
    grid[:, :height, :width] = h
    out_grid = torch.empty_like(grid)
    prompt_out = torch.zeros(batch, num_prompts, channels, dtype=x.dtype)
    rows, cols = padded_h // win_h, padded_w // win_w
    rel = _bias_by_hand(block.attn)
    for b in range(batch):
        for wi in range(rows):
            for wj in range(cols):
                cell = grid[b, wi * win_h:(wi + 1) * win_h, wj * win_w:(wj + 1) * win_w]
                tokens = cell.reshape(-1, channels)
                if num_prompts:
                    tokens = torch.cat([block.norm1(prompts[b]), tokens])
                mask = None if block.attn_mask is None else block.attn_mask[wi * cols + wj]
                out = _hand_window(block.attn, tokens, num_prompts, mask, kv, rel)
                prompt_out[b] += out[:num_prompts] / (rows * cols)
                out_grid[b, wi * win_h:(wi + 1) * win_h, wj * win_w:(wj + 1) * win_w] = (
                    out[num_prompts:].reshape(win_h, win_w, channels))
    h = torch.roll(out_grid[:, :height, :width], shifts=shift, dims=(1, 2))
    x = x + h
    if num_prompts:
        prompts = prompts + prompt_out
        prompts = prompts + block.mlp(block.norm2(prompts))
    x = x + block.mlp(block.norm2(x))
    return x, prompts


def _block_case(shifted: bool, grid: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    block = SwinTransformerBlock(dim=24, input_resolution=(grid, grid), num_heads=3,
                                 window_size=4, shift_size=2 if shifted else 0)
    torch.nn.init.normal_(block.attn.relative_position_bias_table, std=0.5)
    block = block.double().eval()
    x = torch.randn(2, grid, grid, 24, dtype=torch.float64)
    prompts = torch.randn(2, 3, 24, dtype=torch.float64)
    kv = (torch.randn(3, 2, 8, dtype=torch.float64), torch.randn(3, 2, 8, dtype=torch.float64))
    return block, x, prompts, kv


@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("shifted", [False, True])
def test_kv_window_attention_matches_padded_bias_by_hand(shifted, position):
    block, x, prompts, kv = _block_case(shifted)
    attn, mask = block.attn, block.attn_mask
    assert (mask is not None) == shifted
    windows = torch.randn(2 * 4, 2 + 16, 24, dtype=torch.float64)  # 4 windows, P=2, N=16
    actual = prompted_window_attention(attn, windows, 4, mask, 2, kv, position)
    rel = _bias_by_hand(attn)
    for w in range(windows.shape[0]):
        window_mask = None if mask is None else mask[w % 4]
        expected = _hand_window(attn, windows[w], 2, window_mask, kv, rel)
        assert torch.allclose(actual[w], expected, atol=1e-10)


@pytest.mark.parametrize("grid", [8, 6])  # 6: padded to 8 (four 4×4 windows)
@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("with_kv", [False, True])
def test_visual_prompts_in_windows_match_hand_block(shifted, grid, with_kv):
    block, x, prompts, kv = _block_case(shifted, grid=grid, seed=1)
    kv = kv if with_kv else None
    actual_x, actual_p = prompted_swin_block(block, x, prompts, kv, None)
    expected_x, expected_p = _hand_block(block, x, prompts, kv)
    assert torch.allclose(actual_x, expected_x, atol=1e-10)
    assert torch.allclose(actual_p, expected_p, atol=1e-10)


def _hand_forward(model, images, stage_prompts):
    """Deep: prompts replaced before every block; shallow: carried, merged like patches."""
    backbone, deep = model.backbone, model.config.deep_prompts
    x = backbone.patch_embed(images)
    prompts = None
    for s, stage in enumerate(backbone.layers):
        x = stage.downsample(x)
        if s and prompts is not None and not deep:
            merging = stage.downsample
            prompts = merging.reduction(merging.norm(torch.cat([prompts] * 4, dim=-1)))
        for b, block in enumerate(stage.blocks):
            if deep or (s == 0 and b == 0):
                prompts = stage_prompts[s][b].unsqueeze(0).expand(x.shape[0], -1, -1)
            kv = None
            if model.kv_prompts is not None:
                values = model.kv_prompts if model.kv_value_prompts is None else (
                    model.kv_value_prompts)
                kv = (model.kv_prompts[s][b], values[s][b])
            x, prompts = _hand_block(block, x, prompts, kv)
    return model.head(backbone.norm(x).mean(dim=(1, 2)))


def _prompted(method: str, seed: int = 0, **options):
    config = PromptConfig(method, num_segments=4, prompt_dropout=0.0, **options)
    return create_model(tiny_swin(seed), 5, config).double().eval()


@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_e2vpt_forward_with_masks_matches_hand_reference(sharing):
    model = _prompted("e2vpt", visual_prompt_len=3, kv_prompt_len=2, kv_sharing=sharing)
    model.set_masks(torch.tensor([1.0, 0.0, 1.0]),
                    torch.tensor([[1.0, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1]]))
    images = _images(dtype=torch.float64)
    with torch.no_grad():
        first = model.visual_prompts * model.prompt_mask()
        assert first[0, 1].abs().sum() == 0 and first[0, 0, 12:18].abs().sum() == 0
        expected = _hand_forward(model, images, [first, *model.later_visual_prompts])
        assert torch.allclose(model(images), expected, atol=1e-9)


def test_remove_mode_drops_pruned_first_stage_tokens_only():
    model = _prompted("vpt-deep", visual_prompt_len=3, prune_mode="remove")
    model.set_masks(torch.tensor([1.0, 0.0, 1.0]))
    images = _images(dtype=torch.float64)
    with torch.no_grad():
        first = (model.visual_prompts * model.prompt_mask())[:, [0, 2]]
        expected = _hand_forward(model, images, [first, *model.later_visual_prompts])
        assert torch.allclose(model(images), expected, atol=1e-9)
        model.config = model.config.replace(prune_mode="zero")
        assert not torch.allclose(model(images), expected, atol=1e-6)


def test_shallow_prompts_are_merged_like_patches():
    model = _prompted("vpt-shallow", visual_prompt_len=2)
    assert model.visual_prompts.shape == (1, 2, 24) and len(model.later_visual_prompts) == 0
    images = _images(dtype=torch.float64)
    with torch.no_grad():
        expected = _hand_forward(model, images, [model.visual_prompts])
        assert torch.allclose(model(images), expected, atol=1e-9)


def test_prompts_change_the_output_and_plain_timm_is_unaffected():
    forwards = (SwinTransformerBlock.forward, WindowAttention.forward)
    plain = tiny_swin(seed=3)
    images = _images()
    before = plain(images)
    model = create_model(tiny_swin(seed=3), 5, PromptConfig("e2vpt", num_segments=4)).eval()
    model.head.load_state_dict(plain.head.fc.state_dict())
    assert not torch.allclose(model(images), before, atol=1e-3)
    model.train()
    model(images).sum().backward()
    assert (SwinTransformerBlock.forward, WindowAttention.forward) == forwards
    assert torch.equal(plain(images), before)
    assert all(p.requires_grad for p in plain.parameters())
