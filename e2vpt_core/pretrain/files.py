"""The files a pretraining run leaves in its output directory, besides the weights.

``recipe.json`` records how the checkpoint was made; ``config.json`` is timm's hub layout
(architecture, model args, pretrained config), so the directory loads through
``create_model`` like any bundled backbone without a hand-written config.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import timm
import torch

from ..fileio import atomic_write

HUB_CONFIG_FILE = "config.json"
# timm's registered architecture the bundled ViT's model args override.
HUB_ARCHITECTURE = "vit_tiny_patch16_224"


def write_json(data: dict) -> Callable[[str], None]:
    """A writer for ``atomic_write``: ``data`` as indented JSON."""
    def write(p: str) -> None:
        with open(p, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")

    return write


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hardware(device: torch.device, threads: int) -> dict:
    """What the run ran on, for the recipe (pretraining wall time depends on it)."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "torch_threads": threads,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def hub_config(model_args: dict, mean: tuple, std: tuple, tag: str) -> dict:
    """timm's hub ``config.json`` for the bundled ViT with ``model_args``."""
    size = model_args["img_size"]
    return {
        "architecture": HUB_ARCHITECTURE,
        "model_args": dict(model_args),
        "pretrained_cfg": {
            "input_size": [model_args["in_chans"], size, size],
            "mean": list(mean),
            "std": list(std),
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "num_classes": 0,
            "tag": tag,
            "hf_hub_id": None,
        },
    }


def write_hub_config(out: Path, model_args: dict, mean: tuple, std: tuple, tag: str) -> None:
    atomic_write(out / HUB_CONFIG_FILE, write_json(hub_config(model_args, mean, std, tag)))
