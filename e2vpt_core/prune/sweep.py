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
from ..train.device import resolve_device
from ..train.loop import ProgressFn
from .importance import run_importance
from .options import DEFAULT_RATIOS
from .rewind import (
    check_rewind_options,
    prunable_config,
    rewind_in_store,
    rewind_run,
    scoring_info,
)
from .selection import check_ratio

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


def pick_best(table: pd.DataFrame, metric: str) -> int | None:
    """Index of the completed row with the highest `metric`; ties go to more pruning."""
    done = table[(table["status"] == "completed") & table[metric].notna()]
    if done.empty:
        return None
    ranked = done.sort_values([metric, "token_ratio", "segment_ratio"],
                              ascending=[False, False, False], kind="stable")
    return int(ranked.index[0])


def sweep_prune(
    store: RunStore, run_id: str, ratios: Sequence[float] = DEFAULT_RATIOS,
    segment_ratios: Sequence[float] = (0.0,), init: str = "fresh", mode: str = "zero",
    epochs: int | None = None, signed: bool = False, token_scores: str = "mask",
    min_segments: int | None = None, workers: int = 1, timing_repeats: int = 5,
    progress: ProgressFn | None = None, ray_address: str | None = None,
    combined: bool = False, order: str = "importance", seed: int = 0,
) -> pd.DataFrame:
    """Rewind at every (token ratio × segment ratio); one row per rewind, `best` marked.

    `combined=True` prunes tokens and segments at one ratio, (r, r) for each r in
    `ratios`, instead of the grid (`segment_ratios` must then be left at its default).

    The best row has the highest top-1 on the parent's first eval split (`val` in the
    paper's search); ties go to more pruning (token ratio, then segment ratio). `workers`
    > 1 trains rewinds in a local process pool (without `progress`); timing always runs
    here, one model at a time, on the parent's device. `ray_address` (a cluster address,
    or "local") runs the importance pass and each rewind as Ray tasks instead (`workers`
    is then ignored).
    `order='random'` (draw `seed`) rewinds random masks of the same counts: the control.
    """
    check_rewind_options(init, mode, epochs)
    if not ratios or not segment_ratios:
        raise ValueError("sweep_prune needs at least one token ratio and one segment ratio")
    if combined and tuple(segment_ratios) != (0.0,):
        raise ValueError("combined=True prunes segments at the token ratios; do not pass "
                         "segment_ratios as well")
    pairs = [(r, r) for r in ratios] if combined else [
        (t, s) for t in ratios for s in segment_ratios]
    grid = [(check_ratio("token_ratio", t), check_ratio("segment_ratio", s)) for t, s in pairs]
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    if ray_address is not None:
        from ..train.cluster import import_ray
        from .ray_backend import ray_sweep

        import_ray()  # a missing ray fails here, before the importance pass
    config = prunable_config(store, run_id)
    if not config.eval_splits:
        raise ValueError(f"run {run_id} has no eval split to compare prune ratios on")
    metric = f"{config.eval_splits[0]}_top1"
    device = resolve_device(config.device)

    options = [dict(token_ratio=t, segment_ratio=s, init=init, mode=mode, epochs=epochs,
                    signed=signed, token_scores=token_scores, min_segments=min_segments,
                    order=order, seed=seed)
               for t, s in grid]
    if ray_address is not None:
        results = ray_sweep(ray_address, str(store.root), run_id, signed, token_scores,
                            options, num_gpus=1.0 if device.type == "cuda" else 0.0)
    else:
        results = _local_rewinds(store, run_id, signed, token_scores, options, workers,
                                 progress)

    rows, images = [], None
    for result in results:
        row = {key: result.get(key) for key in (
            "token_ratio", "segment_ratio", "run_id", "status", "reason", "val_top1",
            "test_top1", "trainable_params", "effective_params")}
        row[metric] = result.get(metric)
        row["num_kept_tokens"] = result.get("num_kept_tokens")
        if result["status"] == "completed":
            with _DRIVER_WORK:
                model = load_adapter(store.run_dir(result["run_id"]) / "adapter").to(device)
                images = timing_batch(model).to(device) if images is None else images
                row.update(time_modes(model, images, timing_repeats))
        rows.append(row)
    table = pd.DataFrame(rows)
    best = pick_best(table, metric)
    table["best"] = table.index == best
    records = [{k: _clean(v) for k, v in r.items()} for r in table.to_dict("records")]
    store.update_summary(run_id, prune_sweep={
        "metric": metric, "init": init, "mode": mode,
        **scoring_info(signed, token_scores, order, seed),
        "table": records,
        "best": None if best is None else records[best]})
    return table
