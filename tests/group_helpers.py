"""Seed groups written straight into a store (no training), with chosen figures."""

from __future__ import annotations

from e2vpt_core import PromptConfig
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig


def stored_group(store: RunStore, group_id: str, test_top1: list[float | None],
                 method: str = "e2vpt", failed: tuple[int, ...] = ()) -> list[str]:
    """One run per seed (0, 1, …) of `group_id`, completed with `test_top1[seed]` (val 10
    points lower) and three logged steps, or failed without figures where the seed is in
    `failed`; their ids by seed."""
    ids = []
    for seed, test in enumerate(test_top1):
        config = TrainConfig(dataset="builtin:orientation", epochs=3, seed=seed,
                             group_id=group_id, prompt=PromptConfig(method))
        run_id = store.create_run(config.to_dict())
        for step in range(1, 4):
            store.log_metrics(run_id, step, step - 1, {
                "train/loss": 1.0 / step + seed, "train/lr": 0.1, "val/top1": 40.0 + seed})
        if seed in failed:
            store.set_status(run_id, "failed", "non-finite loss")
        else:
            store.set_status(run_id, "completed")
            store.update_summary(run_id, total_steps=3, test_top1=test, val_top1=test - 10)
        ids.append(run_id)
    return ids
