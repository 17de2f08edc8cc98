"""What a mask costs before any retraining: the parent evaluated with the masks applied.

A rewind takes a whole training run per mask; this takes one pass over the validation
split, so a score can be judged against random and reverse orders at every ratio
(docs/METHOD.md, "Why the paper's token score vanishes for deep prompts": validate every
score against random masks with the same counts). Exact leave-one-out token scores are
this evaluation with one token removed at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..artifacts import load_adapter
from ..models.vit import PromptedViT
from ..store import RunStore
from ..train import TrainConfig, resolve_device
from ..train.data import eval_loader
from ..train.evaluate import evaluate
from .selection import ORDERS, Selection, order_scores, select_masks

# Batches of (images, labels), iterated once per mask: a list, or a loader for a split too
# large to hold in memory (`run_batches`).
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
# Scored on the training split, like the gradient scores: scored on val, the split every
# curve is measured on, leave-one-out would pick its tokens in-sample.
LOO = "importance_loo_train"
MAX_IN_MEMORY = 4096  # samples of an eval split held decoded in memory


@contextmanager
def masked(model: PromptedViT, token_mask: torch.Tensor, segment_mask: torch.Tensor,
           mode: str = "zero") -> Iterator[PromptedViT]:
    """`model` with its masks multiplied by these 0/1 masks (a trained mask keeps its
    value where kept) and prune mode `mode`; masks and mode are restored on exit."""
    token, segment, config = model.token_mask.detach().clone(), \
        model.segment_mask.detach().clone(), model.config
    with torch.no_grad():
        model.token_mask.mul_(torch.as_tensor(token_mask).to(token))
        model.segment_mask.mul_(torch.as_tensor(segment_mask).to(segment))
    model.config = config.replace(prune_mode=mode)
    try:
        yield model
    finally:
        model.config = config
        with torch.no_grad():
            model.token_mask.copy_(token)
            model.segment_mask.copy_(segment)


def in_memory(loader: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A loader's batches as a list, so every mask is evaluated on the same tensors
    without decoding them again."""
    return [(images, labels) for images, labels in loader]


def masked_metrics(model: PromptedViT, batches: Batches, token_mask: torch.Tensor,
                   segment_mask: torch.Tensor, mode: str = "zero",
                   device: torch.device | None = None) -> dict[str, float]:
    """Top-1 (%) and mean loss of `model` on `batches` with the masks applied."""
    device = device or model.token_mask.device
    with masked(model, token_mask, segment_mask, mode):
        result = evaluate(model, batches, model.num_classes, device)
    return {"top1": result["top1"], "loss": result["loss"]}


def no_retrain_curve(
    model: PromptedViT, batches: Batches, token_scores: torch.Tensor,
    segment_scores: torch.Tensor, ratios: Sequence[float], segment_ratio: float = 0.0,
    mode: str = "zero", draws: int = 5, seed: int = 0, min_segments: int | None = None,
    rounding: str = "nearest", orders: Sequence[str] = ORDERS,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Accuracy at every token ratio (at one segment ratio) for each of `orders`: the
    scores' order, the reverse order, and `draws` random orders (seeds `seed`, `seed` + 1,
    …); one row per (order, seed, ratio). `progress(done, total)` after each evaluation."""
    if draws < 1:
        raise ValueError(f"draws={draws} must be >= 1")
    runs = [(order, 0) for order in orders if order != "random"]
    if "random" in orders:
        runs += [("random", seed + draw) for draw in range(draws)]
    rows: list[dict[str, Any]] = []
    total = len(runs) * len(ratios)
    for order, draw_seed in runs:
        token, segment = order_scores(token_scores, segment_scores, order, draw_seed)
        for ratio in ratios:
            selection = select_masks(token, segment, ratio, segment_ratio, min_segments,
                                     rounding)
            metrics = masked_metrics(model, batches, selection.token_mask,
                                     selection.segment_mask, mode)
            rows.append({"order": order, "seed": draw_seed, "token_ratio": ratio,
                         "segment_ratio": segment_ratio, "kept_tokens":
                         selection.num_kept_tokens, **metrics})
            if progress is not None:
                progress(len(rows), total)
    return rows


def curve_area(ratios: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under accuracy against ratio (trapezoids) over the ratio span: the mean
    accuracy of the curve, comparable across ratio grids of the same span."""
    points = sorted(zip(ratios, accuracies, strict=True))
    if len(points) < 2:
        raise ValueError("an area needs at least two ratios")
    pairs = zip(points[:-1], points[1:], strict=True)
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in pairs)
    return area / (points[-1][0] - points[0][0])


