"""Importance of prompt tokens and prompt segments, from gradients w.r.t. the pruning masks.

The paper scores a token by S_k = E_x |∂L(x)/∂ρ_k| (here: the gradient of each batch's mean
loss, absolute value, averaged over batches); the reference code averages the signed
gradient instead. One pass computes both, so a stored `importance` file serves either:
keys `token`, `segment` (absolute) and `token_signed`, `segment_signed`. Per prompt layer
too: `token_layer` (L, P), `segment_layer` (L, P, R) and their `_signed` variants, the
shared masks' gradients split by the layer they act in (they sum to the shared ones).
With masks per block the per-layer keys are the masks' own gradients, and `token` /
`segment` are what shared masks would get (the per-layer gradients summed).

The token-mask gradient is ~0 for deep prompts (docs/METHOD.md, "Why the paper's token
score vanishes for deep prompts"), so the same pass also stores token scores that act after
the pre-norm LayerNorm: `kv` (a mask on the prompt's keys and values) and `logit` (a
log-mask bias on its attention logits), each as E|grad|, signed and per layer like the masks
(ViTs of timm's standard blocks; on Swin in the first stage's blocks, where the masks act),
and `taylor` = E Σ|∂L/∂p ⊙ p| (absolute value inside the sum; per layer `taylor_layer`;
every prompted model, Swin too). Exact leave-one-out (`loo`) lives in
`noretrain`, stored apart: it costs P + 1 evaluations of the training split.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from ..artifacts import load_adapter
from ..models.common import PromptedModel
from ..store import RunStore
from ..train import TrainConfig, resolve_device
from ..train.data import build_loaders, epoch_seed, eval_loader
from ..train.tracker import ImportanceTracker
from .noretrain import run_leave_one_out
from .options import TOKEN_SCORES, UNSIGNED

IMPORTANCE = "importance"
_KEYS = ("token", "segment", "token_signed", "segment_signed")
_LAYER_KEYS = ("token_layer", "segment_layer", "token_layer_signed", "segment_layer_signed")


@dataclass
class Importance:
    """Scores of one run: `token` (P,), `segment` (P, R), or per layer (L, P) and
    (L, P, R); higher means more important."""

    token: torch.Tensor
    segment: torch.Tensor
    signed: bool = False
    batches: int = 0


def normalize_segment_scores(segment: torch.Tensor) -> torch.Tensor:
    """Divide each token's segment scores by their L2 norm.

    Makes segment scores comparable across tokens (for a global segment ranking); the
    ranking within one token, which is what `select_masks` uses, is unchanged.
    """
    norm = segment.pow(2).sum(dim=-1, keepdim=True).sqrt()
    return segment / (norm + 1e-20)


def check_token_scores(token_scores: str, signed: bool = False) -> None:
    if token_scores not in TOKEN_SCORES:
        raise ValueError(f"token_scores={token_scores!r} is not allowed; choose one of "
                         f"{list(TOKEN_SCORES)}")
    if signed and token_scores in UNSIGNED:
        raise ValueError(f"token_scores={token_scores!r} has no signed variant")


def token_key(token_scores: str, signed: bool = False, per_layer: bool = False) -> str | None:
    """The stored key of a token score (None for `segments`, summed from segments)."""
    if token_scores == "segments":
        return None
    name = "token" if token_scores == "mask" else token_scores
    infix = "_layer" if per_layer else ""
    return f"{name}{infix}{'_signed' if signed else ''}"


def pick(scores: dict[str, torch.Tensor], signed: bool = False, normalize: bool = False,
         batches: int = 0, token_scores: str = "mask", per_layer: bool = False) -> Importance:
    """The absolute or signed variant out of a dict with the four `_KEYS` (`per_layer`:
    the four `_LAYER_KEYS`, for masks per block).

    `token_scores='mask'` is the paper's gradient w.r.t. the token mask. In a pre-norm ViT
    that gradient is ~0: each block's LayerNorm makes the output invariant to scaling a
    whole prompt token, so only LayerNorm's eps is left. `'segments'` scores a token by
    the sum of its segment scores instead (a partial scaling is not invariant); `kv`,
    `logit`, `taylor` and `loo` are the post-LayerNorm scores of the module doc.
    """
    check_token_scores(token_scores, signed)
    keys = _LAYER_KEYS if per_layer else _KEYS
    key = token_key(token_scores, signed, per_layer)
    missing = [k for k in (*keys, key) if k is not None and k not in scores]
    if token_scores in ("kv", "logit") and key in missing:
        raise ValueError(f"token_scores={token_scores!r} needs timm's standard ViT or Swin "
                         "blocks (it masks the prompts' attention columns); on other "
                         "backbones use 'taylor', 'segments', 'loo' or 'mask'")
    if missing:
        raise ValueError(f"the importance scores lack {missing}")
    infix = "_layer" if per_layer else ""
    suffix = "_signed" if signed else ""
    segment = scores[f"segment{infix}{suffix}"]
    token = segment.sum(dim=-1) if key is None else scores[key]
    if normalize:
        segment = normalize_segment_scores(segment)
    return Importance(token, segment, signed, batches)


def column_values(model: PromptedModel, probes: tuple[torch.Tensor, torch.Tensor],
                  ) -> dict[str, torch.Tensor]:
    """One backward's `kv` and `logit` scores from the column probes' gradients; per prompt
    layer (L, P), and per token (P,) over all layers."""
    values = {}
    for name, probe in zip(("kv", "logit"), probes, strict=True):
        grad = probe.grad.detach().float()  # (depth, P): one row per block
        layer = grad if model.config.deep_prompts else grad.sum(0, keepdim=True)
        values.update({name: layer.sum(0).abs(), f"{name}_signed": layer.sum(0),
                       f"{name}_layer": layer.abs(), f"{name}_layer_signed": layer})
    return values


def taylor_values(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One backward's Σ|∂L/∂p ⊙ p| of the prompts the masks act on: (L, P) and (P,).
    Needs only the prompts' gradient, so it serves every prompted model (Swin too)."""
    prompts = model.visual_prompts
    contribution = (prompts.grad.detach() * prompts.detach()).abs().sum(-1).float()
    return {"taylor": contribution.sum(0), "taylor_layer": contribution}


