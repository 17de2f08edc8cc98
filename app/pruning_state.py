"""Store reads behind the Pruning and Embeddings pages, kept out of the page scripts.

Everything here only reads (no importance pass, no UMAP fit), so a page rerun every few
seconds stays cheap; the expensive work is queued as jobs. Only `effective_params` touches
Streamlit, to keep one loaded adapter per run across reruns.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import streamlit as st
import torch
from safetensors import safe_open

from app.live import FIGURE_SECONDS, live_read, store_signature
from e2vpt_core.artifacts import load_adapter
from e2vpt_core.methods import methods_where
from e2vpt_core.models.vit import PromptedViT
from e2vpt_core.prune.importance import IMPORTANCE, Importance, pick
from e2vpt_core.prune.noretrain import LOO, Batches, masked_metrics, run_batches
from e2vpt_core.prune.rewind import run_curve
from e2vpt_core.prune.selection import MAX_RATIO
from e2vpt_core.store import RunStore

LIVE = "importance_live"
SWEEP_RATIOS = tuple(round(0.1 * step, 1) for step in range(1, 10))
SETTLE = 1.0  # seconds a mask stays under the sliders before its pass over val starts
_ADAPTER_LOCK = threading.Lock()  # one cached model is shared by every session
_EVAL_LOCK = threading.Lock()  # guards _EVALUATIONS, shared by every session
_EVALUATIONS: dict[tuple, Future] = {}  # (store, run, masks, mode) → top-1, oldest first
_MAX_EVALUATIONS = 1024
_CURVES: dict[tuple[str, str], CurveTask] = {}  # (store, run) → its curve in the making


def prompt_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with visual prompts (the only ones with tokens and segments to prune, so not a
    prompt method with P = 0); trained runs first, newest first, so a fresh rewind does
    not displace its parent as default."""
    if runs.empty:
        return runs
    prompted = runs["config"].map(
        lambda config: json.loads(config)["prompt"].get("visual_prompt_len", 0) > 0)
    runs = runs[runs["method"].isin(methods_where(prunable=True)) & prompted]
    return runs.sort_values("kind", key=lambda kind: kind != "train", kind="stable")


def default_run(store: RunStore, runs: pd.DataFrame, followed: str | None) -> str:
    """The run the Pruning page opens on (`runs`: `prompt_runs`, not empty): the one this
    tab's Train page followed, else the newest trained run with the most to show: full-pass
    scores, then live ones, then an E²VPT run (the quick demo's) before others."""
    if followed in set(runs["id"]):
        return str(followed)

    def rank(row: dict) -> tuple:
        full, live = (store.has_tensors(row["id"], name) for name in (IMPORTANCE, LIVE))
        return (row["kind"] == "train", full, full or live, row["method"] == "e2vpt",
                row["created_at"])

    return str(max(runs.to_dict("records"), key=rank)["id"])


def eval_split(run: dict) -> str:
    """The split a run's masks are evaluated on without retraining (its first eval split)."""
    return (run["config"].get("eval_splits") or ["val"])[0]


def tensor_metadata(store: RunStore, run_id: str, name: str) -> dict[str, str]:
    """The metadata of a stored tensor file (the live snapshot records its step there)."""
    path = store.run_dir(run_id) / f"{name}.safetensors"
    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


class StoredScores(NamedTuple):
    """A run's scores as the Pruning page shows them, read from one stored file."""

    scores: Importance
    source: str
    per_layer: np.ndarray | None  # (L, P): each token's summed segment scores per layer
    selection: Importance  # what the masks are chosen by: per layer with masks per block


def importance_scores(store: RunStore, run_id: str, masks_per_block: bool = False,
                      token_scores: str = "mask", signed: bool = False,
                      ) -> StoredScores | None:
    """The run's token and segment scores (and per-layer ones when stored), where they
    come from, or None; `signed` for the official preset's scores.

    The full pass (`importance`) wins over the training-time snapshot (`importance_live`),
    which is only an average of the mask gradients seen while the prompts still moved.
    Read once per version of the files (kept per process): a slider move costs no read.
    """
    return _read_scores(str(store.root), run_id, masks_per_block, token_scores, signed,
                        score_files(store, run_id))


def score_files(store: RunStore, run_id: str) -> tuple:
    """The version of the run's score files (three stats): equal while none was rewritten,
    so the Pruning page's live views redraw from their last read."""
    return tuple(_stamp(store.run_dir(run_id) / f"{name}.safetensors")
                 for name in (IMPORTANCE, LIVE, LOO))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten (write-then-rename: a new inode), or None."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


