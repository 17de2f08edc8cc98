"""What the prompts look at: a prompted ViT's attention weights, computed explicitly.

The forward uses `scaled_dot_product_attention`, which returns no weights. This pass records
each block's query/key/value projection and its attention output (forward hooks on
`attn.qkv` and `attn.proj`), recomputes the softmax by hand with the block's key-value
prompts, and checks that those weights reproduce the block's own output, so what it reports
is what the model computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .vit import PromptedViT

AGREEMENT = 1e-4  # largest |difference| between the recomputed and the model's attention output


@dataclass
class PromptAttention:
    """Head-averaged attention of one image, per block. Prompt columns follow the prompt's
    index; a prompt removed from a block (`remove` mode) is NaN there.

    cls_to_prompts (blocks, P), cls_to_kv (blocks, T) and cls_to_patches (blocks,): the class
    token's attention mass on each visual prompt, each key-value prompt and all patches;
    prompt_to_patches (blocks, P, patches): each prompt's attention over the patches, in the
    patch grid's row-major order (`grid`)."""

    cls_to_prompts: torch.Tensor
    cls_to_kv: torch.Tensor
    cls_to_patches: torch.Tensor
    prompt_to_patches: torch.Tensor
    grid: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        def plain(tensor: torch.Tensor) -> Any:
            return [[None if v != v else v for v in row] if isinstance(row, list)
                    else (None if row != row else row) for row in tensor.tolist()]
        return {"cls_to_prompts": plain(self.cls_to_prompts),
                "cls_to_kv": plain(self.cls_to_kv),
                "cls_to_patches": plain(self.cls_to_patches),
                "prompt_to_patches": [plain(block) for block in self.prompt_to_patches],
                "grid": list(self.grid)}


def prompt_attention(model: PromptedViT, image: torch.Tensor) -> PromptAttention:
    """The attention of `image` (C, H, W) through `model`, in eval mode, without gradients."""
    _check(model)
    backbone = model.backbone
    records: list[dict[str, torch.Tensor]] = [{} for _ in backbone.blocks]
    hooks = []
    for record, block in zip(records, backbone.blocks, strict=True):
        hooks.append(block.attn.qkv.register_forward_hook(
            lambda _m, args, out, r=record: r.update(x=args[0], qkv=out)))
        hooks.append(block.attn.proj.register_forward_hook(
            lambda _m, args, _out, r=record: r.update(out=args[0])))
    was_training, skipping = model.training, model.skip_unread_tokens
    model.eval()
    model.skip_unread_tokens = False  # every query row, prompts' included
    try:
        with torch.no_grad():
            model(image.unsqueeze(0) if image.dim() == 3 else image[:1])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
        model.skip_unread_tokens = skipping
    per_block = [_block_attention(model, index, record) for index, record in enumerate(records)]
    return _collect(model, per_block)


def _check(model: PromptedViT) -> None:
    if not isinstance(model, PromptedViT):
        raise ValueError("attention maps are computed for ViT backbones; this model is "
                         f"{type(model).__name__}")
    spec = model.config.spec
    if not (spec.visual_prompts or spec.kv_prompts) or spec.block_modules is not None:
        raise ValueError(f"attention maps show what prompts attend to; method "
                         f"{model.config.method!r} has no prompts")
    if getattr(model.backbone, "cls_token", None) is None:
        raise ValueError("attention maps start from the class token; this backbone has none")


def _block_attention(model: PromptedViT, index: int, record: dict[str, torch.Tensor],
                     ) -> torch.Tensor:
    """Block `index`'s head-averaged weights (N queries, S keys: KV prompts included),
    checked against its recorded attention output."""
    attn = model.backbone.blocks[index].attn
    x, qkv = record["x"].float(), record["qkv"].float()
    batch, length, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    q, k, v = qkv.reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    prompt = model._kv_prompt(index)
    if prompt is not None:
        keys, values = (p.float().unsqueeze(0).expand(batch, -1, -1, -1) for p in prompt)
        first = model.config.kv_position == "before"
        k = torch.cat([keys, k] if first else [k, keys], dim=2)
        v = torch.cat([values, v] if first else [v, values], dim=2)
    weights = torch.softmax(q @ k.transpose(-2, -1) * attn.scale, dim=-1)  # (B, H, N, S)
    out = attn.norm((weights @ v).transpose(1, 2).reshape(batch, length, heads * head_dim))
    gate = getattr(attn, "gate", None)
    if gate is not None:
        out = out * gate(x).sigmoid()
    error = (out - record["out"].float()).abs().max().item()
    if error > AGREEMENT:
        raise RuntimeError(f"block {index}: the recomputed attention differs from the "
                           f"model's by {error:.2e}; its attention is not the standard one")
    return weights[0].mean(0)  # (N, S)


def _collect(model: PromptedViT, per_block: list[torch.Tensor]) -> PromptAttention:
    backbone, config = model.backbone, model.config
    prefix, patches = model.num_prefix_tokens, backbone.patch_embed.num_patches
    kv_len = config.kv_prompt_len
    prompt_len = config.visual_prompt_len
    kept = model.layer_kept_tokens() if model.visual_prompts is not None else []
    blocks = len(per_block)
    nan = float("nan")
    cls_prompts = torch.full((blocks, prompt_len), nan)
    prompt_patches = torch.full((blocks, prompt_len, patches), nan)
    cls_kv = torch.zeros(blocks, kv_len)
    cls_patches = torch.zeros(blocks)
    for index, weights in enumerate(per_block):
        queries = weights.shape[0]
        in_sequence = queries - prefix - patches  # visual prompts held in this block
        kv_first = kv_len and config.kv_position == "before"
        offset = kv_len if kv_first else 0  # key columns of the sequence's own tokens
        if kv_len:
            kv_columns = slice(0, kv_len) if kv_first else slice(queries, queries + kv_len)
            cls_kv[index] = weights[0, kv_columns]
        start = offset + prefix + in_sequence
        cls_patches[index] = weights[0, start:start + patches].sum()
        if in_sequence:
            layer = index if config.deep_prompts else 0
            order = (kept[layer] if config.prune_mode == "remove"
                     else torch.arange(prompt_len))
            columns = offset + prefix + torch.arange(in_sequence)
            cls_prompts[index, order] = weights[0, columns]
            rows = prefix + torch.arange(in_sequence)
            prompt_patches[index, order] = weights[rows, start:start + patches]
    grid = tuple(backbone.patch_embed.grid_size)
    return PromptAttention(cls_prompts, cls_kv, cls_patches, prompt_patches, grid)
