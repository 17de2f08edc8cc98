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


TINY_DIR_ARGS = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


def write_backbone_dir(directory, architecture: str, model_args: dict, model):
    """`model` saved in timm's hub layout (config.json + model.safetensors), as users ship a
    backbone: 32-px inputs normalised with mean and std 0.5."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architecture": architecture,
        "model_args": model_args,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3,
                           "crop_pct": 1.0, "interpolation": "bilinear", "hf_hub_id": None},
    }
    (directory / "config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), str(directory / "model.safetensors"))
    return directory


def write_tiny_backbone_dir(directory, seed: int = 0):
    torch.manual_seed(seed)
    model = VisionTransformer(**TINY_DIR_ARGS, num_classes=0)
    return write_backbone_dir(directory, "vit_tiny_patch16_224", TINY_DIR_ARGS, model)
