"""The job queue in the sidebar of every page: what runs now (with its progress), what
waits (in the order the worker takes it), a cancel button for each and "Cancel all" (with a
confirmation), redrawn on its own (every 10 s while jobs are queued or running), from the
store only when it changed (`app.live`).

Without it the importance, rewind and embedding jobs of the quick demo are invisible;
with it the queue reads like a W&B or SLURM job list. `queue_rows` is plain data (tested
directly); `queue_view` draws it. `queue_sidebar` draws it before the page and again
after, when the page changed the queue: drawn only before, it showed the store as it was
before the page queued the demo ("Nothing running or queued") until its next redraw; drawn
only after, a page that stops early (`st.stop()`) would have none. Run and job names are
user text: drawn with `st.text`, never as Markdown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from app.live import aged_eta, keep_pace, live_read, pace, store_signature
from app.names import job_name, run_names
from app.state import format_seconds, progress_of
from e2vpt_core.jobs import cancel_job, cancel_jobs, worker_alive
from e2vpt_core.store import RunStore
from e2vpt_core.store.changes import newer_metrics

ACTIVE = ("running", "cancelling")
FINISHED = ("done", "failed", "cancelled")
RECENT = 5  # finished jobs listed under the queue
SYMBOLS = {"done": "✓", "failed": "✗", "cancelled": "⊘"}
ARMED = "queue:cancel-all"  # session key: the job ids "Cancel all" waits to confirm
PACED = "queue:active"  # session key: whether the newest drawing is on the fast timer
# The queue's timer while jobs are under way: each fragment rerun costs the browser about
# 0.1 s of CPU whatever it draws, and the Train page follows the running run's steps on
# its own, faster timer. A page that queues or cancels jobs redraws the queue at once.
QUEUE_SECONDS = 10


def queue_rows(jobs: pd.DataFrame, runs: pd.DataFrame,
               order: list[int] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Running, queued (in `order`, the order the worker takes them: `queue_order()`;
    by id without it) and the last finished jobs, each as id, kind, status, readable
    name, run id and start time."""
    names = run_names(runs)
    groups: dict[str, list[dict[str, Any]]] = {"running": [], "queued": [], "finished": []}
    for _, job in jobs.iterrows():
        group = ("running" if job["status"] in ACTIVE else
                 "finished" if job["status"] in FINISHED else "queued")
        groups[group].append({"id": int(job["id"]), "kind": job["kind"],
                              "status": job["status"], "name": job_name(job, names),
                              "run_id": job["run_id"], "started_at": job["started_at"],
                              "error": job["error"]})
    rank = {job_id: position for position, job_id in enumerate(order or [])}
    groups["queued"].sort(key=lambda row: (rank.get(row["id"], len(rank)), row["id"]))
    groups["finished"] = groups["finished"][::-1][:RECENT]
    return groups


def _cancel_button(store: RunStore, job: dict[str, Any], column: Any, suffix: str) -> None:
    """Cancels in the click's callback, so the redraw that follows already shows it."""
    column.button("Cancel", key=f"cancel-job-{job['id']}{suffix}", type="tertiary",
                  help=f"Cancel job {job['id']} ({job['kind']})", on_click=cancel_job,
                  args=(store, job["id"]))


def _arm(job_ids: list[int] | None) -> None:
    st.session_state[ARMED] = job_ids


def _cancel_armed(store: RunStore) -> None:
    cancel_jobs(store, ids=st.session_state.pop(ARMED, None) or [])


def _cancel_all(store: RunStore, job_ids: list[int], suffix: str) -> None:
    """"Cancel all", then a confirmation naming how many: the jobs listed when it was
    pressed are cancelled, not ones queued since."""
    armed = st.session_state.get(ARMED)
    if not armed:
        st.button("Cancel all", key=f"cancel-all{suffix}", on_click=_arm, args=(job_ids,),
                  help="Cancel every queued and running job (asks to confirm)")
        return
    st.warning(f"Cancel {len(armed)} job{'s' * (len(armed) != 1)}? Running ones stop at "
               "their next step.")
    yes, no = st.columns(2)
    yes.button("Yes, cancel them", key=f"cancel-all-yes{suffix}", type="primary",
               on_click=_cancel_armed, args=(store,))
    no.button("Keep them", key=f"cancel-all-no{suffix}", on_click=_arm, args=(None,))


