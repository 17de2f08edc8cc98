"""Specs, split roles and the on-disk layouts (VTAB-1k, FGVC, folders), broken ones included."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from data_fixtures import colour_for, make_fgvc, make_folder_tree, make_vtab_task, write_image

from e2vpt_core.data import (
    VTAB_TASKS,
    DatasetError,
    DatasetSpec,
    load_dataset,
    load_fgvc,
    normalize_split,
    parse_dataset_spec,
)

# --- specs and split roles -------------------------------------------------------------


def test_parse_each_kind(tmp_path: Path) -> None:
    spec = parse_dataset_spec("builtin:digits")
    assert spec == DatasetSpec("builtin", "digits") and spec.path is None
    for kind in ("vtab", "fgvc", "folder"):
        parsed = parse_dataset_spec(f"{kind}:{tmp_path}")
        assert parsed.kind == kind and parsed.path == tmp_path and parsed.name == tmp_path.name
        assert parse_dataset_spec(str(parsed)) == parsed
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.kind = "vtab"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("imagenet:/data", "kind one of builtin, vtab, fgvc, folder"),
        ("digits", "expected <kind>:<task or path>"),
        ("builtin:faces", "unknown builtin task 'faces'.*allowed: counting, digits"),
        ("vtab:/definitely/not/here", "does not exist: /definitely/not/here"),
        ("folder:", "names no path"),
    ],
)
def test_parse_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dataset_spec(text)


def test_parse_rejects_file_and_misplaced_image_root(tmp_path: Path) -> None:
    file = tmp_path / "x.txt"
    file.write_text("")
    with pytest.raises(DatasetError, match="not a folder"):
        parse_dataset_spec(f"vtab:{file}")
    with pytest.raises(DatasetError, match="only applies to fgvc"):
        parse_dataset_spec(f"vtab:{tmp_path}", image_root="images")
    assert parse_dataset_spec(f"fgvc:{tmp_path}", image_root="Images").image_root == "Images"


def test_split_roles_and_literal_names() -> None:
    assert [normalize_split(s) for s in ("train800", "val200", "train800val200", "test")] == [
        "train", "val", "trainval", "test"]
    assert normalize_split("TrainVal") == "trainval" and normalize_split("train+val") == "trainval"
    with pytest.raises(DatasetError, match="unknown split 'dev'; allowed:"):
        normalize_split("dev")


# --- VTAB-1k ---------------------------------------------------------------------------


def test_vtab_task_table() -> None:
    assert len(VTAB_TASKS) == 19
    assert VTAB_TASKS["sun397"].num_classes == 397 and VTAB_TASKS["kitti"].group == "Structured"
    assert {t.group for t in VTAB_TASKS.values()} == {"Natural", "Specialized", "Structured"}


def test_vtab_splits_and_known_class_count(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path)
    sizes = {"train": 6, "val": 3, "trainval": 9, "test": 4}
    for role, size in sizes.items():
        ds = load_dataset(f"vtab:{task}", role)
        assert len(ds) == size and ds.split == role
        assert ds.num_classes == 8, "clevr_count keeps its official 8 classes"
        ds.validate(open_images=True)
    ds = load_dataset(f"vtab:{task}", "test")
    assert ds.targets == [2, 1, 0, 0] and ds.split_name == "test"
    image, label = ds[0]
    assert image.shape == (3, 6, 6) and label == 2
    expected = torch.tensor(colour_for(2), dtype=torch.float32) / 255
    assert torch.allclose(image[:, 3, 3], expected, atol=0.05)
    assert "[test]" in ds.describe() and str(task) in ds.describe()


def test_vtab_unknown_task_takes_its_classes_from_the_training_list(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path, "my_task", {"train800": [0, 2, 1], "test": [2, 0]})
    assert load_dataset(f"vtab:{task}", "test").num_classes == 3


def test_vtab_missing_split_file_names_expected_path(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path, labels={"train800": [0, 1]})
    with pytest.raises(DatasetError, match=f"expected {task / 'val200.txt'}"):
        load_dataset(f"vtab:{task}", "val")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("images/train800/000000.jpg", r"train800\.txt:2: malformed line"),
        ("images/train800/000000.jpg one", r"train800\.txt:2: .*label 'one' is not an integer"),
        ("images/train800/000001.jpg 8", r"train800\.txt:2: label 8 out of range.*num_classes=8"),
        ("images/train800/000001.jpg -1", r"train800\.txt:2: label -1 out of range"),
    ],
)
def test_vtab_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    task = make_vtab_task(tmp_path, labels={"train800": [0]})
    listing = task / "train800.txt"
    listing.write_text(listing.read_text() + line + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"vtab:{task}", "train")


def test_vtab_empty_list_is_an_error(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path, labels={"train800": [0]})
    (task / "train800.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match="lists no images"):
        load_dataset(f"vtab:{task}", "train")


def test_vtab_missing_image_reported_on_validate_and_on_open(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path)
    (task / "images/test/000001.jpg").unlink()
    ds = load_dataset(f"vtab:{task}", "test")
    with pytest.raises(DatasetError, match=r"1 image file\(s\) missing: .*000001\.jpg "
                                           r"\(listed at .*test\.txt:2\)"):
        ds.validate()
    assert ds[0][1] == 2
    with pytest.raises(DatasetError, match=r"image file not found: .*000001\.jpg "
                                           r"\(listed at .*test\.txt:2\)"):
        ds[1]


def test_vtab_corrupt_image_names_path_and_line(tmp_path: Path) -> None:
    task = make_vtab_task(tmp_path)
    (task / "images/test/000002.jpg").write_bytes(b"not a jpeg at all")
    ds = load_dataset(f"vtab:{task}", "test")
    ds.validate()
    with pytest.raises(DatasetError, match=r"cannot read image .*000002\.jpg .*test\.txt:3"):
        ds[2]
    with pytest.raises(DatasetError, match="000002.jpg"):
        ds.validate(open_images=True)


# --- FGVC ------------------------------------------------------------------------------


def test_fgvc_ids_remapped_consistently_and_union(tmp_path: Path) -> None:
    root = make_fgvc(tmp_path)
    train = load_dataset(f"fgvc:{root}", "train")
    test = load_dataset(f"fgvc:{root}", "test")
    trainval = load_dataset(f"fgvc:{root}", "trainval")
    assert train.num_classes == test.num_classes == 3
    assert train.classes == ["005.cls5", "017.cls17", "042.cls42"]
    assert train.targets == [0, 0, 0, 1, 1, 2, 2]
    assert test.targets == [0, 0, 1, 2, 2]
    assert len(trainval) == 10 and trainval.split_name == "train+val"
    assert trainval.records[-1].path.parent.name == "042.cls42"
    trainval.validate(open_images=True)
    assert "images under" in train.describe() and str(root / "images") in train.describe()


def test_fgvc_class_names_fall_back_to_ids(tmp_path: Path) -> None:
    root = make_fgvc(tmp_path, name="stanford_cars", image_sub="")
    flat = {"a.jpg": 9, "b.jpg": 3}
    for name in flat:
        write_image(root / name, (1, 2, 3))
    (root / "val.json").write_text(json.dumps(flat))
    train = json.loads((root / "train.json").read_text())
    (root / "train.json").write_text(json.dumps({**train, **flat}))  # every class trains
    ds = load_dataset(f"fgvc:{root}", "val")
    assert ds.classes == ["3", "5", "9", "17", "42"] and ds.targets == [2, 0]


@pytest.mark.parametrize(
    ("name", "sub"),
    [("CUB_200_2011", "images"), ("nabirds", "images"), ("Stanford_dogs", "Images"),
     ("OxfordFlower", ""), ("something_else", "Images")],
)
def test_fgvc_image_root_detection(tmp_path: Path, name: str, sub: str) -> None:
    root = make_fgvc(tmp_path, name=name, image_sub=sub)
    ds = load_dataset(f"fgvc:{root}", "test")
    expected = root / sub if sub else root
    assert ds.records[0].path == expected / "005.cls5/test_0.jpg"
    ds.validate()


def test_fgvc_explicit_image_root_and_undetectable_root(tmp_path: Path) -> None:
    root = make_fgvc(tmp_path, name="birds", image_sub="pictures")
    with pytest.raises(DatasetError, match=r"cannot find the first image '005\.cls5/train_0\.jpg'"
                                           r" \(listed in .*train\.json\).*Pass image_root"):
        load_dataset(f"fgvc:{root}", "train")
    ds = load_dataset(parse_dataset_spec(f"fgvc:{root}", image_root="pictures"), "train")
    ds.validate()
    assert load_fgvc(root, "train", image_root=str(root / "pictures")).records == ds.records
    with pytest.raises(DatasetError, match="is not a directory"):
        load_fgvc(root, "train", image_root="nope")


def test_fgvc_missing_split_file(tmp_path: Path) -> None:
    root = make_fgvc(tmp_path)
    (root / "val.json").unlink()
    assert len(load_dataset(f"fgvc:{root}", "train")) == 7
    with pytest.raises(DatasetError, match=f"expected {root / 'val.json'}"):
        load_dataset(f"fgvc:{root}", "trainval")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"a.jpg": 1,\n "b.jpg": }', r"test\.json:2: invalid JSON"),
        ('["a.jpg"]', r"test\.json: expected a JSON object"),
        ('{"a.jpg": "bird"}', r"test\.json: entry 'a\.jpg': class id 'bird' is not an integer"),
        ('{"a.jpg": 1.5}', r"test\.json: entry 'a\.jpg': class id 1\.5"),
        ("{}", r"test\.json lists no images"),
    ],
)
def test_fgvc_bad_json(tmp_path: Path, content: str, message: str) -> None:
    root = make_fgvc(tmp_path)
    (root / "test.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"fgvc:{root}", "train")


def test_fgvc_conflicting_union_entry(tmp_path: Path) -> None:
    root = make_fgvc(tmp_path)
    (root / "val.json").write_text(json.dumps({"005.cls5/train_0.jpg": 17}))
    with pytest.raises(DatasetError, match=r"val\.json: entry '005\.cls5/train_0\.jpg' has "
                                           r"class id 17 but .*train\.json gives 5"):
        load_dataset(f"fgvc:{root}", "trainval")


def test_fgvc_missing_image_names_json_entry(tmp_path: Path) -> None:
    root = make_fgvc(tmp_path)
    (root / "images/042.cls42/test_1.jpg").unlink()
    ds = load_dataset(f"fgvc:{root}", "test")
    with pytest.raises(DatasetError, match=r"test_1\.jpg \(listed at .*test\.json entry"):
        ds.validate()
    with pytest.raises(DatasetError, match=r"image file not found: .*042\.cls42/test_1\.jpg"):
        ds[4]


# --- folder trees ----------------------------------------------------------------------


def test_folder_single_tree_seeded_stratified_split(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, {"cat": 10, "dog": 20, "emu": 5})
    spec = f"folder:{tmp_path}"
    train, val = load_dataset(spec, "train"), load_dataset(spec, "val")
    assert train.classes == ["cat", "dog", "emu"]
    assert val.class_counts() == [2, 4, 1] and train.class_counts() == [8, 16, 4]
    paths = lambda ds: {r.path for r in ds.records}  # noqa: E731
    assert not paths(train) & paths(val)
    assert paths(train) | paths(val) == paths(load_dataset(spec, "trainval"))
    assert paths(load_dataset(spec, "test")) == paths(val)
    assert paths(load_dataset(spec, "val", seed=0)) == paths(val)
    assert paths(load_dataset(spec, "val", seed=1)) != paths(val)
    assert "test = val" in val.describe()
    image, label = train[0]
    assert image.shape == (3, 5, 5) and label == 0


def test_folder_split_subtrees(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        make_folder_tree(tmp_path / split, {"a": n, "b": n})
    spec = f"folder:{tmp_path}"
    sizes = {role: len(load_dataset(spec, role)) for role in ("train", "val", "trainval", "test")}
    assert sizes == {"train": 8, "val": 4, "trainval": 12, "test": 6}
    test = load_dataset(spec, "test")
    assert {r.path.parent.parent.name for r in test.records} == {"test"}


def test_folder_train_and_test_only_draws_val_from_train(tmp_path: Path) -> None:
    make_folder_tree(tmp_path / "train", {"a": 10, "b": 10})
    make_folder_tree(tmp_path / "test", {"a": 3, "b": 3})
    spec = f"folder:{tmp_path}"
    train, val = load_dataset(spec, "train"), load_dataset(spec, "val")
    assert val.class_counts() == [2, 2] and train.class_counts() == [8, 8]
    assert len(load_dataset(spec, "trainval")) == 20 and len(load_dataset(spec, "test")) == 6
    assert "20% of train/" in val.describe()


def test_folder_empty_class_and_no_classes(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, {"a": 3})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=f"empty class folder.*{tmp_path / 'b'}"):
        load_dataset(f"folder:{tmp_path}", "train")
    flat = tmp_path / "flat"
    flat.mkdir()
    write_image(flat / "x.png", (1, 2, 3))
    with pytest.raises(DatasetError, match="no class folders found"):
        load_dataset(f"folder:{flat}", "train")


def test_folder_non_images_are_reported_not_loaded(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, {"a": 3, "b": 3}, suffix=".jpg")
    (tmp_path / "a" / "readme.txt").write_text("x")
    ds = load_dataset(f"folder:{tmp_path}", "trainval")
    assert len(ds) == 6 and "1 non-image file(s) skipped" in ds.describe()
    ds.validate(open_images=True)
