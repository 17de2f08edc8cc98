"""Mask selection: counts, floors, nestedness over ratios, deterministic ties."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from e2vpt_core.prune import select_masks
from e2vpt_core.prune.selection import default_min_segments, prune_count
from e2vpt_core.prune.sweep import pick_best

RATIOS = [round(0.1 * i, 1) for i in range(10)]


def _scores(num_tokens: int, num_segments: int, seed: int = 0, levels: int = 4):
    """Integer-valued scores with few levels, so ties are common."""
    generator = torch.Generator().manual_seed(seed)
    token = torch.randint(0, levels, (num_tokens,), generator=generator).float()
    segment = torch.randint(0, levels, (num_tokens, num_segments), generator=generator).float()
    return token, segment


def test_eight_tokens_quarter_and_half():
    token = torch.tensor([5.0, 1.0, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0])
    segment = torch.ones(8, 4)
    quarter = select_masks(token, segment, 0.25)
    half = select_masks(token, segment, 0.5)
    assert quarter.kept_tokens == [0, 2, 3, 4, 6, 7]
    assert half.kept_tokens == [0, 2, 4, 6]
    assert quarter.token_mask.tolist() == [1, 0, 1, 1, 1, 0, 1, 1]
    assert int(half.token_mask.sum()) == 4


@pytest.mark.parametrize("seed", range(3))
def test_eight_tokens_counts_for_any_scores(seed):
    token, segment = _scores(8, 4, seed, levels=100)
    assert len(select_masks(token, segment, 0.25).kept_tokens) == 6
    assert len(select_masks(token, segment, 0.5).kept_tokens) == 4


@pytest.mark.parametrize(("num_tokens", "num_segments"), [(1, 4), (5, 8), (8, 4), (10, 16)])
@pytest.mark.parametrize("seed", range(3))
def test_selections_are_nested_over_all_ratios(num_tokens, num_segments, seed):
    token, segment = _scores(num_tokens, num_segments, seed)
    masks = {(t, s): select_masks(token, segment, t, s) for t in RATIOS for s in RATIOS}
    for (t, s), chosen in masks.items():
        pruned = set(range(num_tokens)) - set(chosen.kept_tokens)
        for t_more, s_more in ((t + 0.1, s), (t, s + 0.1)):
            more = masks.get((round(t_more, 1), round(s_more, 1)))
            if more is None:
                continue
            assert pruned <= set(range(num_tokens)) - set(more.kept_tokens)
            assert torch.all(more.token_mask <= chosen.token_mask)
            assert torch.all(more.segment_mask <= chosen.segment_mask)


@pytest.mark.parametrize(("num_tokens", "num_segments"), [(1, 4), (5, 8), (8, 16), (3, 2)])
def test_floors_keep_one_token_and_min_segments(num_tokens, num_segments):
    token, segment = _scores(num_tokens, num_segments, levels=1000)
    chosen = select_masks(token, segment, 0.9, 0.9)
    assert len(chosen.kept_tokens) >= 1
    floor = default_min_segments(num_segments)
    for kept in chosen.kept_segments:
        assert len(kept) >= floor
    assert default_min_segments(16) == 4 and default_min_segments(2) == 1
    custom = select_masks(token, segment, 0.0, 0.9, min_segments=num_segments)
    assert all(len(kept) == num_segments for kept in custom.kept_segments)


def test_segments_pruned_per_token_lowest_first_same_count():
    token = torch.tensor([3.0, 1.0, 2.0, 4.0])
    segment = torch.tensor([[4.0, 3.0, 2.0, 1.0, 8.0, 7.0, 6.0, 5.0]] * 4)
    segment[2] = torch.tensor([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0])
    chosen = select_masks(token, segment, 0.25, 0.5, min_segments=2)  # prune token 1, 4 segs
    assert chosen.kept_tokens == [0, 2, 3]
    assert chosen.kept_segments == [[4, 5, 6, 7], [0, 2, 4, 6], [4, 5, 6, 7]]
    assert torch.all(chosen.segment_mask[1] == 0)  # a pruned token's row is all zero
    assert chosen.segment_mask.sum().item() == 3 * 4


def test_ties_are_broken_by_index():
    flat = torch.zeros(6)
    chosen = select_masks(flat, torch.zeros(6, 4), 0.5, 0.5)
    assert chosen.kept_tokens == [3, 4, 5]
    assert chosen.kept_segments == [[2, 3]] * 3
    assert select_masks(flat, torch.zeros(6, 4), 0.5, 0.5).kept_tokens == chosen.kept_tokens


def test_counts_round_half_up_and_respect_floors():
    assert prune_count(0.5, 5, 1) == 3
    assert prune_count(0.25, 8, 1) == 2
    assert prune_count(0.9, 5, 1) == 4
    assert prune_count(0.7, 10, 1) == 7
    assert prune_count(0.0, 10, 1) == 0
    assert prune_count(0.9, 16, 4) == 12


@pytest.mark.parametrize("ratio", [-0.1, 0.95, 1.0, float("nan"), True, "0.5"])
def test_bad_ratios_are_refused(ratio):
    token, segment = _scores(8, 4)
    with pytest.raises(ValueError, match="token_ratio"):
        select_masks(token, segment, ratio)
    with pytest.raises(ValueError, match="segment_ratio"):
        select_masks(token, segment, 0.1, ratio)


def test_bad_scores_and_floors_are_refused():
    token, segment = _scores(8, 4)
    with pytest.raises(ValueError, match="NaN"):
        select_masks(torch.full((8,), float("nan")), segment, 0.5)
    with pytest.raises(ValueError, match="shape"):
        select_masks(token, segment[:3], 0.5)
    with pytest.raises(ValueError, match="min_segments"):
        select_masks(token, segment, 0.5, 0.5, min_segments=5)


def test_best_row_prefers_accuracy_then_more_pruning():
    table = pd.DataFrame({
        "token_ratio": [0.1, 0.2, 0.3, 0.4, 0.4],
        "segment_ratio": [0.0, 0.0, 0.0, 0.0, 0.5],
        "status": ["completed", "completed", "completed", "failed", "completed"],
        "val_top1": [50.0, 60.0, 60.0, None, 55.0],
    })
    assert pick_best(table, "val_top1") == 2
    table.loc[4, "val_top1"] = 60.0
    assert pick_best(table, "val_top1") == 4
    table["status"] = "failed"
    assert pick_best(table, "val_top1") is None
