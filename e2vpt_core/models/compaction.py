"""Pruned prompt tokens leave the model for good (as PEFT's merge_and_unload): smaller artifacts."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

ModelT = TypeVar("ModelT", bound=nn.Module)


def compact_prompts(model: ModelT) -> ModelT:
    """A model holding only `model`'s kept prompt tokens (same logits as `remove` mode).

    With masks per block, layers may keep different numbers of tokens: each layer's are
    packed to the front of max_l P'_l slots, the empty slots are masked, and the compacted
    model runs in `remove` mode, which drops them. The backbone module is shared with
    `model`, not copied. Raises ValueError where the model's `_check_compactable()` does
    (Swin with later-stage prompts).
    """
    model._check_compactable()
    kept = model.layer_kept_tokens()
    width = max(len(index) for index in kept) if model.visual_prompts is not None else 0
    config = model.config.replace(visual_prompt_len=width)
    if not width:
        config = config.replace(masks_per_block=False)
    elif model.masks_per_block:
        config = config.replace(prune_mode="remove")
    compacted = type(model)(model.backbone, model.num_classes, config, model.backbone_name)
    compacted.backbone_source = dict(model.backbone_source)
    compacted.to(device=model.token_mask.device)
    state = {
        name: tensor for name, tensor in model.state_dict().items()
        if not name.startswith("backbone.")
    }
    if model.visual_prompts is not None:
        del state["visual_prompts"]
        state.update(_packed_prompts(model, kept, width))
    result = compacted.load_state_dict(state, strict=False)
    if result.unexpected_keys or any(
        not key.startswith("backbone.") for key in result.missing_keys
    ):
        raise RuntimeError(f"compact() state mismatch: {result}")
    compacted.train(model.training)
    return compacted


def _packed_prompts(
    model: nn.Module, kept: list[torch.Tensor], width: int
) -> dict[str, torch.Tensor]:
    """`visual_prompts` (L, width, d) and masks holding only the kept tokens, each layer's
    first; no `visual_prompts` when nothing is kept."""
    prompts = model.visual_prompts.detach()
    token, segment = model.token_mask.detach(), model.segment_mask.detach()
    if not width:
        return {"token_mask": token.new_zeros(0),
                "segment_mask": segment.new_zeros(0, segment.shape[-1])}
    if not model.masks_per_block:
        return {"visual_prompts": prompts[:, kept[0]], "token_mask": token[kept[0]],
                "segment_mask": segment[kept[0]]}
    layers, _, dim = prompts.shape
    packed = {"visual_prompts": prompts.new_zeros(layers, width, dim),
              "token_mask": token.new_zeros(layers, width),
              "segment_mask": segment.new_zeros(layers, width, segment.shape[-1])}
    for layer, index in enumerate(kept):
        count = len(index)
        packed["visual_prompts"][layer, :count] = prompts[layer, index]
        packed["token_mask"][layer, :count] = token[layer, index]
        packed["segment_mask"][layer, :count] = segment[layer, index]
    return packed
