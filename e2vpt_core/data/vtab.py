"""VTAB-1k image-folder layout: ``<task>/{train800,val200,train800val200,test}.txt``.

Each list line is ``images/<split>/000000.jpg <label>`` with the path relative to the
task folder. Known task folders get their official class count; any other folder (for
example an exported builtin task) takes its classes from the training list: labels there
must run 0..C-1, and a label found only in ``val200``/``test`` is an error, not a class.
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
    warn_dataset,
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


# The lists a task trains on; every class must have images there.
_TRAINING_LISTS: tuple[str, ...] = (VTAB_SPLIT_NAMES["train"], VTAB_SPLIT_NAMES["trainval"])


def list_file_path(task_dir: Path, split: str) -> Path:
    """Where the list file of a split (role or literal name) is expected."""
    return task_dir / f"{VTAB_SPLIT_NAMES[normalize_split(split)]}.txt"


def read_list_file(list_file: Path, task_dir: Path) -> list[ImageRecord]:
    """Parse ``<relative path> <label>`` lines; blank lines are skipped, bad ones raise.

    A byte-order mark is dropped. A line repeated word for word is kept (each copy is a
    sample) with a warning; one image listed with two labels is an error.
    """
    if not list_file.is_file():
        raise DatasetError(f"missing split file: expected {list_file}")
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read split file {list_file}: {exc}") from exc
    records: list[ImageRecord] = []
    first_seen: dict[str, tuple[int, int]] = {}
    repeats: list[str] = []
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
        seen = first_seen.setdefault(parts[0], (lineno, label))
        if seen != (lineno, label):
            if seen[1] != label:
                raise DatasetError(f"{origin}: {parts[0]} has label {label} here but "
                                   f"{seen[1]} at line {seen[0]}")
            repeats.append(f"line {lineno} repeats line {seen[0]}")
        records.append(ImageRecord(task_dir / parts[0], label, origin))
    if not records:
        raise DatasetError(f"split file {list_file} lists no images")
    if repeats:
        warn_dataset(f"{list_file}: {len(repeats)} duplicate line(s), each counted as a "
                     f"sample: {'; '.join(repeats[:3])}")
    return records


def _check_labels(records: list[ImageRecord], num_classes: int, task: str) -> None:
    for record in records:
        if not 0 <= record.label < num_classes:
            raise DatasetError(
                f"{record.origin}: label {record.label} out of range for {task} "
                f"(num_classes={num_classes}, labels must be 0..{num_classes - 1})"
            )


def vtab_num_classes(task_dir: Path) -> int:
    """Official count for known tasks; otherwise the labels of the training list, which
    must be 0..C-1 without gaps and cover every label the other lists use."""
    known = VTAB_TASKS.get(task_dir.name)
    if known is not None:
        return known.num_classes
    lists = {
        name: read_list_file(task_dir / f"{name}.txt", task_dir)
        for name in dict.fromkeys(VTAB_SPLIT_NAMES.values())
        if (task_dir / f"{name}.txt").is_file()
    }
    if not lists:
        expected = ", ".join(f"{n}.txt" for n in VTAB_SPLIT_NAMES.values())
        raise DatasetError(f"{task_dir}: no VTAB-1k list files found (expected {expected})")
    training = [name for name in _TRAINING_LISTS if name in lists]
    if not training:  # nothing to train on: count what is there
        return max(r.label for records in lists.values() for r in records) + 1
    trained = {r.label for name in training for r in lists[name]}
    num_classes = max(trained) + 1
    gaps = sorted(set(range(num_classes)) - trained)
    if gaps:
        raise DatasetError(
            f"{task_dir / training[0]}.txt: labels {gaps} never occur, but the largest is "
            f"{num_classes - 1}: labels of a task not in VTAB_TASKS must be 0..C-1 without gaps")
    for records in lists.values():
        for record in records:
            if record.label not in trained:
                raise DatasetError(
                    f"{record.origin}: label {record.label} has no training image in "
                    f"{', '.join(f'{n}.txt' for n in training)} (labels 0..{num_classes - 1})")
    return num_classes


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
