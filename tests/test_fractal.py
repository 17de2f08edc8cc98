"""FractalDB-style generator and the built-in backbone's pretraining loop."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from e2vpt_core.pretrain.fractal import (
    FractalStream,
    filling_rates,
    fixed_set,
    render_fractals,
    sample_ifs_classes,
)

SIERPINSKI = np.array(
    [[0.5, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5, 0.25, 0.5]],
    dtype=np.float32,
)
# Every map contracts towards the origin: the attractor is a single point.
ONE_POINT = np.array([[0.5, 0, 0, 0.5, 0, 0], [0.3, 0.1, 0, 0.3, 0, 0]], dtype=np.float32)


@pytest.fixture(scope="module")
def classes() -> list[np.ndarray]:
    return sample_ifs_classes(12, seed=3)


def test_sampling_is_deterministic(classes):
    again = sample_ifs_classes(12, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(classes, again, strict=True))
    other = sample_ifs_classes(12, seed=4)
    assert not all(
        a.shape == b.shape and np.allclose(a, b) for a, b in zip(classes, other, strict=True)
    )
    assert all(2 <= len(s) <= 4 and s.shape[1] == 6 for s in classes)


def test_rendering_is_deterministic(classes):
    labels = np.arange(24) % len(classes)
    a = render_fractals(classes, labels, np.random.default_rng(7))
    b = render_fractals(classes, labels, np.random.default_rng(7))
    c = render_fractals(classes, labels, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    s1, s2 = FractalStream(classes, 16, seed=1), FractalStream(classes, 16, seed=1)
    for _ in range(2):
        (x1, y1), (x2, y2) = s1.next_batch(), s2.next_batch()
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_filling_filter():
    fill = filling_rates([SIERPINSKI, ONE_POINT])
    assert fill[0] > 0.2
    assert fill[1] < 0.01
    accepted = sample_ifs_classes(20, seed=0, fill_range=(0.1, 1.0))
    assert np.all(filling_rates(accepted, seed=1) > 0.07)


def test_output_shape_dtype_range(classes):
    images, labels = FractalStream(classes, 10, seed=0).next_batch()
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (10,) and labels.min() >= 0 and labels.max() < len(classes)
    # Dark background, bright fractal: every image has real contrast.
    flat = images.reshape(10, -1)
    assert np.all(flat.max(axis=1) > 150) and np.all(flat.min(axis=1) < 60)
    big = render_fractals(classes, np.array([0, 1]), np.random.default_rng(0), size=48)
    assert big.shape == (2, 48, 48, 3)
    held, held_labels = fixed_set(classes, 30, seed=5, chunk=7)
    assert held.shape == (30, 32, 32, 3)
    assert np.array_equal(held_labels, np.arange(30) % len(classes))


def test_samples_of_a_class_look_alike(classes):
    """Same-class pairs correlate more than different-class pairs (on shape)."""
    per_class = 8
    labels = np.repeat(np.arange(len(classes)), per_class)
    images = render_fractals(classes, labels, np.random.default_rng(0), augment=False)
    # Shape only: the unaugmented render is white on black, centred.
    x = images.astype(np.float64).mean(axis=3).reshape(len(labels), -1)
    x = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-9)
    corr = x @ x.T / x.shape[1]
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(labels), dtype=bool)
    within, between = corr[same & off_diag].mean(), corr[~same].mean()
    assert within > between + 0.2
    # The augmented stream keeps the classes apart too, though less so.
    aug = render_fractals(classes, labels, np.random.default_rng(1))
    y = aug.astype(np.float64).mean(axis=3).reshape(len(labels), -1)
    y = (y - y.mean(axis=1, keepdims=True)) / (y.std(axis=1, keepdims=True) + 1e-9)
    corr_aug = y @ y.T / y.shape[1]
    assert corr_aug[same & off_diag].mean() > corr_aug[~same].mean()


def test_pretrain_smoke(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    from e2vpt_core.pretrain import (
        BUILTIN_VIT_TINY_KWARGS,
        PretrainConfig,
        parse_args,
        pretrain,
    )

    out = tmp_path / "vit"
    cfg = PretrainConfig(
        out=str(out),
        steps=4,
        batch_size=8,
        num_classes=5,
        depth=1,
        warmup_steps=1,
        heldout_size=10,
        eval_every=2,
        log_every=2,
    )
    recipe = pretrain(cfg)
    state = load_file(str(out / "model.safetensors"))
    assert "head.weight" not in state and "head.bias" not in state
    assert all(v.dtype.is_floating_point and v.element_size() == 2 for v in state.values())
    fresh = VisionTransformer(**{**BUILTIN_VIT_TINY_KWARGS, "depth": 1}, num_classes=0)
    fresh.load_state_dict(state, strict=True)

    saved = json.loads((out / "recipe.json").read_text())
    assert saved["steps_done"] == 4 and saved["complete"] is True
    assert saved["args"]["num_classes"] == 5 and saved["seed"] == 0
    assert {"platform", "cpu_count", "torch", "device"} <= saved["hardware"].keys()
    assert 0.0 <= saved["metrics"]["heldout_acc"] <= 1.0
    assert 0.0 <= saved["metrics"]["train_acc_last100"] <= 1.0
    assert [h[0] for h in saved["history"]] == [2, 4]
    assert saved["model"]["kwargs"]["embed_dim"] == 192
    assert recipe["steps_done"] == 4
    assert (out / "pretrain.log").read_text().count("step 4/4") == 1
    assert not list(out.glob("*.tmp"))

    child = tmp_path / "child"
    argv = [
        "--out",
        str(child),
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--num-classes",
        "5",
        "--depth",
        "1",
        "--heldout-size",
        "5",
        "--resume-from",
        str(out),
    ]
    continued = pretrain(parse_args(argv))
    assert continued["continuation_of"]["recipe"]["steps_done"] == 4
    assert continued["total_steps"] == 6
