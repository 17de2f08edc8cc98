"""Pruning: importance of prompt tokens and segments, a live mask preview with the mask's
accuracy without retraining, rewinds and their random-mask controls.

Scores come from the stored full pass when there is one, else from the snapshot training
writes every few steps, so a running run can be watched. The sliders and the mask
preview are drawn in the browser from every mask they can reach (`app.mask_slider`), so
moving a slider costs no round trip; releasing it reruns only their fragment (from scores
kept until their files change), never the whole page; the whole page reruns when the
run's status changes (so Rewind is enabled once a watched run completes). Rewinds (and sweeps of
them) are queued as jobs for the worker; their finished child runs fill the trade-off
curve.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st
import torch

from app.attention_view import attention_section
from app.context import accuracy_text
from app.control_verdicts import curve_verdict_view, rewind_verdict_view
from app.live import live_read
from app.mask_slider import mask_sliders, reachable_masks
from app.names import run_names
from app.pruning_state import (
    SETTLE,
    StoredScores,
    curve_progress,
    default_run,
    drawn_score_files,
    effective_params,
    eval_split,
    frozen,
    importance_scores,
    live_run_state,
    masked_accuracy,
    prompt_runs,
    ratio_options,
    run_state,
    start_curve,
)
from app.rewind_controls import rewind_controls
from app.state import get_store, start_worker
from e2vpt_core.jobs import (
    submit_importance,
)
from e2vpt_core.prune import select_masks
from e2vpt_core.prune.importance import IMPORTANCE, TOKEN_SCORES, UNSIGNED
from e2vpt_core.prune.noretrain import LOO, run_leave_one_out
from e2vpt_core.prune.rewind import MODES
from e2vpt_core.prune.selection import default_min_segments
from e2vpt_core.report.figures import (
    importance_heatmap,
    layer_importance_heatmap,
    no_retrain_curve,
    prune_curve,
    token_importance_bar,
)
from e2vpt_core.report.tradeoff import trade_off
from e2vpt_core.store import RunStore

TOKEN_SCORE_NAMES = {"mask": "token-mask gradient (paper)",
                     "segments": "sum of the token's segment scores",
                     "kv": "key/value mask after the LayerNorm",
                     "logit": "log-mask bias on its attention logits",
                     "taylor": "Σ |gradient × prompt|",
                     "loo": "leave-one-out on the training split (exact)"}
CURVE_DRAWS = 5  # random masks per ratio on the no-retrain curve


def _percent(ratio: float) -> str:
    return f"{100 * ratio:.3g} %"


def _nearest(options: list[float], ratio: float) -> int:
    return min(range(len(options)), key=lambda index: abs(options[index] - ratio))


class Scoring:
    """How the selected run's masks are chosen: its scores' sign and count rounding (the
    official preset: signed, rounded down), and the slider state keys of the run."""

    def __init__(self, run: dict, token_scores: str) -> None:
        self.run_id = run["id"]
        self.token_scores = token_scores
        official = run["config"].get("preset") == "official"
        self.signed = official and token_scores not in UNSIGNED
        self.rounding = "floor" if official else "nearest"
        self.masks_per_block = bool(run["config"]["prompt"].get("masks_per_block", False))
        self.prune_mode = run["config"]["prompt"].get("prune_mode", "zero")
        self.importance_every = run["config"].get("importance_every", "few")
        self.token_key, self.segment_key = (f"token_ratio:{self.run_id}",
                                            f"segment_ratio:{self.run_id}")
        self.mode_key, self.mask_key = f"eval_mode:{self.run_id}", f"mask:{self.run_id}"
        self.pick_key = f"pick:{self.run_id}"

    def ratios(self) -> tuple[float, float]:
        """The sliders' current ratios (read by the controls outside their fragment)."""
        return (st.session_state.get(self.token_key, 0.0),
                st.session_state.get(self.segment_key, 0.0))

    def scores(self, store: RunStore, report: bool = True) -> StoredScores | None:
        """The run's scores, or None (with the reason shown if `report`)."""
        try:
            found = importance_scores(store, self.run_id, self.masks_per_block,
                                      self.token_scores, self.signed)
        except ValueError as error:
            where = ("compute them below" if self.token_scores == "loo"
                     else "compute the full pass below")
            if report:
                st.warning(f"{error}: {where}.")
            return None
        if found is None and report:
            st.info(f"No importance scores yet: training saves a snapshot of them every "
                    f"{self.importance_every} steps; or compute the full pass below.")
        return found


