"""Self-supervised ViT-B backbones of the paper: MoCo v3 and MAE (docs/METHOD.md, "Backbones").

MoCo v3 is not in timm; its ViT-B comes as a training checkpoint (`vit-b-300ep.pth.tar`):
`state_dict` holds `module.base_encoder.<timm keys>` next to the momentum encoder, the
predictor and the encoder's projection MLP (`base_encoder.head.*`). Only the base encoder's
backbone weights are kept. `load_backbone_checkpoint` (and so `create_model(...,
checkpoint_path=...)`) recognises this layout by its keys; a linear-probe checkpoint
(`module.<timm keys>` + a linear `head`) already loads as a plain timm checkpoint.

MAE: timm's `vit_base_patch16_224.mae` builds CLS-token pooling behind the pretraining
`norm` (global_pool='token', num_classes=0). MAE's fine-tuning code instead averages the
patch tokens and normalises the average with a new `fc_norm`; `create_mae_backbone` builds
that variant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import load_state_dict
from timm.models.vision_transformer import VisionTransformer

from .weights import load_backbone_state

MOCO_ENCODER_PREFIX = "base_encoder."
_DDP_PREFIX = "module."
# MAE pretraining keys that the average-pooled encoder does not use.
_MAE_UNUSED = ("norm.", "decoder", "mask_token")


def _unwrap(key: str) -> str:
    return key[len(_DDP_PREFIX):] if key.startswith(_DDP_PREFIX) else key


def is_moco_v3_state(state: Mapping[str, Any]) -> bool:
    """True for a MoCo v3 pretraining state dict (keys under `[module.]base_encoder.`)."""
    return any(_unwrap(key).startswith(MOCO_ENCODER_PREFIX) for key in state)


def moco_v3_encoder_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base encoder's weights under timm's ViT keys.

    The momentum encoder and the predictor are dropped, and so is the projection MLP
    (`head.*`): the prompted model brings its own head.
    """
    encoder = {}
    for key, value in state.items():
        key = _unwrap(key)
        if key.startswith(MOCO_ENCODER_PREFIX):
            key = key[len(MOCO_ENCODER_PREFIX):]
            if not key.startswith("head."):
                encoder[key] = value
    if not encoder:
        raise ValueError(
            f"no MoCo v3 base-encoder weights: expected keys starting with "
            f"'{_DDP_PREFIX}{MOCO_ENCODER_PREFIX}'"
        )
    return encoder


def load_moco_v3_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load the base encoder of a MoCo v3 checkpoint into a timm ViT, in place.

    The file is read with `torch.load(weights_only=True)` (nothing is unpickled beyond
    tensors and plain containers); any key or shape mismatch outside the classifier is an
    error naming the keys, as in `load_backbone_checkpoint`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MoCo v3 checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read MoCo v3 checkpoint {path}: {error}") from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not is_moco_v3_state(state):
        raise ValueError(
            f"{path} is not a MoCo v3 pretraining checkpoint: expected a 'state_dict' with "
            f"keys '{_DDP_PREFIX}{MOCO_ENCODER_PREFIX}*'"
        )
    load_backbone_state(model, moco_v3_encoder_state(state), path)


def create_mae_backbone(
    name: str = "vit_base_patch16_224.mae",
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    **model_args: Any,
) -> VisionTransformer:
    """MAE's encoder pooled as MAE fine-tunes it: patch-token average, then a new fc_norm.

    The pretraining checkpoint has a final `norm` and no `fc_norm`: `norm.*` (and any
    decoder keys) are dropped and `fc_norm` starts as LayerNorm's identity init. Weights come
    from `checkpoint_path` (MAE's own `.pth` or a timm file) or, with `pretrained`, from
    timm's source for `name`.
    """
    model_args = {"global_pool": "avg", "fc_norm": True, **model_args}
    model = timm.create_model(name, pretrained=False, num_classes=0, **model_args)
    if checkpoint_path is not None:
        source: str | os.PathLike = checkpoint_path
        state = load_state_dict(str(checkpoint_path), use_ema=False, weights_only=True)
    elif pretrained:
        source = name
        token_pooled = {k: v for k, v in model_args.items() if k not in ("global_pool", "fc_norm")}
        state = timm.create_model(name, pretrained=True, num_classes=0, **token_pooled).state_dict()
    else:
        return model
    state = {k: v for k, v in state.items() if not k.startswith(_MAE_UNUSED)}
    state.update({f"fc_norm.{k}": v for k, v in model.fc_norm.state_dict().items()})
    load_backbone_state(model, state, source)
    return model
