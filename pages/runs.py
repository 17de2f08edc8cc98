"""Runs: every run in the store, curves and final figures compared, each run's config, the
command reproducing it, its adapter for download, deletion."""

from __future__ import annotations

import time

import streamlit as st

from app.figures import training_curves
from app.state import adapter_zip, final_figures, get_store, reproduce_command, run_label

COLUMNS = ["id", "kind", "status", "method", "dataset", "val_top1", "test_top1",
           "trainable_params", "effective_params", "created", "parent_id", "reason"]

store = get_store()
st.title("Runs")
runs = store.runs()
if runs.empty:
    st.info(f"No runs in `{store.root}` yet.")
    st.stop()

runs["created"] = [time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
                   for t in runs["created_at"]]
st.dataframe(runs[[c for c in COLUMNS if c in runs.columns]], hide_index=True,
             width="stretch")

labels = {row["id"]: run_label(row) for _, row in runs.iterrows()}
ids = list(runs["id"])
compared = st.multiselect("Overlay curves of", ids, default=ids[:1], format_func=labels.get)
if compared:
    st.plotly_chart(training_curves({run: store.metrics(run) for run in compared}))
    st.dataframe(final_figures(runs, compared), hide_index=True, width="stretch")

st.subheader("One run")
run_id = st.selectbox("Run", ids, format_func=labels.get)
run = store.get_run(run_id)
left, right = st.columns(2)
with left:
    st.caption("Configuration")
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
        st.caption(f"A `{run['kind']}` run of {run['parent_id']}: see the pruning tools.")
    if run["summary"]:
        st.caption("Summary")
        st.json(run["summary"], expanded=False)
    if (store.run_dir(run_id) / "adapter").is_dir():
        st.download_button("Export adapter (.zip)", adapter_zip(store, run_id),
                           file_name=f"{run_id}-adapter.zip", mime="application/zip",
                           help="safetensors + JSON; unzip and `load_adapter(folder)`")

with st.expander("Delete this run"):
    busy = run["status"] in ("queued", "running")
    confirmed = st.checkbox(f"Yes, delete {run_id} and its files", key=f"confirm-{run_id}",
                            disabled=busy)
    if busy:
        st.caption("Cancel it on the Train page first.")
    if st.button("Delete", disabled=not confirmed or busy):
        store.delete_run(run_id)
        st.success(f"Deleted {run_id}.")
        st.rerun()
