"""Datasets that used to train silently on the wrong data, and the check of every split's
images before a run (issue 14, items 2, 3 and 9's byte-order mark)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import make_fgvc, make_folder_tree, make_vtab_task, write_image
from PIL import Image

from e2vpt_core.data import DatasetError, DatasetWarning, load_dataset, verify_dataset
from e2vpt_core.data import verify as verify_module


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test remembers verified datasets in its own cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- item 2: wrong data ------------------------------------------------------------------


def test_folder_with_only_train_is_a_split_tree_not_one_class(tmp_path: Path) -> None:
    make_folder_tree(tmp_path / "train", {"cat": 5, "dog": 5})
    train = load_dataset(f"folder:{tmp_path}", "train")
    assert train.classes == ["cat", "dog"]
    assert len(train) + len(load_dataset(f"folder:{tmp_path}", "val")) == 10


def test_folder_train_beside_class_folders_is_a_class(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, {"train": 3, "bus": 3})
    assert load_dataset(f"folder:{tmp_path}", "trainval").classes == ["bus", "train"]


def test_single_class_is_refused_before_training(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, {"only": 4})
    with pytest.raises(DatasetError, match="at least two classes"):
        verify_dataset(f"folder:{tmp_path}", ["train", "val"])


@pytest.mark.parametrize("split", ["val", "test"])
def test_folder_class_only_outside_train_names_its_folder(tmp_path: Path, split: str) -> None:
    make_folder_tree(tmp_path / "train", {"a": 3, "b": 3})
    make_folder_tree(tmp_path / split, {"a": 1, "b": 1, "zebra": 1})
    with pytest.raises(DatasetError, match=f"{tmp_path / split / 'zebra'}.*no training"):
        load_dataset(f"folder:{tmp_path}", "train")


def test_folder_classes_differing_in_case_are_refused(tmp_path: Path) -> None:
    make_folder_tree(tmp_path / "train", {"Dog": 3, "cat": 3})
    make_folder_tree(tmp_path / "val", {"dog": 1, "cat": 1})
    with pytest.raises(DatasetError, match="differ only in case.*Dog.*dog"):
        load_dataset(f"folder:{tmp_path}", "val")


def test_folder_split_folders_beside_class_folders_are_refused(tmp_path: Path) -> None:
    make_folder_tree(tmp_path / "train", {"a": 2, "b": 2})
    make_folder_tree(tmp_path / "test", {"a": 2, "b": 2})
    make_folder_tree(tmp_path, {"stray": 2})
    with pytest.raises(DatasetError, match="beside other folders.*stray"):
        load_dataset(f"folder:{tmp_path}", "train")


def test_vtab_unknown_task_label_only_in_test_names_file_and_line(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path, "my_task",
                          {"train800": [0, 1, 0, 1], "val200": [0, 1], "test": [1, 99, 0]})
    with pytest.raises(DatasetError, match=rf"{task / 'test.txt'}:2: label 99 has no training"):
        load_dataset(f"vtab:{task}", "train")


def test_vtab_unknown_task_label_gap_is_refused(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path, "my_task", {"train800": [0, 3, 0, 3], "val200": [0, 3]})
    with pytest.raises(DatasetError, match=r"labels \[1, 2\] never occur"):
        load_dataset(f"vtab:{task}", "train")


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = (np.arange(36, dtype=np.uint16).reshape(6, 6) * 1800)
    task = make_vtab_task(tmp_path, "grey", {"train800": [0, 1], "val200": [0, 1]})
    path = task / "images/train800/000000.jpg"
    path.unlink()
    Image.fromarray(values).save(path.with_suffix(".png"))
    (task / "train800.txt").write_text("images/train800/000000.png 0\n"
                                       "images/train800/000001.jpg 1\n")
    image = load_dataset(f"vtab:{task}", "train").get_image(0)
    grey = np.asarray(image)[..., 0].astype(int)
    assert np.abs(grey - np.rint(values / 257)).max() <= 1
    assert len(np.unique(grey)) == 36


def test_duplicate_list_lines_warn_and_conflicting_ones_fail(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path, "my_task", {"train800": [0, 1, 1], "val200": [0, 1]})
    listing = task / "train800.txt"
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.warns(DatasetWarning, match=rf"{listing}: 1 duplicate.*line 4 repeats line 2"):
        assert len(load_dataset(f"vtab:{task}", "train")) == 4
    path = lines[1].rsplit(maxsplit=1)[0]
    listing.write_text("\n".join([*lines, f"{path} 0"]) + "\n")
    with pytest.raises(DatasetError, match=rf"{listing}:4: .*label 0 here but 1 at line 2"):
        load_dataset(f"vtab:{task}", "train")


def test_duplicate_json_keys_warn_and_conflicting_ones_fail(tmp_path: Path) -> None:
    root = make_fgvc(tmp_path)
    train = root / "train.json"
    first_key, first_id = next(iter(json.loads(train.read_text()).items()))
    body = train.read_text().rstrip()[:-1]
    train.write_text(f'{body},\n"{first_key}": {first_id}}}')
    with pytest.warns(DatasetWarning, match=rf"{train}: 1 entry.*{first_key}.*line 2"):
        assert len(load_dataset(f"fgvc:{root}", "train")) == 7
    train.write_text(f'{body},\n"{first_key}": 42}}')
    with pytest.raises(DatasetError, match=rf"{train}:2: entry .*twice"):
        load_dataset(f"fgvc:{root}", "train")


def test_fgvc_class_only_in_test_names_the_entry(tmp_path: Path) -> None:
    root = make_fgvc(tmp_path)
    test = json.loads((root / "test.json").read_text())
    write_image(root / "images/099.new/x.jpg", (9, 9, 9))
    (root / "test.json").write_text(json.dumps({**test, "099.new/x.jpg": 99}))
    with pytest.raises(DatasetError, match=r"test.json: entry '099.new/x.jpg' has class id 99"):
        load_dataset(f"fgvc:{root}", "train")


# --- item 9: byte-order marks ------------------------------------------------------------


def test_byte_order_mark_in_list_and_json_files_is_dropped(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path)
    listing = task / "train800.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + listing.read_bytes())
    train = load_dataset(f"vtab:{task}", "train")
    assert train.records[0].path.is_file()
    train.validate()
    root = make_fgvc(tmp_path / "fgvc")
    split = root / "val.json"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())
    assert len(load_dataset(f"fgvc:{root}", "val")) == 3


# --- item 3: every split's images, checked before training ---------------------------------


def test_corrupt_test_image_is_found_before_training(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path)
    victim = task / "images/test/000002.jpg"
    victim.write_bytes(victim.read_bytes()[:40])  # a truncated JPEG: the header still parses
    with pytest.raises(DatasetError, match=rf"1 unreadable image.*{victim} \(listed at "
                                           rf"{task / 'test.txt'}:3\)"):
        verify_dataset(f"vtab:{task}", ["train", "val", "test"])


def test_missing_image_in_any_split_is_named(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path)
    (task / "images/val200/000001.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"1 image file\(s\) missing.*{task / 'val200.txt'}:2"):
        verify_dataset(f"vtab:{task}", ["train", "val", "test"])


def test_a_verified_dataset_is_not_decoded_again_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_folder_tree(tmp_path / "data", {"a": 4, "b": 4}, suffix=".jpg")
    spec = f"folder:{tmp_path / 'data'}"
    decoded: list[Path] = []
    original = verify_module._decode_problem
    monkeypatch.setattr(verify_module, "_decode_problem",
                        lambda path: decoded.append(path) or original(path))
    verify_dataset(spec, ["train", "val"])
    assert len(decoded) == 8
    verify_dataset(spec, ["train", "val", "test"])
    assert len(decoded) == 8, "an unchanged dataset was decoded again"
    victim = tmp_path / "data/b/img_001.jpg"
    victim.write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=f"{victim}"):
        verify_dataset(spec, ["train", "val"])
    assert len(decoded) == 16

