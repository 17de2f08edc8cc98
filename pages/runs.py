"""Runs: every run in the store by readable name, grouped by task or filtered by tag, with
chance and the linear probe beside each accuracy (on test, and named so; the val curves'
lines are val figures); a seed group as one row (test top-1 mean ± sd over its seeds), its
curves as a band and the verdict on two groups; curves and final figures compared; each
run's config, the command reproducing it, its adapter, its name and tags (shown as typed,
never as Markdown), deletion."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app.context import overlay_references, reference_label, with_references
from app.groups_view import (
    SEEDS,
    collapse_groups,
    compare_groups_section,
    curve_choices,
    curves,
    member_runs,
    seed_table,
)
from app.names import parse_tags, rename, run_names, run_tags, task_name
from app.report_button import report_button
from app.state import adapter_zip, as_text, final_figures, get_store, reproduce_command
from e2vpt_core.store import RunStore

SPLIT = "test"  # the split the table's linear probe and parent are read on
REFERENCES = [reference_label(name, SPLIT) for name in ("chance", "linear probe", "parent")]
ACCURACIES = ["val_top1", "test_top1", *REFERENCES]
COLUMNS = ["name", "tags", "status", "val_top1", "test_top1", SEEDS, *REFERENCES,
           "trainable_params", "effective_params", "created", "id"]
# The id is in the data (and under "One run"), not worth its width; test top-1 is shown as
# text, mean ± sd for a seed group and "(1 seed)" for a run (its number stays in the data).
SHOWN = [c for c in COLUMNS[:-1] if c != "test_top1"]
SELECTED = "runs_page_run"  # the run "One run" shows, kept across renames
_WIDTHS = {"name": 200, "tags": 80, "status": 80, "created": 110, "id": 150, "run": 200}
_NUMBER = st.column_config.NumberColumn
# Accuracies to one decimal (58.3, not 58.3333), counts with thousands separators; widths
# chosen so every column, effective parameters included, fits a wide page.
COLUMN_CONFIG = {
    **{column: st.column_config.TextColumn(width=width) for column, width in _WIDTHS.items()},
    **{column: _NUMBER(column.replace("_top1", " top-1"), format="%.1f", width=70)
       for column in ACCURACIES},
    **{column: _NUMBER(column.replace("_", " "), format="localized", width=100)
       for column in ("trainable_params", "effective_params")},
    SEEDS: st.column_config.TextColumn(
        "test top-1", width=130,
        help="mean ± sd over a seed group's seeds; a single run says \"1 seed\"")}


def show_table(table: pd.DataFrame, shown: list[str] | None = None) -> None:
    """A run table that fits the page; a missing figure is blank, not "None"."""
    numbers = [column for column in (*ACCURACIES, "trainable_params", "effective_params")
               if column in table.columns]
    table = table.assign(**{column: pd.to_numeric(table[column], errors="coerce")
                            for column in numbers})
    st.dataframe(table, hide_index=True, width="stretch", column_config=COLUMN_CONFIG,
                 column_order=[c for c in shown or table.columns if c in table.columns],
                 placeholder="")


def run_table(runs: pd.DataFrame, names: dict[str, str],
              tags: dict[str, list[str]]) -> pd.DataFrame:
    """One row per run, and one per seed group (its runs' mean): name and tags first,
    accuracies beside their references."""
    table = runs.assign(
        name=[names[run_id] for run_id in runs["id"]],
        tags=[", ".join(tags[run_id]) for run_id in runs["id"]],
        created=[time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
                 for t in runs["created_at"]])
    table = collapse_groups(runs, with_references(runs, table, SPLIT))
    return table[[c for c in COLUMNS if c in table.columns]].reset_index(drop=True)


def tagged(runs: pd.DataFrame, tags: dict[str, list[str]], wanted: list[str]) -> pd.DataFrame:
    """Runs carrying every wanted tag (all runs when none are wanted)."""
    return runs[[set(wanted) <= set(tags[run_id]) for run_id in runs["id"]]]


def name_editor(store: RunStore, runs: pd.DataFrame, run_id: str) -> None:
    """Rename and tag one run (a blank name, or the derived one, keeps it derived)."""
    names, tags = run_names(runs), run_tags(runs)
    left, right = st.columns(2)
    name = left.text_input("Name", names[run_id], key=f"name-{run_id}")
    text = right.text_input("Tags (comma-separated)", ", ".join(tags[run_id]),
                            key=f"tags-{run_id}")
    if st.button("Save name and tags", key=f"save-{run_id}"):
        derived = run_names(runs.assign(display_name=None))[run_id]
        rename(store, run_id, "" if name.strip() == derived else name, parse_tags(text))
        st.session_state[SELECTED] = run_id  # the renamed run stays selected
        st.rerun()


def selected_run(ids: list[str], names: dict[str, str]) -> str:
    """The "One run" selector, on the run it showed last (a rename changes the labels, so
    the widget is new and would fall back to the newest run)."""
    kept = st.session_state.get(SELECTED)
    run_id = st.selectbox("Run", ids, index=ids.index(kept) if kept in ids else 0,
                          format_func=names.get)
    st.session_state[SELECTED] = run_id
    return run_id


store = get_store()
st.title("Runs")
runs = store.runs()
if runs.empty:
    st.info(f"No runs in `{store.root}` yet.")
    st.stop()

names, tags = run_names(runs), run_tags(runs)
left, right = st.columns(2)
group = left.radio("Group by", ("task", "none"), horizontal=True)
all_tags = sorted({tag for run_tags_ in tags.values() for tag in run_tags_})
wanted = right.multiselect("Only runs tagged", all_tags, disabled=not all_tags)
shown = tagged(runs, tags, wanted)
if group == "task":
    for task, members in shown.groupby(shown["dataset"].map(task_name), sort=True):
        st.markdown(f"**{as_text(task)}** · {len(members)} run(s)")
        show_table(run_table(members, names, tags), SHOWN)
else:
    show_table(run_table(shown, names, tags), SHOWN)
seeds = seed_table(shown, names)
if not seeds.empty:
    with st.expander("Seeds of each group"):
        show_table(seeds)

ids = list(shown["id"]) or list(runs["id"])
choices, labels = curve_choices(runs[runs["id"].isin(ids)], names)
compared = st.multiselect("Overlay curves of", choices, default=choices[:1],
                          format_func=labels.get)
if compared:
    members = member_runs(runs, compared)
    st.plotly_chart(curves(store, runs, names, compared,
                           references=overlay_references(runs, members)))
    figures = with_references(runs, final_figures(runs, members), SPLIT)
    show_table(figures.assign(id=[names[run] for run in members]).rename(
        columns={"id": "run"}))
    report_button(store, compared)
compare_groups_section(store, shown)

st.subheader("One run")
run_id = selected_run(ids, names)
run = store.get_run(run_id)
name_editor(store, runs, run_id)
left, right = st.columns(2)
with left:
    st.caption(f"Configuration of `{run_id}`")
    if run["reason"]:
        st.text(f"{run['status']}: {run['reason']}")
    st.json(run["config"], expanded=False)
with right:
    if run["kind"] == "train":
        command, missing = reproduce_command(run["config"])
        st.caption("Reproduce from the command line")
        st.code(command, language="bash")
        if missing:
            st.warning("The CLI cannot set " + ", ".join(missing) + "; they differ from "
                       "the defaults in this run.")
    else:
        parent = names.get(run["parent_id"], run["parent_id"])
        st.caption(f"A `{run['kind']}` run of {as_text(parent)}: see the pruning tools.")
    if run["summary"]:
        st.caption("Summary")
        st.json(run["summary"], expanded=False)
    if (store.run_dir(run_id) / "adapter").is_dir():
        try:
            archive = adapter_zip(store, run_id)
        except ValueError as error:  # a damaged artifact: named, never downloaded
            st.error(as_text(str(error)))
        else:
            st.download_button("Export adapter (.zip)", archive,
                               file_name=f"{run_id}-adapter.zip", mime="application/zip",
                               help="safetensors + JSON; unzip and `load_adapter(folder)`")

with st.expander("Delete this run"):
    busy = run["status"] in ("queued", "running")
    st.text(names[run_id])  # the name as typed: a label would read it as Markdown
    confirmed = st.checkbox("Yes, delete this run and its files", key=f"confirm-{run_id}",
                            disabled=busy)
    if busy:
        st.caption("Cancel its job in the sidebar's job queue first.")
    if st.button("Delete", disabled=not confirmed or busy):
        store.delete_run(run_id)
        st.success(f"Deleted {as_text(names[run_id])}.")
        st.rerun()
