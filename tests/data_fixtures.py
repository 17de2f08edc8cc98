"""Tiny on-disk dataset trees (VTAB-1k lists, FGVC JSON, class folders) for data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (6, 6)) -> Path:
    """A solid-colour image; the format follows the suffix (.jpg / .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def colour_for(label: int) -> tuple[int, int, int]:
    return ((40 * label) % 256, (90 + 50 * label) % 256, (200 - 30 * label) % 256)


def make_vtab_task(
    root: Path, name: str = "clevr_count", labels: dict[str, list[int]] | None = None
) -> Path:
    """A VTAB-1k task folder; ``labels`` maps list-file name -> labels of its images."""
    labels = labels or {
        "train800": [0, 1, 2, 0, 1, 2],
        "val200": [0, 1, 2],
        "test": [2, 1, 0, 0],
    }
    task = root / name
    for split, split_labels in labels.items():
        lines = []
        for i, label in enumerate(split_labels):
            rel = f"images/{split}/{i:06d}.jpg"
            write_image(task / rel, colour_for(label))
            lines.append(f"{rel} {label}")
        (task / f"{split}.txt").write_text("\n".join(lines) + "\n")
    if "train800" in labels and "val200" in labels and "train800val200" not in labels:
        union = (task / "train800.txt").read_text() + (task / "val200.txt").read_text()
        (task / "train800val200.txt").write_text(union)
    return task


FGVC_SPLITS = {
    "train": {5: 3, 17: 2, 42: 2},
    "val": {5: 1, 17: 1, 42: 1},
    "test": {5: 2, 17: 1, 42: 2},
}


def make_fgvc(root: Path, name: str = "CUB_200_2011", image_sub: str = "images") -> Path:
    """An FGVC dataset with original class ids 5, 17, 42 and class folders ``NNN.cls``."""
    ds = root / name
    base = ds / image_sub if image_sub else ds
    for split, counts in FGVC_SPLITS.items():
        mapping = {}
        for cid, count in counts.items():
            for i in range(count):
                rel = f"{cid:03d}.cls{cid}/{split}_{i}.jpg"
                write_image(base / rel, colour_for(cid))
                mapping[rel] = cid
        (ds / f"{split}.json").write_text(json.dumps(mapping))
    return ds


def make_folder_tree(root: Path, counts: dict[str, int], suffix: str = ".png") -> Path:
    """A class-per-folder tree with ``counts[class]`` distinct small images per class."""
    rng = np.random.default_rng(0)
    for ci, (cls, count) in enumerate(sorted(counts.items())):
        for i in range(count):
            pixels = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
            pixels[0, 0] = colour_for(ci)
            path = root / cls / f"img_{i:03d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root


def make_vtab_suite(root: Path) -> Path:
    """A VTAB-1k root of two generated tasks (one Structured, one Natural) for suite runs."""
    from e2vpt_core.data import export_builtin

    for builtin, folder in (("position", "dsprites_loc"), ("texture", "dtd")):
        export_builtin(builtin, root).rename(root / folder)
    return root
