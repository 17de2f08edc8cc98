"""The paper's pruning search: rewind at every prune ratio, keep the best on validation.

Each rewind is a child run of the parent; the table (accuracy, effective parameters and
inference time of each ratio) is returned and stored in the parent's summary.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pandas as pd
import torch

from ..artifacts import load_adapter
from ..models.vit import PromptedViT
from ..store import RunStore
from ..train.config import TrainConfig
from ..train.device import resolve_device
from ..train.loop import ProgressFn
from .controls import sweep_verdicts
from .importance import run_importance
from .options import CONTROLS, DEFAULT_RANDOM_SEEDS, DEFAULT_RATIOS
from .rewind import (
    check_rewind_options,
    prunable_config,
    rewind_in_store,
    rewind_run,
    scoring_info,
)
from .selection import check_ratio, default_min_segments, prune_count

# Sweeps of a suite on Ray run in driver threads, one per task: their timings take turns,
# so that no model is timed while another sweep's model runs beside it.
_DRIVER_WORK = threading.Lock()


def inference_ms(model: torch.nn.Module, images: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of one forward pass in milliseconds, after one warm-up pass."""
    def sync() -> None:
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)

    model.eval()
    with torch.inference_mode():
        model(images)
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            model(images)
            sync()
            times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def timing_batch(model: PromptedViT, batch_size: int = 8) -> torch.Tensor:
    """A fixed random batch at the backbone's input size (same for every ratio)."""
    size = tuple(model.backbone.patch_embed.img_size)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, 3, *size, generator=generator)


def time_modes(model: PromptedViT, images: torch.Tensor, repeats: int = 5) -> dict[str, float]:
    """Forward time with pruned prompts zeroed (full sequence) and removed (shorter one)."""
    original = model.config
    times = {}
    try:
        for mode in ("zero", "remove"):
            model.config = original.replace(prune_mode=mode)
            times[f"ms_{mode}"] = inference_ms(model, images, repeats)
    finally:
        model.config = original
    return times


def _limit_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _local_rewinds(
    store: RunStore, run_id: str, signed: bool, token_scores: str,
    options: list[dict[str, Any]], workers: int, progress: ProgressFn | None,
) -> list[dict[str, Any]]:
    # Computed once here, before any worker looks for it.
    run_importance(store, run_id, signed=signed, token_scores=token_scores)
    if workers == 1:
        return [rewind_run(store, run_id, progress=progress, **o).to_dict() for o in options]
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_limit_threads, initargs=(threads,)) as pool:
        futures = [pool.submit(rewind_in_store, str(store.root), run_id, o) for o in options]
        return [future.result() for future in futures]


def pick_best(table: pd.DataFrame, metric: str, order: str | None = None) -> int | None:
    """Index of the completed row with the highest `metric`; ties go to more pruning.
    With `order`, only rows pruned in that order compete (random controls never win)."""
    done = table[(table["status"] == "completed") & table[metric].notna()]
    if order is not None and "order" in done.columns:
        done = done[done["order"] == order]
    if done.empty:
        return None
    ranked = done.sort_values([metric, "token_ratio", "segment_ratio"],
                              ascending=[False, False, False], kind="stable")
    return int(ranked.index[0])


