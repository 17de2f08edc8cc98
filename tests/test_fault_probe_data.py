"""The fault probe's data findings (issue 36, "The store and the data", items 4 and 6):
an image above the pixel limit is one error naming it, before it is decoded; a file name
that is not UTF-8 is named and skipped, and the rest of the dataset is used. (That a bad
dataset creates no run, and items 7 and 8c, are in test_reliability_args.py.)"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from data_fixtures import make_folder_tree

from e2vpt_core.data import (
    MAX_IMAGE_PIXELS,
    DatasetError,
    DatasetWarning,
    load_dataset,
    verify_dataset,
)
from e2vpt_core.data.common import load_rgb


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2VPT_STORE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# --- item 4: images above the pixel limit ----------------------------------------------
def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width × height (the pixels are not there): what Pillow
    reads before it would decode anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, at open
@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (20_000, 20_000)],
                         ids=["100 MP: Pillow only warns", "400 MP: Pillow raises"])
def test_an_image_above_the_limit_is_one_error_naming_it(tmp_path: Path, width: int,
                                                         height: int) -> None:
    assert width * height > MAX_IMAGE_PIXELS
    make_folder_tree(tmp_path / "data", {"a": 4, "b": 4})
    huge = _png_header(tmp_path / "data" / "b" / "huge.png", width, height)
    with pytest.raises(DatasetError, match="above the limit") as raised:
        load_rgb(huge)
    assert str(huge) in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(DatasetError, match=f"{huge}.*above the limit of {MAX_IMAGE_PIXELS:,}"):
        verify_dataset(f"folder:{tmp_path / 'data'}", ["train", "val"])


def test_the_limit_is_checked_before_decoding(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from e2vpt_core.data import common

    image = tmp_path / "small.png"
    make_folder_tree(tmp_path / "data", {"a": 2, "b": 2})
    (tmp_path / "data" / "a" / "img_000.png").rename(image)
    monkeypatch.setattr(common, "MAX_IMAGE_PIXELS", 24)  # the tree's images are 5 × 5
    with pytest.raises(DatasetError, match=f"{image}: 5 × 5 pixels, above the limit of 24"):
        load_rgb(image)


# --- item 6: non-UTF-8 file names ------------------------------------------------------
def test_a_non_utf8_file_name_is_named_and_the_rest_is_used(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path / "data", {"a": 4, "b": 4})
    with open(os.fsencode(root / "a") + b"/caf\xe9.png", "wb") as handle:
        handle.write((root / "a" / "img_000.png").read_bytes())
    spec = f"folder:{root}"
    with pytest.warns(DatasetWarning, match=r"not UTF-8 text.*caf\\xe9\.png"):
        splits = verify_dataset(spec, ["train", "val"])
    assert len(splits["train"]) + len(splits["val"]) == 8
    with pytest.warns(DatasetWarning):
        dataset = load_dataset(spec, "trainval")
    assert len(dataset) == 8 and dataset[0][0].shape == (3, 5, 5)


def test_a_non_utf8_class_folder_is_named_and_skipped(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path / "data", {"a": 2, "b": 2, "c": 2})
    os.rename(root / "c", os.fsencode(root) + b"/cl\xe4ss")
    with pytest.warns(DatasetWarning, match=r"cl\\xe4ss"):
        dataset = load_dataset(f"folder:{root}", "trainval")
    assert dataset.classes == ["a", "b"]


def test_a_non_utf8_dataset_folder_is_named(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path) + b"/d\xe4ta"
    make_folder_tree(Path(os.fsdecode(root)), {"a": 2, "b": 2})
    with pytest.raises(DatasetError, match=r"d\\xe4ta.*is not UTF-8 text"):
        load_dataset(f"folder:{os.fsdecode(root)}", "train")
