"""The paper's search: lr × wd grid on train → val, then seeds on train+val → test."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from ..store import RunStore
from .config import TrainConfig
from .loop import ProgressFn, RunResult, train_run

# (store, configs, kind, parent_id, progress) -> one result per config, in order. The
# default trains here, one run after another; the Ray backend trains them all at once.
Trainer = Callable[[RunStore, Sequence[TrainConfig], str, str | None, ProgressFn | None],
                   list[RunResult]]


def train_in_turn(
    store: RunStore, configs: Sequence[TrainConfig], kind: str, parent_id: str | None = None,
    progress: ProgressFn | None = None,
) -> list[RunResult]:
    """Create and train each run before the next one exists, in this process."""
    results = []
    for config in configs:
        run_id = store.create_run(config.to_dict(), kind=kind, parent_id=parent_id)
        results.append(train_run(config, store, run_id, progress=progress))
    return results


def check_grid(base: TrainConfig, lrs: Sequence[float], wds: Sequence[float]) -> None:
    """Refuse a grid value no run could use (inf, nan, negative) before any run exists."""
    for lr in lrs:
        for wd in wds:
            base.replace(base_lr=lr, weight_decay=wd)


def grid_search(
    base: TrainConfig, store: RunStore, lrs: Sequence[float], wds: Sequence[float],
    parent_id: str | None = None, progress: ProgressFn | None = None,
    trainer: Trainer = train_in_turn,
) -> pd.DataFrame:
    """One run per (base_lr, weight_decay) on train → val; failed runs stay in the table."""
    pairs = [(lr, wd) for lr in lrs for wd in wds]
    configs = [base.replace(base_lr=lr, weight_decay=wd, train_split="train",
                            eval_splits=("val",)) for lr, wd in pairs]
    results = trainer(store, configs, "grid", parent_id, progress)
    return pd.DataFrame([{"base_lr": lr, "weight_decay": wd, "run_id": result.run_id,
                          "status": result.status, "val_top1": result.metrics.get("val_top1"),
                          "reason": result.reason}
                         for (lr, wd), result in zip(pairs, results, strict=True)])


def best_setting(grid: pd.DataFrame) -> tuple[float, float]:
    """Highest val top-1; ties go to the larger weight decay, then the smaller lr."""
    done = grid[grid["status"] == "completed"]
    if done.empty:
        raise ValueError("every grid run failed; see their reasons in `e2vpt runs`")
    ranked = done.sort_values(["val_top1", "weight_decay", "base_lr"],
                              ascending=[False, False, True])
    best = ranked.iloc[0]
    return float(best["base_lr"]), float(best["weight_decay"])


def final_runs(
    base: TrainConfig, store: RunStore, seeds: Sequence[int], parent_id: str | None = None,
    progress: ProgressFn | None = None, trainer: Trainer = train_in_turn,
) -> pd.DataFrame:
    """One run per seed on trainval → test (the reported numbers)."""
    configs = [base.replace(seed=seed, train_split="trainval", eval_splits=("test",))
               for seed in seeds]
    results = trainer(store, configs, "final", parent_id, progress)
    return pd.DataFrame([{"seed": seed, "run_id": result.run_id, "status": result.status,
                          "test_top1": result.metrics.get("test_top1"), "reason": result.reason}
                         for seed, result in zip(seeds, results, strict=True)])


def sweep(
    base: TrainConfig, store: RunStore, lrs: Sequence[float], wds: Sequence[float],
    seeds: Sequence[int], progress: ProgressFn | None = None, grid_epochs: int | None = None,
) -> dict[str, Any]:
    """Grid, pick the best pair, final seeds; a `sweep` run records it all.

    `grid_epochs` shortens the grid's runs only (a cheaper search where a full grid costs
    too much); the final seeds keep `base.epochs`.
    """
    if grid_epochs is not None and grid_epochs < 1:
        raise ValueError(f"grid_epochs={grid_epochs} must be at least 1")
    grid_base = base if grid_epochs is None else base.replace(epochs=grid_epochs)
    check_grid(grid_base, lrs, wds)
    spec = {"lrs": list(lrs), "wds": list(wds), "seeds": list(seeds),
            "epochs": grid_base.epochs}
    parent = store.create_run({**base.to_dict(), "grid": spec}, kind="sweep")
    store.set_status(parent, "running")
    grid = grid_search(grid_base, store, lrs, wds, parent, progress)
    try:
        lr, wd = best_setting(grid)
    except ValueError as error:
        store.set_status(parent, "failed", str(error))
        return {"run_id": parent, "status": "failed", "reason": str(error),
                "grid": grid.to_dict("records")}
    finals = final_runs(base.replace(base_lr=lr, weight_decay=wd), store, seeds, parent,
                        progress)
    scores = [s for s in finals["test_top1"] if s is not None]
    summary = {
        "best_base_lr": lr, "best_weight_decay": wd,
        "test_top1_mean": statistics.fmean(scores) if scores else None,
        "test_top1_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "completed_seeds": len(scores),
    }
    store.update_summary(parent, **summary)
    store.set_status(parent, "completed" if scores else "failed",
                     None if scores else "every final run failed")
    return {"run_id": parent, "status": "completed" if scores else "failed", **summary,
            "grid": grid.to_dict("records"), "finals": finals.to_dict("records")}
