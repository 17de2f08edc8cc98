"""`create_model`: a timm backbone by name or instance, its weights through timm's loaders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import timm
import torch
from timm.models import load_state_dict
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from ..catalog import BUILTIN_BACKBONES
from ..config import PromptConfig
from .ssl import is_moco_v3_state, moco_v3_encoder_state
from .swin import PromptedSwin
from .vit import PromptedViT
from .weights import load_backbone_state

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def create_model(
    backbone: str | VisionTransformer | SwinTransformer,
    num_classes: int,
    config: PromptConfig | None = None,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
) -> PromptedViT | PromptedSwin:
    """Build a prompted model on a timm ViT (`PromptedViT`) or Swin (`PromptedSwin`).

    `backbone` is a timm name with its pretrained tag (`vit_base_patch16_224.orig_in21k`), a
    built-in name (`builtin-vit-tiny`), or a timm VisionTransformer / SwinTransformer
    instance, which the prompted model takes over (its classifier is removed; the prompted
    model has its own head). With `checkpoint_path` the backbone weights come from that
    local file (safetensors, or a PyTorch file read with `weights_only=True`; a MoCo v3
    checkpoint is recognised by its keys); with `pretrained` from timm's own source for the
    tag. Only classifier keys may be missing or unexpected.
    """
    config = config if config is not None else PromptConfig()
    if isinstance(backbone, str):
        name = backbone
        model = build_backbone(name, pretrained=pretrained, checkpoint_path=checkpoint_path)
    elif isinstance(backbone, torch.nn.Module):
        model = backbone
        name = backbone_name_of(model)
        if checkpoint_path is not None:
            load_backbone_checkpoint(model, checkpoint_path)
    else:
        raise TypeError(
            f"backbone must be a timm model name or a timm VisionTransformer, not "
            f"{type(backbone).__name__}"
        )
    if not isinstance(model, (VisionTransformer, SwinTransformer)):
        raise ValueError(
            f"unsupported backbone {name!r} ({type(model).__name__}): only timm "
            "VisionTransformer and SwinTransformer models are supported"
        )
    model.reset_classifier(0)
    wrapper = PromptedSwin if isinstance(model, SwinTransformer) else PromptedViT
    prompted = wrapper(model, num_classes, config, backbone_name=name)
    prompted.backbone_source = {
        "pretrained": bool(pretrained),
        "checkpoint_path": None if checkpoint_path is None else str(checkpoint_path),
    }
    return prompted


def backbone_name_of(model: torch.nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    architecture, tag = cfg.get("architecture"), cfg.get("tag")
    if architecture is None:
        return None
    return f"{architecture}.{tag}" if tag else architecture


def check_backbone_name(name: str) -> None:
    """Fail fast, before any run is created, on a name that cannot be built."""
    if name in BUILTIN_BACKBONES or Path(name).is_dir():
        return
    if Path(name).is_file():
        raise ValueError(
            f"{name} is a file: pass a timm model name with checkpoint_path={name} (CLI: "
            "--backbone NAME --checkpoint FILE), or a directory holding config.json and "
            "model.safetensors"
        )
    if not timm.is_model(name):
        arch = name.split(".")[0]
        similar = timm.list_models(f"*{arch[:12]}*")[:5]
        hint = f"; similar timm names: {similar}" if similar else ""
        raise ValueError(
            f"unknown timm model {name!r}{hint}; built-in backbones: {sorted(BUILTIN_BACKBONES)}"
        )


def build_backbone(
    name: str, pretrained: bool = False, checkpoint_path: str | os.PathLike | None = None
) -> torch.nn.Module:
    """Create a timm (or built-in) backbone without a classifier."""
    check_backbone_name(name)
    directory = BUILTIN_BACKBONES.get(name) or (Path(name) if Path(name).is_dir() else None)
    if directory is not None:
        model = backbone_from_directory(directory, pretrained and checkpoint_path is None)
        if checkpoint_path is not None:
            load_backbone_checkpoint(model, checkpoint_path)
        return model
    if checkpoint_path is not None:
        model = _timm_create(name, pretrained=False, num_classes=0)
        load_backbone_checkpoint(model, checkpoint_path)
        return model
    # With the checkpoint's own class count timm loads strictly: every key must match.
    return _timm_create(name, pretrained=pretrained)


def backbone_from_directory(directory: Path, load_weights: bool = True) -> torch.nn.Module:
    """A backbone stored in timm's hub layout: config.json + model.safetensors."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} not found: a backbone directory needs config.json (architecture, "
            "model_args, pretrained_cfg) and model.safetensors"
        )
    config = json.loads(config_file.read_text())
    model = _timm_create(
        config["architecture"], pretrained=False, num_classes=0,
        pretrained_cfg_overlay=config.get("pretrained_cfg", {}), **config.get("model_args", {}),
    )
    if load_weights:
        weights = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
        if weights is None:
            raise FileNotFoundError(
                f"no weights in {directory}: expected one of {list(WEIGHT_FILES)}; pass "
                "pretrained=False (CLI: --random-init) for a randomly initialised backbone"
            )
        load_backbone_checkpoint(model, weights)
    return model


def _timm_create(name: str, **kwargs) -> torch.nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as error:
        if kwargs.get("pretrained"):
            raise RuntimeError(
                f"could not load pretrained weights for {name!r} ({error}). Without network "
                "access download the weights elsewhere and pass checkpoint_path=<file>."
            ) from error
        raise ValueError(f"cannot create timm model {name!r}: {error}") from error


def load_backbone_checkpoint(model: torch.nn.Module, checkpoint_path: str | os.PathLike) -> None:
    """Load backbone weights from a local file; refuse anything but a missing classifier."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix.lower() in (".npz", ".npy"):
        model.load_pretrained(str(path))  # timm's reader for Google's original .npz files
        return
    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    state = {_strip_wrappers(key): value for key, value in state.items()}
    if is_moco_v3_state(state):
        state = moco_v3_encoder_state(state)
    load_backbone_state(model, state, path)


def _strip_wrappers(key: str) -> str:
    for prefix in ("module.", "model."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key
