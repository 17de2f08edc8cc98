"""Runs: every run in the store by readable name, grouped by task or filtered by tag, with
chance and the linear probe beside each accuracy; curves and final figures compared; each
run's config, the command reproducing it, its adapter, its name and tags, deletion."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app.context import references, with_references
from app.figures import training_curves
from app.names import parse_tags, rename, run_names, run_tags, task_name
from app.state import adapter_zip, final_figures, get_store, reproduce_command
from e2vpt_core.store import RunStore

COLUMNS = ["name", "tags", "kind", "status", "val_top1", "test_top1", "chance",
           "linear probe", "parent", "trainable_params", "effective_params", "created", "id",
           "reason"]
COUNTS = {column: st.column_config.NumberColumn(format="localized")  # 1,234,567
          for column in ("trainable_params", "effective_params")}


def run_table(runs: pd.DataFrame, names: dict[str, str],
              tags: dict[str, list[str]]) -> pd.DataFrame:
    """One row per run: its name and tags first, accuracies beside their references."""
    table = runs.assign(
        name=[names[run_id] for run_id in runs["id"]],
        tags=[", ".join(tags[run_id]) for run_id in runs["id"]],
        created=[time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
                 for t in runs["created_at"]])
    table = with_references(runs, table)
    return table[[c for c in COLUMNS if c in table.columns]].reset_index(drop=True)


def tagged(runs: pd.DataFrame, tags: dict[str, list[str]], wanted: list[str]) -> pd.DataFrame:
    """Runs carrying every wanted tag (all runs when none are wanted)."""
    return runs[[set(wanted) <= set(tags[run_id]) for run_id in runs["id"]]]


def overlay_references(runs: pd.DataFrame, compared: list[str]) -> dict[str, float]:
    """Lines for the overlaid top-1 curves: all of one run's references; for several runs
    on one task only those they share (chance, linear probe); none across tasks."""
    if len(compared) == 1:
        return references(runs, compared[0])
    if runs.set_index("id").loc[compared, "dataset"].nunique() > 1:
        return {}
    return {name: value for name, value in references(runs, compared[0]).items()
            if name != "parent"}


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
        st.rerun()


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
        st.markdown(f"**{task}** · {len(members)} run(s)")
        st.dataframe(run_table(members, names, tags), hide_index=True, width="stretch",
                     column_config=COUNTS)
else:
    st.dataframe(run_table(shown, names, tags), hide_index=True, width="stretch",
                 column_config=COUNTS)

ids = list(shown["id"]) or list(runs["id"])
compared = st.multiselect("Overlay curves of", ids, default=ids[:1], format_func=names.get)
if compared:
    st.plotly_chart(training_curves({names[run]: store.metrics(run) for run in compared},
                                    references=overlay_references(runs, compared)))
    figures = with_references(runs, final_figures(runs, compared))
    st.dataframe(figures.assign(id=[names[run] for run in compared]).rename(
        columns={"id": "run"}), hide_index=True, width="stretch", column_config=COUNTS)

st.subheader("One run")
run_id = st.selectbox("Run", ids, format_func=names.get)
run = store.get_run(run_id)
name_editor(store, runs, run_id)
left, right = st.columns(2)
with left:
    st.caption(f"Configuration of `{run_id}`")
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
        st.caption(f"A `{run['kind']}` run of {parent}: see the pruning tools.")
    if run["summary"]:
        st.caption("Summary")
        st.json(run["summary"], expanded=False)
    if (store.run_dir(run_id) / "adapter").is_dir():
        st.download_button("Export adapter (.zip)", adapter_zip(store, run_id),
                           file_name=f"{run_id}-adapter.zip", mime="application/zip",
                           help="safetensors + JSON; unzip and `load_adapter(folder)`")

with st.expander("Delete this run"):
    busy = run["status"] in ("queued", "running")
    confirmed = st.checkbox(f"Yes, delete {names[run_id]} and its files",
                            key=f"confirm-{run_id}", disabled=busy)
    if busy:
        st.caption("Cancel its job in the sidebar's job queue first.")
    if st.button("Delete", disabled=not confirmed or busy):
        store.delete_run(run_id)
        st.success(f"Deleted {names[run_id]}.")
        st.rerun()
