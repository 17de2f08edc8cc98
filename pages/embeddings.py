"""Embeddings: two runs' test images on the Poincaré disk, side by side (VPT vs E²VPT).

The hyperbolic head and the UMAP fit run in the worker as an `embed` job; this page only
reads what the job cached (the run summaries name the cache files), so a rerun never fits.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.context import accuracy_text, class_names, num_classes
from app.live import keep_pace, live_read, pace, store_active, store_signature
from app.names import run_names
from app.pruning_state import (
    default_pair,
    embeddable_runs,
    pending_jobs,
    separability_frame,
)
from app.state import as_text, get_store, start_worker
from e2vpt_core.hyperbolic import DEFAULT_MAX_POINTS
from e2vpt_core.jobs import submit_embed
from e2vpt_core.report.figures import poincare_disk
from e2vpt_core.report.views import cached_view
from e2vpt_core.store import RunStore

SPLITS = ("test", "val", "train")

def pair_inputs(runs: pd.DataFrame, labels: dict[str, str]) -> tuple[str, str]:
    """Two runs, by default the newest vpt-deep / e2vpt pair on one dataset."""
    ids = list(runs["id"])
    pair = default_pair(runs) or (ids[min(1, len(ids) - 1)], ids[0])
    left, right = st.columns(2)
    first = left.selectbox("Left run", ids, index=ids.index(pair[0]), format_func=labels.get)
    second = right.selectbox("Right run", ids, index=ids.index(pair[1]),
                             format_func=labels.get)
    return first, second


def pair_jobs(store: RunStore, pair: list[str], split: str) -> int:
    """How many embed jobs of exactly this pair and split are queued or running."""
    jobs = pending_jobs(store, "embed")
    return sum(payload["runs"] == pair and payload["split"] == split
               for payload in jobs["payload"])


def rerun_when_runs_complete(store: RunStore, shown: list[str], active: bool) -> None:
    """A run completed since the page drew its selectors: redraw them (with the default
    VPT-deep / E²VPT pair, which may only now exist). The runs are read again only once
    the store changed; the page's timers are fast only while something is `active`."""
    done = live_read(("embeddable", str(store.root)), store_signature(store),
                     lambda _: list(embeddable_runs(store.runs())["id"]))
    if done != shown:
        st.rerun()
    keep_pace(active, store_active(store))


def drawn_points(view: dict | None) -> int | None:
    return None if view is None else len(view["labels"])


def read_results(store: RunStore, pair: list[str], split: str,
                 previous: dict | None) -> dict:
    """What `results` draws, read once the store changed; the cached views are loaded and
    the disks drawn again only when a run's `hyperbolic_<split>` entry or name changed."""
    runs = store.runs()
    names = run_names(runs)
    entries = {run_id: (names[run_id],
                        store.get_run(run_id)["summary"].get(f"hyperbolic_{split}"))
               for run_id in dict.fromkeys(pair)}
    if previous is not None and previous["entries"] == entries:
        views, disks = previous["views"], previous["disks"]
    else:
        views = {run_id: cached_view(store, run_id, split) for run_id in entries}
        by_id = runs.set_index("id")
        disks = None if any(view is None for view in views.values()) else [
            poincare_disk(views[run_id]["disk"], views[run_id]["labels"],
                          views[run_id]["indices"], class_names(by_id.loc[run_id, "dataset"]),
                          title=f"{names[run_id]} ({split})") for run_id in pair]
    missing = [run_id for run_id, view in views.items() if view is None]
    data = {"entries": entries, "views": views, "disks": disks, "names": names,
            "missing": missing, "points": drawn_points(views[pair[0]])}
    if missing:
        return {**data, "busy": pair_jobs(store, pair, split)}
    classes = num_classes(runs.set_index("id").loc[pair[0]])
    table = separability_frame(views)
    return {**data, "accuracy": {run_id: accuracy_text(runs, run_id) for run_id in pair},
            "chance": f" k-NN accuracy at chance: {1 / classes:.3f}." if classes else "",
            "table": table.assign(run=table["run"].map(names))}


def results(store: RunStore, pair: list[str], split: str, shown: list[str],
            points: int | None, active: bool) -> None:
    """Redrawn every 3 s while jobs are under way (`active`), so the plots appear when the
    worker finishes the job, from the last read while the store is unchanged; the whole
    page once a new view is drawn, so the points field above says how many it drew."""
    rerun_when_runs_complete(store, shown, active)
    view = live_read(("embeddings", str(store.root), tuple(pair), split),
                     store_signature(store),
                     lambda previous: read_results(store, pair, split, previous))
    if view["points"] != points:
        st.rerun()
    names = view["names"]
    if view["missing"]:
        busy = view["busy"]
        shown = ", ".join(as_text(names[run]) for run in view["missing"])
        st.info(f"Not computed yet for {shown} on `{split}`"
                + (f": {busy} embed job(s) queued or running." if busy
                   else ": press Compute."))
        return
    for index, (column, run_id) in enumerate(zip(st.columns(2), pair, strict=True)):
        column.plotly_chart(view["disks"][index], key=f"disk-{index}")
        column.caption(f"{len(view['views'][run_id]['labels'])} points drawn · "
                       f"{view['accuracy'][run_id]}")
    st.caption("Separability (k-NN accuracy and silhouette: higher separates classes "
               "better; ball = hyperbolic head output, disk = its 2-D projection)."
               f"{view['chance']}")
    st.dataframe(view["table"], hide_index=True, width="stretch")
    with st.expander("Cache settings"):  # which cached fit is drawn: for debugging
        for run_id, drawn in view["views"].items():
            st.text(f"{names[run_id]}: settings {drawn['figures']['settings_hash']}")


store = get_store()
st.title("Embeddings")
runs = embeddable_runs(store.runs())
if runs.empty:
    st.info("No completed runs yet: the view embeds images with a trained adapter.")
    active = store_active(store)
    st.fragment(run_every=pace(active, 3))(rerun_when_runs_complete)(store, [], active)
    st.stop()

first, second = pair_inputs(runs, run_names(store.runs()))
left, right = st.columns(2)
split = left.selectbox("Split", SPLITS)
points = drawn_points(cached_view(store, first, split))
max_points = right.number_input(  # a new drawing, a new field: it says how many it drew
    "Points (0: all)", 0, 100_000, points or DEFAULT_MAX_POINTS,
    key=f"points-{first}-{second}-{split}-{points}",
    help="At most this many images: a seeded sample of the split, the same for both "
         "runs; a smaller split is drawn whole")
pair = [first, second]
if st.button("Compute", type="primary"):
    job_id = submit_embed(store, pair, split, max_points=int(max_points))
    start_worker(store)
    st.success(f"Queued embed job {job_id}.")
active = store_active(store)  # after Compute, which may have queued a job
st.fragment(run_every=pace(active, 3))(results)(store, pair, split, list(runs["id"]), points,
                                              active)