def score_view(store: RunStore, scoring: Scoring, drawn: tuple[str, bool]) -> None:
    """Heatmaps of the scores (a fragment: refreshed every few seconds while live, built
    again only for new score files: `drawn_score_files`). Once the run or its full pass
    has moved on from the `run_state` the page was `drawn` with (say the run completed),
    the whole page reruns, to enable the rewind controls."""
    if live_run_state(store, scoring.run_id) != drawn:
        st.rerun()

    def figures(_: object) -> tuple | None:
        found = scoring.scores(store, report=False)
        return None if found is None else (
            found.source, importance_heatmap(found.scores.segment.numpy()),
            token_importance_bar(found.scores.token.numpy()),
            None if found.per_layer is None else layer_importance_heatmap(found.per_layer))

    drawing = live_read(("score-view", str(store.root), scoring.run_id,
                         scoring.token_scores), drawn_score_files(store, scoring.run_id),
                        figures)
    if drawing is None:
        scoring.scores(store)  # says why there are none
        return
    source, segment, token, layer = drawing
    st.caption(f"Scores: {source}.")
    left, right = st.columns([3, 2])
    left.plotly_chart(segment, key="segment-heatmap")
    right.plotly_chart(token, key="token-bar")
    if layer is not None:
        st.plotly_chart(layer, key="layer-heatmap")


def mask_view(store: RunStore, scoring: Scoring) -> None:
    """Sliders and the mask they keep, drawn in the browser (`app.mask_slider`); released,
    a slider reruns only this fragment, for the kept count and effective parameters; the
    mask is left in the session for `accuracy_view`. The scores are those `score_view`
    draws (`drawn_score_files`), so the masks move with its heatmaps."""
    found = live_read(("mask-scores", str(store.root), scoring.run_id,
                       scoring.token_scores), drawn_score_files(store, scoring.run_id),
                      lambda _: scoring.scores(store, report=False))  # None: see score_view
    if found is None:
        return
    token_scores, segment_scores = found.selection.token, found.selection.segment
    layers = token_scores.shape[0] if scoring.masks_per_block else 1
    segments = segment_scores.shape[-1]
    masks = reachable_masks(token_scores, segment_scores, scoring.rounding)
    token_options, segment_options = masks.token_ratios, masks.segment_ratios
    token_ratio, segment_ratio = scoring.ratios()
    start = (_nearest(token_options, token_ratio), _nearest(segment_options, segment_ratio))
    pick = mask_sliders(f"mask-slider:{scoring.run_id}", masks, start)
    if pick is not None and pick != st.session_state.get(scoring.pick_key):
        st.session_state[scoring.pick_key] = pick  # a release in the browser: it wins
        start = pick
    token_ratio, segment_ratio = token_options[start[0]], segment_options[start[1]]
    st.session_state[scoring.token_key] = token_ratio
    st.session_state[scoring.segment_key] = segment_ratio
    st.caption(f"One step per {'(layer, token) pair' if layers > 1 else 'prompt token'} "
               f"and per segment of {segments}; at least "
               f"{default_min_segments(segments)} segments kept per token.")
    selection = select_masks(token_scores, segment_scores, token_ratio, segment_ratio,
                             rounding=scoring.rounding)
    kept = int(selection.segment_mask.sum())
    pairs = "(layer, token) pairs" if scoring.masks_per_block else "tokens"
    left, right = st.columns(2)
    left.metric("Kept token × segment entries", f"{kept} / {selection.segment_mask.numel()}",
              help=f"{pairs} kept: {selection.num_kept_tokens} of "
                   f"{selection.token_mask.numel()}")
    if not (store.run_dir(scoring.run_id) / "adapter").is_dir():
        right.caption("Effective parameters and accuracy: available once the run has its "
                      "adapter.")
        return
    root, token, segment = str(store.root), frozen(selection.token_mask), \
        frozen(selection.segment_mask)
    try:
        counts = effective_params(root, scoring.run_id, token, segment)
    except ValueError as error:  # a damaged adapter (ArtifactError): one line, no traceback
        right.error(str(error))
        return
    right.metric("Effective parameters", f"{counts['effective_params']:,}",
                 delta=f"{counts['effective_params'] - counts['trainable_params']:,}",
                 delta_color="inverse")  # fewer parameters is the gain
    right.caption(f"of {counts['trainable_params']:,} trainable")
    if st.session_state.get(scoring.mask_key, (None, None))[:2] != (token, segment):
        st.session_state[scoring.mask_key] = (token, segment, time.monotonic())


