"""The Pruning page's rewind controls: one rewind, its random-mask controls, a costed sweep.

Jobs equal to a queued or running one are that job, not new ones; the sweep says what it
costs (the parent's measured step time) and waits for a confirmation.
"""

from __future__ import annotations

import streamlit as st

from app.pruning_state import SWEEP_RATIOS, pending_jobs
from app.state import start_worker
from e2vpt_core.jobs import cancel_jobs, estimate_rewinds, queued_rewinds, submit_rewind
from e2vpt_core.prune.rewind import INITS, MODES
from e2vpt_core.store import RunStore

RANDOM_SEEDS = (0, 1, 2)  # random-mask rewinds beside each rewound ratio


def queue_rewinds(store: RunStore, parent: str, ratios: list[tuple[float, float]],
                  options: dict) -> None:
    """Queue the rewinds; one equal to a queued or running rewind is that job, not a new one."""
    try:
        known = queued_rewinds(store, parent, ratios, **options)
        jobs = [submit_rewind(store, parent, token, segment, **options)
                for token, segment in ratios if (token, segment) not in known]
    except (ValueError, KeyError) as error:
        st.error(str(error))
        return
    start_worker(store)
    again = (f" Already queued: job {', '.join(map(str, known.values()))}."
             if known else "")
    st.success(f"Queued {len(jobs)} rewind job(s)" + (": " + ", ".join(map(str, jobs))
                                                       if jobs else "") + "." + again)


SWEEP_KEY = "pruning:sweep"  # session key: the run whose sweep waits for confirmation


def sweep_confirmation(store: RunStore, parent: str, segment_ratio: float,
                       options: dict) -> None:
    """What the 10–90 % sweep costs (from the parent's measured step time), then Queue or
    Don't; ratios whose rewind is already queued or running are left out."""
    ratios = [(ratio, segment_ratio) for ratio in SWEEP_RATIOS]
    known = queued_rewinds(store, parent, ratios, **options)
    new = [pair for pair in ratios if pair not in known]
    box = st.empty()
    with box.container():
        skipped = f"; {len(known)} ratio(s) already queued, left out" if known else ""
        st.warning(f"Sweep: {estimate_rewinds(store, parent, len(new), options['epochs'])}"
                   f"{skipped}." if new else "Every ratio of this sweep is already queued.")
        yes, no = st.columns(2)
        go = yes.button(f"Queue {len(new)} rewinds", type="primary", disabled=not new)
        stop = no.button("Don't sweep")
    if go or stop:
        box.empty()
        st.session_state.pop(SWEEP_KEY, None)
    if go:
        queue_rewinds(store, parent, new, options)


def rewind_controls(store: RunStore, run: dict, token_ratio: float, segment_ratio: float,
                    token_scores: str) -> None:
    """Init, mode and epochs of the rewind; one rewind at the sliders' ratios, its
    random-mask controls, or a 10–90 % token-ratio sweep."""
    left, middle, right = st.columns(3)
    init = left.selectbox("Init", INITS, help="fresh: new random prompts (reference code); "
                          "original: the parent's own initial values (lottery ticket)")
    mode = middle.selectbox("Mode", MODES, help="zero: pruned entries are zeroed; "
                            "remove: pruned tokens leave the sequence")
    epochs = right.number_input("Rewind epochs", 1, 1000, int(run["config"]["epochs"]))
    options = {"init": init, "mode": mode, "epochs": int(epochs), "token_scores": token_scores}
    completed = run["status"] == "completed"
    if not completed:
        st.caption("Rewinds start from a completed run.")
    left, middle, right = st.columns(3)
    if left.button("Rewind", type="primary", disabled=not completed):
        queue_rewinds(store, run["id"], [(token_ratio, segment_ratio)], options)
    if middle.button("Random-mask controls", disabled=not completed,
                     help=f"{len(RANDOM_SEEDS)} rewinds at these ratios with random masks "
                          "of the same counts, rewound the same way: does the score beat "
                          "chance after retraining?"):
        for seed in RANDOM_SEEDS:
            queue_rewinds(store, run["id"], [(token_ratio, segment_ratio)],
                          {**options, "order": "random", "seed": seed})
    if right.button("Sweep 10–90 %", disabled=not completed,
                    help="One rewind per token ratio 0.1 … 0.9, at this segment ratio; "
                         "shows what it costs and asks to confirm"):
        st.session_state[SWEEP_KEY] = run["id"]
    if completed and st.session_state.get(SWEEP_KEY) == run["id"]:
        sweep_confirmation(store, run["id"], segment_ratio, options)
    queued = pending_jobs(store, "rewind")
    queued = queued[[payload.get("parent") == run["id"] for payload in queued["payload"]]]
    if not queued.empty:
        left, right = st.columns([3, 1], vertical_alignment="center")
        left.caption(f"{len(queued)} rewind job(s) of this run queued or running.")
        right.button("Cancel them", key="cancel-rewinds", type="tertiary",
                     help="Cancel this run's queued and running rewinds",
                     on_click=cancel_jobs, args=(store, "rewind", run["id"]))
