"""Which torch device a run uses (`auto` is the GPU when there is one, else the CPU), and
the machine a run trains on, recorded in its summary."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available, else cpu; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """Python, the libraries a result depends on, the device, CPUs and OS of this machine."""
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
