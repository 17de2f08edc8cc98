"""Poincaré-disk views for the Embeddings page and the HTML report: the one the store
cached, or, for the report, one computed now.

`cached_view` reads only (the page must never fit UMAP in a script run); `disk_views`
falls back to `hyperbolic.view.embedding_view`, which caches what it computes in the run's
folder as `e2vpt embed` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..store import RunStore


def cached_view(store: RunStore, run_id: str, split: str) -> dict[str, Any] | None:
    """The last stored Poincaré view of a run's split (disk, labels, indices, figures).

    Read through the run summary's `hyperbolic_<split>` (which names the settings hash of
    the cache file), so nothing is recomputed when it is missing."""
    figures = store.get_run(run_id)["summary"].get(f"hyperbolic_{split}")
    if not figures:
        return None
    name = f"poincare_{split}_{figures['settings_hash']}"
    if not store.has_tensors(run_id, name):
        return None
    stored = store.load_tensors(run_id, name)
    return {"disk": stored["disk"].numpy(), "labels": stored["labels"].numpy(),
            "indices": stored["indices"].numpy(), "figures": figures}


def disk_views(store: RunStore, run_ids: list[str], split: str, compute: bool,
               log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any] | str]:
    """Each run's view (`cached_view`'s form), or why there is none: the stored one first;
    without one it is computed (embeddings, head, UMAP: minutes on a CPU) when `compute`,
    each step announced through `log`. A view that cannot be computed (a read-only store,
    unreadable data) is a reason, so the rest of the report is still written."""
    views: dict[str, dict[str, Any] | str] = {}
    for run_id in run_ids:
        stored = cached_view(store, run_id, split)
        run = store.get_run(run_id)
        if stored is not None:
            views[run_id] = stored
        elif run["status"] != "completed":
            views[run_id] = f"no disk: the run is {run['status']}, not completed"
        elif not compute:
            views[run_id] = (f"no stored disk on {split}: compute it with `e2vpt embed "
                             f"{run_id} --split {split}` or the Embeddings page")
        else:
            views[run_id] = _computed(store, run_id, split, log)
    return views


def _computed(store: RunStore, run_id: str, split: str,
              log: Callable[[str], None] | None) -> dict[str, Any] | str:
    from ..hyperbolic.view import embedding_view  # torch, geoopt, umap: only when drawn

    if log is not None:
        log(f"computing the Poincaré disk of run {run_id} on {split} (embeddings, head, "
            "UMAP; cached in the run's folder)")
    try:
        view = embedding_view(store, run_id, split)
    except (OSError, RuntimeError, ValueError) as error:
        return f"no disk: it could not be computed ({error})"
    if log is not None:
        log(f"run {run_id}: {len(view.labels)} points in {view.timings['total']:.1f} s")
    return {"disk": view.disk, "labels": view.labels, "indices": view.indices,
            "figures": {"settings_hash": view.settings_hash, **view.figures()}}
