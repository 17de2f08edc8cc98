"""Seed groups on the Runs page: one row per group (test top-1 as mean ± sd over its seeds),
its seeds' own figures, its curves as a band, and the verdict on two groups.

A group is the runs `e2vpt train --seeds` or "Repeat over N seeds" made (`store.groups`);
a run outside any group keeps its own row, its test top-1 labelled "1 seed" so a single
seed is never read as a mean. Table and curve helpers are plain functions of
`RunStore.runs()` frames; `compare_groups_section` draws with Streamlit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from app.state import as_text
from e2vpt_core.report.figures import group_curves, training_curves
from e2vpt_core.stats import Summary
from e2vpt_core.store import RunStore
from e2vpt_core.store.groups import (
    compare_stored_groups,
    group_names,
    summarize_groups,
    with_groups,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

SEEDS = "test_top1_seeds"  # the table's text column: "73.9 ± 1.1 (3 seeds)", "58.3 (1 seed)"
SPLIT = "test"  # groups are compared on the split a paper reports


def seeds_text(value: object) -> str | None:
    """One run's test top-1 as "58.3 (1 seed)"; None while it has none."""
    if value is None or pd.isna(value):
        return None
    return Summary(1, float(value), 0.0).text()


def collapse_groups(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """`table` (one row per run of `runs`, an `id` column) with each seed group's rows
    replaced by one, where its newest run was: the group's name and id, its runs'
    statuses, mean val and test top-1 (test as mean ± sd in `SEEDS`), the first seed's
    references and parameter counts. Only the members in `runs` count (a tag filter
    narrows a group too)."""
    table = table.assign(**{SEEDS: [seeds_text(v) for v in table.get(
        "test_top1", pd.Series(None, index=table.index, dtype=object))]})
    groups = table["id"].map(with_groups(runs).set_index("id")["group_id"])
    if groups.isna().all():
        return table
    summaries = {row.group_id: row for row in summarize_groups(runs).itertuples(index=False)}
    rows, seen = [], set()
    for row, group in zip(table.to_dict("records"), groups, strict=True):
        if pd.isna(group):
            rows.append(row)
        elif group not in seen:
            seen.add(group)
            summary = summaries[group]
            first = table[table["id"] == summary.run_ids[0]].iloc[0].to_dict()
            rows.append({**first, "id": group, "name": summary.name, "status": summary.status,
                         "val_top1": summary.val_top1_mean,
                         "test_top1": summary.test_top1_mean, SEEDS: summary.test_top1_text})
    return pd.DataFrame(rows, columns=table.columns)


def seed_table(runs: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """Every grouped run of `runs`: its group, seed, name, status and figures, by group
    then seed (what a group row's mean ± sd is made of)."""
    grouped = with_groups(runs)
    grouped = grouped[grouped["group_id"].notna()].sort_values(["group_id", "seed"])
    labels = group_names(runs)
    return pd.DataFrame({
        "group": [labels[group] for group in grouped["group_id"]],
        "seed": list(grouped["seed"]), "run": [names[run] for run in grouped["id"]],
        "status": list(grouped["status"]),
        **{column: list(grouped[column]) if column in grouped.columns else None
           for column in ("val_top1", "test_top1")}})


def curve_choices(runs: pd.DataFrame, names: dict[str, str]) -> tuple[list[str], dict]:
    """What the curves can overlay: each group (as a band), then each run; and labels."""
    groups = summarize_groups(runs)
    labels = {row.group_id: f"{row.name} (group of {row.n})"
              for row in groups.itertuples(index=False)}
    return [*labels, *runs["id"]], {**names, **labels}


def curves(store: RunStore, runs: pd.DataFrame, names: dict[str, str], chosen: list[str],
           references: dict[str, float]) -> go.Figure:
    """The overlaid curves of `chosen` runs and groups: plain lines when only runs are
    chosen, else every choice as mean with its seeds' min–max band (a run as "1 seed")."""
    groups = summarize_groups(runs).set_index("group_id")
    if not any(choice in groups.index for choice in chosen):
        return training_curves({names[run]: store.metrics(run) for run in chosen},
                               references=references)
    members = {choice: groups.loc[choice, "run_ids"] if choice in groups.index else [choice]
               for choice in chosen}
    labels = {**names, **groups["name"].to_dict()}
    return group_curves({labels[choice]: [store.metrics(run) for run in of_choice]
                         for choice, of_choice in members.items()}, references=references)


def member_runs(runs: pd.DataFrame, chosen: list[str]) -> list[str]:
    """`chosen` with each group replaced by its runs, in order, without repeats."""
    groups = summarize_groups(runs).set_index("group_id")["run_ids"]
    expanded = [run for choice in chosen
                for run in (groups[choice] if choice in groups.index else [choice])]
    return list(dict.fromkeys(expanded))


def compare_groups_section(store: RunStore, runs: pd.DataFrame) -> None:
    """Two groups picked, the difference of their test top-1 and whether it exceeds the
    seed-to-seed noise (Welch's test), said in one sentence."""
    groups = summarize_groups(runs)
    if len(groups) < 2:
        return
    st.subheader("Compare two seed groups")
    labels = dict(zip(groups["group_id"], groups["name"], strict=True))
    left, right = st.columns(2)
    first = left.selectbox("Group A", list(labels), index=0, format_func=labels.get)
    second = right.selectbox("Group B", list(labels), index=1, format_func=labels.get)
    if first == second:
        st.caption("Pick two different groups.")
        return
    try:
        verdict = compare_stored_groups(store, first, second, SPLIT)
    except ValueError as error:  # a group with no completed run yet
        st.caption(as_text(str(error)))
        return
    show = st.success if verdict.clear else st.info
    show(f"{SPLIT} top-1: {as_text(verdict.sentence)}")