def default_ratios(config: TrainConfig, min_segments: int | None = None
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (token, segment) ratios of a sweep given none: the paper's token ratios without
    segment pruning, or for a run of the official preset the official code's grid, token
    and segment percents each 10 … 90, one ratio per pruned count (the official code names
    a rewind by its counts: 80 % and 90 % of 16 segments, with 4 kept, are one rewind)."""
    if config.preset != "official":
        return DEFAULT_RATIOS, (0.0,)
    prompt = config.prompt
    floor = default_min_segments(prompt.num_segments) if min_segments is None else min_segments

    def one_per_count(total: int, keep_at_least: int) -> tuple[float, ...]:
        counts = [prune_count(r, total, keep_at_least, "floor") for r in DEFAULT_RATIOS]
        return tuple(r for i, r in enumerate(DEFAULT_RATIOS) if counts[i] not in counts[:i])

    # With masks per block the token total is L·P, unknown here: every percent is kept.
    tokens = DEFAULT_RATIOS if prompt.masks_per_block else one_per_count(
        prompt.visual_prompt_len, 1)
    return tokens, one_per_count(prompt.num_segments, floor)


def selection_metric(config: TrainConfig, run_id: str, select_on: str) -> str:
    """The column the best pair is chosen by, `<select_on>_top1`. Test is refused: a pair
    chosen on test makes the test figure reported for it a choice, not a measurement."""
    if select_on == "test":
        raise ValueError("select_on='test' would choose the prune ratios on the split their "
                         "result is reported on; choose on val (the paper's val200)")
    if select_on not in config.eval_splits:
        raise ValueError(f"run {run_id} evaluates {list(config.eval_splits)}, not "
                         f"{select_on!r}: the prune ratios are chosen on a split the run "
                         "evaluates")
    return f"{select_on}_top1"


def sweep_prune(
    store: RunStore, run_id: str, ratios: Sequence[float] | None = None,
    segment_ratios: Sequence[float] | None = None, init: str = "fresh", mode: str = "zero",
    epochs: int | None = None, signed: bool = False, token_scores: str = "mask",
    min_segments: int | None = None, workers: int = 1, timing_repeats: int = 5,
    progress: ProgressFn | None = None, ray_address: str | None = None,
    combined: bool = False, order: str = "importance", seed: int = 0,
    select_on: str = "val", controls: str = "none",
    random_seeds: Sequence[int] = DEFAULT_RANDOM_SEEDS,
) -> pd.DataFrame:
    """Rewind at every (token ratio × segment ratio); one row per rewind, `best` marked.

    `combined=True` prunes tokens and segments at one ratio, (r, r) for each r in
    `ratios`, instead of the grid (`segment_ratios` must then be left at its default).
    Ratios left None are `default_ratios` (the official grid for the official preset).

    The best row has the highest top-1 on `select_on` (`val`, as in the paper's and the
    official code's search; `selection_metric` refuses test); ties go to more pruning
    (token ratio, then segment ratio). `workers`
    > 1 trains rewinds in a local process pool (without `progress`); timing always runs
    here, one model at a time, on the parent's device. `ray_address` (a cluster address,
    or "local") runs the importance pass and each rewind as Ray tasks instead (`workers`
    is then ignored).
    `order='random'` (draw `seed`) rewinds random masks of the same counts: the control.
    `controls='random'` rewinds such masks beside every pair, one per `random_seeds`: rows
    are marked by `order` (random ones by `seed`) and the stored summary holds a verdict
    per pair (`controls.sweep_verdicts`); only rows of `order` compete for best.
    """
    check_rewind_options(init, mode, epochs)
    if controls not in CONTROLS:
        raise ValueError(f"controls={controls!r} is not allowed; choose one of "
                         f"{list(CONTROLS)}")
    if controls == "random" and (order == "random" or not random_seeds):
        raise ValueError("random controls need masks of another order (importance or "
                         "reverse) and at least one random seed")
    if combined and segment_ratios is not None and tuple(segment_ratios) != (0.0,):
        raise ValueError("combined=True prunes segments at the token ratios; do not pass "
                         "segment_ratios as well")
    config = prunable_config(store, run_id)
    metric = selection_metric(config, run_id, select_on)
    default_tokens, default_segments = default_ratios(config, min_segments)
    ratios = default_tokens if ratios is None else ratios
    if segment_ratios is None:
        segment_ratios = (0.0,) if combined else default_segments
    if not ratios or not segment_ratios:
        raise ValueError("sweep_prune needs at least one token ratio and one segment ratio")
    pairs = [(r, r) for r in ratios] if combined else [
        (t, s) for t in ratios for s in segment_ratios]
    grid = [(check_ratio("token_ratio", t), check_ratio("segment_ratio", s)) for t, s in pairs]
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    if ray_address is not None:
        from ..train.cluster import import_ray
        from .ray_backend import ray_sweep

        import_ray()  # a missing ray fails here, before the importance pass
    device = resolve_device(config.device)

    options = [dict(token_ratio=t, segment_ratio=s, init=init, mode=mode, epochs=epochs,
                    signed=signed, token_scores=token_scores, min_segments=min_segments,
                    order=order, seed=seed)
               for t, s in grid]
    if controls == "random":
        options = [{**option, **drawn} for option in options for drawn in
                   [{}, *({"order": "random", "seed": int(s)} for s in random_seeds)]]
    if ray_address is not None:
        results = ray_sweep(ray_address, str(store.root), run_id, signed, token_scores,
                            options, num_gpus=1.0 if device.type == "cuda" else 0.0)
    else:
        results = _local_rewinds(store, run_id, signed, token_scores, options, workers,
                                 progress)

    rows, images = [], None
    for option, result in zip(options, results, strict=True):
        row = {key: result.get(key) for key in (
            "token_ratio", "segment_ratio", "run_id", "status", "reason", "val_top1",
            "test_top1", "trainable_params", "effective_params")}
        row[metric] = result.get(metric)
        row["num_kept_tokens"] = result.get("num_kept_tokens")
        row["order"] = option["order"]
        row["seed"] = option["seed"] if option["order"] == "random" else None
        if result["status"] == "completed" and option["order"] == order:  # controls: untimed
            with _DRIVER_WORK:
                model = load_adapter(store.run_dir(result["run_id"]) / "adapter").to(device)
                images = timing_batch(model).to(device) if images is None else images
                row.update(time_modes(model, images, timing_repeats))
        rows.append(row)
    table = pd.DataFrame(rows)
    table["seed"] = pd.Series([row["seed"] for row in rows], dtype=object)  # ints, not 0.0
    best = pick_best(table, metric, order)
    table["best"] = table.index == best
    records = [{k: _clean(v) for k, v in r.items()} for r in table.to_dict("records")]
    chosen = {} if best is None else {f"best_{key}": records[best][key] for key in (
        "token_ratio", "segment_ratio", "run_id")}
    store.update_summary(run_id, prune_sweep={
        "metric": metric, "select_on": select_on, "init": init, "mode": mode,
        **scoring_info(signed, token_scores, order, seed),
        "table": records,
        "best": None if best is None else records[best], **chosen,
        **({"verdicts": sweep_verdicts(records, select_on, order)}
           if controls == "random" else {})})
    return table
