"""E²VPT and its visual prompt tuning baselines on timm vision transformers."""

from .artifacts import load_adapter, save_adapter
from .config import METHODS, PromptConfig
from .models import PromptedSwin, PromptedViT, create_model, merge_lora

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "PromptConfig",
    "PromptedSwin",
    "PromptedViT",
    "create_model",
    "load_adapter",
    "merge_lora",
    "save_adapter",
]
