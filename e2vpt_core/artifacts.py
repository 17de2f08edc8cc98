"""Adapter artifacts: only the trained state (prompts, masks, head, adapters) + a JSON config.

Like PEFT's `save_pretrained`: safetensors for tensors (no pickles), JSON naming the
backbone, written atomically so a crash never leaves a half-written artifact. The JSON also
records the weights' SHA-256, so a damaged copy is refused (`check_adapter`) rather than
loaded or exported.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .config import PromptConfig
from .fileio import atomic_write, write_safetensors
from .models.factory import create_model
from .models.swin import PromptedSwin
from .models.vit import PromptedViT
from .store import DamagedFileError, read_safetensors

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
FORMAT = "e2vpt-adapter"
FORMAT_VERSION = 1
_MASK_KEYS = ("token_mask", "segment_mask")


class ArtifactError(DamagedFileError):
    """An adapter artifact that cannot be used (damaged, not ours); one line naming it."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def trainable_state_dict(model: PromptedViT) -> dict[str, torch.Tensor]:
    """Every trained tensor plus the pruning masks, detached; the frozen backbone is left out."""
    state = {name: param.detach() for name, param in model.trainable_parameters()}
    state.update({key: getattr(model, key).detach() for key in _MASK_KEYS})
    return state


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
    weights_file = directory / WEIGHTS_NAME
    write_safetensors(weights_file, trainable_state_dict(model))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": model.backbone_name,
        "backbone_source": model.backbone_source,
        "backbone_signature": backbone_signature(model),
        "num_classes": model.num_classes,
        "prompt_config": model.config.to_dict(),
        "weights_sha256": _sha256(weights_file),
    }
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
    meta, state = check_adapter(directory)
    prompt_config = PromptConfig.from_dict(meta["prompt_config"])

    if backbone is None:
        backbone = meta["backbone"]
        if backbone is None:
            raise ValueError(f"{directory / CONFIG_NAME} names no backbone; pass "
                             "backbone=<name or model>")
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
    _load_trained_state(model, state, directory / WEIGHTS_NAME)
    return model


def check_adapter(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """An artifact's config and tensors, verified before use or export: both files are
    present and readable, the config is ours, and the weights match the recorded SHA-256
    (artifacts from before it was recorded are checked for structure only)."""
    directory = Path(directory)
    config_file, weights_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for required in (config_file, weights_file):
        if not required.is_file():
            raise FileNotFoundError(f"not an adapter artifact: {required} is missing")
    try:
        meta = json.loads(config_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{config_file} is damaged: not JSON ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{config_file} is not an {FORMAT} config")
    recorded = meta.get("weights_sha256")
    if recorded is not None and _sha256(weights_file) != recorded:
        raise ArtifactError(f"{weights_file} is damaged: its SHA-256 differs from the one "
                            f"recorded in {config_file}")
    try:
        state, _ = read_safetensors(weights_file)
    except DamagedFileError as error:
        raise ArtifactError(str(error)) from error
    return meta, state


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
