"""Live views that cost almost nothing while the store stands still.

A fragment on a timer (`st.fragment(run_every=…)`) reruns every second or two in every open
tab, and Streamlit clears what a fragment drew unless it draws it again. So each live view
is split in two: a `read` that queries the store and builds figures into plain data, and a
draw that puts that data on screen (cheap: a cached figure is sent again as it is). `live`
runs `read` only when the view's `signature` changed (`store_signature`: a commit to the
store or the worker starting or stopping, plus the view's own arguments); otherwise it hands
back what the last read returned, shared by every tab of this process. A read gets the
previous result, so it can fetch only what is new (`newer_metrics`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from e2vpt_core.jobs import worker_alive
from e2vpt_core.store import RunStore
from e2vpt_core.store.changes import version

T = TypeVar("T")
MAX_VIEWS = 64  # cached reads kept (per view and arguments), least recently used dropped
_LOCK = threading.Lock()
_READS: OrderedDict[Hashable, tuple[Hashable, Any]] = OrderedDict()


def store_signature(store: RunStore) -> tuple[int, bool]:
    """What every live view depends on: the store's rows (`version`) and whether a worker
    holds the store (a dead worker changes no row, yet the views warn of it)."""
    return version(store), worker_alive(store)


def live(key: Hashable, signature: Hashable, read: Callable[[T | None], T]) -> T:
    """`read(previous)`'s result for the view `key`, from the cache while `signature` is
    the one it was read with; `previous` is the last result (None the first time)."""
    with _LOCK:
        entry = _READS.get(key)
        if entry is not None:
            _READS.move_to_end(key)
            if entry[0] == signature:
                return entry[1]
    data = read(entry[1] if entry is not None else None)
    with _LOCK:
        _READS[key] = (signature, data)
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