@st.cache_resource(max_entries=32, show_spinner=False)
def _read_scores(store_root: str, run_id: str, masks_per_block: bool, token_scores: str,
                 signed: bool, stamps: tuple) -> StoredScores | None:
    """`importance_scores` for one version (`stamps`) of the run's score files; the
    tensors are shared by every session, so nobody writes to them."""
    store = RunStore(store_root)
    if stamps[0] is not None:
        scores = store.load_tensors(run_id, IMPORTANCE)
        batches = int(scores.get("batches", torch.tensor(0)))
        source = f"full pass over the training split ({batches} batches)"
    elif stamps[1] is not None:
        scores = store.load_tensors(run_id, LIVE)
        batches = int(scores["steps"])
        step = tensor_metadata(store, run_id, LIVE).get("step", "?")
        source = f"live snapshot from training, step {step}"
    else:
        return None
    if stamps[2] is not None:
        scores.update(store.load_tensors(run_id, LOO))
    per_layer = scores["segment_layer"].sum(-1).numpy() if "segment_layer" in scores else None
    shared = pick(scores, signed, batches=batches, token_scores=token_scores)
    selection = (pick(scores, signed, batches=batches, token_scores=token_scores,
                      per_layer=True) if masks_per_block else shared)
    return StoredScores(shared, source, per_layer, selection)


@st.cache_resource(max_entries=4)
def _adapter(directory: str) -> PromptedViT:
    return load_adapter(directory)


def frozen(mask: torch.Tensor) -> tuple:
    """A mask as nested tuples: hashable, for `effective_params`'s cache key."""
    return tuple(frozen(row) for row in mask) if mask.ndim > 1 else tuple(mask.tolist())


@st.cache_data(max_entries=256)
def effective_params(store_root: str, run_id: str, token_mask: tuple,
                     segment_mask: tuple) -> dict[str, int]:
    """Trainable and effective parameter counts of the run's adapter under these masks
    (`frozen` tensors)."""
    model = _adapter(str(RunStore(store_root).run_dir(run_id) / "adapter"))
    with _ADAPTER_LOCK:
        token, segment = model.token_mask.clone(), model.segment_mask.clone()
        try:
            model.set_masks(torch.tensor(token_mask), torch.tensor(segment_mask))
            summary = model.parameter_summary()
        finally:
            model.set_masks(token, segment)
    return {"trainable_params": int(summary["trainable_params"]),
            "effective_params": int(summary["effective_params"])}


def ratio_options(total: int, keep_at_least: int) -> list[float]:
    """The prune ratios k / total that give every mask the counts allow, one entry apart
    (so a quarter is selectable with R = 8, and no two steps give the same mask)."""
    return [k / total for k in range(total - keep_at_least + 1) if k / total <= MAX_RATIO]


@st.cache_resource(max_entries=2)
def _eval_data(store_root: str, run_id: str) -> tuple[PromptedViT, Batches, str]:
    return run_batches(RunStore(store_root), run_id)


def _leave_a_core() -> None:
    """Background passes over val use all cores but one (the thread count is kept per
    thread), so the script thread that redraws the sliders never waits for a core."""
    torch.set_num_threads(max(1, torch.get_num_threads() - 1))


@st.cache_resource
def _evaluator() -> ThreadPoolExecutor:
    """One evaluation at a time per app process, off the script thread, so a slider never
    waits for a pass over val."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="mask-eval",
                              initializer=_leave_a_core)


def _evaluate(store_root: str, run_id: str, token_mask: tuple, segment_mask: tuple,
              mode: str) -> tuple[str, float]:
    model, batches, split = _eval_data(store_root, run_id)
    metrics = masked_metrics(model, batches, torch.tensor(token_mask),
                             torch.tensor(segment_mask), mode)
    return split, metrics["top1"]


def masked_accuracy(store_root: str, run_id: str, token_mask: tuple, segment_mask: tuple,
                    mode: str, start: bool = True) -> tuple[str, float] | None:
    """The eval split and the parent's top-1 there with these masks (`frozen` tensors),
    no retraining; None while that is computed in the background (or, with `start` off,
    not yet asked for). Kept per mask, so moving back to a mask is free; evaluations of
    other masks not yet started are dropped, as only the newest mask is on screen."""
    key = (store_root, run_id, token_mask, segment_mask, mode)
    with _EVAL_LOCK:
        future = _EVALUATIONS.get(key)
        if future is None and not start:
            return None
        if future is None:
            for other, pending in list(_EVALUATIONS.items()):
                if pending.cancel():
                    del _EVALUATIONS[other]
            while len(_EVALUATIONS) >= _MAX_EVALUATIONS:
                del _EVALUATIONS[next(iter(_EVALUATIONS))]
            future = _EVALUATIONS[key] = _evaluator().submit(_evaluate, *key)
    return future.result() if future.done() else None


class CurveTask(NamedTuple):
    """A no-retrain curve being computed: its future and [done, total] evaluations."""

    future: Future
    progress: list[int]


@st.cache_resource
def _curve_executor() -> ThreadPoolExecutor:
    """Curves take (orders × ratios) passes over val: minutes on a CPU, so they run in
    their own thread, beside the mask evaluations, never in a script run."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="no-retrain-curve",
                              initializer=_leave_a_core)