def accuracy_view(store: RunStore, scoring: Scoring) -> None:
    """The previewed mask's top-1 without retraining (a fragment polling every second:
    the pass over val runs in the background, so the sliders never wait for it). A mask
    is evaluated once it stayed `SETTLE` seconds, so passing over masks on the way to
    another costs no CPU that the next slider move needs."""
    masks = st.session_state.get(scoring.mask_key)
    if masks is None:
        return
    settled = time.monotonic() - masks[2] >= SETTLE
    left, right = st.columns([3, 2])
    mode = left.radio("Evaluate with", MODES, horizontal=True, key=scoring.mode_key,
                      help="zero: pruned entries are zeroed (the token still takes "
                           "attention); remove: pruned tokens leave the sequence")
    root, (token, segment, _) = str(store.root), masks
    ones = (frozen(torch.ones(torch.tensor(token).shape)),
            frozen(torch.ones(torch.tensor(segment).shape)))
    try:
        found = masked_accuracy(root, scoring.run_id, token, segment, mode, start=settled)
        parent = masked_accuracy(root, scoring.run_id, *ones, scoring.prune_mode)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        right.warning(f"Cannot evaluate the mask: {error}")
        return
    if found is None or parent is None:
        right.metric("Top-1 without retraining", "evaluating…")
        return
    split, masked = found
    right.metric("Top-1 without retraining", f"{masked:.1f} %",
                 delta=f"{masked - parent[1]:+.1f} points vs unpruned, both on {split} "
                       f"({parent[1]:.1f} %)",
                 help=f"The trained run's {split} top-1 with this mask applied, before any "
                      "rewind, against the same run unpruned on the same split; kept per mask")


def leave_one_out_button(store: RunStore, run_id: str, completed: bool) -> None:
    """Exact leave-one-out scores: P + 1 passes over the training split, computed here (a
    few seconds on the built-in tasks) and stored with the run."""
    label = ("Recompute leave-one-out scores" if store.has_tensors(run_id, LOO)
             else "Compute leave-one-out scores")
    if st.button(label, disabled=not completed,
                 help="Remove each prompt token in turn, from every layer, and measure the "
                      "rise in mean loss on the training split (eval transform); P + 1 "
                      "passes"):
        with st.spinner("Leave-one-out on the training split…"):
            run_leave_one_out(store, run_id, recompute=True)
        st.rerun()


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


