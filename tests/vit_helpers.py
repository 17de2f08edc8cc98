"""Tiny timm ViTs so every model test runs in seconds on a CPU."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=7)

# Prefix-token and pooling variants the prompted model must handle.
VARIANTS = {
    "cls-token": {},
    "avg-pool-no-cls": dict(class_token=False, global_pool="avg"),
    "registers": dict(reg_tokens=2),
    "no-embed-class-fc-norm": dict(no_embed_class=True, global_pool="avg", fc_norm=True),
    "layer-scale-qk-norm": dict(init_values=0.1, qk_norm=True),
}


def tiny_vit(seed: int = 0, **overrides) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(**{**TINY_VIT, **overrides}).eval()
