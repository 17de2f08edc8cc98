"""Adapter artifacts: only the trained state (prompts, masks, head, adapters) + a JSON config.

Like PEFT's `save_pretrained`: safetensors for tensors (no pickles), JSON naming the
backbone, written atomically so a crash never leaves a half-written artifact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import PromptConfig
from .fileio import atomic_write
from .models.factory import create_model
from .models.swin import PromptedSwin
from .models.vit import PromptedViT

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
FORMAT = "e2vpt-adapter"
FORMAT_VERSION = 1
_MASK_KEYS = ("token_mask", "segment_mask")


def trainable_state_dict(model: PromptedViT) -> dict[str, torch.Tensor]:
    """Every trained tensor plus the pruning masks; the frozen backbone is left out."""
    state = {name: param.detach() for name, param in model.trainable_parameters()}
    for key in _MASK_KEYS:
        state[key] = getattr(model, key).detach()
    return {name: tensor.contiguous().cpu() for name, tensor in state.items()}


def backbone_signature(model: PromptedViT) -> dict[str, object]:
    """Shapes an artifact depends on; checked on load for a clear mismatch error."""
    if isinstance(model, PromptedSwin):
        return model.backbone_signature()
    backbone = model.backbone
    return {
        "embed_dim": backbone.embed_dim,
        "depth": len(backbone.blocks),
        "num_heads": backbone.blocks[0].attn.num_heads,
        "num_prefix_tokens": backbone.num_prefix_tokens,
        "patch_size": list(backbone.patch_embed.patch_size),
    }


def save_adapter(model: PromptedViT, directory: str | os.PathLike) -> Path:
    """Write `adapter_model.safetensors` and `adapter_config.json` into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": model.backbone_name,
        "backbone_source": model.backbone_source,
        "backbone_signature": backbone_signature(model),
        "num_classes": model.num_classes,
        "prompt_config": model.config.to_dict(),
    }
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(trainable_state_dict(model), tmp))
    atomic_write(
        directory / CONFIG_NAME,
        lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"),
    )
    return directory


def load_adapter(
    directory: str | os.PathLike,
    backbone: str | torch.nn.Module | None = None,
    checkpoint_path: str | os.PathLike | None = None,
) -> PromptedViT:
    """Rebuild a saved model. Without `backbone`, the recorded backbone is created again."""
    directory = Path(directory)
    config_file, weights_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for required in (config_file, weights_file):
        if not required.is_file():
            raise FileNotFoundError(f"not an adapter artifact: {required} is missing")
    meta = json.loads(config_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{config_file} is not an {FORMAT} config")
    prompt_config = PromptConfig.from_dict(meta["prompt_config"])

    if backbone is None:
        backbone = meta["backbone"]
        if backbone is None:
            raise ValueError(f"{config_file} names no backbone; pass backbone=<name or model>")
        source = meta.get("backbone_source") or {}
        if checkpoint_path is None:
            checkpoint_path = source.get("checkpoint_path")
        pretrained = bool(source.get("pretrained"))
    else:
        pretrained = isinstance(backbone, str)
    model = create_model(
        backbone, meta["num_classes"], prompt_config,
        pretrained=pretrained and checkpoint_path is None, checkpoint_path=checkpoint_path,
    )
    signature = backbone_signature(model)
    if signature != meta["backbone_signature"]:
        raise ValueError(
            f"backbone does not match the artifact {directory}: artifact was saved for "
            f"{meta['backbone_signature']}, this backbone is {signature}"
        )
    _load_trained_state(model, load_file(str(weights_file)), weights_file)
    return model


def _load_trained_state(model: PromptedViT, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    trained = {name for name, _ in model.trainable_parameters()} | set(_MASK_KEYS)
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(trained - set(state))
    if unexpected or missing:
        raise ValueError(
            f"{source} does not fit the model: missing {missing}, unexpected {unexpected}"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=False)
