"""Which prompt tokens and segments to prune, from importance scores.

Tokens are pruned globally, lowest score first; then every kept token loses the same
number of its lowest-scoring segments (docs/METHOD.md, "Pruning"). Each ranking is one
stable sort (ties: the lower index is pruned first), and the counts grow with the ratio, so the set
pruned at a higher ratio always contains the set pruned at a lower one.

With masks per block the scores are (L, P) and (L, P, R): tokens are ranked globally over
all L·P (layer, token) pairs, skipping any that would leave a layer with no token, so
layers the loss needs less lose more of their prompts.

`order_scores` turns the scores into the controls every score must beat: `random` (a
seeded draw, so the same counts, floors and nestedness as the score itself) and `reverse`
(the most important pruned first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .options import MAX_RATIO, ORDERS, ROUNDINGS


@dataclass
class Selection:
    """0/1 masks (`token_mask` (P,), `segment_mask` (P, R)) and what they keep.

    Rows of pruned tokens are all zero in `segment_mask`, so it is the entry-level mask.
    `kept_segments[i]` lists the kept segments of token `kept_tokens[i]`. With masks per
    block the masks are (L, P) and (L, P, R) and both lists have one entry per layer.
    """

    token_mask: torch.Tensor
    segment_mask: torch.Tensor
    kept_tokens: list[int] | list[list[int]]
    kept_segments: list[list[int]] | list[list[list[int]]]
    token_ratio: float
    segment_ratio: float

    @property
    def num_kept_tokens(self) -> int:
        """Kept tokens, summed over layers with masks per block."""
        return int(self.token_mask.sum())

    def to_dict(self) -> dict[str, object]:
        return {"token_ratio": self.token_ratio, "segment_ratio": self.segment_ratio,
                "kept_tokens": self.kept_tokens, "kept_segments": self.kept_segments,
                "num_kept_tokens": self.num_kept_tokens,
                "masks_per_block": self.token_mask.ndim == 2}


def check_ratio(name: str, ratio: float) -> float:
    """Ratios are fractions in [0, 0.9], as in the paper's search."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio):
        raise ValueError(f"{name}={ratio!r} must be a number in [0, {MAX_RATIO}]")
    if not 0.0 <= ratio <= MAX_RATIO:
        raise ValueError(f"{name}={ratio} is outside [0, {MAX_RATIO}]")
    return float(ratio)


def floor_count(ratio: float, total: int) -> int:
    """The official code's count: int(total · percent / 100) with an integer percent, for a
    ratio that is a whole percent (in floats 0.7 · 90 is 62.999…, so int(0.7 · 90) would
    prune 62 where the official code prunes 63). Any other ratio (the Pruning page's
    steps k / P) is floored with float error forgiven, so k / P of P is k."""
    percent = round(ratio * 100)
    if math.isclose(ratio * 100, percent, rel_tol=0.0, abs_tol=1e-9):
        return total * percent // 100
    return math.floor(ratio * total + 1e-9)


def prune_count(ratio: float, total: int, keep_at_least: int,
                rounding: str = "nearest") -> int:
    """round(ratio · total), half rounded up (`floor`: the official code's rounding down,
    `floor_count`), capped so `keep_at_least` remain."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r} is not allowed; choose one of {list(ROUNDINGS)}")
    wanted = (floor_count(ratio, total) if rounding == "floor"
              else math.floor(ratio * total + 0.5 + 1e-9))
    return max(0, min(wanted, total - keep_at_least))


def order_scores(
    token_scores: torch.Tensor, segment_scores: torch.Tensor, order: str = "importance",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores that make `select_masks` prune in `order`: as scored, at random (uniform
    draws from `seed`; one draw serves every ratio, so random masks stay nested), or
    most important first (negated)."""
    if order not in ORDERS:
        raise ValueError(f"order={order!r} is not allowed; choose one of {list(ORDERS)}")
    token_scores, segment_scores = torch.as_tensor(token_scores), torch.as_tensor(segment_scores)
    if order == "reverse":
        return -token_scores, -segment_scores
    if order == "random":
        generator = torch.Generator().manual_seed(seed)
        return (torch.rand(token_scores.shape, generator=generator),
                torch.rand(segment_scores.shape, generator=generator))
    return token_scores, segment_scores


