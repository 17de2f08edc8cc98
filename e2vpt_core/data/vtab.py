"""VTAB-1k image-folder layout: ``<task>/{train800,val200,train800val200,test}.txt``.

Each list line is ``images/<split>/000000.jpg <label>`` with the path relative to the
task folder. Known task folders get their official class count; any other folder (for
example an exported builtin task) takes ``max label + 1`` over all of its list files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .common import (
    VTAB_SPLIT_NAMES,
    DatasetError,
    ImageListDataset,
    ImageRecord,
    normalize_split,
)


@dataclass(frozen=True)
class VtabTask:
    """Group (Natural / Specialized / Structured) and class count of a VTAB-1k task."""

    group: str
    num_classes: int


VTAB_GROUPS: tuple[str, ...] = ("Natural", "Specialized", "Structured")

VTAB_TASKS: dict[str, VtabTask] = {
    "caltech101": VtabTask("Natural", 102),
    "cifar": VtabTask("Natural", 100),
    "dtd": VtabTask("Natural", 47),
    "oxford_flowers102": VtabTask("Natural", 102),
    "oxford_iiit_pet": VtabTask("Natural", 37),
    "svhn": VtabTask("Natural", 10),
    "sun397": VtabTask("Natural", 397),
    "patch_camelyon": VtabTask("Specialized", 2),
    "eurosat": VtabTask("Specialized", 10),
    "resisc45": VtabTask("Specialized", 45),
    "diabetic_retinopathy": VtabTask("Specialized", 5),
    "clevr_count": VtabTask("Structured", 8),
    "clevr_dist": VtabTask("Structured", 6),
    "dmlab": VtabTask("Structured", 6),
    "kitti": VtabTask("Structured", 4),
    "dsprites_loc": VtabTask("Structured", 16),
    "dsprites_ori": VtabTask("Structured", 16),
    "smallnorb_azi": VtabTask("Structured", 18),
    "smallnorb_ele": VtabTask("Structured", 9),
}


def list_file_path(task_dir: Path, split: str) -> Path:
    """Where the list file of a split (role or literal name) is expected."""
    return task_dir / f"{VTAB_SPLIT_NAMES[normalize_split(split)]}.txt"


def read_list_file(list_file: Path, task_dir: Path) -> list[ImageRecord]:
    """Parse ``<relative path> <label>`` lines; blank lines are skipped, bad ones raise."""
    if not list_file.is_file():
        raise DatasetError(f"missing split file: expected {list_file}")
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read split file {list_file}: {exc}") from exc
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        origin = f"{list_file}:{lineno}"
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(
                f"{origin}: malformed line {line!r}; expected '<image path> <label>'"
            )
        try:
            label = int(parts[1])
        except ValueError:
            raise DatasetError(
                f"{origin}: malformed line {line!r}; label {parts[1]!r} is not an integer"
            ) from None
        records.append(ImageRecord(task_dir / parts[0], label, origin))
    if not records:
        raise DatasetError(f"split file {list_file} lists no images")
    return records


def _check_labels(records: list[ImageRecord], num_classes: int, task: str) -> None:
    for record in records:
        if not 0 <= record.label < num_classes:
            raise DatasetError(
                f"{record.origin}: label {record.label} out of range for {task} "
                f"(num_classes={num_classes}, labels must be 0..{num_classes - 1})"
            )


def vtab_num_classes(task_dir: Path) -> int:
    """Official count for known tasks, else max label + 1 over all present list files."""
    known = VTAB_TASKS.get(task_dir.name)
    if known is not None:
        return known.num_classes
    labels = [
        r.label
        for name in dict.fromkeys(VTAB_SPLIT_NAMES.values())
        if (task_dir / f"{name}.txt").is_file()
        for r in read_list_file(task_dir / f"{name}.txt", task_dir)
    ]
    if not labels:
        expected = ", ".join(f"{n}.txt" for n in VTAB_SPLIT_NAMES.values())
        raise DatasetError(f"{task_dir}: no VTAB-1k list files found (expected {expected})")
    return max(labels) + 1


def load_vtab(
    task_dir: str | Path,
    split: str,
    transform: Callable[[Image.Image], Any] | None = None,
) -> ImageListDataset:
    """One split of a VTAB-1k task folder; images are opened lazily (see ``validate``)."""
    task_dir = Path(task_dir)
    role = normalize_split(split)
    records = read_list_file(list_file_path(task_dir, role), task_dir)
    num_classes = vtab_num_classes(task_dir)
    _check_labels(records, num_classes, task_dir.name)
    return ImageListDataset(
        records,
        source=f"vtab:{task_dir}",
        split=role,
        split_name=VTAB_SPLIT_NAMES[role],
        classes=[str(i) for i in range(num_classes)],
        transform=transform,
    )
