"""Swin blocks re-sequenced from timm's own submodules, with prompts inside every window.

Visual prompts (B, P, C) are copied into every window, in front of the window's tokens; their
outputs are averaged over the windows. Key-value prompts (H, T, d_h) are joined to the keys
and values of every window. The relative-position bias and the shift mask exist for patch
rows and patch columns only, so they are zero-padded for prompt rows and for visual-prompt /
key-value columns. timm's classes are not touched: only the order of calls is written out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import (
    PatchMerging,
    SwinTransformerBlock,
    WindowAttention,
    window_partition,
    window_reverse,
)
from torch import nn

from .layers import ColumnProbe


def check_swin_block(block: nn.Module, name: str, needs: str) -> None:
    """Prompts are inserted by re-sequencing timm's `SwinTransformerBlock`; refuse others."""
    if type(block) is not SwinTransformerBlock or type(block.attn) is not WindowAttention:
        raise ValueError(
            f"{needs} needs timm's standard SwinTransformerBlock with WindowAttention; "
            f"{name} is {type(block).__name__} ({type(getattr(block, 'attn', None)).__name__})"
        )


def check_patch_merging(downsample: nn.Module, name: str) -> None:
    """Shallow prompts pass through patch merging, which needs timm's `PatchMerging`."""
    if not isinstance(downsample, (nn.Identity, PatchMerging)):
        raise ValueError(
            f"vpt-shallow prompts on Swin need timm's PatchMerging; {name} is "
            f"{type(downsample).__name__}"
        )


def relative_position_bias(attn: WindowAttention) -> torch.Tensor:
    """(H, N, N) bias of one window, N = window area, read from timm's table and index."""
    area = attn.window_area
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    return bias.view(area, area, -1).permute(2, 0, 1)


def merge_prompts(downsample: nn.Module, prompts: torch.Tensor) -> torch.Tensor:
    """Patch merging of prompt tokens: each prompt fills its own 2×2 neighbourhood.

    (B, P, C) → (B, P, C'): the four concatenated copies go through the merging layer's norm
    and reduction, exactly like four neighbouring patches.
    """
    if isinstance(downsample, nn.Identity):
        return prompts
    return downsample.reduction(downsample.norm(prompts.repeat(1, 1, 4)))


def prompted_window_attention(
    attn: WindowAttention,
    windows: torch.Tensor,
    num_windows: int,
    shift_mask: torch.Tensor | None,
    num_prompts: int,
    kv_prompt: tuple[torch.Tensor, torch.Tensor] | None,
    kv_position: str = "before",
    probe: ColumnProbe | None = None,
) -> torch.Tensor:
    """timm `WindowAttention.forward` on windows that begin with `num_prompts` prompt tokens.

    windows: (B·nW, P + N, C), window-major within each image (timm's `window_partition`
    order); shift_mask: (nW, N, N) of 0 / -100 or None. Key order: [KV prompts; visual
    prompts; patches] ("before") or [visual prompts; patches; KV prompts] ("after").
    `probe`: (P,) key/value scales and logit biases of the visual prompts' columns.
    """
    count, length, _ = windows.shape
    heads = attn.num_heads
    qkv = attn.qkv(windows).reshape(count, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B·nW, H, P + N, d_h)
    if probe is not None:
        scale = torch.cat([probe.scale.to(k.dtype), k.new_ones(length - num_prompts)])
        k, v = k * scale[:, None], v * scale[:, None]

    bias = relative_position_bias(attn)  # (H, N, N)
    if shift_mask is not None:
        bias = bias + shift_mask.unsqueeze(1).to(bias.dtype)  # (nW, H, N, N)
    left, right = num_prompts, 0
    if kv_prompt is not None:
        key_prompt, value_prompt = (
            p.to(k.dtype).unsqueeze(0).expand(count, -1, -1, -1) for p in kv_prompt
        )
        if kv_position == "before":
            k, v = torch.cat([key_prompt, k], dim=2), torch.cat([value_prompt, v], dim=2)
            left += key_prompt.shape[2]
        else:
            k, v = torch.cat([k, key_prompt], dim=2), torch.cat([v, value_prompt], dim=2)
            right = key_prompt.shape[2]
    bias = F.pad(bias, (left, right, num_prompts, 0))  # prompt rows / columns get 0
    if probe is not None:  # the same logit bias for every query of a prompt's column
        before, after = left - num_prompts, length - num_prompts + right
        bias = bias + F.pad(probe.bias.to(bias.dtype), (before, after))
    if shift_mask is not None:  # per window: (nW, ...) → (B·nW, ...), as timm does
        bias = bias.unsqueeze(0).expand(count // num_windows, -1, -1, -1, -1).flatten(0, 1)

    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout, scale=attn.scale
    )
    out = out.transpose(1, 2).reshape(count, length, -1)
    return attn.proj_drop(attn.proj(out))


def prompted_swin_block(
    block: SwinTransformerBlock,
    x: torch.Tensor,
    prompts: torch.Tensor | None,
    kv_prompt: tuple[torch.Tensor, torch.Tensor] | None,
    adapter: nn.Module | None,
    kv_position: str = "before",
    probe: ColumnProbe | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """timm `SwinTransformerBlock.forward` with visual prompts, KV prompts and an adapter.

    x: (B, H, W, C) patches; prompts: (B, P, C) or None; `probe`: the prompts' column probes.
    Returns both, updated. Prompts share the block's norms, MLP and residuals with the
    patches; only inside attention are they copied per window (and their outputs averaged
    over windows).
    """
    batch, height, width, channels = x.shape
    num_prompts = 0 if prompts is None else prompts.shape[1]
    shift = block.shift_size
    has_shift = any(shift)
    win_h, win_w = block.window_size

    h = block.norm1(x)
    if has_shift:
        h = torch.roll(h, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    h = F.pad(h, (0, 0, 0, (win_w - width % win_w) % win_w, 0, (win_h - height % win_h) % win_h))
    padded_h, padded_w = h.shape[1], h.shape[2]
    windows = window_partition(h, block.window_size).view(-1, block.window_area, channels)
    num_windows = windows.shape[0] // batch
    shift_mask = block.get_attn_mask(h) if block.dynamic_mask else block.attn_mask
    if num_prompts:
        copies = block.norm1(prompts).unsqueeze(1).expand(-1, num_windows, -1, -1)
        windows = torch.cat([copies.reshape(-1, num_prompts, channels), windows], dim=1)

    out = prompted_window_attention(
        block.attn, windows, num_windows, shift_mask, num_prompts, kv_prompt, kv_position,
        probe if num_prompts else None,
    )
    prompt_out = out[:, :num_prompts].reshape(batch, num_windows, num_prompts, channels).mean(1)
    out = out[:, num_prompts:].reshape(-1, win_h, win_w, channels)
    h = window_reverse(out, block.window_size, padded_h, padded_w)[:, :height, :width]
    if has_shift:
        h = torch.roll(h, shifts=shift, dims=(1, 2))

    x = x + block.drop_path1(h)
    tokens = x.reshape(batch, -1, channels)
    if num_prompts:
        tokens = torch.cat([prompts + block.drop_path1(prompt_out), tokens], dim=1)
    h = block.mlp(block.norm2(tokens))
    if adapter is not None:
        h = adapter(h)
    tokens = tokens + block.drop_path2(h)
    x = tokens[:, num_prompts:].reshape(batch, height, width, channels)
    return x, (tokens[:, :num_prompts] if num_prompts else None)
