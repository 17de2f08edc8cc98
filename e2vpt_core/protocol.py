"""The paper's whole per-dataset pipeline, and suites of datasets beside the paper's numbers.

Per dataset (REFERENCE §2): lr × wd grid on train → val; the best pair's grid run is the
retrained model (same recipe and seed, so it is not trained twice); importance pass and a
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

from .data.vtab import VTAB_GROUPS, VTAB_TASKS
from .prune import sweep_prune
from .prune.selection import check_ratio
from .store import RunStore
from .train import TrainConfig
from .train.grid import best_setting, check_grid, final_runs, grid_search
from .train.loop import ProgressFn

# E²VPT, ViT-B/16 IN-21k, test top-1 % (REFERENCE §5). Group means are derived from these.
PAPER_E2VPT: dict[str, float] = {
    "cifar": 78.6, "caltech101": 89.4, "dtd": 67.8, "oxford_flowers102": 98.2,
    "oxford_iiit_pet": 88.5, "svhn": 85.3, "sun397": 52.3,
    "patch_camelyon": 82.5, "eurosat": 96.8, "resisc45": 84.8, "diabetic_retinopathy": 73.6,
    "clevr_count": 71.7, "clevr_dist": 61.2, "dmlab": 47.9, "kitti": 75.8,
    "dsprites_loc": 80.8, "dsprites_ori": 48.1, "smallnorb_azi": 31.7, "smallnorb_ele": 41.9,
    "cub": 89.1, "nabirds": 84.6, "flowers": 99.1, "dogs": 90.5, "cars": 82.8,
}
# FGVC task -> folder-name fragment (lower case) that finds its folder in a suite root.
FGVC_FOLDERS: dict[str, str] = {"cub": "cub", "nabirds": "nabirds", "flowers": "flower",
                                "dogs": "dog", "cars": "car"}
DEFAULT_SEGMENT_RATIOS = (0.0, 0.25, 0.5)
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
    base.check_sources()


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
    settings, test top-1 mean ± std over seeds and one row per training.
    """
    check_protocol_inputs(base, lrs, wds, token_ratios, segment_ratios, seeds)
    spec = {"lrs": list(lrs), "wds": list(wds), "token_ratios": list(token_ratios),
            "segment_ratios": list(segment_ratios), "seeds": list(seeds)}
    run_id = store.create_run({**base.to_dict(), "protocol": spec}, kind="protocol",
                              parent_id=parent_id)
    store.set_status(run_id, "running")
    result: dict[str, Any] = {"run_id": run_id, "dataset": base.dataset, "status": "failed"}
    grid = grid_search(base, store, lrs, wds, run_id, progress)
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
    finals = final_runs(rewound, store, seeds, run_id, progress)
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
    (directory / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (directory / "results.md").write_text(results_markdown(result))


def suite_tasks(kind: str, root: Path) -> tuple[list[tuple[str, str, Path]], list[str]]:
    """(task, group, folder) of every task found under root, and a note per missing one."""
    found, missing = [], []
    if kind == "vtab":
        for task, info in VTAB_TASKS.items():
            folder = root / task
            if folder.is_dir():
                found.append((task, info.group, folder))
            else:
                missing.append(f"{task}: no folder {folder}")
        return found, missing
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    for task, fragment in FGVC_FOLDERS.items():
        match = next((p for p in folders if fragment in p.name.lower()), None)
        if match is None:
            missing.append(f"{task}: no folder under {root} with {fragment!r} in its name")
        else:
            found.append((task, "FGVC", match))
    return found, missing


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def suite_report(kind: str, results: dict[str, dict[str, Any]], groups: dict[str, str],
                 missing: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Per-task, per-group and overall scores beside the paper's, as text and as numbers.

    The paper's group mean is taken over the same tasks as ours, so partial suites compare
    like with like; over full suites it equals the published means.
    """
    names = VTAB_GROUPS if kind == "vtab" else ("FGVC",)
    lines = [f"{'task':<22} {'group':<12} {'ours':>16} {'paper':>7}"]
    for task, result in results.items():
        ours = (f"{result['test_top1_mean']:.2f} ± {result['test_top1_std']:.2f}"
                if result["status"] == "completed" else result["status"])
        lines.append(f"{task:<22} {groups[task]:<12} {ours:>16} {PAPER_E2VPT[task]:>7.2f}")
    group_rows: dict[str, dict[str, Any]] = {}
    for group in names:
        done = [t for t, r in results.items()
                if groups[t] == group and r["status"] == "completed"]
        total = (sum(info.group == group for info in VTAB_TASKS.values()) if kind == "vtab"
                 else len(FGVC_FOLDERS))
        group_rows[group] = {"ours": _mean([results[t]["test_top1_mean"] for t in done]),
                             "paper": _mean([PAPER_E2VPT[t] for t in done]),
                             "tasks": len(done), "of": total}
    scored = [g for g in group_rows.values() if g["ours"] is not None]
    overall = {"ours": _mean([g["ours"] for g in scored]),
               "paper": _mean([g["paper"] for g in scored])}
    lines.append("")
    for group, g in group_rows.items():
        label = f"{group} mean ({g['tasks']}/{g['of']} tasks)"
        lines.append(f"{label:<35} {_fmt(g['ours']):>16} {_fmt(g['paper']):>7}")
    lines.append(f"{'overall (mean of group means)':<35} {_fmt(overall['ours']):>16} "
                 f"{_fmt(overall['paper']):>7}")
    lines += [f"skipped {note}" for note in missing]
    return "\n".join(lines), {"groups": group_rows, "overall": overall}


def run_suite(
    store: RunStore, root: str, base: TrainConfig, lrs: Sequence[float], wds: Sequence[float],
    token_ratios: Sequence[float], segment_ratios: Sequence[float], seeds: Sequence[int],
    progress: ProgressFn | None = None, ray_address: str | None = None,
) -> dict[str, Any]:
    """The protocol on every task folder of `vtab:/path/vtab-1k` or `fgvc:/path`.

    Missing tasks are skipped with a note; a `suite` run parents the protocol runs and
    holds the report (also its `results.md` / `results.json`).
    """
    kind, sep, path = root.partition(":")
    if not sep or kind not in ("vtab", "fgvc"):
        raise ValueError(f"bad suite {root!r}: expected vtab:/path/vtab-1k or fgvc:/path")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"suite folder does not exist: {folder}")
    found, missing = suite_tasks(kind, folder)
    if not found:
        raise ValueError(f"no {kind} task folder under {folder}")
    configs = {task: base.replace(dataset=f"{kind}:{task_dir}") for task, _, task_dir in found}
    for config in configs.values():
        check_protocol_inputs(config, lrs, wds, token_ratios, segment_ratios, seeds)
    suite_id = store.create_run({**base.to_dict(), "suite": root}, kind="suite")
    store.set_status(suite_id, "running")
    results = {task: run_protocol(store, config, lrs, wds, token_ratios, segment_ratios,
                                  seeds, progress, suite_id, ray_address)
               for task, config in configs.items()}
    report, scores = suite_report(kind, results, {t: g for t, g, _ in found}, missing)
    result = {"run_id": suite_id, "suite": root, "report": report, **scores,
              "skipped": missing, "tasks": {t: {k: r.get(k) for k in (
                  "run_id", "status", "test_top1_mean", "test_top1_std")}
                  for t, r in results.items()}}
    done = scores["overall"]["ours"] is not None
    result["status"] = "completed" if done else "failed"
    store.update_summary(suite_id, **{k: v for k, v in result.items() if k != "run_id"})
    store.set_status(suite_id, result["status"], None if done else "every task failed")
    directory = store.run_dir(suite_id)
    (directory / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (directory / "results.md").write_text(f"# E²VPT suite {root}\n\n```\n{report}\n```\n")
    return result
