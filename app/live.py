"""Live views that cost almost nothing while the store stands still.

A fragment on a timer (`st.fragment(run_every=…)`) reruns every second or two in every open
tab, and Streamlit clears what a fragment drew unless it draws it again. So each live view
is split in two: a `read` that queries the store and builds figures into plain data, and a
draw that puts that data on screen (cheap: a cached figure is sent again as it is).
`live_read` runs `read` only when the view's `signature` changed (`store_signature`: a
commit to the store or the worker starting or stopping); otherwise it hands back what the
last read returned, shared by every tab of this process. A read gets the previous result,
so it can fetch only what is new (`newer_metrics`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import streamlit as st

from e2vpt_core.jobs import worker_alive
from e2vpt_core.store import RunStore
from e2vpt_core.store.changes import version

T = TypeVar("T")
# While a run trains, a figure fed by it is rebuilt at most this often: rebuilt at every
# step, the browser redrew its plots at every poll; progress and ETA still follow each step.
FIGURE_SECONDS = 10.0
# The timer of a live view with nothing under way (no job queued or running, its run
# finished): it only has to notice that something started, and then reruns the page,
# which registers its fast timer (`keep_pace`).
IDLE_SECONDS = 30.0
MAX_VIEWS = 64  # cached reads kept (per view and arguments), least recently used dropped
_LOCK = threading.Lock()
_READS: OrderedDict[Hashable, tuple[Hashable, Any, float]] = OrderedDict()


def store_signature(store: RunStore) -> tuple[int, bool]:
    """What every live view depends on: the store's rows (`version`) and whether a worker
    holds the store (a dead worker changes no row, yet the views warn of it)."""
    return version(store), worker_alive(store)


def store_active(store: RunStore) -> bool:
    """Whether anything in the store is under way: a job not finished, or a run training
    (one from the command line has no job)."""
    def read(_: object) -> bool:
        runs = store.runs()
        return not store.current_jobs(0).empty or bool((runs["status"] == "running").any())

    return live_read(("active", str(store.root)), store_signature(store), read)


def pace(active: bool, seconds: float) -> float:
    """A live view's timer: `seconds` while what it shows is under way, else IDLE_SECONDS."""
    return seconds if active else IDLE_SECONDS


def keep_pace(registered: bool, active: bool) -> None:
    """Rerun the whole page when what a live view shows started or stopped since the page
    registered the view's timer (`pace(registered, …)`): a fragment's timer is set only by
    a page run, so the page has to run to register the one that fits."""
    if registered != active:
        st.rerun()


def live_read(key: Hashable, signature: Hashable, read: Callable[[T | None], T],
              every: float = 0.0) -> T:
    """`read(previous)`'s result for the view `key`, from the cache while `signature` is
    the one it was read with; `previous` is the last result (None the first time).

    With `every`, a changed signature is read again only once `every` seconds have passed
    since the last read: for a figure that would otherwise be rebuilt, sent and redrawn
    by the browser at every training step."""
    now = time.monotonic()
    with _LOCK:
        entry = _READS.get(key)
        if entry is not None:
            _READS.move_to_end(key)
            if entry[0] == signature or now - entry[2] < every:
                return entry[1]
    data = read(entry[1] if entry is not None else None)
    with _LOCK:
        _READS[key] = (signature, data, now)
        _READS.move_to_end(key)
        while len(_READS) > MAX_VIEWS:
            _READS.popitem(last=False)
    return data


def aged_eta(state: dict[str, Any], read_at: float, now: float | None = None) -> dict[str, Any]:
    """A `progress` state read at `read_at`, its ETA counted down to `now`, so a view drawn
    from the cache keeps its ETA moving without reading the store."""
    eta = state.get("eta_seconds")
    if eta is None:
        return state
    elapsed = (time.time() if now is None else now) - read_at
    return {**state, "eta_seconds": max(eta - elapsed, 0.0)}
