"""Pruning and rewinding: importance scores, mask selection, retraining with fixed masks."""

from .importance import (
    Importance,
    ImportanceTracker,
    compute_importance,
    compute_run_importance,
    normalize_segment_scores,
    run_importance,
)
from .rewind import prune_run, rewind_config, rewind_run
from .selection import Selection, select_masks
from .sweep import DEFAULT_RATIOS, inference_ms, sweep_prune, time_modes

__all__ = [
    "DEFAULT_RATIOS",
    "Importance",
    "ImportanceTracker",
    "Selection",
    "compute_importance",
    "compute_run_importance",
    "inference_ms",
    "normalize_segment_scores",
    "prune_run",
    "rewind_config",
    "rewind_run",
    "run_importance",
    "select_masks",
    "sweep_prune",
    "time_modes",
]
