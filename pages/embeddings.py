"""Embeddings: two runs' test images on the Poincaré disk, side by side (VPT vs E²VPT).

The hyperbolic head and the UMAP fit run in the worker as an `embed` job; this page only
reads what the job cached (the run summaries name the cache files), so a rerun never fits.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.context import accuracy_text, class_names, num_classes
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


def rerun_when_runs_complete(store: RunStore, shown: list[str]) -> None:
    """A run completed since the page drew its selectors: redraw them (with the default
    VPT-deep / E²VPT pair, which may only now exist)."""
    if list(embeddable_runs(store.runs())["id"]) != shown:
        st.rerun()


def drawn_points(view: dict | None) -> int | None:
    return None if view is None else len(view["labels"])


@st.fragment(run_every=3)
def results(store: RunStore, pair: list[str], split: str, shown: list[str],
            points: int | None) -> None:
    """Redrawn every 3 s, so the plots appear when the worker finishes the job; the whole
    page once a new view is drawn, so the points field above says how many it drew."""
    rerun_when_runs_complete(store, shown)
    runs = store.runs()
    names = run_names(runs)
    views = {run_id: cached_view(store, run_id, split) for run_id in dict.fromkeys(pair)}
    if drawn_points(views[pair[0]]) != points:
        st.rerun()
    missing = [run_id for run_id, view in views.items() if view is None]
    if missing:
        busy = pair_jobs(store, pair, split)
        shown = ", ".join(as_text(names[run]) for run in missing)
        st.info(f"Not computed yet for {shown} on `{split}`"
                + (f": {busy} embed job(s) queued or running." if busy
                   else ": press Compute."))
        return
    for index, (column, run_id) in enumerate(zip(st.columns(2), pair, strict=True)):
        view = views[run_id]
        row = runs.set_index("id").loc[run_id]
        column.plotly_chart(poincare_disk(view["disk"], view["labels"], view["indices"],
                                          class_names(row["dataset"]),
                                          title=f"{names[run_id]} ({split})"),
                            key=f"disk-{index}")
        column.caption(f"{len(view['labels'])} points drawn · {accuracy_text(runs, run_id)}")
    classes = num_classes(runs.set_index("id").loc[pair[0]])
    chance = f" k-NN accuracy at chance: {1 / classes:.3f}." if classes else ""
    st.caption("Separability (k-NN accuracy and silhouette: higher separates classes "
               f"better; ball = hyperbolic head output, disk = its 2-D projection).{chance}")
    table = separability_frame(views)
    st.dataframe(table.assign(run=table["run"].map(names)), hide_index=True, width="stretch")
    with st.expander("Cache settings"):  # which cached fit is drawn: for debugging
        for run_id in views:
            st.text(f"{names[run_id]}: settings {views[run_id]['figures']['settings_hash']}")


store = get_store()
st.title("Embeddings")
runs = embeddable_runs(store.runs())
if runs.empty:
    st.info("No completed runs yet: the view embeds images with a trained adapter.")
    st.fragment(run_every=3)(rerun_when_runs_complete)(store, [])
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
results(store, pair, split, list(runs["id"]), points)
