"""The software and hardware a report was written on, and what its runs recorded.

Accuracies move with library versions, devices and precision (bf16 autocast on a GPU or a
CPU with native bf16 units, float32 elsewhere), so a shared report says both where it was
written and, where a run's summary holds one (`environment`), where that run trained and
in which precision (`precision`).
"""

from __future__ import annotations

from typing import Any

from ..train.device import machine

__all__ = ["PRECISION", "RECORDED", "machine", "recorded"]

RECORDED = "environment"  # the run-summary key a run's own environment is read from
PRECISION = "precision"  # the run-summary key of the precision it trained in


def recorded(summary: dict[str, Any]) -> dict[str, str] | None:
    """The environment a run recorded in its summary, with the precision it trained in
    where it recorded one; None where it recorded no environment."""
    found = summary.get(RECORDED)
    if not isinstance(found, dict) or not found:
        return None
    result = {str(key): str(value) for key, value in found.items()}
    if summary.get(PRECISION) is not None:
        result[PRECISION] = str(summary[PRECISION])
    return result
