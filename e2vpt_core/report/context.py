"""What an accuracy should be read against: chance, the linear probe, the parent.

A top-1 of 40 % is good on 100 classes and poor on 2; beside it the app and the HTML
report show chance (100 / classes), the best linear probe (method `linear`) on the same
task and backbone, and for a rewind its parent's figure, each on the same split as the
figure it sits beside (a val curve against val figures, a test top-1 against test ones)
and named with it. Plain functions of `RunStore.runs()` frames, no Streamlit.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pandas as pd

ACCURACIES = ("test_top1", "val_top1")  # the headline figure: test where there is one


def accuracy(row: pd.Series | dict[str, Any], split: str | None = None,
             ) -> tuple[str, float] | None:
    """The run's top-1 on `split` with the split; without one its headline figure (test
    before val); None before it is measured."""
    for column in (f"{split}_top1",) if split else ACCURACIES:
        value = row.get(column)
        if value is not None and not pd.isna(value):
            return column.split("_")[0], float(value)
    return None


@functools.lru_cache(maxsize=32)
def class_names(dataset: str | None) -> tuple[str, ...] | None:
    """The task's class names by label, None when its files cannot be read: built-in tasks
    know theirs; other datasets are listed once per spec (cached for the process).
    The data package is imported here, not with the module: it imports torch, which the
    Runs page and the sidebar need for nothing else."""
    if not dataset:
        return None
    from e2vpt_core.data import builtin_classes, load_dataset

    try:
        if dataset.startswith("builtin:"):
            return tuple(builtin_classes(dataset.partition(":")[2]))
        return tuple(load_dataset(dataset, "train").classes)
    except (ValueError, OSError):
        return None


def num_classes(row: pd.Series | dict[str, Any]) -> int | None:
    """Classes of the run's task: recorded when training starts, known ahead for built-ins."""
    recorded = row.get("num_classes")
    if recorded is not None and not pd.isna(recorded):
        return int(recorded)
    names = class_names(row.get("dataset"))
    return len(names) if names else None


def _backbone(row: pd.Series) -> tuple[Any, Any]:
    config = json.loads(row["config"]) if isinstance(row["config"], str) else row["config"]
    return config.get("backbone"), config.get("checkpoint")


def linear_probe(runs: pd.DataFrame, row: pd.Series, split: str) -> float | None:
    """The `split` top-1 of the best completed linear probe on the run's task and backbone."""
    if runs.empty or row.get("method") == "linear":
        return None
    probes = runs[(runs["method"] == "linear") & (runs["dataset"] == row["dataset"])
                  & (runs["status"] == "completed") & (runs["kind"] == "train")]
    found = [accuracy(probe, split) for _, probe in probes.iterrows()
             if _backbone(probe) == _backbone(row)]
    return max((value for _, value in filter(None, found)), default=None)


def references(runs: pd.DataFrame, run_id: str, split: str | None) -> dict[str, float]:
    """Figures to read the run's `split` top-1 against (%): `chance`, and the `linear
    probe` and `parent` on that same split, never another; without a split only chance."""
    row = runs.set_index("id").loc[run_id].copy()
    row["id"] = run_id
    found: dict[str, float] = {}
    classes = num_classes(row)
    if classes:
        found["chance"] = 100.0 / classes
    if split is None:
        return found
    probe = linear_probe(runs, row, split)
    if probe is not None:
        found["linear probe"] = probe
    parent = row.get("parent_id")
    if isinstance(parent, str) and parent in set(runs["id"]):
        parent_accuracy = accuracy(runs.set_index("id").loc[parent], split)
        if parent_accuracy:
            found["parent"] = parent_accuracy[1]
    return found


def reference_label(name: str, split: str) -> str:
    """`linear probe (val)`: a reference names its split; chance has none."""
    return name if name == "chance" else f"{name} ({split})"


def labelled_references(runs: pd.DataFrame, run_id: str, split: str) -> dict[str, float]:
    """`references` on `split`, each named with it (for a chart's lines or a table)."""
    return {reference_label(name, split): value
            for name, value in references(runs, run_id, split).items()}


def overlay_references(runs: pd.DataFrame, compared: list[str],
                       split: str = "val") -> dict[str, float]:
    """Lines for overlaid top-1 curves of `compared`, read on `split`: all of one run's
    references; for several runs on one task only those they share (chance, linear
    probe); none across tasks."""
    lines = labelled_references(runs, compared[0], split)
    if len(compared) == 1:
        return lines
    if runs.set_index("id").loc[compared, "dataset"].nunique() > 1:
        return {}
    return {label: value for label, value in lines.items()
            if label != reference_label("parent", split)}


def accuracy_text(runs: pd.DataFrame, run_id: str, split: str | None = None) -> str:
    """One line: the run's top-1 (on `split`, else its headline split, named) and what to
    read it against on that same split (chance always, when known)."""
    row = runs.set_index("id").loc[run_id]
    found = accuracy(row, split)
    if found:
        head = f"{found[0]} top-1 {found[1]:.1f} %"
    else:
        head = f"{split} top-1 not yet measured" if split else "top-1 not yet measured"
    context = ", ".join(f"{name} {value:.1f} %" for name, value
                        in references(runs, run_id, found[0] if found else None).items())
    return f"{head} ({context})" if context else head


def with_references(runs: pd.DataFrame, table: pd.DataFrame, split: str = "test",
                    ) -> pd.DataFrame:
    """`table` (one row per run, an `id` column) with chance and the `split` linear-probe
    and parent columns (named with the split) beside its accuracies; a column no run has
    a figure for is left out."""
    columns = [reference_label(name, split) for name in ("chance", "linear probe", "parent")]
    extra = pd.DataFrame([labelled_references(runs, run_id, split) for run_id in table["id"]],
                         index=table.index, columns=columns)
    return pd.concat([table, extra.dropna(axis=1, how="all").round(2)], axis=1)
