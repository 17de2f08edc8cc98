"""A pruned run's trade-off: its finished rewinds and the unpruned parent, read on one split.

What the Pruning page's chart and the HTML report draw (`figures.prune_curve`); plain
functions of `RunStore.runs()` frames.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from .context import accuracy


def _rewinds(runs: pd.DataFrame, parent_id: str) -> pd.DataFrame:
    if runs.empty or "parent_id" not in runs.columns:
        return runs.iloc[:0]
    return runs[(runs["parent_id"] == parent_id) & (runs["kind"] == "rewind")
                & (runs["status"] == "completed")]


class TradeOff(NamedTuple):
    """What the trade-off chart draws, every accuracy on one split."""

    results: pd.DataFrame  # finished rewinds (`rewind_results`)
    parent: dict[str, float] | None  # the unpruned run at ratio 0 (`parent_point`)
    split: str


def trade_off(runs: pd.DataFrame, parent_id: str) -> TradeOff:
    """The parent's finished rewinds and the parent itself, read on one split: test when
    the parent and each rewind have a test top-1, else val."""
    members = pd.concat([runs[runs["id"] == parent_id], _rewinds(runs, parent_id)])
    split = "test" if "test_top1" in members and members["test_top1"].notna().all() else "val"
    return TradeOff(rewind_results(runs, parent_id, split),
                    parent_point(runs, parent_id, split), split)


def parent_point(runs: pd.DataFrame, run_id: str, split: str) -> dict[str, float] | None:
    """The unpruned run as the trade-off curve's ratio-0 point (its `split` top-1)."""
    row = runs.set_index("id").loc[run_id]
    found = accuracy(row, split)
    if found is None or pd.isna(row.get("effective_params")):
        return None
    return {"accuracy": found[1], "effective_params": float(row["effective_params"])}


def rewind_results(runs: pd.DataFrame, parent_id: str, split: str) -> pd.DataFrame:
    """Finished rewinds of `parent_id`: ratios, the order their masks were pruned in
    (`random` ones are the controls), `split` top-1, effective params."""
    columns = ["id", "token_ratio", "segment_ratio", "order", "accuracy", "effective_params"]
    children = _rewinds(runs, parent_id).copy()
    if children.empty or "token_ratio" not in children.columns:
        return pd.DataFrame(columns=columns)
    children["accuracy"] = children.get(f"{split}_top1", np.nan)
    for column in columns:
        if column not in children.columns:
            children[column] = np.nan
    children["order"] = children["order"].astype(object).fillna("importance")
    return children[columns].sort_values(["token_ratio", "segment_ratio"])


def pruned_parents(runs: pd.DataFrame, run_ids: list[str]) -> list[str]:
    """The parents whose trade-off a report on `run_ids` draws, in first-seen order: each
    run that has finished rewinds, and the parent of each rewind."""
    parents: dict[str, None] = {}
    table = runs.set_index("id")
    for run_id in run_ids:
        parent = table.at[run_id, "parent_id"] if "parent_id" in table.columns else None
        if table.at[run_id, "kind"] == "rewind" and isinstance(parent, str) \
                and parent in table.index:
            parents[parent] = None
        elif not _rewinds(runs, run_id).empty:
            parents[run_id] = None
    return list(parents)
