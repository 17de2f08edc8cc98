"""A tiny timm Swin (two stages of two blocks) so every Swin test runs in seconds."""

from __future__ import annotations

import torch
from timm.models.swin_transformer import SwinTransformer

TINY_SWIN = dict(img_size=32, patch_size=2, window_size=4, embed_dim=24, depths=(2, 2),
                 num_heads=(2, 4), num_classes=5)


def tiny_swin(seed: int = 0, **overrides) -> SwinTransformer:
    torch.manual_seed(seed)
    return SwinTransformer(**{**TINY_SWIN, **overrides}).eval()
