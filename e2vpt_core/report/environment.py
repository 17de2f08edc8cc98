"""The software and hardware a report was written on, and what its runs recorded.

Accuracies move with library versions and devices (bf16 on a GPU, float32 on a CPU), so a
shared report says both where it was written and, where a run's summary holds one
(`environment`), where that run trained.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

RECORDED = "environment"  # the run-summary key a run's own environment is read from


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """Python, the libraries a result depends on, the device, CPUs and OS of this machine."""
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        device = f"cuda: {', '.join(names)}"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps (Apple GPU)"
    else:
        device = f"cpu: {platform.processor() or platform.machine()}"
    return {"python": platform.python_version(), "e2vpt-core": _version("e2vpt-core"),
            "torch": torch.__version__, "timm": _version("timm"),
            "plotly": _version("plotly"), "device": device,
            "CUDA (torch build)": torch.version.cuda or "none",
            "CPUs": str(os.cpu_count()), "OS": platform.platform()}


def recorded(summary: dict[str, Any]) -> dict[str, str] | None:
    """The environment a run recorded in its summary, None where it recorded none."""
    found = summary.get(RECORDED)
    return {str(key): str(value) for key, value in found.items()} \
        if isinstance(found, dict) and found else None
