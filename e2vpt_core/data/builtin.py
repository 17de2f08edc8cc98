"""Built-in offline tasks: generated deterministically, with VTAB-1k-like splits.

Splits: ``train800`` (800), ``val200`` (200), ``train800val200`` (exactly those 1000
samples) and ``test`` (:data:`BUILTIN_TEST_SIZE`). Every split comes from its own seeded
random stream, and the ``digits`` splits draw from disjoint pools of scikit-learn's
original digits, so no two splits share a sample. Generation is cached in-process.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..catalog import BUILTIN_TASKS
from . import synth
from .common import VTAB_SPLIT_NAMES, ArrayDataset, DatasetError, normalize_split

BUILTIN_TEST_SIZE = 1000
BUILTIN_IMAGE_SIZE = synth.SIZE
_SPLIT_SIZES = {"train": 800, "val": 200, "test": BUILTIN_TEST_SIZE}


@dataclass(frozen=True)
class BuiltinTask:
    """A generated task: description, class names and its generator."""

    name: str
    description: str
    classes: tuple[str, ...]
    generate: Callable[[np.random.Generator, int, str, int], tuple[np.ndarray, np.ndarray]]


def _digits(rng: np.random.Generator, n: int, role: str, seed: int) -> synth.Sample:
    return synth.gen_digits(rng, n, synth.digit_pools(seed)[role])


def _ignore_role(gen: Callable[[np.random.Generator, int], synth.Sample]) -> Callable:
    return lambda rng, n, role, seed: gen(rng, n)


_TASKS: dict[str, BuiltinTask] = {
    task.name: task
    for task in (
        BuiltinTask(
            "digits",
            BUILTIN_TASKS["digits"],
            tuple(str(i) for i in range(10)),
            _digits,
        ),
        BuiltinTask(
            "counting",
            BUILTIN_TASKS["counting"],
            tuple(str(i) for i in range(1, 9)),
            _ignore_role(synth.gen_counting),
        ),
        BuiltinTask(
            "distance",
            BUILTIN_TASKS["distance"],
            ("farthest", "far", "mid-far", "mid-near", "near", "nearest"),
            _ignore_role(synth.gen_distance),
        ),
        BuiltinTask(
            "position",
            BUILTIN_TASKS["position"],
            tuple(f"x{i}" for i in range(8)),
            _ignore_role(synth.gen_position),
        ),
        BuiltinTask(
            "orientation",
            BUILTIN_TASKS["orientation"],
            tuple(f"{i * 22.5:g}-{(i + 1) * 22.5:g}deg" for i in range(8)),
            _ignore_role(synth.gen_orientation),
        ),
        BuiltinTask(
            "texture",
            BUILTIN_TASKS["texture"],
            synth.TEXTURE_CLASSES,
            _ignore_role(synth.gen_texture),
        ),
    )
}


def _task(name: str) -> BuiltinTask:
    task = _TASKS.get(name)
    if task is None:
        raise DatasetError(
            f"unknown builtin task {name!r}; allowed: {', '.join(sorted(_TASKS))}"
        )
    return task


def builtin_classes(task: str) -> list[str]:
    """Class names of a builtin task, indexed by label."""
    return list(_task(task).classes)


@functools.lru_cache(maxsize=64)
def _generate_part(task: str, role: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One independent part (train / val / test), read-only so the cache stays intact."""
    entropy = [int(seed), zlib.crc32(task.encode()), ("train", "val", "test").index(role)]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    images, labels = _task(task).generate(rng, _SPLIT_SIZES[role], role, int(seed))
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def generate_builtin(task: str, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 32, 32, 3) and labels int64 (N,) of one split (cached, read-only)."""
    _task(task)
    role = normalize_split(split)
    if role != "trainval":
        return _generate_part(task, role, seed)
    parts = [_generate_part(task, r, seed) for r in ("train", "val")]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_builtin(
    task: str, split: str, transform: Callable[[Image.Image], Any] | None = None, seed: int = 0
) -> ArrayDataset:
    """A generated task split as a dataset; ``seed`` selects the generated instance."""
    images, labels = generate_builtin(task, split, seed)
    role = normalize_split(split)
    return ArrayDataset(
        images,
        labels,
        source=f"builtin:{task}",
        split=role,
        split_name=VTAB_SPLIT_NAMES[role],
        classes=builtin_classes(task),
        transform=transform,
        notes=f"generated, seed {seed}",
    )


def export_builtin(
    task: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    splits: Iterable[str] = ("train", "val", "test"),
    image_format: str = "png",
) -> Path:
    """Write a task in VTAB-1k image-folder layout under ``out_dir/<task>``; return that path.

    Images go to ``images/<split>/NNNNNN.<ext>`` and each split gets a list file. The
    union list ``train800val200.txt`` is written whenever train and val both are, and
    points at the train800/val200 images instead of duplicating them. PNG (the default)
    keeps pixels exact, so a re-load through the VTAB loader gives identical arrays.
    """
    ext = image_format.lower().lstrip(".")
    if ext not in ("png", "jpg", "jpeg"):
        raise DatasetError(f"image_format must be png or jpg, got {image_format!r}")
    roles = [normalize_split(s) for s in splits]
    root = Path(out_dir) / task
    lines: dict[str, list[str]] = {}
    for role in dict.fromkeys(r for r in roles if r != "trainval"):
        name = VTAB_SPLIT_NAMES[role]
        images, labels = generate_builtin(task, role, seed)
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        lines[role] = []
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            rel = f"images/{name}/{i:06d}.{ext}"
            Image.fromarray(image).save(root / rel)
            lines[role].append(f"{rel} {int(label)}")
    if "train" in lines and "val" in lines:
        lines["trainval"] = lines["train"] + lines["val"]
    for role, entries in lines.items():
        (root / f"{VTAB_SPLIT_NAMES[role]}.txt").write_text("\n".join(entries) + "\n")
    return root
