"""Datasets for visual prompt tuning: built-in offline tasks, VTAB-1k, FGVC and folders.

Everything goes through a spec string (see :func:`parse_dataset_spec`) and a split role
(``train``, ``val``, ``trainval``, ``test``)::

    ds = load_dataset("builtin:digits", "train", transform=build_transform(
        "builtin:digits", resolve_data_config(model=backbone), train=True))
"""

from __future__ import annotations

from .builtin import (
    BUILTIN_IMAGE_SIZE,
    BUILTIN_TASKS,
    BUILTIN_TEST_SIZE,
    builtin_classes,
    export_builtin,
    generate_builtin,
    load_builtin,
)
from .common import (
    MAX_IMAGE_PIXELS,
    SPLIT_ROLES,
    VTAB_SPLIT_NAMES,
    ArrayDataset,
    DatasetError,
    DatasetWarning,
    ImageListDataset,
    ImageRecord,
    LabeledDataset,
    normalize_split,
)
from .fgvc import load_fgvc
from .folder import load_folder
from .load import load_dataset
from .spec import DATASET_KINDS, DatasetSpec, parse_dataset_spec
from .transforms import build_transform
from .verify import verify_dataset
from .vtab import VTAB_GROUPS, VTAB_TASKS, VtabTask, load_vtab

__all__ = [
    "BUILTIN_IMAGE_SIZE",
    "BUILTIN_TASKS",
    "BUILTIN_TEST_SIZE",
    "DATASET_KINDS",
    "MAX_IMAGE_PIXELS",
    "SPLIT_ROLES",
    "VTAB_GROUPS",
    "VTAB_SPLIT_NAMES",
    "VTAB_TASKS",
    "ArrayDataset",
    "DatasetError",
    "DatasetWarning",
    "DatasetSpec",
    "ImageListDataset",
    "ImageRecord",
    "LabeledDataset",
    "VtabTask",
    "build_transform",
    "builtin_classes",
    "export_builtin",
    "generate_builtin",
    "load_builtin",
    "load_dataset",
    "load_fgvc",
    "load_folder",
    "load_vtab",
    "normalize_split",
    "parse_dataset_spec",
    "verify_dataset",
]
