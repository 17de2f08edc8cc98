"""Prompted backbones."""

from .common import PromptedModel
from .compaction import compact_prompts
from .factory import BUILTIN_BACKBONES, build_backbone, create_model, load_backbone_checkpoint
from .peft_layers import merge_lora
from .ssl import create_mae_backbone, load_moco_v3_checkpoint
from .swin import PromptedSwin
from .vit import PromptedViT

__all__ = [
    "BUILTIN_BACKBONES",
    "PromptedModel",
    "PromptedSwin",
    "PromptedViT",
    "build_backbone",
    "compact_prompts",
    "create_mae_backbone",
    "create_model",
    "load_backbone_checkpoint",
    "load_moco_v3_checkpoint",
    "merge_lora",
]
