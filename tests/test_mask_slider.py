"""The browser-side prune sliders: every mask they can show equals `select_masks`'s."""

from __future__ import annotations

import json

import pytest
import torch

from app.mask_slider import reachable_masks, slider_masks
from app.pruning_state import ratio_options
from e2vpt_core.prune import select_masks
from e2vpt_core.prune.selection import default_min_segments


def _combined(masks, i: int, j: int) -> torch.Tensor:
    """What the JS draws: the token mask at slider i times the segment mask at slider j."""
    tokens = torch.tensor(masks.token_masks[i], dtype=torch.float32)
    return tokens[..., None] * torch.tensor(masks.segment_masks[j], dtype=torch.float32)


@pytest.mark.parametrize("rounding", ["nearest", "floor"])
@pytest.mark.parametrize("shape", [(5,), (3, 4)], ids=["shared", "per-block"])
def test_every_slider_position_shows_the_mask_select_masks_gives(shape, rounding):
    generator = torch.Generator().manual_seed(0)
    token_scores = torch.randn(shape, generator=generator)
    segment_scores = torch.randn((*shape, 8), generator=generator)
    layers = shape[0] if len(shape) == 2 else 1
    token_options = ratio_options(token_scores.numel(), layers)
    segment_options = ratio_options(8, default_min_segments(8))
    masks = slider_masks(token_scores, segment_scores, token_options, segment_options,
                         rounding)
    assert masks.per_block == (len(shape) == 2)
    assert 0.25 in masks.segment_ratios  # R = 8: a quarter is one of the steps
    for i, token_ratio in enumerate(token_options):
        for j, segment_ratio in enumerate(segment_options):
            direct = select_masks(token_scores, segment_scores, token_ratio, segment_ratio,
                                  rounding=rounding).segment_mask
            shown = _combined(masks, i, j)
            assert torch.equal(shown, direct if direct.ndim == 3 else direct[None]), (i, j)


def test_the_page_reaches_every_ratio_the_sliders_offer_once_per_scores_object():
    token_scores, segment_scores = torch.rand(3, 4), torch.rand(3, 4, 8)
    masks = reachable_masks(token_scores, segment_scores, "floor")
    assert masks.per_block and masks.token_ratios == ratio_options(12, 3)
    assert masks.segment_ratios == ratio_options(8, default_min_segments(8))
    assert reachable_masks(token_scores, segment_scores, "floor") is masks  # no recompute
    assert reachable_masks(token_scores.clone(), segment_scores, "floor") is not masks


def test_the_data_sent_to_the_browser_is_json_with_the_start_positions():
    masks = slider_masks(torch.tensor([0.3, 0.1, 0.2, 0.4]), torch.rand(4, 4),
                         [0.0, 0.25, 0.5, 0.75], [0.0, 0.25, 0.5, 0.75])
    data = json.loads(json.dumps(masks.data((2, 1))))
    assert data["start"] == [2, 1] and data["segments"] == 4 and not data["per_block"]
    assert len(data["token_masks"]) == 4 and len(data["segment_masks"]) == 4
    # token ratio 0.5 prunes the two lowest-scored tokens: 1 (0.1) and 2 (0.2)
    assert data["token_masks"][2] == [[1, 0, 0, 1]]
