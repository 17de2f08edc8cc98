"""Glyph scenes (the bundled backbone's pretraining data) and the scenes pretraining task."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.data.synth import SIZE
from e2vpt_core.pretrain import scenes

try:
    CHARS, BANK = scenes.glyph_bank()
except scenes.FontsMissing as missing:  # pragma: no cover - Debian images ship DejaVu
    pytest.skip(str(missing), allow_module_level=True)


def test_glyph_classes_hold_no_number_and_no_lookalike_of_a_digit():
    assert len(CHARS) > 100 and len(set(CHARS)) == len(CHARS)
    assert not any(unicodedata.category(c).startswith("N") for c in CHARS)
    assert not set("0123456789OolI|") & set(CHARS)
    assert BANK.shape == (len(CHARS), len(scenes.FONT_FILES), SIZE, SIZE)
    assert BANK.min() >= 0 and BANK.max() <= 1
    assert (BANK.reshape(len(BANK), -1).max(axis=1) > 0.5).all()  # every glyph has ink


def test_scenes_are_deterministic_and_labelled_consistently():
    a = scenes.render_scenes(np.random.default_rng(7), 64)
    b = scenes.render_scenes(np.random.default_rng(7), 64)
    c = scenes.render_scenes(np.random.default_rng(8), 64)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.present, b.present)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (64, SIZE, SIZE, 3) and a.images.dtype == np.uint8
    per_image = a.present.sum(axis=1)
    assert per_image.min() >= 1 and per_image.max() <= scenes.MAX_OBJECTS
    assert a.patch_labels.shape == (64, (SIZE // 4) ** 2)
    background = len(CHARS)
    for present, patches in zip(a.present, a.patch_labels, strict=True):
        covered = set(patches[patches != background].tolist())
        assert covered <= set(np.flatnonzero(present).tolist())
    assert 0 < (a.patch_labels == background).mean() < 1


def test_layout_is_the_ink_coverage_that_the_patch_labels_summarise():
    batch = scenes.render_scenes(np.random.default_rng(3), 32)
    cells = SIZE // scenes.LAYOUT_CELL
    assert batch.layout.shape == (32, cells**2) and batch.layout.dtype == np.float32
    assert batch.layout.min() >= 0 and batch.layout.max() <= 1
    # Average 2x2 cells into 4x4 patches: a patch labelled with a glyph has at least a
    # quarter of its pixels covered by that glyph, so its ink coverage is at least 0.25.
    per_patch = batch.layout.reshape(32, cells // 2, 2, cells // 2, 2).mean(axis=(2, 4))
    labelled = batch.patch_labels.reshape(32, cells // 2, cells // 2) != len(CHARS)
    assert labelled.any() and (per_patch[labelled] >= 0.25 - 1e-6).all()
    assert (per_patch[~labelled] < per_patch[labelled].mean()).mean() > 0.9
    # The layout draws nothing from the stream: the images stay those of the same seed.
    again = scenes.render_scenes(np.random.default_rng(3), 32)
    assert np.array_equal(batch.images, again.images)


def test_warp_places_turns_and_scales_like_a_direct_computation():
    mask = np.zeros((1, SIZE, SIZE), np.float32)
    mask[0, 4:10, 6:26] = 1.0  # a horizontal bar, off centre
    one = np.ones(1)
    same = scenes._warp(mask, SIZE * one, 0 * one, one, 16 * one, 16 * one)
    np.testing.assert_allclose(same, mask, atol=1e-5)
    # A quarter turn (angle = π/2, y pointing down) maps input (u, v) to output (-v, u)
    # about the centre: rows become columns, as numpy's rot90 with k = -1.
    turned = scenes._warp(mask, SIZE * one, np.pi / 2 * one, one, 16 * one, 16 * one)
    np.testing.assert_allclose(turned[0], np.rot90(mask[0], k=-1), atol=1e-4)
    # Half the side, centred at (8, 24): the mask's ink lands in the bottom-left quadrant.
    small = scenes._warp(mask, SIZE / 2 * one, 0 * one, one, 8 * one, 24 * one)
    ys, xs = np.nonzero(small[0] > 0.5)
    assert xs.max() < 16 and ys.min() >= 16
    np.testing.assert_allclose(small.sum(), mask.sum() / 4, rtol=0.05)


def test_scenes_pretraining_saves_and_resumes_its_patch_head(tmp_path):
    from e2vpt_core.pretrain import PretrainConfig, pretrain

    out = tmp_path / "scenes"
    common = dict(data="scenes", batch_size=8, depth=1, warmup_steps=1, heldout_size=16,
                  eval_every=2, log_every=2, precision="fp32")
    recipe = pretrain(PretrainConfig(out=str(out), steps=2, **common))
    head = load_file(str(out / "pretrain_head.safetensors"))
    assert head["head.weight"].shape == (len(CHARS), 192)
    assert head["dense.weight"].shape == (len(CHARS) + 1, 192)
    assert recipe["data"]["glyphs"] == "".join(CHARS)
    assert recipe["model"]["pretrain_num_classes"] == len(CHARS)
    saved = json.loads((out / "recipe.json").read_text())
    assert 0 <= saved["metrics"]["heldout_acc"] <= 1 and saved["args"]["data"] == "scenes"
    # The output directory is a backbone as it stands: create_model reads its config.json.
    hub = json.loads((out / "config.json").read_text())
    assert hub["pretrained_cfg"]["tag"] == "e2vpt_glyph_scenes"
    model = create_model(str(out), 3, PromptConfig("linear"), pretrained=True)
    assert len(model.backbone.blocks) == 1
    torch.testing.assert_close(model.backbone.blocks[0].attn.qkv.weight,
                               load_file(str(out / "model.safetensors"))[
                                   "blocks.0.attn.qkv.weight"].float())

    child = tmp_path / "child"
    continued = pretrain(PretrainConfig(out=str(child), steps=1, resume_from=str(out),
                                        **{**common, "eval_every": 1}))
    assert continued["total_steps"] == 3
    assert continued["data"]["train_stream_seed"] == [0, 1, 2]


def test_layout_head_trains_from_a_parent_without_one_and_is_saved(tmp_path):
    from e2vpt_core.pretrain import PretrainConfig, pretrain

    common = dict(data="scenes", batch_size=8, depth=1, warmup_steps=1, heldout_size=8,
                  eval_every=1, log_every=1, precision="fp32")
    parent = tmp_path / "parent"
    pretrain(PretrainConfig(out=str(parent), steps=1, **common))
    child = tmp_path / "child"
    recipe = pretrain(PretrainConfig(out=str(child), steps=1, resume_from=str(parent),
                                     layout_weight=2.0, **common))
    head = load_file(str(child / "pretrain_head.safetensors"))
    assert head["layout.weight"].shape == ((SIZE // scenes.LAYOUT_CELL) ** 2, 192)
    # The glyph heads came from the parent (then took one step), not a fresh init.
    before = load_file(str(parent / "pretrain_head.safetensors"))["dense.weight"].float()
    assert (head["dense.weight"].float() - before).abs().max() < 0.05
    assert recipe["args"]["layout_weight"] == 2.0 and "foreground" in recipe["data"]["targets"]
    with pytest.raises(ValueError, match="scenes only"):
        pretrain(PretrainConfig(out=str(tmp_path / "f"), data="fractal", steps=1,
                                layout_weight=1.0))
    with pytest.raises(ValueError, match="layout_weight must be >= 0"):
        pretrain(PretrainConfig(out=str(tmp_path / "n"), data="scenes", steps=1,
                                layout_weight=-1.0))
    assert not (tmp_path / "f").exists() and not (tmp_path / "n").exists()


def test_unknown_pretraining_data_is_refused(tmp_path):
    from e2vpt_core.pretrain import PretrainConfig, pretrain

    with pytest.raises(ValueError, match="unknown pretraining data 'imagenet'"):
        pretrain(PretrainConfig(out=str(tmp_path / "x"), data="imagenet", steps=1))
