"""Which torch device a run uses (`auto` is the GPU when there is one, else the CPU),
whether it trains under bf16 autocast there, and the machine a run trains on, recorded in
its summary."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available, else cpu; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


_NATIVE_BF16 = frozenset({"amx_bf16", "avx512_bf16"})  # x86 flags of bf16 matrix units
_CPUINFO = Path("/proc/cpuinfo")


def _cpu_flags() -> frozenset[str]:
    """The x86 CPU's feature flags as /proc/cpuinfo lists them; empty where that file does
    not exist (macOS, Windows) or cannot be read."""
    try:
        text = _CPUINFO.read_text(errors="replace")
    except OSError:
        return frozenset()
    fields = (line.partition(":") for line in text.splitlines())
    return frozenset(word for key, _, value in fields if key.strip() == "flags"
                     for word in value.split())


@functools.cache
def _native_cpu_bf16() -> bool:
    return bool(_NATIVE_BF16 & _cpu_flags())


def bf16_autocast(device: torch.device) -> bool:
    """Whether training on `device` uses bf16 autocast (when the config's `amp` allows it):
    on a GPU, and on a CPU with native bf16 matrix units (AMX or AVX512-BF16), where it makes
    a ViT-B/16 training step ~2.6x faster than fp32; not on other CPUs, where bf16 is
    emulated and slower than fp32, nor on other devices (mps, ...)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and _native_cpu_bf16()


def training_precision(amp: bool, device: torch.device) -> str:
    """What a run with `amp` set so trains in on `device`, as its summary records it."""
    return "bf16 autocast" if amp and bf16_autocast(device) else "fp32"


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
