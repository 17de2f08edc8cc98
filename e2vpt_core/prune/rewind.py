"""Prune a stored run and rewind: retrain with the masks fixed, as a child run.

The child's TrainConfig is the parent's (same lr, weight decay, schedule, data, seed) with
the masks, the prune mode and the starting values changed: a fresh random init (reference
code) or the parent's own initial values (`init='original'`, lottery-ticket rewinding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..artifacts import load_adapter
from ..store import RunStore
from ..train import RunResult, TrainConfig, train_run
from ..train.loop import ProgressFn
from .importance import UNSIGNED, Importance, run_importance
from .noretrain import evaluate_selection, masked, no_retrain_curve, run_batches
from .options import INITS, MODES
from .selection import Selection, check_ratio, order_scores, select_masks

MASKS = "masks"


def prunable_config(store: RunStore, run_id: str, pending_ok: bool = False) -> TrainConfig:
    """The run's TrainConfig; refuses runs that cannot be pruned (no prompts, not done).

    `pending_ok` also accepts a queued or running run: a job queued behind the run's own
    training job finds it completed (jobs run in order), or fails then with this check.
    """
    run = store.get_run(run_id)
    config = TrainConfig.from_dict(run["config"])
    if not config.prompt.has_visual_prompts:
        raise ValueError(f"run {run_id} has no visual prompts to prune (method "
                         f"{config.prompt.method!r}; use vpt-shallow, vpt-deep or e2vpt)")
    if pending_ok and run["status"] in ("queued", "running"):
        return config
    if run["status"] != "completed":
        raise ValueError(f"run {run_id} is {run['status']}, not completed: nothing to prune")
    return config


def select_for_run(
    store: RunStore, run_id: str, token_ratio: float, segment_ratio: float = 0.0,
    signed: bool = False, token_scores: str = "mask", min_segments: int | None = None,
    order: str = "importance", seed: int = 0,
) -> tuple[Selection, Importance]:
    """The run's importance (computed and stored if absent) and the masks for the ratios,
    pruned in `order` (`random` draws from `seed`).

    A run of the official preset is scored by the signed gradient and its counts are
    rounded down, as the official code does."""
    check_ratio("token_ratio", token_ratio)
    check_ratio("segment_ratio", segment_ratio)
    importance, rounding = run_scores(store, run_id, signed, token_scores)
    token, segment = order_scores(importance.token, importance.segment, order, seed)
    selection = select_masks(token, segment, token_ratio, segment_ratio, min_segments,
                             rounding)
    return selection, importance


def run_scores(store: RunStore, run_id: str, signed: bool = False,
               token_scores: str = "mask") -> tuple[Importance, str]:
    """The scores masks of a prunable run are chosen by, and the rounding of its counts:
    the official preset's are signed (where a score has a sign) and rounded down."""
    config = prunable_config(store, run_id)
    official = config.preset == "official"
    importance = run_importance(
        store, run_id, signed=signed or (official and token_scores not in UNSIGNED),
        token_scores=token_scores, per_layer=config.prompt.masks_per_block)
    return importance, "floor" if official else "nearest"


