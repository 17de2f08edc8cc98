"""Pruning and rewinding: importance scores, mask selection, retraining with fixed masks.

The names are imported on first use (PEP 562), so that `prune.options` (the commands'
choices and defaults, plain data) is read without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names
from .options import DEFAULT_RATIOS

if TYPE_CHECKING:
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
    from .sweep import inference_ms, sweep_prune, time_modes

_SOURCES = {
    **dict.fromkeys(("Importance", "ImportanceTracker", "compute_importance",
                     "compute_run_importance", "normalize_segment_scores", "run_importance"),
                    ".importance"),
    **dict.fromkeys(("prune_run", "rewind_config", "rewind_run"), ".rewind"),
    **dict.fromkeys(("Selection", "select_masks"), ".selection"),
    **dict.fromkeys(("inference_ms", "sweep_prune", "time_modes"), ".sweep"),
}

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


__getattr__, __dir__ = lazy_names(__name__, globals(), _SOURCES)
