"""Recipe transforms, sized and normalised from a timm data config (docs/METHOD.md, "Training
recipe").

VTAB-1k and builtin tasks: resize straight to the input size, no crop, no augmentation.
FGVC: train = resize to ``round(size / 0.875)`` (256 for 224) -> random crop -> horizontal
flip; eval = the same resize -> centre crop. The 0.875 ratio is the recipe's, so the
model's own ``crop_pct`` is deliberately not used.

Folder trees get the FGVC crop without the flip (``config.KIND_AUGMENTATION`` says why).
``augment`` overrides the kind's recipe: ``none`` is the VTAB recipe, ``crop`` the FGVC
one without the flip, ``crop-flip`` the FGVC one; ``auto`` keeps the kind's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.data.transforms import str_to_interp_mode
from torchvision import transforms as T

from ..config import AUGMENTATIONS, KIND_AUGMENTATION
from .common import DatasetError
from .spec import DATASET_KINDS, DatasetSpec

RECIPE_CROP_PCT = 0.875


def _input_hw(data_config: Mapping[str, Any]) -> tuple[int, int]:
    size = data_config.get("input_size")
    if isinstance(size, int):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) in (2, 3):
        return int(size[-2]), int(size[-1])
    raise DatasetError(f"data_config['input_size'] must be an int or (C, H, W), got {size!r}")


def recipe_augmentation(spec: str | DatasetSpec, augment: str = "auto") -> str:
    """The augmentation a run of this dataset gets: ``augment``, or the kind's if ``auto``."""
    kind = spec.kind if isinstance(spec, DatasetSpec) else str(spec).split(":", 1)[0].strip()
    if kind not in DATASET_KINDS:
        raise DatasetError(
            f"unknown dataset kind {kind!r} in {spec!r}; allowed: {', '.join(DATASET_KINDS)}"
        )
    if augment not in AUGMENTATIONS:
        raise DatasetError(f"unknown augmentation {augment!r}; allowed: "
                           f"{', '.join(AUGMENTATIONS)}")
    return KIND_AUGMENTATION[kind] if augment == "auto" else augment


def build_transform(
    spec: str | DatasetSpec, data_config: Mapping[str, Any], *, train: bool,
    augment: str = "auto",
) -> T.Compose:
    """The recipe's image -> normalised CHW tensor transform for a dataset kind.

    ``spec`` is a dataset spec or just its kind (``"fgvc"``); only the kind matters.
    ``data_config`` is what ``timm.data.resolve_data_config(model=...)`` returns; its
    input size, mean, std and interpolation are used.
    """
    augmentation = recipe_augmentation(spec, augment)
    height, width = _input_hw(data_config)
    interpolation = str_to_interp_mode(data_config.get("interpolation", "bilinear"))
    try:
        normalize = T.Normalize(mean=tuple(data_config["mean"]), std=tuple(data_config["std"]))
    except KeyError as exc:
        raise DatasetError(f"data_config lacks {exc.args[0]!r}") from None
    if augmentation == "none":
        steps: list[Any] = [T.Resize((height, width), interpolation=interpolation)]
    else:
        resize = T.Resize(round(max(height, width) / RECIPE_CROP_PCT), interpolation=interpolation)
        if train:
            flip = [T.RandomHorizontalFlip()] if augmentation == "crop-flip" else []
            steps = [resize, T.RandomCrop((height, width)), *flip]
        else:
            steps = [resize, T.CenterCrop((height, width))]
    return T.Compose([*steps, T.ToTensor(), normalize])
