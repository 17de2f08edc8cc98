"""What a stored run's prompts look at, on one image of a split, beside its pruning masks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from timm.data import resolve_model_data_config

from ..artifacts import load_adapter
from ..data import normalize_split
from ..models.attention import prompt_attention
from ..store import RunStore
from ..train.config import TrainConfig
from ..train.data import eval_loader


def run_prompt_attention(store: RunStore, run_id: str, split: str = "test",
                         index: int = 0, with_pixels: bool = False) -> dict[str, Any]:
    """Image `index` of `split` (eval transform) through the run's adapter: the attention
    maps (`models.attention.PromptAttention.to_dict()`), the image's label, and which
    prompts the run's token mask keeps. `with_pixels` adds `pixels`, the image as the
    model sees it ((H, W, 3) uint8, normalisation undone), on which the patch grid lies
    exactly."""
    store.get_run(run_id)  # an unknown run is a KeyError naming it
    directory = store.run_dir(run_id) / "adapter"
    if not directory.is_dir():
        raise FileNotFoundError(f"run {run_id} has no adapter artifact (not completed?)")
    config = TrainConfig.from_dict(store.get_run(run_id)["config"])
    model = load_adapter(directory)
    dataset = eval_loader(config, model.backbone, split, batch_size=1).dataset
    if not 0 <= index < len(dataset):
        raise ValueError(f"--index {index} is outside split {normalize_split(split)!r} "
                         f"({len(dataset)} images: 0 to {len(dataset) - 1})")
    image, label = dataset[index]
    maps = prompt_attention(model, image)
    kept = (model.token_mask.detach() != 0).int().tolist() if model.visual_prompts is not None \
        else []
    result = {"run_id": run_id, "split": normalize_split(split), "index": index,
              "label": int(label), "class": dataset.classes[int(label)],
              "kept_tokens": kept, **maps.to_dict()}
    if with_pixels:
        result["pixels"] = _pixels(image, model.backbone)
    return result


def _pixels(image: torch.Tensor, backbone: torch.nn.Module) -> np.ndarray:
    """A normalised (C, H, W) input back to (H, W, 3) uint8 with the backbone's mean/std."""
    data = resolve_model_data_config(backbone)
    mean, std = (torch.tensor(data[name]).view(-1, 1, 1) for name in ("mean", "std"))
    pixels = (image * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).expand(-1, -1, 3).contiguous().numpy()
