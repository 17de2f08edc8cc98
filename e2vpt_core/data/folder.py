"""Class-per-folder image trees (torchvision ImageFolder style).

Two shapes are understood:

* **Split trees** -- only ``train/``, ``val/`` and ``test/`` folders at the root (``train/``
  required), each class-per-folder. train = ``train/`` and val = ``val/``; without
  ``val/``, a seeded stratified 20% of ``train/`` becomes val and the other 80% train.
  trainval = ``train/`` + ``val/`` (or all of ``train/``). test = ``test/``, falling back
  to ``val/``. A class folder in ``val/`` or ``test/`` must also be in ``train/``.
* **A single tree** -- classes are the sub-folders of the root. A seeded, stratified
  split puts 20% of each class (at least one image when the class has two or more) in
  val and the rest in train; trainval is everything and test is the same as val (there
  is no held-out test set, which ``describe()`` says).

Classes are the sorted class folder names of the training tree. Files are found
recursively; only image extensions count, other files are skipped and their number is
reported by ``describe()``. Files and folders whose names are not UTF-8 text are skipped
with a warning naming them. An empty class folder, and two class folders whose names
differ only in case (``Dog``, ``dog``), are errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .common import (
    IMAGE_EXTENSIONS,
    DatasetError,
    ImageListDataset,
    ImageRecord,
    normalize_split,
    warn_dataset,
)

VAL_FRACTION = 0.2


def _text_names(paths: list[Path]) -> list[Path]:
    """`paths` without those whose name is not UTF-8 text: they are skipped with a warning
    naming them (as bytes), since no message, store or page could carry their names."""
    kept, skipped = [], []
    for path in paths:
        try:
            str(path).encode("utf-8")
            kept.append(path)
        except UnicodeEncodeError:
            skipped.append(repr(os.fsencode(path)))
    if skipped:
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warn_dataset(f"{len(skipped)} file or folder name(s) are not UTF-8 text and are "
                     f"skipped (rename them to use them): {', '.join(skipped[:3])}{more}")
    return kept


def _class_dirs(tree: Path) -> list[Path]:
    return _text_names(sorted(p for p in tree.iterdir()
                              if p.is_dir() and not p.name.startswith(".")))


def _scan(tree: Path) -> tuple[dict[str, list[Path]], int]:
    """Image files per class folder of ``tree`` and the number of skipped other files."""
    classes = _class_dirs(tree)
    if not classes:
        raise DatasetError(f"{tree}: no class folders found (expected <class>/<image> files)")
    found: dict[str, list[Path]] = {}
    skipped = sum(1 for p in tree.iterdir() if p.is_file())
    for folder in classes:
        files = _text_names(sorted(p for p in folder.rglob("*") if p.is_file()))
        images = [
            p for p in files
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        ]
        skipped += len(files) - len(images)
        if not images:
            raise DatasetError(f"empty class folder (no image files): {folder}")
        found[folder.name] = images
    return found, skipped


def stratified_split(
    labels: list[int], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (train, val): per class, a seeded shuffle puts ``fraction`` into val."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    train, val = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        n_val = 0 if len(members) < 2 else max(1, round(fraction * len(members)))
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return sorted(train), sorted(val)


def _records(
    found: dict[str, list[Path]], index: dict[str, int], tree: Path
) -> list[ImageRecord]:
    return [
        ImageRecord(path, index[name], f"{tree} class folder {name!r}")
        for name, paths in found.items()
        for path in paths
    ]


SPLIT_FOLDERS: tuple[str, ...] = ("train", "val", "test")


def _layout(root: Path) -> dict[str, Path]:
    """The trees to scan: ``{"train": ..., "val": ..., "test": ...}`` for a split tree, else
    ``{"all": root}``. A ``train/`` beside other class folders is a class named "train"."""
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    folders = {p.name: p for p in _class_dirs(root)}
    splits = {name: folders[name] for name in SPLIT_FOLDERS if name in folders}
    others = sorted(set(folders) - set(splits))
    if not splits or (others and list(splits) == ["train"]):
        return {"all": root}
    if others:
        raise DatasetError(f"{root}: split folders {sorted(splits)} beside other folders "
                           f"{others[:5]}: keep class folders inside train/, val/, test/")
    if "train" not in splits:
        raise DatasetError(f"{root}: split folders {sorted(splits)} but no train/ folder")
    return splits


def _check_classes(scans: dict[str, tuple[dict[str, list[Path]], int]],
                   trees: dict[str, Path]) -> list[str]:
    """Class names of the training tree; a class elsewhere only, or differing only in case
    from another, is refused (it would be a class with no training images)."""
    training = "train" if "train" in scans else "all"
    classes = sorted(scans[training][0])
    seen: dict[str, Path] = {}
    for name, (found, _) in scans.items():
        for cls in found:
            first = seen.setdefault(cls.lower(), trees[name] / cls)
            if first.name != cls:
                raise DatasetError(f"class folders differ only in case: {first} and "
                                   f"{trees[name] / cls}")
            if cls not in scans[training][0]:
                raise DatasetError(f"{trees[name] / cls}: class {cls!r} has no folder in "
                                   f"{trees[training]}, so no training images")
    return classes


def load_folder(
    root: str | Path,
    split: str,
    transform: Callable[[Image.Image], Any] | None = None,
    seed: int = 0,
) -> ImageListDataset:
    """One split of a folder tree; ``seed`` only matters where a split is drawn."""
    root = Path(root)
    role = normalize_split(split)
    trees = _layout(root)
    split_mode = "all" not in trees
    scans = {name: _scan(tree) for name, tree in trees.items()}
    classes = _check_classes(scans, trees)
    index = {name: i for i, name in enumerate(classes)}
    records = {name: _records(found, index, trees[name]) for name, (found, _) in scans.items()}
    skipped = sum(s for _, s in scans.values())

    if split_mode:
        if "val" not in records:
            part, val = stratified_split([r.label for r in records["train"]], VAL_FRACTION, seed)
            records["val"] = [records["train"][i] for i in val]
            records["trainval"] = records["train"]
            records["train"] = [records["train"][i] for i in part]
            note = f"val = seeded {VAL_FRACTION:.0%} of train/ (seed {seed})"
        else:
            records["trainval"] = records["train"] + records["val"]
            note = "train/ val/ sub-trees"
        if "test" not in records:
            records["test"] = records["val"]
            note += "; test = val (no test/ folder)"
    else:
        everything = records["all"]
        part, val = stratified_split([r.label for r in everything], VAL_FRACTION, seed)
        records = {
            "train": [everything[i] for i in part],
            "val": [everything[i] for i in val],
            "trainval": everything,
        }
        records["test"] = records["val"]
        note = f"single tree: seeded stratified {VAL_FRACTION:.0%} val (seed {seed}), test = val"
    if skipped:
        note += f"; {skipped} non-image file(s) skipped"
    chosen = records[role]
    if not chosen:
        raise DatasetError(f"folder:{root} split {role!r} is empty ({note})")
    return ImageListDataset(
        chosen,
        source=f"folder:{root}",
        split=role,
        split_name=role,
        classes=classes,
        transform=transform,
        notes=note,
    )