def start_curve(store_root: str, run_id: str, **options: Any) -> None:
    """Compute the run's no-retrain curve in the background (`run_curve` stores it in the
    run's summary); a second request while one runs for the run is ignored."""
    key = (store_root, run_id)
    with _EVAL_LOCK:
        task = _CURVES.get(key)
        if task is not None and not task.future.done():
            return
        progress = [0, 0]

        def report(done: int, total: int) -> None:
            progress[:] = [done, total]

        future = _curve_executor().submit(run_curve, RunStore(store_root), run_id,
                                          progress=report, **options)
        _CURVES[key] = CurveTask(future, progress)


def curve_progress(store_root: str, run_id: str) -> tuple[int, int] | None:
    """(done, total) while the run's curve is computed, else None; a computation that
    failed raises its error, once."""
    key = (store_root, run_id)
    with _EVAL_LOCK:
        task = _CURVES.get(key)
        if task is None:
            return None
        if not task.future.done():
            return task.progress[0], task.progress[1]
        del _CURVES[key]
    task.future.result()
    return None


def pending_jobs(store: RunStore, kind: str) -> pd.DataFrame:
    """Queued or running jobs of one kind, with their payloads parsed."""
    jobs = store.jobs()
    jobs = jobs[(jobs["kind"] == kind) & jobs["status"].isin(["queued", "running",
                                                              "cancelling"])]
    return jobs.assign(payload=[json.loads(p) for p in jobs["payload"]])


def run_state(store: RunStore, run_id: str) -> tuple[str, bool]:
    """The run's status and whether a full importance pass of it is queued or running: what
    the Pruning page draws its controls from, so a change of either redraws the page."""
    scoring = any(payload["run"] == run_id
                  for payload in pending_jobs(store, "importance")["payload"])
    return store.get_run(run_id)["status"], scoring


def live_run_state(store: RunStore, run_id: str) -> tuple[str, bool]:
    """`run_state`, queried again only once the store changed (the live views' poll)."""
    return live_read(("run-state", str(store.root), run_id), store_signature(store),
                     lambda _: run_state(store, run_id))


def drawn_score_files(store: RunStore, run_id: str) -> tuple:
    """The version of the run's score files the Pruning page's live views draw: the newest,
    except while the run trains (its snapshot is rewritten every few steps), when it moves
    on at most every `FIGURE_SECONDS`. Shared by the views, so they draw the same scores."""
    training = live_run_state(store, run_id)[0] == "running"
    return live_read(("score-files", str(store.root), run_id), score_files(store, run_id),
                     lambda _: score_files(store, run_id),
                     every=FIGURE_SECONDS if training else 0.0)


# ----------------------------------------------------------------------- embeddings
def embeddable_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed runs: the only ones with an adapter to embed with."""
    return runs if runs.empty else runs[runs["status"] == "completed"]


def default_pair(runs: pd.DataFrame) -> tuple[str, str] | None:
    """The newest completed vpt-deep and e2vpt runs on one dataset (the paper's figure);
    trained runs, not rewinds of them."""
    done = embeddable_runs(runs)
    if done.empty:
        return None
    done = done[done["kind"] == "train"]
    for _, e2vpt in done[done["method"] == "e2vpt"].iterrows():  # newest first
        vpt = done[(done["method"] == "vpt-deep") & (done["dataset"] == e2vpt["dataset"])]
        if not vpt.empty:
            return str(vpt["id"].iloc[0]), str(e2vpt["id"])
    return None


def separability_frame(views: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (run, space): k-NN accuracy, silhouette and mean class radius."""
    rows = []
    for run_id, view in views.items():
        figures = view["figures"]
        for space, prefix in (("ball", ""), ("disk", "disk_"), ("euclidean", "euclidean_")):
            rows.append({"run": run_id, "space": space,
                         "knn_accuracy": figures.get(f"{prefix}knn_accuracy"),
                         "silhouette": figures.get(f"{prefix}silhouette"),
                         "mean_class_radius": figures.get(f"{prefix}mean_class_radius")})
    return pd.DataFrame(rows)
