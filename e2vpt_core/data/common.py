"""Shared pieces of the data package: errors, split roles and the dataset base classes.

Every loader returns a :class:`LabeledDataset` so the training code sees one interface
whatever the source (generated arrays, VTAB-1k list files, FGVC JSON, folder trees).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor


class DatasetError(ValueError):
    """A dataset spec, layout or file is wrong; the message names the file (and line)."""


class DatasetWarning(UserWarning):
    """Something in a dataset is suspicious but usable (a duplicate line, a repeated key)."""


def warn_dataset(message: str) -> None:
    """Report a suspicious but usable dataset entry (the CLI prints it as one line)."""
    warnings.warn(message, DatasetWarning, stacklevel=2)  # one place: shown once


SPLIT_ROLES: tuple[str, ...] = ("train", "val", "trainval", "test")

# VTAB-1k list-file names for each role; builtin tasks use the same names.
VTAB_SPLIT_NAMES: dict[str, str] = {
    "train": "train800",
    "val": "val200",
    "trainval": "train800val200",
    "test": "test",
}

_SPLIT_ALIASES: dict[str, str] = {
    **{role: role for role in SPLIT_ROLES},
    **{name: role for role, name in VTAB_SPLIT_NAMES.items()},
    "train+val": "trainval",
}

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def normalize_split(split: str) -> str:
    """Map a role or a literal split name (``train800``, ``train+val`` ...) to its role."""
    role = _SPLIT_ALIASES.get(str(split).strip().lower())
    if role is None:
        allowed = ", ".join(sorted(_SPLIT_ALIASES))
        raise DatasetError(f"unknown split {split!r}; allowed: {allowed}")
    return role


def balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    """Shuffled labels whose class counts differ by at most one (balanced generated splits)."""
    return rng.permutation(np.arange(n, dtype=np.int64) % num_classes)


# Modes holding more than 8 bits per pixel: PIL's convert("RGB") clips them at 255, so a
# 16-bit grey image would turn all white.
_WIDE_MODES: frozenset[str] = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with every pixel format scaled, not clipped: 16-bit grey (0..65535) maps to 0..255."""
    if image.mode not in _WIDE_MODES:
        return image.convert("RGB")
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 257.0  # 65535 -> 255
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


# The most pixels an image may have (docs/METHOD.md, "Datasets on disk"): 8192 × 8192,
# 192 MiB decoded as RGB. Pillow's own guard is set to it too; by default it only warns up
# to 179 MP, and decodes such an image at well over a gigabyte in every loader worker.
MAX_IMAGE_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # it warns above it, raises above twice it


class ImageTooLarge(ValueError):
    """An image above MAX_IMAGE_PIXELS, refused before it is decoded."""


def open_image(path: Path) -> Image.Image:
    """`Image.open` (which reads only the header), refusing an image above
    MAX_IMAGE_PIXELS before any pixel is decoded; use it as a context manager."""
    limit = f"the limit of {MAX_IMAGE_PIXELS:,} pixels; downscale it"
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:  # Pillow's own check, at twice the limit
        raise ImageTooLarge(f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, above {limit}") \
            from None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageTooLarge(f"{image.width} × {image.height} pixels, above {limit}")
    return image


def load_rgb(path: Path, origin: str | None = None) -> Image.Image:
    """Open an image as RGB, turning any failure into a DatasetError naming the file."""
    where = f" (listed at {origin})" if origin else ""
    try:
        with open_image(path) as image:
            return to_rgb(image)
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}{where}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read image {path}{where}: {exc}") from exc


class LabeledDataset(Dataset):
    """Image classification dataset with the attributes training and the app rely on.

    ``__getitem__`` returns ``(transform(PIL image), label)``; without a transform the
    image comes back as a float CHW tensor in [0, 1] so default collation still works.
    """

    def __init__(
        self,
        *,
        source: str,
        split: str,
        split_name: str,
        classes: Sequence[str],
        targets: Sequence[int],
        transform: Callable[[Image.Image], Any] | None = None,
        notes: str = "",
    ) -> None:
        self.source = source
        self.notes = notes
        self.split = split
        self.split_name = split_name
        self.classes: list[str] = list(classes)
        self.targets: list[int] = [int(t) for t in targets]
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def get_image(self, index: int) -> Image.Image:
        """The untransformed RGB image (for previews and transforms)."""
        raise NotImplementedError

    def validate(self, open_images: bool = False) -> None:
        """Check up front that every sample can be found; raise DatasetError otherwise."""

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.get_image(index)
        if self.transform is not None:
            return self.transform(image), self.targets[index]
        return pil_to_tensor(image).float().div_(255.0), self.targets[index]

    def class_counts(self) -> list[int]:
        """Samples per class, indexed by label."""
        return np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=self.num_classes)[
            : self.num_classes
        ].tolist()

    def describe(self) -> str:
        """One line naming source, split, size and classes, for logs and error messages."""
        name = self.split if self.split_name == self.split else f"{self.split}={self.split_name}"
        text = f"{self.source} [{name}]: {len(self)} images, {self.num_classes} classes"
        return f"{text} ({self.notes})" if self.notes else text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


@dataclass(frozen=True)
class ImageRecord:
    """One listed image: where it is, its label and where it was listed (file:line)."""

    path: Path
    label: int
    origin: str


class ImageListDataset(LabeledDataset):
    """Dataset over image files on disk, each remembered with the list entry it came from."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        *,
        source: str,
        split: str,
        split_name: str,
        classes: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        notes: str = "",
    ) -> None:
        super().__init__(
            source=source,
            split=split,
            split_name=split_name,
            classes=classes,
            targets=[r.label for r in records],
            transform=transform,
            notes=notes,
        )
        self.records: list[ImageRecord] = list(records)

    def get_image(self, index: int) -> Image.Image:
        record = self.records[index]
        return load_rgb(record.path, record.origin)

    def validate(self, open_images: bool = False) -> None:
        """Check every listed file exists (and, with ``open_images``, that it decodes)."""
        missing = [r for r in self.records if not r.path.is_file()]
        if missing:
            shown = "; ".join(f"{r.path} (listed at {r.origin})" for r in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DatasetError(
                f"{self.describe()}: {len(missing)} image file(s) missing: {shown}{more}"
            )
        if open_images:
            for record in self.records:
                load_rgb(record.path, record.origin)


class ArrayDataset(LabeledDataset):
    """Dataset over an in-memory uint8 array of HWC RGB images (the generated tasks)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        source: str,
        split: str,
        split_name: str,
        classes: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        notes: str = "",
    ) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DatasetError(f"{source}: expected uint8 (N, H, W, 3) images, got "
                               f"{images.dtype} {images.shape}")
        super().__init__(
            source=source,
            split=split,
            split_name=split_name,
            classes=classes,
            targets=labels.tolist(),
            transform=transform,
            notes=notes,
        )
        self.images = images

    def get_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def as_tensor(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as a float NCHW tensor in [0, 1] plus labels, for quick probes."""
        x = torch.from_numpy(np.array(self.images)).permute(0, 3, 1, 2)
        return x.float().div_(255.0), torch.as_tensor(self.targets, dtype=torch.long)
