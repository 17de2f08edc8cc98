"""The paper's whole per-dataset pipeline (suites of datasets: `suite.py`).

Per dataset (docs/METHOD.md, "Pruning"): lr × wd grid on train → val; the best pair's grid
run is the retrained model (same recipe and seed, so it is not trained twice); importance pass and a
rewind at every (token ratio × segment ratio), best on val (ties → more pruning); final
runs with the chosen masks on trainval → test over seeds. With the paper's defaults that
is 40 grid runs + 27 rewinds + 5 finals per dataset: thousands of trainings for a suite.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..prune import sweep_prune
from ..prune.selection import check_ratio
from ..store import RunStore
from ..train import TrainConfig
from ..train.cluster import ray_connection, ray_trainer, task_gpus
from ..train.grid import (
    Trainer,
    best_setting,
    check_grid,
    final_runs,
    grid_search,
    train_in_turn,
)
from ..train.loop import ProgressFn
from ..train.preflight import check_sources

ROW_KEYS = ("stage", "run_id", "status", "base_lr", "weight_decay", "token_ratio",
            "segment_ratio", "seed", "val_top1", "test_top1", "effective_params", "chosen")


def _row(stage: str, **values: Any) -> dict[str, Any]:
    return {key: values.get(key) for key in ROW_KEYS} | {"stage": stage}


def check_protocol_inputs(
    base: TrainConfig, lrs: Sequence[float], wds: Sequence[float],
    token_ratios: Sequence[float], segment_ratios: Sequence[float], seeds: Sequence[int],
) -> None:
    """Refuse bad input before hours of training start."""
    for name, values in (("lrs", lrs), ("wds", wds), ("token_ratios", token_ratios),
                         ("segment_ratios", segment_ratios), ("seeds", seeds)):
        if not values:
            raise ValueError(f"the protocol needs at least one value in {name}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {list(seeds)} repeat a seed")
    check_grid(base, lrs, wds)
    for ratio in token_ratios:
        check_ratio("token_ratio", ratio)
    for ratio in segment_ratios:
        check_ratio("segment_ratio", ratio)
    if not base.prompt.has_visual_prompts:
        raise ValueError(f"method {base.prompt.method!r} has no visual prompts to prune; "
                         "use vpt-shallow, vpt-deep or e2vpt")
    check_sources(base)


def _finish(store: RunStore, run_id: str, result: dict[str, Any]) -> dict[str, Any]:
    store.update_summary(run_id, **{k: v for k, v in result.items() if k != "run_id"})
    store.set_status(run_id, result["status"], result.get("reason"))
    write_results(store.run_dir(run_id), result)
    return result


def run_protocol(
    store: RunStore, base: TrainConfig, lrs: Sequence[float], wds: Sequence[float],
    token_ratios: Sequence[float], segment_ratios: Sequence[float], seeds: Sequence[int],
    progress: ProgressFn | None = None, parent_id: str | None = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """One dataset through the whole pipeline; every run descends from one `protocol` run.

    Returns (and stores as that run's summary, `results.json` and `results.md`) the chosen
    settings, test top-1 mean ± std over seeds and one row per training. With
    `ray_address` every training of a stage (grid, importance and rewinds, seeds) is a Ray
    task, all of a stage at once; `progress` then sees none of them (they log to the store).
    """
    check_protocol_inputs(base, lrs, wds, token_ratios, segment_ratios, seeds)
    grids = (lrs, wds, token_ratios, segment_ratios, seeds)
    if ray_address is None:
        return _pipeline(store, base, grids, train_in_turn, progress, parent_id, None)
    with ray_connection(ray_address):  # before any run exists: a bad address makes none
        return _pipeline(store, base, grids, ray_trainer(task_gpus(base)), None, parent_id,
                         ray_address)


def _pipeline(
    store: RunStore, base: TrainConfig, grids: tuple[Sequence[Any], ...], trainer: Trainer,
    progress: ProgressFn | None, parent_id: str | None, ray_address: str | None,
) -> dict[str, Any]:
    lrs, wds, token_ratios, segment_ratios, seeds = grids
    spec = {"lrs": list(lrs), "wds": list(wds), "token_ratios": list(token_ratios),
            "segment_ratios": list(segment_ratios), "seeds": list(seeds)}
    run_id = store.create_run({**base.to_dict(), "protocol": spec}, kind="protocol",
                              parent_id=parent_id)
    store.set_status(run_id, "running")
    result: dict[str, Any] = {"run_id": run_id, "dataset": base.dataset, "status": "failed"}
    grid = grid_search(base, store, lrs, wds, run_id, progress, trainer)
    rows = [_row("grid", **r) for r in grid.to_dict("records")]
    result["rows"] = rows
    try:
        lr, wd = best_setting(grid)
    except ValueError as error:
        return _finish(store, run_id, {**result, "reason": str(error)})
    retrained = grid[(grid["base_lr"] == lr) & (grid["weight_decay"] == wd)]["run_id"].iloc[0]
    for row in rows:
        row["chosen"] = row["run_id"] == retrained
    result.update(best_base_lr=lr, best_weight_decay=wd, retrained_run_id=retrained)

    table = sweep_prune(store, retrained, token_ratios, segment_ratios, progress=progress,
                        ray_address=ray_address)
    rows += [_row("prune", **r, chosen=bool(r["best"]))
             for r in table.astype(object).where(table.notna(), None).to_dict("records")]
    if not table["best"].any():
        return _finish(store, run_id, {**result, "reason": "every rewind failed"})
    best = table[table["best"]].iloc[0]
    result.update(best_token_ratio=float(best["token_ratio"]),
                  best_segment_ratio=float(best["segment_ratio"]),
                  pruned_run_id=best["run_id"], effective_params=int(best["effective_params"]),
                  trainable_params=int(best["trainable_params"]))

    rewound = TrainConfig.from_dict(store.get_run(best["run_id"])["config"])
    finals = final_runs(rewound, store, seeds, run_id, progress, trainer)
    rows += [_row("final", **r) for r in finals.to_dict("records")]
    scores = [float(s) for s in finals["test_top1"] if s is not None and s == s]
    if not scores:
        return _finish(store, run_id, {**result, "reason": "every final run failed"})
    result.update(status="completed", completed_seeds=len(scores),
                  test_top1_mean=statistics.fmean(scores),
                  test_top1_std=statistics.stdev(scores) if len(scores) > 1 else 0.0)
    return _finish(store, run_id, result)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def results_markdown(result: dict[str, Any]) -> str:
    """The protocol's result as a Markdown report (headline, then every training)."""
    lines = [f"# E²VPT protocol {result['run_id']}: {result['dataset']}", "",
             f"status: {result['status']}" + (f" ({result['reason']})"
                                               if result.get("reason") else "")]
    if result["status"] == "completed":
        lines += [f"best base_lr {result['best_base_lr']}, weight decay "
                  f"{result['best_weight_decay']}; token ratio {result['best_token_ratio']}, "
                  f"segment ratio {result['best_segment_ratio']}; effective params "
                  f"{result['effective_params']:,} of {result['trainable_params']:,}",
                  f"test top-1 {result['test_top1_mean']:.2f} ± {result['test_top1_std']:.2f} "
                  f"over {result['completed_seeds']} seeds"]
    lines += ["", "| " + " | ".join(ROW_KEYS) + " |", "|" + " --- |" * len(ROW_KEYS)]
    lines += ["| " + " | ".join(_fmt(row[k]) for k in ROW_KEYS) + " |"
              for row in result.get("rows", [])]
    return "\n".join(lines) + "\n"


def write_results(directory: Path, result: dict[str, Any]) -> None:
    """The result beside the run: JSON for programs, Markdown for people."""
    (directory / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (directory / "results.md").write_text(results_markdown(result))


