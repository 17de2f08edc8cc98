"""Dataset specs: ``builtin:<task>``, ``vtab:<task dir>``, ``fgvc:<root>``, ``folder:<tree>``.

A spec string is what the CLI, the app and the run store pass around; parsing it checks
the kind, the builtin task name or that the path is an existing folder, so mistakes are
reported before any training starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .builtin import BUILTIN_TASKS
from .common import DatasetError

DATASET_KINDS: tuple[str, ...] = ("builtin", "vtab", "fgvc", "folder")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec.

    ``name_or_path`` is the builtin task name or an absolute folder path; ``image_root``
    (FGVC only) overrides image-root detection, relative to the dataset root or absolute.
    """

    kind: str
    name_or_path: str
    image_root: str | None = None

    @property
    def name(self) -> str:
        """Task name or the folder's base name (``cifar``, ``CUB_200_2011`` ...)."""
        return self.name_or_path if self.kind == "builtin" else Path(self.name_or_path).name

    @property
    def path(self) -> Path | None:
        """The dataset folder, or None for builtin tasks."""
        return None if self.kind == "builtin" else Path(self.name_or_path)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name_or_path}"


def parse_dataset_spec(spec: str | DatasetSpec, *, image_root: str | None = None) -> DatasetSpec:
    """Parse and check a spec string; raise DatasetError (a ValueError) saying what is wrong."""
    if isinstance(spec, DatasetSpec) and image_root is None:
        return spec
    text = str(spec).strip()
    kind, sep, rest = text.partition(":")
    kind, rest = kind.strip().lower(), rest.strip()
    if not sep or kind not in DATASET_KINDS:
        raise DatasetError(
            f"bad dataset spec {text!r}: expected <kind>:<task or path> with kind one of "
            f"{', '.join(DATASET_KINDS)} (e.g. builtin:digits, vtab:/data/vtab-1k/cifar)"
        )
    if image_root is not None and kind != "fgvc":
        raise DatasetError(f"image_root only applies to fgvc datasets, not {kind!r}")
    if kind == "builtin":
        if rest not in BUILTIN_TASKS:
            raise DatasetError(
                f"unknown builtin task {rest!r} in {text!r}; allowed: "
                f"{', '.join(sorted(BUILTIN_TASKS))}"
            )
        return DatasetSpec(kind, rest)
    if not rest:
        raise DatasetError(f"dataset spec {text!r} names no path")
    path = os.path.abspath(os.path.expanduser(rest))
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # stored with the run as text, shown on the pages
        raise DatasetError(f"dataset path {os.fsencode(path)!r} is not UTF-8 text: rename "
                           "it") from None
    if not os.path.exists(path):
        raise DatasetError(f"dataset path for {kind!r} does not exist: {path}")
    if not os.path.isdir(path):
        raise DatasetError(f"dataset path for {kind!r} is not a folder: {path}")
    return DatasetSpec(kind, path, image_root)
