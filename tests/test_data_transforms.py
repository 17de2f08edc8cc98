"""Recipe transforms: sizes, normalisation, no-crop vs crop, randomness of FGVC training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from e2vpt_core.data import DatasetError, DatasetSpec, build_transform

CONFIG = {
    "input_size": (3, 224, 224),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bicubic",
    "crop_pct": 0.875,
}


def edge_marked_image() -> Image.Image:
    """A wide image: red left edge, blue right edge, grey middle."""
    pixels = np.full((100, 300, 3), 128, np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, -20:] = (0, 0, 255)
    return Image.fromarray(pixels)


def noise_image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (300, 260, 3), np.uint8))


@pytest.mark.parametrize("spec", ["builtin:digits", "vtab", DatasetSpec("vtab", "/x/cifar")])
def test_vtab_and_builtin_resize_whole_image_and_normalise(spec) -> None:
    tf = build_transform(spec, CONFIG, train=True)
    assert not any(isinstance(t, (T.RandomCrop, T.CenterCrop, T.RandomHorizontalFlip))
                   for t in tf.transforms)
    out = tf(edge_marked_image())
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    mean, std = torch.tensor(CONFIG["mean"]), torch.tensor(CONFIG["std"])
    red = (torch.tensor([1.0, 0.0, 0.0]) - mean) / std
    blue = (torch.tensor([0.0, 0.0, 1.0]) - mean) / std
    assert torch.allclose(out[:, 112, 2], red, atol=0.05), "left edge kept: no crop"
    assert torch.allclose(out[:, 112, -3], blue, atol=0.05), "right edge kept: no crop"
    assert torch.equal(out, tf(edge_marked_image())), "no augmentation"
    resize = tf.transforms[0]
    assert tuple(resize.size) == (224, 224)
    assert resize.interpolation == InterpolationMode.BICUBIC


@pytest.mark.parametrize("kind", ["fgvc", "folder"])
def test_fgvc_eval_resizes_256_then_centre_crops(kind: str) -> None:
    tf = build_transform(kind, CONFIG, train=False)
    resize, crop = tf.transforms[0], tf.transforms[1]
    assert isinstance(resize, T.Resize) and resize.size == 256
    assert isinstance(crop, T.CenterCrop) and tuple(crop.size) == (224, 224)
    out = tf(edge_marked_image())
    assert out.shape == (3, 224, 224)
    grey = (torch.full((3,), 128 / 255) - torch.tensor(CONFIG["mean"])) / torch.tensor(
        CONFIG["std"]
    )
    assert torch.allclose(out[:, 112, 0], grey, atol=0.05), "edges cropped away"
    assert torch.equal(out, tf(edge_marked_image())), "eval is deterministic"


def test_fgvc_train_is_random_crop_and_flip() -> None:
    tf = build_transform("fgvc", CONFIG, train=True)
    kinds = [type(t) for t in tf.transforms]
    assert kinds[:3] == [T.Resize, T.RandomCrop, T.RandomHorizontalFlip]
    image = noise_image()
    torch.manual_seed(0)
    outs = [tf(image) for _ in range(4)]
    assert all(o.shape == (3, 224, 224) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    torch.manual_seed(0)
    assert torch.equal(tf(image), outs[0]), "randomness comes from torch's seeded RNG"


def test_crop_sizes_scale_with_input_size() -> None:
    config = {**CONFIG, "input_size": (3, 384, 384)}
    tf = build_transform("fgvc:/unused", config, train=False)
    assert tf.transforms[0].size == round(384 / 0.875)
    assert tf(noise_image()).shape == (3, 384, 384)
    assert build_transform("vtab", {**CONFIG, "input_size": 96}, train=False)(
        noise_image()).shape == (3, 96, 96)


def test_normalisation_uses_config_statistics() -> None:
    config = {**CONFIG, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    out = build_transform("builtin", config, train=False)(Image.new("RGB", (32, 32), (255, 0, 0)))
    assert torch.allclose(out[:, 5, 5], torch.tensor([1.0, -1.0, -1.0]), atol=1e-4)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(DatasetError, match="unknown dataset kind 'imagenet'"):
        build_transform("imagenet:/x", CONFIG, train=False)
    with pytest.raises(DatasetError, match="input_size"):
        build_transform("vtab", {**CONFIG, "input_size": "big"}, train=False)
    with pytest.raises(DatasetError, match="lacks 'std'"):
        build_transform("vtab", {k: v for k, v in CONFIG.items() if k != "std"}, train=False)


def _mirror_pair() -> tuple[Image.Image, Image.Image]:
    """An asymmetric image (a bar on the left) and its mirror image."""
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[4:28, 2:10] = 255
    image = Image.fromarray(pixels)
    return image, image.transpose(Image.FLIP_LEFT_RIGHT)


@pytest.mark.parametrize("augment", ["auto", "crop", "none"])
def test_a_folder_tree_is_never_mirrored_unless_asked(augment: str) -> None:
    tf = build_transform("folder:/unused", CONFIG, train=True, augment=augment)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in tf.transforms)
    image, mirrored = _mirror_pair()
    torch.manual_seed(0)
    outs = [tf(image) for _ in range(16)]
    left, right = (torch.stack([o[:, :, :112].mean() for o in outs]),
                   torch.stack([o[:, :, 112:].mean() for o in outs]))
    assert (left > right).all(), "the bar stays on the left: never mirrored"
    assert not torch.equal(tf(image), tf(mirrored))
    if augment == "none":
        assert all(torch.equal(outs[0], o) for o in outs[1:])
        assert tuple(tf.transforms[0].size) == (224, 224)
    else:
        assert any(not torch.equal(outs[0], o) for o in outs[1:]), "crops still move"


def test_auto_keeps_each_kind_s_recipe_and_crop_flip_forces_it() -> None:
    from e2vpt_core.data.transforms import recipe_augmentation

    assert [recipe_augmentation(k) for k in ("builtin", "vtab", "fgvc", "folder")] == [
        "none", "none", "crop-flip", "crop"]
    assert recipe_augmentation("builtin:digits", "crop") == "crop"
    tf = build_transform("builtin:digits", CONFIG, train=True, augment="crop-flip")
    assert [type(t) for t in tf.transforms][:3] == [T.Resize, T.RandomCrop,
                                                    T.RandomHorizontalFlip]
    eval_tf = build_transform("vtab", CONFIG, train=False, augment="crop")
    assert isinstance(eval_tf.transforms[1], T.CenterCrop)
    with pytest.raises(DatasetError, match="unknown augmentation 'rotate'"):
        build_transform("folder", CONFIG, train=True, augment="rotate")


def test_every_kind_has_one_recipe_and_the_help_texts_name_it() -> None:
    from e2vpt_core.config import (
        AUGMENTATIONS,
        KIND_AUGMENTATION,
        describe_kind_augmentation,
    )
    from e2vpt_core.data import DATASET_KINDS

    assert sorted(KIND_AUGMENTATION) == sorted(DATASET_KINDS)
    assert set(KIND_AUGMENTATION.values()) <= set(AUGMENTATIONS) - {"auto"}
    assert "folder: crop" in describe_kind_augmentation()
    assert "fgvc: crop-flip" in describe_kind_augmentation()


def test_train_config_checks_and_stores_augment() -> None:
    from e2vpt_core.train import TrainConfig

    config = TrainConfig(dataset="builtin:digits", augment="crop")
    assert TrainConfig.from_dict(config.to_dict()).augment == "crop"
    old = config.to_dict()
    del old["augment"]  # a run stored before the option existed
    assert TrainConfig.from_dict(old).augment == "auto"
    with pytest.raises(ValueError, match="augment='flip'"):
        TrainConfig(augment="flip")
