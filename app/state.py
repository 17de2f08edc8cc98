"""Helpers shared by the pages: the store, run progress, the reproducing CLI command (the
engine's `report.commands`, which the HTML report writes too), user text made safe for
Markdown.

Only `get_store` touches Streamlit (to cache one RunStore per directory); the rest are
plain functions, tested directly.
"""

from __future__ import annotations

import io
import os
import re
import time
import zipfile
from typing import Any

import pandas as pd
import streamlit as st

from e2vpt_core.jobs import ensure_worker
from e2vpt_core.report.commands import reproduce_command as reproduce_command
from e2vpt_core.store import RunStore, store_dir

AUTOSTART_ENV = "E2VPT_AUTOSTART_WORKER"


@st.cache_resource
def _store(directory: str) -> RunStore:
    return RunStore(directory)


def get_store() -> RunStore:
    return _store(str(store_dir()))


def start_worker(store: RunStore) -> None:
    """Make sure a worker runs the queued jobs, unless E2VPT_AUTOSTART_WORKER=0 leaves
    starting workers to you (tests, a managed worker)."""
    if os.environ.get(AUTOSTART_ENV, "1") != "0":
        ensure_worker(store)


def adapter_zip(store: RunStore, run_id: str) -> bytes:
    """The run's adapter artifact (what `e2vpt export` copies) as a zip, for a download;
    unzipped, `load_adapter(<folder>)` reads it. Verified as `export` verifies: a damaged
    artifact is an ArtifactError naming the file, never a download."""
    from e2vpt_core.artifacts import check_adapter  # torch: only once there is an adapter

    source = store.run_dir(run_id) / "adapter"
    if not source.is_dir():
        raise ValueError(f"run {run_id} has no adapter artifact (not completed?)")
    check_adapter(source)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source))
    return buffer.getvalue()


def final_figures(runs: pd.DataFrame, run_ids: list[str]) -> pd.DataFrame:
    """The compared runs' final numbers side by side, one row per run, in `run_ids` order."""
    columns = [c for c in ("id", "method", "dataset", "status", "val_top1", "test_top1",
                           "trainable_params", "effective_params") if c in runs.columns]
    return runs.set_index("id").loc[run_ids].reset_index()[columns]


def progress(store: RunStore, run_id: str, now: float | None = None) -> dict[str, Any]:
    """Steps done of the total, an ETA from the step rate so far (None if unknown), the
    epoch under way and the epochs planned.

    The total is what the worker recorded; for a run trained elsewhere (`e2vpt train`)
    it is read from the metrics once an epoch has ended (its steps × the epochs)."""
    return progress_of(store.get_run(run_id),
                       store.metrics(run_id, ["train/loss", "train/epoch_loss"]), now)


def progress_of(run: dict[str, Any], metrics: pd.DataFrame,
                now: float | None = None) -> dict[str, Any]:
    """`progress` from a run's row and its metrics as already read (a live view's)."""
    metrics = metrics[metrics["name"].isin(["train/loss", "train/epoch_loss"])]
    losses = metrics[metrics["name"] == "train/loss"]
    ends = metrics[metrics["name"] == "train/epoch_loss"]
    done = int(metrics["step"].max()) if not metrics.empty else 0
    epochs = run["config"].get("epochs")
    total = run["summary"].get("total_steps")
    if not total and epochs and not ends.empty:  # steps per epoch, from the last epoch end
        last = ends.iloc[-1]
        total = int(last["step"]) // (int(last["epoch"]) + 1) * int(epochs)
    epoch = int(metrics["epoch"].max()) + 1 if not metrics.empty else 0
    eta = None
    if total and done and run["status"] == "running" and len(losses) > 1:
        first, last = losses.iloc[0], losses.iloc[-1]
        rate = (last["step"] - first["step"]) / max(last["time"] - first["time"], 1e-9)
        since_last = (now if now is not None else time.time()) - last["time"]
        eta = max((total - done) / rate - since_last, 0.0) if rate > 0 else None
    return {"done": done, "total": total, "eta_seconds": eta, "status": run["status"],
            "epoch": epoch, "epochs": epochs}


def progress_bar(state: dict[str, Any]) -> tuple[float, str]:
    """A `progress` as a bar's fraction and text: steps of the total with an ETA, or, for a
    run from the command line before its first epoch ends (its total unknown), epochs."""
    status, done, total = state["status"], state["done"], state["total"]
    if total:
        return min(done / total, 1.0), (f"{status}: step {done} / {total} · "
                                        f"ETA {format_seconds(state['eta_seconds'])}")
    epochs, epoch = state.get("epochs") or 0, state.get("epoch") or 0
    text = f"{status}: step {done}" + (f" · epoch {max(epoch, 1)} / {epochs}" if epochs else "")
    if status == "running":
        text += " · ETA once the first epoch ends"
    return (min(max(epoch - 1, 0) / epochs, 1.0) if epochs else 0.0), text


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$])")


def as_text(text: Any) -> str:
    """User text (a run's name or tags, a path, an error) for a Markdown element: every
    Markdown character escaped, so it reads as typed, never as bold, a link or an icon."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