def leave_one_out(model: PromptedViT, batches: Batches) -> dict[str, torch.Tensor]:
    """Exact leave-one-out token scores: the rise of the mean loss when one token is
    removed from the sequence (`remove` mode), P + 1 evaluations; `loo` (P,) removes it
    from every layer, and with masks per block `loo_layer` (L, P) from one layer."""
    if model.visual_prompts is None:
        raise ValueError("the model has no visual prompts to score")
    token_shape, segment_shape = model.token_mask.shape, model.segment_mask.shape
    ones_token, ones_segment = torch.ones(token_shape), torch.ones(segment_shape)
    base = masked_metrics(model, batches, ones_token, ones_segment, "remove")["loss"]

    def rise(token_mask: torch.Tensor) -> float:
        segment_mask = ones_segment * token_mask[..., None]
        return masked_metrics(model, batches, token_mask, segment_mask, "remove")["loss"] - base

    prompts = model.prompt_len
    scores: dict[str, torch.Tensor] = {}
    shared = []
    for token in range(prompts):
        mask = ones_token.clone()
        mask[..., token] = 0.0
        shared.append(rise(mask))
    scores["loo"] = torch.tensor(shared)
    if model.masks_per_block:
        layers = []
        for layer in range(token_shape[0]):
            row = []
            for token in range(prompts):
                mask = ones_token.clone()
                mask[layer, token] = 0.0
                row.append(rise(mask))
            layers.append(row)
        scores["loo_layer"] = torch.tensor(layers)
    return scores


def run_batches(store: RunStore, run_id: str, split: str | None = None,
                ) -> tuple[PromptedViT, Batches, str]:
    """A stored run's adapter on its device and a split (default its first eval split) with
    the eval transform: in memory, or its loader when it has more than `MAX_IN_MEMORY`
    samples."""
    config = TrainConfig.from_dict(store.get_run(run_id)["config"])
    if split is None and not config.eval_splits:
        raise ValueError(f"run {run_id} has no eval split to evaluate masks on")
    adapter = store.run_dir(run_id) / "adapter"
    if not adapter.is_dir():
        raise ValueError(f"run {run_id} has no adapter artifact (not completed?)")
    model = load_adapter(adapter).to(resolve_device(config.device))
    split = split or config.eval_splits[0]
    loader = eval_loader(config, model.backbone, split, batch_size=config.batch_size)
    batches = loader if len(loader.dataset) > MAX_IN_MEMORY else in_memory(loader)
    return model, batches, split


def evaluate_selection(store: RunStore, run_id: str, selection: Selection,
                       mode: str = "zero") -> dict[str, float]:
    """`<split>_top1_masked` (the parent with `selection` applied, no retraining) and
    `<split>_top1_parent` (the parent as trained), on the run's first eval split."""
    model, batches, split = run_batches(store, run_id)
    parent = masked_metrics(model, batches, torch.ones(model.token_mask.shape),
                            torch.ones(model.segment_mask.shape), model.config.prune_mode)
    pruned = masked_metrics(model, batches, selection.token_mask, selection.segment_mask, mode)
    return {f"{split}_top1_masked": pruned["top1"], f"{split}_top1_parent": parent["top1"]}


def run_leave_one_out(store: RunStore, run_id: str, recompute: bool = False,
                      ) -> dict[str, torch.Tensor]:
    """A run's leave-one-out scores on its training split (eval transform), computed once
    and stored."""
    if store.has_tensors(run_id, LOO) and not recompute:
        return store.load_tensors(run_id, LOO)
    config = TrainConfig.from_dict(store.get_run(run_id)["config"])
    model, batches, _ = run_batches(store, run_id, config.train_split)
    scores = leave_one_out(model, batches)
    store.save_tensors(run_id, LOO, scores)
    return scores