def prune_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices along the last dim, first to prune first: ascending score, ties by index."""
    if torch.isnan(scores).any():
        raise ValueError("importance scores contain NaN")
    return torch.sort(scores, dim=-1, stable=True).indices


def default_min_segments(num_segments: int) -> int:
    """The reference code keeps at least 4 of 16 segments: a quarter, at least one."""
    return max(1, num_segments // 4)


def _token_mask_per_block(scores: torch.Tensor, ratio: float, rounding: str) -> torch.Tensor:
    """(L, P) mask pruning round(ratio·L·P) pairs, lowest score first, ≥ 1 kept per layer."""
    layers, tokens = scores.shape
    mask = torch.ones(layers, tokens)
    left = prune_count(ratio, layers * tokens, layers, rounding)
    kept_per_layer = [tokens] * layers
    for flat in prune_order(scores.flatten()).tolist():
        if not left:
            break
        layer, token = divmod(flat, tokens)
        if kept_per_layer[layer] > 1:
            mask[layer, token] = 0.0
            kept_per_layer[layer] -= 1
            left -= 1
    return mask


def select_masks(
    token_scores: torch.Tensor, segment_scores: torch.Tensor, token_ratio: float,
    segment_ratio: float = 0.0, min_segments: int | None = None, rounding: str = "nearest",
) -> Selection:
    """Masks pruning round(token_ratio·P) tokens (≥ 1 kept) and, in each kept token,
    round(segment_ratio·R) segments (≥ `min_segments` kept, default max(1, R // 4));
    `rounding='floor'` rounds both counts down as the official code does.

    Scores of shape (L, P) and (L, P, R) give masks per block (see the module doc)."""
    token_ratio = check_ratio("token_ratio", token_ratio)
    segment_ratio = check_ratio("segment_ratio", segment_ratio)
    token_scores = torch.as_tensor(token_scores).detach().cpu().float()
    segment_scores = torch.as_tensor(segment_scores).detach().cpu().float()
    if token_scores.ndim not in (1, 2) or not token_scores.numel():
        raise ValueError(f"token scores must have shape (P,) or (L, P) with P >= 1, not "
                         f"{tuple(token_scores.shape)}")
    if (segment_scores.ndim != token_scores.ndim + 1
            or segment_scores.shape[:-1] != token_scores.shape):
        raise ValueError(f"segment scores must have shape {(*token_scores.shape, 'R')}, not "
                         f"{tuple(segment_scores.shape)}")
    num_segments = segment_scores.shape[-1]
    if min_segments is None:
        min_segments = default_min_segments(num_segments)
    if not 1 <= min_segments <= num_segments:
        raise ValueError(f"min_segments={min_segments} must be in [1, {num_segments}]")

    if token_scores.ndim == 2:
        token_mask = _token_mask_per_block(token_scores, token_ratio, rounding)
    else:
        num_tokens = len(token_scores)
        token_mask = torch.ones(num_tokens)
        pruned = prune_count(token_ratio, num_tokens, 1, rounding)
        token_mask[prune_order(token_scores)[:pruned]] = 0.0
    segment_mask = torch.ones(segment_scores.shape)
    pruned_segments = prune_order(segment_scores)[
        ..., :prune_count(segment_ratio, num_segments, min_segments, rounding)]
    segment_mask.scatter_(-1, pruned_segments, 0.0)
    segment_mask[token_mask == 0] = 0.0

    def kept(token_row: torch.Tensor, segment_rows: torch.Tensor) -> tuple[list, list]:
        tokens = torch.nonzero(token_row).flatten().tolist()
        return tokens, [torch.nonzero(segment_rows[k]).flatten().tolist() for k in tokens]

    if token_mask.ndim == 1:
        kept_tokens, kept_segments = kept(token_mask, segment_mask)
    else:
        per_layer = [kept(t, s) for t, s in zip(token_mask, segment_mask, strict=True)]
        kept_tokens = [tokens for tokens, _ in per_layer]
        kept_segments = [segments for _, segments in per_layer]
    return Selection(token_mask, segment_mask, kept_tokens, kept_segments, token_ratio,
                     segment_ratio)
