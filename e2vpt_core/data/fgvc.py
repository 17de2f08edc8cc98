"""FGVC JSON layout: ``<root>/{train,val,test}.json``, each a dict image path -> class id.

Class ids are remapped to 0..C-1 in sorted order over all split files, so every split of
one dataset agrees. Image paths are relative to an image root inside the dataset root:
``images/`` (CUB, NABirds), ``Images/`` (Stanford Dogs) or the root itself (Stanford
Cars, Oxford Flowers). The root is guessed from the folder name, verified on the first
image, then the candidates are tried in turn; ``image_root`` overrides all that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from .common import DatasetError, ImageListDataset, ImageRecord, normalize_split, warn_dataset

FGVC_SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.json",),
    "val": ("val.json",),
    "trainval": ("train.json", "val.json"),
    "test": ("test.json",),
}

# Folder-name fragment (lower case) -> image root, checked in this order.
FGVC_IMAGE_ROOTS: tuple[tuple[str, str], ...] = (
    ("cub", "images"),
    ("nabirds", "images"),
    ("dog", "Images"),
    ("car", ""),
    ("flower", ""),
)
_CANDIDATE_ROOTS: tuple[str, ...] = ("images", "Images", "")


def _line_of(text: str, key: str, occurrence: int) -> int | None:
    """Line (1-based) of the n-th ``"key":`` in ``text``, when the key is written plainly."""
    pattern = re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:"
    found = list(re.finditer(pattern, text))
    if len(found) < occurrence:
        return None
    return text.count("\n", 0, found[occurrence - 1].start()) + 1


def _pairs_checked(path: Path, text: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """An ``object_pairs_hook`` that refuses a key given two values and warns about repeats
    (``json`` alone would silently keep the last)."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        repeats: list[str] = []
        for key, value in pairs:
            if key in out:
                line = _line_of(text, key, 2)
                where = f"{path}:{line}" if line else str(path)
                if out[key] != value:
                    raise DatasetError(f"{where}: entry {key!r} appears twice, with class ids "
                                       f"{out[key]!r} and {value!r}")
                repeats.append(f"{key!r}" + (f" (line {line})" if line else ""))
            out[key] = value
        if repeats:
            warn_dataset(f"{path}: {len(repeats)} entry(ies) repeated, kept once: "
                         f"{', '.join(repeats[:3])}")
        return out

    return build


def read_split_json(path: Path) -> dict[str, int]:
    """Parse one split file into image path -> original class id (a BOM is dropped)."""
    if not path.is_file():
        raise DatasetError(f"missing split file: expected {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
        data = json.loads(text, object_pairs_hook=_pairs_checked(path, text))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected a JSON object mapping image path -> class id, "
            f"got {type(data).__name__}"
        )
    if not data:
        raise DatasetError(f"split file {path} lists no images")
    out: dict[str, int] = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise DatasetError(f"{path}: entry {key!r}: class id {value!r} is not an integer")
        try:
            out[key] = int(value)
        except ValueError:
            raise DatasetError(
                f"{path}: entry {key!r}: class id {value!r} is not an integer"
            ) from None
    return out


def _all_splits(root: Path) -> dict[str, dict[str, int]]:
    present = {
        name: read_split_json(root / name)
        for name in ("train.json", "val.json", "test.json")
        if (root / name).is_file()
    }
    if not present:
        raise DatasetError(
            f"{root}: no FGVC split files found (expected train.json, val.json, test.json)"
        )
    trained = set(present.get("train.json", {}).values())
    for name, mapping in present.items():
        for key, cid in mapping.items():
            if trained and cid not in trained:
                raise DatasetError(f"{root / name}: entry {key!r} has class id {cid}, which "
                                   f"{root / 'train.json'} never uses: a class needs "
                                   "training images")
    return present


def _class_names(splits: dict[str, dict[str, int]], ids: list[int]) -> list[str]:
    """Use the shared top folder of each class (``001.Black_footed_Albatross``) when
    every class has exactly one distinct one, else the original ids as strings."""
    folders: dict[int, set[str]] = {i: set() for i in ids}
    for mapping in splits.values():
        for key, cid in mapping.items():
            parts = key.replace("\\", "/").split("/")
            folders[cid].add(parts[0] if len(parts) > 1 else "")
    names = [next(iter(folders[i])) if len(folders[i]) == 1 else "" for i in ids]
    if all(names) and len(set(names)) == len(names):
        return names
    return [str(i) for i in ids]


def detect_image_root(root: Path, first_image: str, origin: str) -> Path:
    """Find the folder that ``first_image`` is relative to (see module docstring)."""
    name = root.name.lower()
    guesses = [sub for fragment, sub in FGVC_IMAGE_ROOTS if fragment in name][:1]
    tried = []
    for sub in dict.fromkeys(guesses + list(_CANDIDATE_ROOTS)):
        base = root / sub if sub else root
        tried.append(str(base / first_image))
        if (base / first_image).is_file():
            return base
    raise DatasetError(
        f"cannot find the first image {first_image!r} (listed in {origin}) under any "
        f"candidate image root; tried: {', '.join(tried)}. Pass image_root explicitly."
    )


def load_fgvc(
    root: str | Path,
    split: str,
    transform: Callable[[Image.Image], Any] | None = None,
    image_root: str | None = None,
) -> ImageListDataset:
    """One split of an FGVC dataset; ``trainval`` is the union of train.json and val.json."""
    root = Path(root)
    role = normalize_split(split)
    splits = _all_splits(root)
    wanted: dict[str, tuple[int, str]] = {}
    for name in FGVC_SPLIT_FILES[role]:
        path = root / name
        if name not in splits:
            raise DatasetError(f"missing split file: expected {path}")
        for key, cid in splits[name].items():
            if key in wanted and wanted[key][0] != cid:
                raise DatasetError(
                    f"{path}: entry {key!r} has class id {cid} but {wanted[key][1]} "
                    f"gives {wanted[key][0]}"
                )
            wanted.setdefault(key, (cid, str(path)))
    ids = sorted({cid for mapping in splits.values() for cid in mapping.values()})
    remap = {cid: i for i, cid in enumerate(ids)}
    first_key, (_, first_origin) = next(iter(wanted.items()))
    if image_root is None:
        base = detect_image_root(root, first_key, first_origin)
    else:
        base = Path(image_root) if Path(image_root).is_absolute() else root / image_root
        if not base.is_dir():
            raise DatasetError(f"image_root {base} is not a directory")
    records = [
        ImageRecord(base / key, remap[cid], f"{origin} entry {key!r}")
        for key, (cid, origin) in wanted.items()
    ]
    return ImageListDataset(
        records,
        source=f"fgvc:{root}",
        split=role,
        split_name="+".join(n.removesuffix(".json") for n in FGVC_SPLIT_FILES[role]),
        classes=_class_names(splits, ids),
        transform=transform,
        notes=f"images under {base}",
    )
