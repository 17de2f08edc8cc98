"""E²VPT and its visual prompt tuning baselines on timm vision transformers.

The public names are imported on first use (PEP 562), so that importing a light submodule
such as `e2vpt_core.config` or `e2vpt_core.store` does not pull in torch and timm; the app's
pages that draw no model render without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .artifacts import load_adapter, save_adapter
    from .config import METHODS, PromptConfig
    from .models import PromptedSwin, PromptedViT, create_model, merge_lora

__version__ = "0.1.0"

_SOURCES = {"METHODS": ".config", "PromptConfig": ".config",
            "PromptedSwin": ".models", "PromptedViT": ".models", "create_model": ".models",
            "merge_lora": ".models", "load_adapter": ".artifacts", "save_adapter": ".artifacts"}

__all__ = ["METHODS", "PromptConfig", "PromptedSwin", "PromptedViT", "create_model",
           "load_adapter", "merge_lora", "save_adapter"]


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])
