"""A VTAB-1k or FGVC suite: the protocol on every task found, beside the paper's numbers.

VTAB-1k has two common summaries, and papers mix them up: the mean of the Natural,
Specialized and Structured group means (the paper's score: 73.94 for E²VPT) and the flat
mean over the 19 tasks (71.42 from the same per-task figures). The report prints both,
labelled, so a number is compared with the one computed the same way.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..data.vtab import VTAB_GROUPS, VTAB_TASKS
from ..store import RunStore
from ..train import TrainConfig
from ..train.cluster import ray_connection
from ..train.loop import ProgressFn
from .pipeline import check_protocol_inputs, run_protocol

# E²VPT, ViT-B/16 IN-21k, test top-1 % (docs/METHOD.md, "The paper's numbers"). Group means
# are derived from these.
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
LABEL = 40  # width of the name columns (task + group) of the report


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


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _line(label: str, ours: str, paper: str) -> str:
    return f"{label:<{LABEL}} {ours:>16} {paper:>7}"


def suite_report(kind: str, results: dict[str, dict[str, Any]], groups: dict[str, str],
                 missing: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Per-task, per-group and overall scores beside the paper's, as text and as numbers.

    `overall` is the mean of the group means (the paper's VTAB score), `flat` the mean over
    the completed tasks. The paper's figures are taken over the same tasks as ours, so
    partial suites compare like with like; over full suites they are the published ones.
    """
    names = VTAB_GROUPS if kind == "vtab" else ("FGVC",)
    done = [t for t, r in results.items() if r["status"] == "completed"]
    lines = [_line(f"{'task':<{LABEL - 13}} group", "ours", "paper")]
    for task, result in results.items():
        ours = (f"{result['test_top1_mean']:.2f} ± {result['test_top1_std']:.2f}"
                if result["status"] == "completed" else result["status"])
        lines.append(_line(f"{task:<{LABEL - 13}} {groups[task]}", ours,
                           f"{PAPER_E2VPT[task]:.2f}"))
    group_rows: dict[str, dict[str, Any]] = {}
    for group in names:
        members = [t for t in done if groups[t] == group]
        total = (sum(info.group == group for info in VTAB_TASKS.values()) if kind == "vtab"
                 else len(FGVC_FOLDERS))
        group_rows[group] = {"ours": _mean([results[t]["test_top1_mean"] for t in members]),
                             "paper": _mean([PAPER_E2VPT[t] for t in members]),
                             "tasks": len(members), "of": total}
    scored = [g for g in group_rows.values() if g["ours"] is not None]
    overall = {"ours": _mean([g["ours"] for g in scored]),
               "paper": _mean([g["paper"] for g in scored]),
               "groups": len(scored), "of": len(names)}
    flat = {"ours": _mean([results[t]["test_top1_mean"] for t in done]),
            "paper": _mean([PAPER_E2VPT[t] for t in done]),
            "tasks": len(done), "of": sum(g["of"] for g in group_rows.values())}
    lines.append("")
    for group, g in group_rows.items():
        lines.append(_line(f"{group} mean ({g['tasks']}/{g['of']} tasks)", _fmt(g["ours"]),
                           _fmt(g["paper"])))
    if kind == "vtab":  # with one group (FGVC) both are that group's mean
        lines.append(_line(f"VTAB mean of group means ({overall['groups']}/{overall['of']} "
                           "groups)", _fmt(overall["ours"]), _fmt(overall["paper"])))
        lines.append(_line(f"VTAB flat mean ({flat['tasks']}/{flat['of']} tasks)",
                           _fmt(flat["ours"]), _fmt(flat["paper"])))
    lines += [f"skipped {note}" for note in missing]
    return "\n".join(lines), {"groups": group_rows, "overall": overall, "flat": flat}


def _run_tasks(
    store: RunStore, configs: dict[str, TrainConfig], grids: tuple[Sequence[Any], ...],
    progress: ProgressFn | None, suite_id: str, ray_address: str | None,
) -> dict[str, dict[str, Any]]:
    """Every task's protocol: in turn here, or side by side on Ray (one driver thread per
    task, each handing its stages to the cluster); results in task order either way."""
    if ray_address is None:
        return {task: run_protocol(store, config, *grids, progress, suite_id)
                for task, config in configs.items()}
    with ThreadPoolExecutor(len(configs)) as pool:
        futures = {task: pool.submit(run_protocol, store, config, *grids, None, suite_id,
                                     ray_address)
                   for task, config in configs.items()}
        return {task: future.result() for task, future in futures.items()}


def run_suite(
    store: RunStore, root: str, base: TrainConfig, lrs: Sequence[float], wds: Sequence[float],
    token_ratios: Sequence[float], segment_ratios: Sequence[float], seeds: Sequence[int],
    progress: ProgressFn | None = None, ray_address: str | None = None,
) -> dict[str, Any]:
    """The protocol on every task folder of `vtab:/path/vtab-1k` or `fgvc:/path`.

    Missing tasks are skipped with a note; a `suite` run parents the protocol runs and
    holds the report (also its `results.md` / `results.json`). With `ray_address` the
    tasks run side by side on that Ray cluster (see `run_protocol`).
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
    grids = (lrs, wds, token_ratios, segment_ratios, seeds)
    for config in configs.values():
        check_protocol_inputs(config, *grids)
    # Connected before the suite run exists: a missing ray or a bad address makes no run.
    with nullcontext() if ray_address is None else ray_connection(ray_address):
        suite_id = store.create_run({**base.to_dict(), "suite": root}, kind="suite")
        store.set_status(suite_id, "running")
        results = _run_tasks(store, configs, grids, progress, suite_id, ray_address)
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
