"""Pruning: importance of prompt tokens and segments, a live mask preview, rewinds.

Scores come from the stored full pass when there is one, else from the snapshot training
writes every few steps, so a running run can be watched. Rewinds (and sweeps of them) are
queued as jobs for the worker; their finished child runs fill the trade-off curve.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.context import accuracy_text
from app.figures import (
    importance_heatmap,
    layer_importance_heatmap,
    layer_mask_preview,
    mask_preview,
    prune_curve,
    token_importance_bar,
)
from app.names import run_names
from app.pruning_state import (
    SWEEP_RATIOS,
    effective_params,
    frozen,
    importance_scores,
    pending_jobs,
    prompt_runs,
    rewind_results,
)
from app.state import get_store, start_worker
from e2vpt_core.jobs import submit_importance, submit_rewind
from e2vpt_core.prune import select_masks
from e2vpt_core.prune.importance import IMPORTANCE, TOKEN_SCORES
from e2vpt_core.prune.rewind import INITS, MODES
from e2vpt_core.store import RunStore

RATIOS = [round(0.1 * step, 1) for step in range(10)]
TOKEN_SCORE_NAMES = {"mask": "token-mask gradient (paper)",
                     "segments": "sum of the token's segment scores"}



def importance_view(store: RunStore, run_id: str, token_ratio: float,
                    segment_ratio: float, masks_per_block: bool, token_scores: str) -> None:
    """Heatmaps of the scores and the mask the ratios would keep, with its parameters."""
    try:
        found = importance_scores(store, run_id, masks_per_block, token_scores)
    except ValueError as error:
        st.warning(f"{error}: compute the full pass below.")
        return
    if found is None:
        st.info("No importance scores yet: training writes a snapshot every "
                "`importance_every` steps; or compute the full pass below.")
        return
    scores, source, per_layer, selection_scores = found
    st.caption(f"Scores: {source}.")
    left, right = st.columns([3, 2])
    left.plotly_chart(importance_heatmap(scores.segment.numpy()), key="segment-heatmap")
    right.plotly_chart(token_importance_bar(scores.token.numpy()), key="token-bar")
    if per_layer is not None:
        st.plotly_chart(layer_importance_heatmap(per_layer), key="layer-heatmap")

    selection = select_masks(selection_scores.token, selection_scores.segment, token_ratio,
                             segment_ratio)
    kept = int(selection.segment_mask.sum())
    pairs = "(layer, token) pairs" if masks_per_block else "tokens"
    st.metric("Kept token × segment entries", f"{kept} / {selection.segment_mask.numel()}",
              help=f"{pairs} kept: {selection.num_kept_tokens} of "
                   f"{selection.token_mask.numel()}")
    left, right = st.columns([3, 2])
    preview = (layer_mask_preview(selection.segment_mask.numpy()) if masks_per_block else
               mask_preview(selection.token_mask.numpy(), selection.segment_mask.numpy()))
    left.plotly_chart(preview, key="mask-preview")
    if (store.run_dir(run_id) / "adapter").is_dir():
        counts = effective_params(str(store.root), run_id, frozen(selection.token_mask),
                                  frozen(selection.segment_mask))
        right.metric("Effective parameters", f"{counts['effective_params']:,}",
                     delta=f"{counts['effective_params'] - counts['trainable_params']:,}",
                     delta_color="inverse")  # fewer parameters is the gain
        right.caption(f"of {counts['trainable_params']:,} trainable")
    else:
        right.caption("Effective parameters: available once the run has its adapter.")


def compute_importance_button(store: RunStore, run_id: str, completed: bool,
                              scoring: bool) -> None:
    """Queue the full pass as a job (a rewind computes it anyway when missing)."""
    if scoring:
        st.caption("Full-pass importance of this run: queued or running.")
    elif st.button("Recompute full-pass importance" if store.has_tensors(run_id, IMPORTANCE)
                   else "Compute full-pass importance", disabled=not completed,
                   help="Score the trained adapter over the whole training split "
                        "(a job for the worker)"):
        try:
            job_id = submit_importance(store, run_id)
        except ValueError as error:
            st.error(str(error))
            return
        start_worker(store)
        st.success(f"Queued importance job {job_id}.")


def queue_rewinds(store: RunStore, parent: str, ratios: list[tuple[float, float]],
                  options: dict) -> None:
    try:
        jobs = [submit_rewind(store, parent, token, segment, **options)
                for token, segment in ratios]
    except (ValueError, KeyError) as error:
        st.error(str(error))
        return
    start_worker(store)
    st.success(f"Queued {len(jobs)} rewind job(s): " + ", ".join(map(str, jobs)) + ".")


def rewind_controls(store: RunStore, run: dict, token_ratio: float,
                    segment_ratio: float, token_scores: str) -> None:
    """Init, mode and epochs of the rewind; one rewind or a 10–90 % token-ratio sweep."""
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
    left, right = st.columns(2)
    if left.button("Rewind", type="primary", disabled=not completed):
        queue_rewinds(store, run["id"], [(token_ratio, segment_ratio)], options)
    if right.button("Sweep 10–90 %", disabled=not completed,
                    help="One rewind per token ratio 0.1 … 0.9, at this segment ratio"):
        queue_rewinds(store, run["id"], [(ratio, segment_ratio) for ratio in SWEEP_RATIOS],
                      options)
    queued = pending_jobs(store, "rewind")
    queued = queued[[payload.get("parent") == run["id"] for payload in queued["payload"]]]
    if not queued.empty:
        st.caption(f"{len(queued)} rewind job(s) of this run queued or running.")


def trade_off(runs: pd.DataFrame, parent: str) -> None:
    results = rewind_results(runs, parent)
    st.plotly_chart(prune_curve(results.rename(columns={"token_ratio": "ratio"})),
                    key="prune-curve")
    if not results.empty:
        st.dataframe(results, hide_index=True, width="stretch")


store = get_store()
st.title("Pruning")
all_runs = store.runs()
runs = prompt_runs(all_runs)
if runs.empty:
    st.info("No runs with visual prompts yet: train a vpt-shallow, vpt-deep or e2vpt run.")
    st.stop()

labels = run_names(all_runs)
ids = list(runs["id"])
followed = st.session_state.get("train_run")  # the run the Train page follows
run_id = st.selectbox("Run", ids, index=ids.index(followed) if followed in ids else 0,
                      format_func=labels.get)
run = store.get_run(run_id)
st.caption(accuracy_text(all_runs, run_id))
scoring = any(payload["run"] == run_id
              for payload in pending_jobs(store, "importance")["payload"])
live = run["status"] in ("queued", "running") or scoring

left, right = st.columns(2)
token_ratio = left.select_slider("Token prune ratio", RATIOS, value=0.0)
segment_ratio = right.select_slider("Segment prune ratio", RATIOS, value=0.0)
token_scores = st.radio(
    "Token scores", TOKEN_SCORES, horizontal=True, format_func=TOKEN_SCORE_NAMES.get,
    help="What ranks whole tokens. Deep prompts pass through each block's LayerNorm, which "
         "cancels scaling a whole token, so the token-mask gradient is ~0 there; the sum "
         "of a token's segment scores still carries signal.")
view = st.fragment(run_every=3 if live else None)(importance_view)
view(store, run_id, token_ratio, segment_ratio,
     bool(run["config"]["prompt"].get("masks_per_block", False)), token_scores)
compute_importance_button(store, run_id, run["status"] == "completed", scoring)

st.subheader("Rewind")
rewind_controls(store, run, token_ratio, segment_ratio, token_scores)
st.subheader("Accuracy and parameters against the prune ratio")
trade_off(store.runs(), run_id)
