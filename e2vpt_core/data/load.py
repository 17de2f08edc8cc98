"""One entry point for every dataset kind: a spec string and a split role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from .builtin import load_builtin
from .common import LabeledDataset
from .fgvc import load_fgvc
from .folder import load_folder
from .spec import DatasetSpec, parse_dataset_spec
from .vtab import load_vtab


def load_dataset(
    spec: str | DatasetSpec,
    split: str,
    transform: Callable[[Image.Image], Any] | None = None,
    *,
    seed: int = 0,
) -> LabeledDataset:
    """Load one split of any supported dataset.

    ``seed`` picks the generated instance of a builtin task and the val split drawn from
    a folder tree; VTAB-1k and FGVC splits are fixed by their files and ignore it.
    """
    parsed = parse_dataset_spec(spec)
    if parsed.kind == "builtin":
        return load_builtin(parsed.name_or_path, split, transform, seed=seed)
    if parsed.kind == "vtab":
        return load_vtab(parsed.name_or_path, split, transform)
    if parsed.kind == "fgvc":
        return load_fgvc(parsed.name_or_path, split, transform, image_root=parsed.image_root)
    return load_folder(parsed.name_or_path, split, transform, seed=seed)
