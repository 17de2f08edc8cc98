"""The job queue in the sidebar of every page: what runs now (with its progress), what
waits, and a cancel button for each, redrawn every 2 s on its own.

Without it the importance, rewind and embedding jobs of the quick demo are invisible;
with it the queue reads like a W&B or SLURM job list. `queue_rows` is plain data (tested
directly); `queue_view` draws it.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from app.names import job_name, run_names
from app.state import format_seconds, progress
from e2vpt_core.jobs import cancel_job, worker_alive
from e2vpt_core.store import RunStore

ACTIVE = ("running", "cancelling")
FINISHED = ("done", "failed", "cancelled")
RECENT = 5  # finished jobs listed under the queue
ICONS = {"done": ":material/check_circle:", "failed": ":material/error:",
         "cancelled": ":material/block:"}


def queue_rows(jobs: pd.DataFrame, runs: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Running, queued (in the order the worker takes them) and the last finished jobs,
    each as id, kind, status, readable name, run id and start time."""
    names = run_names(runs)
    groups: dict[str, list[dict[str, Any]]] = {"running": [], "queued": [], "finished": []}
    for _, job in jobs.iterrows():
        group = ("running" if job["status"] in ACTIVE else
                 "finished" if job["status"] in FINISHED else "queued")
        groups[group].append({"id": int(job["id"]), "kind": job["kind"],
                              "status": job["status"], "name": job_name(job, names),
                              "run_id": job["run_id"], "started_at": job["started_at"],
                              "error": job["error"]})
    groups["finished"] = groups["finished"][::-1][:RECENT]
    return groups


def _cancel_button(store: RunStore, job: dict[str, Any], column: Any) -> None:
    """Cancels in the click's callback, so the redraw that follows already shows it."""
    column.button("Cancel", key=f"cancel-job-{job['id']}", type="tertiary",
                  help=f"Cancel job {job['id']} ({job['kind']})", on_click=cancel_job,
                  args=(store, job["id"]))


def _running(store: RunStore, job: dict[str, Any]) -> None:
    st.markdown(f"**Running**  \n{job['name']}")
    run_id = job["run_id"]  # NaN for jobs without a run of their own (importance, embed)
    state = progress(store, run_id) if isinstance(run_id, str) else None
    if state and state["total"]:
        st.progress(min(state["done"] / state["total"], 1.0),
                    text=f"step {state['done']} / {state['total']} · "
                         f"ETA {format_seconds(state['eta_seconds'])}")
    elif job["started_at"] and not pd.isna(job["started_at"]):
        st.caption(f"running for {format_seconds(time.time() - job['started_at'])}")
    if job["status"] == "cancelling":
        st.caption("Stopping at the next step…")
    else:
        _cancel_button(store, job, st)


@st.fragment(run_every=2)
def queue_view(store: RunStore) -> None:
    """Draw the queue (call it inside `st.sidebar`)."""
    rows = queue_rows(store.jobs(), store.runs())
    st.subheader("Jobs")
    if not rows["running"] and not rows["queued"]:
        st.caption("Nothing running or queued.")
    for job in rows["running"]:
        _running(store, job)
    if rows["queued"]:
        st.markdown(f"**Queued ({len(rows['queued'])})**")
        for position, job in enumerate(rows["queued"], start=1):
            left, right = st.columns([4, 1.3], vertical_alignment="center")
            left.markdown(f"{position}. {job['name']}")
            _cancel_button(store, job, right)
    if (rows["running"] or rows["queued"]) and not worker_alive(store):
        st.warning("No worker is running: start one with "
                   f"`python -m e2vpt_core.jobs --store {store.root}`.")
    if rows["finished"]:
        with st.expander("Recently finished"):  # a fixed label keeps it open across redraws
            for job in rows["finished"]:
                note = f" ({job['error']})" if job["status"] == "failed" and job["error"] else ""
                st.markdown(f"{ICONS[job['status']]} {job['name']}{note}")
