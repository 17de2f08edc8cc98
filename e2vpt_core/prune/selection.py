"""Which prompt tokens and segments to prune, from importance scores.

Tokens are pruned globally, lowest score first; then every kept token loses the same
number of its lowest-scoring segments (REFERENCE §2). Each ranking is one stable sort
(ties: the lower index is pruned first), and the counts grow with the ratio, so the set
pruned at a higher ratio always contains the set pruned at a lower one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAX_RATIO = 0.9


@dataclass
class Selection:
    """0/1 masks (`token_mask` (P,), `segment_mask` (P, R)) and what they keep.

    Rows of pruned tokens are all zero in `segment_mask`, so it is the entry-level mask.
    `kept_segments[i]` lists the kept segments of token `kept_tokens[i]`.
    """

    token_mask: torch.Tensor
    segment_mask: torch.Tensor
    kept_tokens: list[int]
    kept_segments: list[list[int]]
    token_ratio: float
    segment_ratio: float

    def to_dict(self) -> dict[str, object]:
        return {"token_ratio": self.token_ratio, "segment_ratio": self.segment_ratio,
                "kept_tokens": self.kept_tokens, "kept_segments": self.kept_segments}


def check_ratio(name: str, ratio: float) -> float:
    """Ratios are fractions in [0, 0.9], as in the paper's search."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio):
        raise ValueError(f"{name}={ratio!r} must be a number in [0, {MAX_RATIO}]")
    if not 0.0 <= ratio <= MAX_RATIO:
        raise ValueError(f"{name}={ratio} is outside [0, {MAX_RATIO}]")
    return float(ratio)


def prune_count(ratio: float, total: int, keep_at_least: int) -> int:
    """round(ratio · total), half rounded up, capped so `keep_at_least` remain."""
    wanted = math.floor(ratio * total + 0.5 + 1e-9)
    return max(0, min(wanted, total - keep_at_least))


def prune_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices along the last dim, first to prune first: ascending score, ties by index."""
    if torch.isnan(scores).any():
        raise ValueError("importance scores contain NaN")
    return torch.sort(scores, dim=-1, stable=True).indices


def default_min_segments(num_segments: int) -> int:
    """The reference code keeps at least 4 of 16 segments: a quarter, at least one."""
    return max(1, num_segments // 4)


def select_masks(
    token_scores: torch.Tensor, segment_scores: torch.Tensor, token_ratio: float,
    segment_ratio: float = 0.0, min_segments: int | None = None,
) -> Selection:
    """Masks pruning round(token_ratio·P) tokens (≥ 1 kept) and, in each kept token,
    round(segment_ratio·R) segments (≥ `min_segments` kept, default max(1, R // 4))."""
    token_ratio = check_ratio("token_ratio", token_ratio)
    segment_ratio = check_ratio("segment_ratio", segment_ratio)
    token_scores = torch.as_tensor(token_scores).detach().cpu().float()
    segment_scores = torch.as_tensor(segment_scores).detach().cpu().float()
    if token_scores.ndim != 1 or not len(token_scores):
        raise ValueError(f"token scores must have shape (P,) with P >= 1, not "
                         f"{tuple(token_scores.shape)}")
    num_tokens = len(token_scores)
    if segment_scores.ndim != 2 or segment_scores.shape[0] != num_tokens:
        raise ValueError(f"segment scores must have shape ({num_tokens}, R), not "
                         f"{tuple(segment_scores.shape)}")
    num_segments = segment_scores.shape[1]
    if min_segments is None:
        min_segments = default_min_segments(num_segments)
    if not 1 <= min_segments <= num_segments:
        raise ValueError(f"min_segments={min_segments} must be in [1, {num_segments}]")

    token_mask = torch.ones(num_tokens)
    token_mask[prune_order(token_scores)[:prune_count(token_ratio, num_tokens, 1)]] = 0.0
    segment_mask = torch.ones(num_tokens, num_segments)
    pruned_segments = prune_order(segment_scores)[
        :, :prune_count(segment_ratio, num_segments, min_segments)]
    segment_mask.scatter_(1, pruned_segments, 0.0)
    segment_mask[token_mask == 0] = 0.0

    kept_tokens = torch.nonzero(token_mask).flatten().tolist()
    kept_segments = [torch.nonzero(segment_mask[k]).flatten().tolist() for k in kept_tokens]
    return Selection(token_mask, segment_mask, kept_tokens, kept_segments, token_ratio,
                     segment_ratio)