def read_queue(store: RunStore, previous: dict | None) -> dict:
    """The queue's rows and each running run's progress, read from the store (only after
    it changed; a run's metrics only since the last read)."""
    rows = queue_rows(store.current_jobs(RECENT), store.runs(), store.queue_order())
    tails, states, now = {}, {}, time.time()
    for job in rows["running"]:
        run_id = job["run_id"]  # NaN for jobs without a run of their own (importance, embed)
        if isinstance(run_id, str):
            tails[run_id] = newer_metrics(store, (previous or {}).get("tails", {}).get(run_id),
                                          run_id)
            states[run_id] = progress_of(store.get_run(run_id), tails[run_id].frame, now)
    return {"rows": rows, "tails": tails, "states": states, "read_at": now,
            "worker": worker_alive(store)}


def _running(store: RunStore, job: dict[str, Any], state: dict[str, Any] | None,
             suffix: str) -> None:
    st.markdown("**Running**")
    st.text(job["name"])
    if state and state["total"]:
        st.progress(min(state["done"] / state["total"], 1.0),
                    text=f"step {state['done']} / {state['total']} · "
                         f"ETA {format_seconds(state['eta_seconds'])}")
    elif job["started_at"] and not pd.isna(job["started_at"]):
        st.caption(f"running for {format_seconds(time.time() - job['started_at'])}")
    if job["status"] == "cancelling":
        st.caption("Stopping at the next step…")
    else:
        _cancel_button(store, job, st, suffix)


def queue_view(store: RunStore, suffix: str, active: bool) -> None:
    """Draw the queue (a fragment in `st.sidebar`, on a 10 s timer while jobs are `active`:
    `queue_sidebar`), read from the store only when it changed (`app.live`); `suffix` keeps
    its widgets' keys apart when it is drawn twice in one run."""
    view = live_read(("queue", str(store.root)), store_signature(store),
                     lambda previous: read_queue(store, previous))
    rows = view["rows"]
    if st.session_state.get(PACED) == active:  # not an older drawing the page redrew over
        keep_pace(active, bool(rows["running"] or rows["queued"]))
    st.subheader("Jobs")
    if not rows["running"] and not rows["queued"]:
        st.caption("Nothing running or queued.")
        st.session_state.pop(ARMED, None)
    for job in rows["running"]:
        state = view["states"].get(job["run_id"]) if isinstance(job["run_id"], str) else None
        _running(store, job, state and aged_eta(state, view["read_at"]), suffix)
    if rows["queued"]:
        st.markdown(f"**Queued ({len(rows['queued'])})**")
        for position, job in enumerate(rows["queued"], start=1):
            left, right = st.columns([4, 1.3], vertical_alignment="center")
            left.text(f"{position}. {job['name']}")
            _cancel_button(store, job, right, suffix)
    active = [job["id"] for job in rows["running"] + rows["queued"]
              if job["status"] != "cancelling"]
    if active:
        _cancel_all(store, active, suffix)
    if (rows["running"] or rows["queued"]) and not view["worker"]:
        st.warning("No worker is running: start one with "
                   f"`python -m e2vpt_core.jobs --store {store.root}`.")
    if rows["finished"]:
        with st.expander("Recently finished"):  # a fixed label keeps it open across redraws
            for job in rows["finished"]:
                note = f" ({job['error']})" if job["status"] == "failed" and job["error"] else ""
                st.text(f"{SYMBOLS[job['status']]} {job['name']}{note}")


def _signature(store: RunStore) -> list[tuple[int, str]]:
    return list(store.current_jobs(RECENT)[["id", "status"]].itertuples(index=False))


def _draw(store: RunStore, jobs: list[tuple[int, str]], suffix: str = "") -> None:
    """The queue as a fragment on the timer that fits `jobs`; the newest drawing of a run
    is the one that reruns the page when the queue starts or stops (`PACED`)."""
    active = any(status not in FINISHED for _, status in jobs)
    st.session_state[PACED] = active
    st.fragment(run_every=pace(active, QUEUE_SECONDS))(queue_view)(store, suffix, active)


def queue_sidebar(store: RunStore) -> Callable[[], None]:
    """Draw the queue where the caller is (the sidebar) and return what redraws it in place
    after the page ran, if the page changed it: call that once the page has run."""
    slot, before = st.empty(), _signature(store)
    with slot.container():
        _draw(store, before)

    def redraw() -> None:
        after = _signature(store)
        if after != before:
            with slot.container():
                _draw(store, after, "-after-page")

    return redraw