def no_retrain_view(store: RunStore, run: dict, scoring: Scoring, completed: bool) -> None:
    """The parent's accuracy against the token ratio without retraining: the chosen
    scores, their reverse and random masks (mean ± sd), computed in the background on
    request and stored with the run."""
    root, run_id = str(store.root), scoring.run_id
    found = importance_scores(store, run_id, scoring.masks_per_block) \
        if store.has_tensors(run_id, IMPORTANCE) else None
    _, segment_ratio = scoring.ratios()
    mode = st.session_state.get(scoring.mode_key, "zero")
    try:
        running = curve_progress(root, run_id)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        st.error(f"The curve failed: {error}")
        running = None
    if st.button("Compute the curve", disabled=not completed or found is None or bool(running),
                 help=f"Every token ratio at the current segment ratio ({_percent(segment_ratio)}"
                      f"), {mode} mode: the scores, their reverse and {CURVE_DRAWS} random "
                      "draws, one pass over val each (needs the full-pass scores)"):
        layers = found.selection.token.shape[0] if scoring.masks_per_block else 1
        start_curve(root, run_id, ratios=ratio_options(found.selection.token.numel(), layers),
                    segment_ratio=segment_ratio, token_scores=scoring.token_scores,
                    signed=scoring.signed, mode=mode, draws=CURVE_DRAWS)
        running = (0, 0)
    if running:
        st.fragment(run_every=1)(curve_progress_view)(root, run_id)
    curve = store.get_run(run_id)["summary"].get("no_retrain_curve")
    if not curve:  # a caption, not an empty chart
        st.caption("Not computed yet: the curve appears here once computed.")
        return
    st.caption(f"Scores: {TOKEN_SCORE_NAMES[curve['token_scores']]} ({curve['importance']}); "
               f"segments {_percent(curve['segment_ratio'])} pruned; {curve['mode']} mode; "
               f"on {curve['split']}.")
    st.plotly_chart(no_retrain_curve(pd.DataFrame(curve["rows"]), curve["split"]),
                    key="no-retrain-curve")
    curve_verdict_view(curve, scoring.ratios()[0])


def curve_progress_view(root: str, run_id: str) -> None:
    """Progress of the curve in the making (a fragment polling every second); the whole
    page reruns once to show the finished curve."""
    try:
        running = curve_progress(root, run_id)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        st.error(f"The curve failed: {error}")
        return
    if running is None:
        st.rerun()
    done, total = running
    st.progress(done / total if total else 0.0,
                text=f"Evaluating masks on val: {done} of {total or '…'}")


def trade_off_view(runs: pd.DataFrame, parent: str) -> None:
    results, point, split = trade_off(runs, parent)
    if results.empty and point is None:  # a caption, not an empty chart
        st.caption("No rewinds yet: the trade-off appears once the run completes.")
        return
    st.plotly_chart(prune_curve(results.rename(columns={"token_ratio": "ratio"}), point, split),
                    key="prune-curve")
    rewind_verdict_view(runs, parent)
    if not results.empty:
        results.insert(0, "name", results["id"].map(run_names(runs)))
        st.dataframe(results.rename(columns={"accuracy": f"{split}_top1"}), hide_index=True,
                     width="stretch")


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
run_id = st.selectbox("Run", ids, index=ids.index(default_run(store, runs, followed)),
                      format_func=labels.get)
# read before the run itself, so that any newer status the page draws is caught by score_view
drawn = status, scoring_job = run_state(store, run_id)
run = store.get_run(run_id)
st.caption(accuracy_text(all_runs, run_id, eval_split(run)))
live = status in ("queued", "running") or scoring_job

token_scores = st.radio(
    "Token scores", TOKEN_SCORES, horizontal=True, format_func=TOKEN_SCORE_NAMES.get,
    help="What ranks whole tokens. Deep prompts pass through each block's LayerNorm, which "
         "cancels scaling a whole token, so the token-mask gradient is ~0 there; the sum "
         "of a token's segment scores, the masks after the LayerNorm, Σ|g × p| and "
         "leave-one-out still carry signal. Compare them on the curve below.")
scoring = Scoring(run, token_scores)
completed = run["status"] == "completed"
refresh = 3 if live else None
st.fragment(run_every=refresh)(score_view)(store, scoring, drawn)
st.fragment(run_every=refresh)(mask_view)(store, scoring)
if completed and (store.run_dir(run_id) / "adapter").is_dir():
    st.fragment(run_every=1)(accuracy_view)(store, scoring)
compute_importance_button(store, run_id, completed, scoring_job)
if token_scores == "loo":
    leave_one_out_button(store, run_id, completed)
attention_section(store, run, scoring.mask_key, scoring.ratios()[0])

st.subheader("Rewind")
rewind_controls(store, run, *scoring.ratios(), scoring.token_scores)
st.subheader("Accuracy against the prune ratio without retraining")
no_retrain_view(store, run, scoring, completed)
st.subheader("Accuracy and parameters against the prune ratio after rewinding")
trade_off_view(store.runs(), run_id)
