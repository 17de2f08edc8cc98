"""Built-in generated tasks: determinism, disjoint splits, shapes, balance, export."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from e2vpt_core.data import (
    BUILTIN_TASKS,
    BUILTIN_TEST_SIZE,
    DatasetError,
    builtin_classes,
    export_builtin,
    generate_builtin,
    load_dataset,
    synth,
)
from e2vpt_core.data import builtin as builtin_module

TASKS = sorted(BUILTIN_TASKS)
SIZES = {"train": 800, "val": 200, "trainval": 1000, "test": BUILTIN_TEST_SIZE}


def test_required_tasks_present() -> None:
    expected = {"digits", "counting", "distance", "position", "orientation", "texture"}
    assert expected <= set(BUILTIN_TASKS)
    assert all(isinstance(d, str) and d for d in BUILTIN_TASKS.values())


@pytest.mark.parametrize("task", TASKS)
def test_splits_shapes_labels_and_balance(task: str) -> None:
    num_classes = len(builtin_classes(task))
    for role, size in SIZES.items():
        images, labels = generate_builtin(task, role)
        assert images.shape == (size, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (size,) and labels.dtype == np.int64
        assert labels.min() == 0 and labels.max() == num_classes - 1
        if role != "trainval":
            counts = np.bincount(labels, minlength=num_classes)
            assert counts.max() - counts.min() <= 1, (role, counts)
        assert images.std() > 10, "images should not be flat"


@pytest.mark.parametrize("task", TASKS)
def test_splits_are_disjoint_and_trainval_is_the_union(task: str) -> None:
    parts = {role: generate_builtin(task, role) for role in SIZES}
    keys = {
        role: {img.tobytes() for img in images} for role, (images, _) in parts.items()
    }
    assert len(keys["train"]) == 800 and len(keys["test"]) == BUILTIN_TEST_SIZE
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    assert np.array_equal(
        parts["trainval"][0], np.concatenate([parts["train"][0], parts["val"][0]])
    )
    assert np.array_equal(
        parts["trainval"][1], np.concatenate([parts["train"][1], parts["val"][1]])
    )


def test_digit_pools_are_disjoint() -> None:
    pools = synth.digit_pools(0)
    assert not set(pools["train"]) & set(pools["test"])
    assert not set(pools["val"]) & set(pools["test"])
    assert not set(pools["train"]) & set(pools["val"])
    assert sum(len(p) for p in pools.values()) == 1797


def test_generation_is_deterministic_per_seed() -> None:
    first = generate_builtin("counting", "val", seed=7)
    builtin_module._generate_part.cache_clear()
    again = generate_builtin("counting", "val", seed=7)
    assert first[0] is not again[0]
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    other = generate_builtin("counting", "val", seed=8)
    assert not np.array_equal(first[0], other[0])


def test_cached_arrays_are_read_only_and_reused() -> None:
    images, _ = generate_builtin("position", "train")
    assert generate_builtin("position", "train800")[0] is images
    with pytest.raises(ValueError):
        images[0, 0, 0, 0] = 1


def test_each_task_generates_quickly() -> None:
    """Generous bound (the goal is well under 2 s) that still catches accidental blow-ups."""
    for task in TASKS:
        builtin_module._generate_part.cache_clear()
        start = time.perf_counter()
        for role in ("train", "val", "test"):
            generate_builtin(task, role, seed=123)
        assert time.perf_counter() - start < 10, task


def test_load_dataset_items_and_attributes() -> None:
    ds = load_dataset("builtin:digits", "train800")
    assert len(ds) == 800 and ds.num_classes == 10 and ds.classes[3] == "3"
    assert ds.split == "train" and "builtin:digits" in ds.describe()
    image, label = ds[5]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 32, 32)
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert label == ds.targets[5] and isinstance(label, int)
    assert ds.get_image(5).size == (32, 32) and ds.get_image(5).mode == "RGB"
    expected = generate_builtin("digits", "train")[0][5]
    assert torch.equal((image * 255).round().to(torch.uint8).permute(1, 2, 0),
                       torch.from_numpy(expected.copy()))

    sized = load_dataset("builtin:digits", "test", transform=lambda im: im.size)
    assert sized[0] == ((32, 32), sized.targets[0])


def test_unknown_task_and_split_are_rejected() -> None:
    with pytest.raises(DatasetError, match="allowed: counting, digits"):
        generate_builtin("faces", "train")
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        load_dataset("builtin:digits", "training")


def test_export_round_trips_through_vtab_loader(tmp_path) -> None:
    root = export_builtin("orientation", tmp_path, splits=("val",))
    assert (root / "val200.txt").is_file() and not (root / "train800.txt").exists()
    first_line = (root / "val200.txt").read_text().splitlines()[0]
    assert first_line.startswith("images/val200/000000.png ")
    ds = load_dataset(f"vtab:{root}", "val")
    images, labels = generate_builtin("orientation", "val")
    assert ds.num_classes == 8 and ds.targets == labels.tolist()
    ds.validate(open_images=True)
    assert np.array_equal(np.asarray(ds.get_image(17)), images[17])


def test_export_writes_union_list_without_duplicating_images(tmp_path) -> None:
    root = export_builtin("texture", tmp_path, splits=("train", "val"))
    union = (root / "train800val200.txt").read_text().splitlines()
    assert len(union) == 1000
    assert union[800].startswith("images/val200/")
    assert not (root / "images" / "train800val200").exists()
