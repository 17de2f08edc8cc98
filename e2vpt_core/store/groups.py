"""Seed groups: runs that share everything but the seed, read as one result.

One seed's accuracy says little about a method: a second seed can move it by points. A
group (`e2vpt train --seeds`, the Train page's "Repeat over N seeds") is one run per seed,
each carrying the same `group_id` in its stored config, so no schema change is needed and
a group is found from its runs alone. A group reads as mean ± sd over the seeds that have
a figure (a failed or unfinished run has none), and two groups compare with Welch's test
(`stats.compare_groups`). Group ids are readable (`e2vpt-digits-3fa2`: method, task, a
random suffix). Plain functions of `RunStore.runs()` frames and the store: no torch.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..stats import Summary, Verdict, compare_groups, summarize
from .names import config_name, task_name
from .runs import RunStore

GROUP_KEY = "group_id"  # the TrainConfig field that ties a group's runs together
GROUP_COLUMNS = ["group_id", "name", "n", "n_completed", "seeds", "run_ids", "status",
                 "method", "task", "dataset", "test_top1_mean", "test_top1_sd",
                 "test_top1_text", "val_top1_mean", "val_top1_sd", "val_top1_text",
                 "created_at"]


def check_seeds(seeds: Iterable[int]) -> list[int]:
    """The seeds of a group, in order; refused (ValueError) when empty, negative or
    repeated, since two runs of one seed would count one result twice."""
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    negative = [seed for seed in seeds if seed < 0]
    if negative:
        raise ValueError(f"--seeds {negative[0]}: a seed is a whole number ≥ 0")
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(f"--seeds repeats {repeated}: each seed once (a repeated seed "
                         "trains the same run twice and counts it twice)")
    return seeds


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "group"


def new_group_id(store: RunStore, config: dict[str, Any]) -> str:
    """A readable id not yet used in `store`: method, task and a random suffix."""
    stem = _slug(f"{config.get('prompt', {}).get('method', 'run')}-"
                 f"{task_name(config.get('dataset'))}")
    taken = set(with_groups(store.runs())[GROUP_KEY].dropna())
    while True:
        group_id = f"{stem}-{secrets.token_hex(2)}"
        if group_id not in taken:
            return group_id


def with_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` (a `RunStore.runs()` frame) with `group_id` and `seed` columns read from
    each run's config (`group_id` None for a run outside any group)."""
    configs = [json.loads(c) if isinstance(c, str) else (c or {})
               for c in runs.get("config", pd.Series(dtype=object))]
    return runs.assign(**{GROUP_KEY: [c.get(GROUP_KEY) for c in configs],
                          "seed": [c.get("seed") for c in configs]})


def _figures(members: pd.DataFrame, column: str) -> list[float]:
    """The members' finite figures of `column` (a failed or unfinished run has none)."""
    if column not in members.columns:
        return []
    values = pd.to_numeric(members[column], errors="coerce")
    return [float(v) for v in values if math.isfinite(v)]


def _figure_summary(members: pd.DataFrame, column: str = "test_top1") -> Summary | None:
    """Mean ± sd of the members' `column`, None while no member has one."""
    values = _figures(members, column)
    return summarize(values) if values else None


def _status(members: pd.DataFrame) -> str:
    """`3 completed`, or the counts of each status (`1 failed, 2 completed`)."""
    counts = members["status"].value_counts()
    return ", ".join(f"{count} {status}" for status, count in counts.items())


def group_names(runs: pd.DataFrame) -> dict[str, str]:
    """A readable name for each group of `runs`, by group id: its runs' config name
    (`e2vpt P10 T5 · digits`), with the id's suffix where two groups would share one."""
    grouped = with_groups(runs)
    grouped = grouped[grouped[GROUP_KEY].notna()].sort_values("created_at")
    names = {group: config_name(json.loads(members["config"].iloc[0]))
             for group, members in grouped.groupby(GROUP_KEY, sort=False)}
    counts = pd.Series(list(names.values()), dtype=object).value_counts()
    return {group: f"{name} #{group.rsplit('-', 1)[-1]}" if counts[name] > 1 else name
            for group, name in names.items()}


def summarize_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group of `runs`, newest first (columns `GROUP_COLUMNS`).

    `n` counts the group's runs, `n_completed` those completed; the means and sds are over
    the runs with the figure (sd None below two), so a failed seed is left out, not
    counted as 0. `test_top1_text` says it as `73.9 ± 1.1 (3 seeds)`."""
    grouped = with_groups(runs)
    grouped = grouped[grouped[GROUP_KEY].notna()]
    names = group_names(runs)
    rows = []
    for group, members in grouped.groupby(GROUP_KEY, sort=False):
        members = members.sort_values(["seed", "created_at"])
        first = json.loads(members["config"].iloc[0])
        row: dict[str, Any] = {
            "group_id": group, "name": names[group], "n": len(members),
            "n_completed": int((members["status"] == "completed").sum()),
            "seeds": [int(seed) for seed in members["seed"]],
            "run_ids": list(members["id"]), "status": _status(members),
            "method": first.get("prompt", {}).get("method"),
            "task": task_name(first.get("dataset")), "dataset": first.get("dataset"),
            "created_at": float(members["created_at"].min())}
        for split in ("test", "val"):
            summary = _figure_summary(members, f"{split}_top1")
            row[f"{split}_top1_mean"] = summary.mean if summary else None
            row[f"{split}_top1_sd"] = summary.sd if summary and summary.n > 1 else None
            row[f"{split}_top1_text"] = summary.text() if summary else None
        rows.append(row)
    table = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    return table.sort_values("created_at", ascending=False, ignore_index=True)


def list_groups(store: RunStore) -> pd.DataFrame:
    """The store's groups, newest first: size, completed runs, seeds, mean ± sd of test
    and val top-1 (see `summarize_groups`)."""
    return summarize_groups(store.runs())


def _members(runs: pd.DataFrame, group_id: str, root: object) -> pd.DataFrame:
    grouped = with_groups(runs)
    members = grouped[grouped[GROUP_KEY] == group_id]
    if members.empty:
        raise KeyError(f"no group {group_id!r} in store {root} (see `e2vpt groups`)")
    return members.sort_values(["seed", "created_at"])


def group_members(store: RunStore, group_id: str) -> list[str]:
    """The group's run ids, ordered by seed; KeyError naming the store for an unknown
    group."""
    return list(_members(store.runs(), group_id, store.root)["id"])


def compare_stored_groups(store: RunStore, group_a: str, group_b: str,
                          split: str = "test") -> Verdict:
    """`group_a − group_b` on `split` top-1 over their seeds, with the plain verdict of
    `stats.compare_groups`, labelled by the groups' names."""
    if group_a == group_b:
        raise ValueError(f"--compare names group {group_a!r} twice; name two groups")
    runs = store.runs()
    names = group_names(runs)
    values = []
    for group in (group_a, group_b):
        figures = _figures(_members(runs, group, store.root), f"{split}_top1")
        if not figures:
            raise ValueError(f"group {group!r} has no {split} top-1 yet (no run of it "
                             "completed)")
        values.append(figures)
    return compare_groups(values[0], values[1], names[group_a], names[group_b])
