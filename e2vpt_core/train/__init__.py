"""Training: the paper's recipe, live reporting to the run store, checkpoint and resume.

`TrainConfig` and the grids are plain data; the loop's names are imported on first use
(PEP 562), so reading or writing a run's config does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import PAPER_LR_GRID, PAPER_WD_GRID, TrainConfig

if TYPE_CHECKING:
    from .loop import RunResult, TrainingFailed, resolve_device, train_run

_LOOP = ("RunResult", "TrainingFailed", "resolve_device", "train_run")

__all__ = ["PAPER_LR_GRID", "PAPER_WD_GRID", "RunResult", "TrainConfig", "TrainingFailed",
           "resolve_device", "train_run"]


def __getattr__(name: str) -> Any:
    if name not in _LOOP:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".loop", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LOOP])
