"""Loading a state dict into a timm backbone, shared by the factory and the SSL loaders.

Its own module so that `factory` (which recognises MoCo v3 files through `ssl`) and `ssl`
(whose loaders end here) do not import each other.
"""

from __future__ import annotations

import os

import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer import checkpoint_filter_fn as swin_checkpoint_filter
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as vit_checkpoint_filter

WEIGHTLESS_PREFIXES = ("head.",)  # the classifier: a backbone is loaded without it


def load_backbone_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike
) -> None:
    """Load a backbone state dict through timm's filters; only classifier keys may differ."""
    if isinstance(model, VisionTransformer):
        state = vit_checkpoint_filter(state, model)
    elif isinstance(model, SwinTransformer):
        state = swin_checkpoint_filter(state, model)
    state = {k: v for k, v in state.items() if not k.startswith(WEIGHTLESS_PREFIXES)}
    expected = model.state_dict()
    wrong_shapes = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state.items()
        if key in expected and tuple(value.shape) != tuple(expected[key].shape)
    ]
    if wrong_shapes:
        raise ValueError(
            f"checkpoint {source} does not match the backbone's shapes: "
            + "; ".join(wrong_shapes[:5])
        )
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(WEIGHTLESS_PREFIXES)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {source} does not fit the backbone: missing keys {missing[:8]}"
            f"{' …' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' …' if len(unexpected) > 8 else ''}"
        )
