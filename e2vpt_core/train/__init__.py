"""Training: the paper's recipe, live reporting to the run store, checkpoint and resume."""

from .config import PAPER_LR_GRID, PAPER_WD_GRID, TrainConfig
from .loop import RunResult, TrainingFailed, resolve_device, train_run

__all__ = [
    "PAPER_LR_GRID",
    "PAPER_WD_GRID",
    "RunResult",
    "TrainConfig",
    "TrainingFailed",
    "resolve_device",
    "train_run",
]
