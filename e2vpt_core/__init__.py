"""E²VPT and its visual prompt tuning baselines on timm vision transformers.

The public names are imported on first use (PEP 562), so that importing a light submodule
such as `e2vpt_core.config` or `e2vpt_core.store` does not pull in torch and timm; the app's
pages that draw no model render without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names

if TYPE_CHECKING:
    from .artifacts import load_adapter, save_adapter
    from .config import PromptConfig
    from .methods import METHODS, REGISTRY, Method, get_method
    from .models import PromptedSwin, PromptedViT, compact_prompts, create_model, merge_lora

__version__ = "0.1.0"

_SOURCES = {"METHODS": ".methods", "REGISTRY": ".methods", "Method": ".methods",
            "get_method": ".methods", "PromptConfig": ".config",
            "PromptedSwin": ".models", "PromptedViT": ".models", "create_model": ".models",
            "compact_prompts": ".models",
            "merge_lora": ".models", "load_adapter": ".artifacts", "save_adapter": ".artifacts"}

__all__ = ["METHODS", "REGISTRY", "Method", "PromptConfig", "PromptedSwin", "PromptedViT",
           "compact_prompts", "create_model", "get_method", "load_adapter", "merge_lora",
           "save_adapter"]


__getattr__, __dir__ = lazy_names(__name__, globals(), _SOURCES)
