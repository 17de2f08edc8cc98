"""Check every split a run will read before the run starts, not when an image is first read.

A corrupt test image would otherwise fail a run at its final evaluation, after all epochs.
`verify_dataset` loads each split (so label and layout errors surface), checks that the
splits agree on the classes, that every listed file exists, and decodes every image once,
in parallel. A dataset that passed is remembered by its fingerprint (spec, listed paths,
their sizes and modification times, labels), so an unchanged dataset is decoded only once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import UnidentifiedImageError

from .common import DatasetError, ImageListDataset, ImageRecord, LabeledDataset, open_image
from .load import load_dataset

# Bump when the decode check changes, so earlier passes are not trusted.
CHECK_VERSION = "1"
# JPEGs are decoded at reduced scale: every byte is still read, so truncation shows.
_DRAFT_SIZE = (64, 64)
_SHOWN = 5


def cache_dir() -> Path:
    """Where passes are remembered: ``$XDG_CACHE_HOME/e2vpt/verified`` (or ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "e2vpt" / "verified"


def verify_dataset(
    spec: str, splits: Iterable[str], seed: int = 0
) -> dict[str, LabeledDataset]:
    """Load and check ``splits`` of ``spec``; raise DatasetError naming the files at fault.

    Returns the loaded splits (without transforms) by split name.
    """
    datasets = {split: load_dataset(spec, split, seed=seed) for split in dict.fromkeys(splits)}
    first_split, first = next(iter(datasets.items()))
    if first.num_classes < 2:
        raise DatasetError(f"{first.describe()}: a classifier needs at least two classes")
    for dataset in datasets.values():
        if dataset.classes != first.classes:
            raise DatasetError(f"{dataset.describe()}: its classes differ from split "
                               f"{first_split!r} ({first.num_classes} classes)")
    records = list({r.path: r for d in datasets.values() if isinstance(d, ImageListDataset)
                    for r in d.records}.values())
    if records:
        _verify_files(spec, records)
    return datasets


def _verify_files(spec: str, records: list[ImageRecord]) -> None:
    digest = hashlib.sha256(f"{CHECK_VERSION}\n{spec}\n".encode())
    missing = []
    for record in records:
        try:
            stat = record.path.stat()
        except OSError:
            missing.append(record)
            continue
        digest.update(f"{record.path}\t{stat.st_size}\t{stat.st_mtime_ns}\t{record.label}\n"
                      .encode())
    if missing:
        raise DatasetError(f"{len(missing)} image file(s) missing: "
                           + _list(missing, ["not found"] * len(missing)))
    marker = cache_dir() / digest.hexdigest()
    if marker.is_file():
        return
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(_decode_problem, (r.path for r in records)))
    bad = [(r, p) for r, p in zip(records, problems, strict=True) if p is not None]
    if bad:
        raise DatasetError(f"{len(bad)} unreadable image(s): "
                           + _list([r for r, _ in bad], [p for _, p in bad]))
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{spec}\n{len(records)} images\n")
    except OSError:  # a read-only cache only costs the next run another check
        pass


def _decode_problem(path: Path) -> str | None:
    """None when the image decodes; otherwise why not (PIL releases the GIL meanwhile)."""
    try:
        with open_image(path) as image:
            image.draft("RGB", _DRAFT_SIZE)
            image.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        return str(error) or type(error).__name__
    return None


def _list(records: list[ImageRecord], reasons: list[str]) -> str:
    shown = "; ".join(f"{r.path} (listed at {r.origin}): {why}"
                      for r, why in zip(records[:_SHOWN], reasons, strict=False))
    return shown + (f"; and {len(records) - _SHOWN} more" if len(records) > _SHOWN else "")