def importance_pass(
    model: PromptedModel, loader: DataLoader, device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """One pass over `loader`: the four mean mask-gradient tensors, `taylor`, the column
    scores `kv` and `logit` (where `supports_column_probes()`) and `batches`.

    The model is scored in eval mode (no prompt dropout) and left as it was: its training
    flag and the gradients of its trainable parameters are restored afterwards.
    """
    if model.visual_prompts is None:
        raise ValueError("the model has no visual prompts to score")
    device = torch.device(device) if device is not None else model.token_mask.device
    was_training = model.training
    saved_grads = {name: p.grad for name, p in model.trainable_parameters()}
    for _, param in model.trainable_parameters():
        param.grad = None  # backward would add into a saved tensor in place
    tracker, signal, sums = ImportanceTracker(), model.supports_column_probes(), {}
    model.eval()
    try:
        for index, (images, labels) in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            images, labels = images.to(device), labels.to(device)
            with model.mask_gradients(per_layer=True), \
                    model.column_probes() if signal else nullcontext() as probes:
                loss = torch.nn.functional.cross_entropy(model(images), labels)
                loss.backward()
            tracker.update(model)
            values = taylor_values(model)
            if signal:
                values.update(column_values(model, probes))
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            model.visual_prompts.grad = None
    finally:
        model.train(was_training)
        model.clear_mask_grads()
        for name, param in model.trainable_parameters():
            param.grad = saved_grads[name]
    if not tracker.steps:
        raise ValueError("the loader yielded no batches to score")
    scores = tracker.snapshot()
    scores.update({key: (value / tracker.steps).cpu() for key, value in sums.items()})
    scores["batches"] = scores.pop("steps")
    return scores


def compute_importance(
    model: PromptedModel, loader: DataLoader, signed: bool = False, normalize: bool = False,
    device: torch.device | str | None = None, max_batches: int | None = None,
    token_scores: str = "mask",
) -> Importance:
    """Token and segment scores of `model` over `loader` (paper: `signed=False`)."""
    scores = importance_pass(model, loader, device, max_batches)
    return pick(scores, signed, normalize, int(scores["batches"]), token_scores)


def compute_run_importance(
    store: RunStore, run_id: str, max_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """Score a stored run's adapter on its training split; saved as `importance`.

    The split is read in order with the eval transform, or with the official preset as
    the official code reads it: shuffled and augmented, one more epoch of the run's
    training loader (seeded, so the scores are reproducible)."""
    config = TrainConfig.from_dict(store.get_run(run_id)["config"])
    adapter = store.run_dir(run_id) / "adapter"
    if not adapter.is_dir():
        raise ValueError(f"run {run_id} has no adapter artifact (not completed?)")
    device = resolve_device(config.device)
    model = load_adapter(adapter).to(device)
    if config.preset == "official":
        loader, sampler, _, _ = build_loaders(config.replace(eval_splits=()), model.backbone,
                                              device)
        sampler.set_epoch(config.epochs)
        torch.manual_seed(epoch_seed(config.seed, config.epochs))  # the augmentation
    else:
        loader = eval_loader(config, model.backbone, config.train_split,
                             batch_size=config.batch_size)
    scores = importance_pass(model, loader, device, max_batches)
    store.save_tensors(run_id, IMPORTANCE, scores)
    return scores


def run_importance(
    store: RunStore, run_id: str, signed: bool = False, normalize: bool = False,
    recompute: bool = False, token_scores: str = "mask", per_layer: bool = False,
) -> Importance:
    """A run's stored scores, computed and stored first when absent (or `recompute`, or
    stored before per-layer or post-LayerNorm scores existed and are asked for);
    leave-one-out scores come from their own stored file (`noretrain`)."""
    check_token_scores(token_scores, signed)
    key = None if token_scores == "loo" else token_key(token_scores, signed, per_layer)
    scores = None
    if not recompute and store.has_tensors(run_id, IMPORTANCE):
        scores = store.load_tensors(run_id, IMPORTANCE)
        missing = [k for k in _KEYS if k not in scores]
        if missing:
            raise ValueError(f"run {run_id}'s importance file lacks {missing}")
        if (per_layer and any(k not in scores for k in _LAYER_KEYS)) or \
                (key is not None and key not in scores):
            scores = None
    if scores is None:
        scores = compute_run_importance(store, run_id)
    if token_scores == "loo":
        scores = {**scores, **run_leave_one_out(store, run_id, recompute)}
    batches = int(scores.get("batches", torch.tensor(0)))
    return pick(scores, signed, normalize, batches, token_scores, per_layer)
