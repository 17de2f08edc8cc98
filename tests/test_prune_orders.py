"""Random and reverse pruning orders (the controls a score must beat) and the official
code's rounding: counts, floors, nestedness, reproducibility by seed."""

from __future__ import annotations

import pytest
import torch

from e2vpt_core.prune import select_masks
from e2vpt_core.prune.noretrain import curve_area
from e2vpt_core.prune.selection import order_scores, prune_count

RATIOS = [round(0.1 * i, 1) for i in range(10)]


def _scores(tokens: int, segments: int, seed: int = 0, layers: int | None = None):
    generator = torch.Generator().manual_seed(seed)
    shape = (tokens,) if layers is None else (layers, tokens)
    return (torch.randn(shape, generator=generator),
            torch.randn((*shape, segments), generator=generator))


def _pruned(selection) -> set:
    return {tuple(i) for i in torch.nonzero(selection.segment_mask == 0).tolist()}


@pytest.mark.parametrize("order", ["importance", "random", "reverse"])
@pytest.mark.parametrize(("tokens", "segments", "layers"), [(8, 4, None), (10, 16, None),
                                                             (5, 8, 3)])
def test_every_order_keeps_the_counts_floors_and_nestedness(order, tokens, segments, layers):
    token, segment = _scores(tokens, segments, 1, layers)
    ordered = order_scores(token, segment, order, seed=7)
    for t in RATIOS:
        for s in RATIOS:
            chosen = select_masks(*ordered, t, s)
            reference = select_masks(token, segment, t, s)
            assert chosen.num_kept_tokens == reference.num_kept_tokens
            kept = chosen.segment_mask.sum(-1)
            expected = reference.segment_mask.sum(-1)
            assert sorted(kept.flatten().tolist()) == sorted(expected.flatten().tolist())
            assert kept[chosen.token_mask == 1].min() >= max(1, segments // 4)
            if layers is not None:
                assert torch.all(chosen.token_mask.sum(-1) >= 1)
            for more_t, more_s in ((t + 0.1, s), (t, s + 0.1)):
                if round(more_t, 1) <= 0.9 and round(more_s, 1) <= 0.9:
                    more = select_masks(*ordered, round(more_t, 1), round(more_s, 1))
                    assert _pruned(chosen) <= _pruned(more)


def test_random_orders_are_reproducible_by_seed_and_differ_across_seeds():
    token, segment = _scores(10, 8)
    first = select_masks(*order_scores(token, segment, "random", 3), 0.5, 0.5)
    again = select_masks(*order_scores(token, segment, "random", 3), 0.5, 0.5)
    assert torch.equal(first.segment_mask, again.segment_mask)
    draws = {tuple(select_masks(*order_scores(token, segment, "random", seed), 0.5)
                   .kept_tokens) for seed in range(6)}
    assert len(draws) > 1
    # a random order ignores the scores: the same draw for other scores
    other = select_masks(*order_scores(-token, segment * 3, "random", 3), 0.5, 0.5)
    assert torch.equal(first.segment_mask, other.segment_mask)


def test_reverse_prunes_the_most_important_first():
    token = torch.tensor([5.0, 1.0, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0])
    segment = torch.tensor([[4.0, 1.0, 3.0, 2.0]]).repeat(8, 1)
    reverse = select_masks(*order_scores(token, segment, "reverse"), 0.25, 0.5)
    assert set(range(8)) - set(reverse.kept_tokens) == {4, 2}
    assert reverse.kept_segments[0] == [1, 3]
    importance = select_masks(token, segment, 0.25, 0.5)
    assert set(range(8)) - set(importance.kept_tokens) == {1, 5}
    assert importance.kept_segments[0] == [0, 2]
    with pytest.raises(ValueError, match="order='best'"):
        order_scores(token, segment, "best")


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("total", [5, 8, 10, 16])
def test_floor_rounding_is_the_official_int(ratio, total):
    assert prune_count(ratio, total, 0, "floor") == int(ratio * total)
    assert prune_count(ratio, total, 1, "floor") == min(int(ratio * total), total - 1)
    nearest = prune_count(ratio, total, 0)
    assert nearest - 1 <= prune_count(ratio, total, 0, "floor") <= nearest
    with pytest.raises(ValueError, match="rounding"):
        prune_count(ratio, total, 0, "up")


def test_floor_rounding_selects_fewer_where_nearest_rounds_up():
    token, segment = _scores(10, 16)
    floor = select_masks(token, segment, 0.35, 0.7, rounding="floor")
    nearest = select_masks(token, segment, 0.35, 0.7)
    assert floor.num_kept_tokens == 10 - 3 and nearest.num_kept_tokens == 10 - 4
    kept = floor.segment_mask.sum(-1)[floor.token_mask == 1]
    assert torch.all(kept == 16 - 11)  # int(0.7 · 16) = 11 pruned, within the floor of 4


def test_curve_area_is_the_mean_height_of_the_curve():
    assert curve_area([0.0, 0.5, 1.0], [80.0, 60.0, 40.0]) == pytest.approx(60.0)
    assert curve_area([0.5, 0.0, 0.9], [50.0, 90.0, 50.0]) == pytest.approx(
        (0.5 * 70.0 + 0.4 * 50.0) / 0.9)
    with pytest.raises(ValueError, match="two ratios"):
        curve_area([0.1], [3.0])
