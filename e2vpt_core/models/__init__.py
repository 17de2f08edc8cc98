"""Prompted backbones."""

from .factory import BUILTIN_BACKBONES, build_backbone, create_model, load_backbone_checkpoint
from .vit import PromptedViT

__all__ = [
    "BUILTIN_BACKBONES",
    "PromptedViT",
    "build_backbone",
    "create_model",
    "load_backbone_checkpoint",
]