def run_curve(
    store: RunStore, run_id: str, ratios: list[float], segment_ratio: float = 0.0,
    token_scores: str = "mask", signed: bool = False, mode: str = "zero", draws: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Accuracy against token ratio without retraining for the run's scores, their reverse
    and `draws` random orders; stored in the run's summary as `no_retrain_curve`."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of {list(MODES)}")
    importance, rounding = run_scores(store, run_id, signed, token_scores)
    model, batches, split = run_batches(store, run_id)
    rows = no_retrain_curve(model, batches, importance.token, importance.segment, ratios,
                            segment_ratio, mode, draws, rounding=rounding,
                            progress=progress)
    curve = {"split": split, "mode": mode, "segment_ratio": segment_ratio, "draws": draws,
             **scoring_info(importance.signed, token_scores), "rows": rows}
    store.update_summary(run_id, no_retrain_curve=curve)
    return curve


def scoring_info(signed: bool, token_scores: str, order: str = "importance",
                 seed: int = 0) -> dict[str, str | int]:
    """How the masks were scored, for summaries and mask metadata."""
    info: dict[str, str | int] = {"importance": "signed" if signed else "abs",
                                  "token_scores": token_scores, "order": order}
    if order == "random":
        info["order_seed"] = seed
    return info


def save_masks(store: RunStore, run_id: str, selection: Selection,
               info: dict[str, str | int]) -> None:
    store.save_tensors(run_id, MASKS, {"token_mask": selection.token_mask,
                                       "segment_mask": selection.segment_mask},
                       metadata={"token_ratio": str(selection.token_ratio),
                                 "segment_ratio": str(selection.segment_ratio),
                                 **{key: str(value) for key, value in info.items()}})


def prune_run(
    store: RunStore, run_id: str, token_ratio: float, segment_ratio: float = 0.0,
    signed: bool = False, token_scores: str = "mask", min_segments: int | None = None,
    order: str = "importance", seed: int = 0, evaluate: bool = False, mode: str = "zero",
) -> dict[str, Any]:
    """Masks for a stored run, saved as its `masks`, with the parameter count they leave;
    with `evaluate`, the parent's accuracy with them applied (`mode`), no retraining.

    No training happens; `rewind_run` retrains with such masks.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of {list(MODES)}")
    selection, importance = select_for_run(store, run_id, token_ratio, segment_ratio, signed,
                                           token_scores, min_segments, order, seed)
    info = scoring_info(importance.signed, token_scores, order, seed)
    save_masks(store, run_id, selection, info)
    model = load_adapter(store.run_dir(run_id) / "adapter")
    with masked(model, selection.token_mask, selection.segment_mask):
        summary = model.parameter_summary()
    result = {"run_id": run_id, **selection.to_dict(), **info,
              "num_tokens": selection.token_mask.numel(),
              "trainable_params": summary["trainable_params"],
              "effective_params": summary["effective_params"]}
    if evaluate:
        result.update(mode=mode, **evaluate_selection(store, run_id, selection, mode))
    return result


def check_rewind_options(init: str, mode: str, epochs: int | None) -> None:
    """Fail before any expensive step (importance pass, run creation) on a bad option."""
    if init not in INITS:
        raise ValueError(f"init={init!r} is not allowed; choose one of {list(INITS)}")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of {list(MODES)}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                               or epochs < 1):
        raise ValueError(f"epochs={epochs!r} must be an integer >= 1")


def rewind_config(
    parent: TrainConfig, parent_id: str, selection: Selection, init: str = "fresh",
    mode: str = "zero", epochs: int | None = None, grad_checkpointing: bool | None = None,
) -> TrainConfig:
    """The parent's recipe with fixed masks; a shorter run keeps the warm-up fraction.
    `grad_checkpointing` None keeps the parent's.

    `fresh` draws new starting values (init seed = the parent's + 1; with the parent's own
    seed they would be the parent's initial values again, i.e. `original`); `original`
    copies the parent's stored initial values. Batch order and dropout follow `seed` as
    in the parent either way."""
    check_rewind_options(init, mode, epochs)
    changes: dict[str, Any] = {  # a rewind is no member of its parent's seed group
        "init_seed": parent.prompt_init_seed + 1 if init == "fresh" else None, "group_id": None}
    if grad_checkpointing is not None:
        changes["grad_checkpointing"] = grad_checkpointing
    if epochs is not None:
        changes["epochs"] = epochs
        if parent.warmup_epochs is not None:
            changes["warmup_epochs"] = parent.warmup_epochs * epochs / parent.epochs
    return parent.replace(
        token_mask=selection.token_mask.tolist(),
        segment_mask=selection.segment_mask.tolist(),
        init_from_run=parent_id if init == "original" else None,
        prompt=parent.prompt.replace(prune_mode=mode, trainable_masks=False),
        **changes,
    )


def create_rewind_run(
    store: RunStore, parent_run_id: str, token_ratio: float, segment_ratio: float = 0.0,
    init: str = "fresh", mode: str = "zero", epochs: int | None = None,
    signed: bool = False, token_scores: str = "mask", min_segments: int | None = None,
    order: str = "importance", seed: int = 0, grad_checkpointing: bool | None = None,
) -> tuple[str, TrainConfig, dict[str, Any]]:
    """Select masks from the parent's importance and create the `rewind` child run (not yet
    trained): its id, config and the rewind settings recorded in its summary.

    Bad input (unknown run, no prompts, ratio outside [0, 0.9], bad init / mode / epochs)
    raises before any run is created.
    """
    check_rewind_options(init, mode, epochs)
    parent = prunable_config(store, parent_run_id)
    if init == "original" and not store.has_tensors(parent_run_id, "init"):
        raise ValueError(f"run {parent_run_id} has no stored init values for init='original'")
    selection, importance = select_for_run(store, parent_run_id, token_ratio, segment_ratio,
                                           signed, token_scores, min_segments, order, seed)
    config = rewind_config(parent, parent_run_id, selection, init, mode, epochs,
                           grad_checkpointing)
    run_id = store.create_run(config.to_dict(), kind="rewind", parent_id=parent_run_id)
    scoring = scoring_info(importance.signed, token_scores, order, seed)
    save_masks(store, run_id, selection, scoring)
    info = {**selection.to_dict(), "init": init, "mode": mode, **scoring}
    store.update_summary(run_id, **info)
    return run_id, config, info


def rewind_run(
    store: RunStore, parent_run_id: str, token_ratio: float, segment_ratio: float = 0.0,
    init: str = "fresh", mode: str = "zero", epochs: int | None = None,
    progress: ProgressFn | None = None, signed: bool = False, token_scores: str = "mask",
    min_segments: int | None = None, rank: int = 0,
    broadcast: Callable[[Any], Any] | None = None, order: str = "importance", seed: int = 0,
    grad_checkpointing: bool | None = None,
) -> RunResult:
    """Create a `rewind` child run (`create_rewind_run`) and train it; a failed training
    returns a `failed` result.

    Under `torchrun`, pass the rank and `distributed_context`'s `broadcast`: rank 0 alone
    scores the parent and creates the child (or fails, and every rank raises its error);
    every rank trains it."""
    created: tuple[str, TrainConfig, dict[str, Any]] | Exception | None = None
    if rank == 0:
        try:
            created = create_rewind_run(
                store, parent_run_id, token_ratio, segment_ratio, init, mode, epochs, signed,
                token_scores, min_segments, order, seed, grad_checkpointing)
        except (ValueError, KeyError) as error:
            created = error
    if broadcast is not None:
        created = broadcast(created)
    if isinstance(created, Exception):
        raise created
    run_id, config, info = created
    result = train_run(config, store, run_id, progress=progress)
    result.metrics = {**result.metrics, **info}
    return result


def rewind_in_store(root: str, parent: str, options: dict[str, Any]) -> dict[str, Any]:
    """One rewind in another process (pool worker or Ray task): it opens the store itself
    and returns the run result as a plain dict."""
    return rewind_run(RunStore(root), parent, **options).to_dict()
