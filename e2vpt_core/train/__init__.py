"""Training: the paper's recipe, live reporting to the run store, checkpoint and resume.

`TrainConfig` and the grids are plain data; the loop's names are imported on first use
(PEP 562), so reading or writing a run's config does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names
from .config import PAPER_LR_GRID, PAPER_WD_GRID, TrainConfig

if TYPE_CHECKING:
    from .device import resolve_device
    from .loop import RunResult, TrainingFailed, train_run

_LOOP = {"RunResult": ".loop", "TrainingFailed": ".loop", "train_run": ".loop",
         "resolve_device": ".device"}

__all__ = ["PAPER_LR_GRID", "PAPER_WD_GRID", "RunResult", "TrainConfig", "TrainingFailed",
           "resolve_device", "train_run"]


__getattr__, __dir__ = lazy_names(__name__, globals(), _LOOP)
