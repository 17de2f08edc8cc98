"""The software and hardware a report was written on, and what its runs recorded.

Accuracies move with library versions and devices (bf16 on a GPU, float32 on a CPU), so a
shared report says both where it was written and, where a run's summary holds one
(`environment`), where that run trained.
"""

from __future__ import annotations

from typing import Any

from ..train.device import machine

__all__ = ["RECORDED", "machine", "recorded"]

RECORDED = "environment"  # the run-summary key a run's own environment is read from


def recorded(summary: dict[str, Any]) -> dict[str, str] | None:
    """The environment a run recorded in its summary, None where it recorded none."""
    found = summary.get(RECORDED)
    return {str(key): str(value) for key, value in found.items()} \
        if isinstance(found, dict) and found else None
