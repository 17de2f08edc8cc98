"""The Ray tasks of a prune sweep (importance pass, rewinds), for sweeps larger than one
machine; see `e2vpt_core.train.cluster` for the connection and the shared-disk rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..store import RunStore
from ..train.cluster import ray_connection
from .importance import run_importance
from .rewind import rewind_in_store


def importance_in_store(root: str, run_id: str, signed: bool, token_scores: str) -> None:
    """Compute and store a run's importance in another process (a Ray task)."""
    run_importance(RunStore(root), run_id, signed=signed, token_scores=token_scores)


def ray_sweep(
    address: str, root: str, run_id: str, signed: bool, token_scores: str,
    options: Sequence[dict[str, Any]], num_gpus: float = 0.0,
) -> list[dict[str, Any]]:
    """The sweep's importance pass (one task, stored before any rewind reads it), then one
    `rewind_run(**option)` task per option; results in option order.

    Each task asks for `num_gpus` GPUs so that Ray makes them visible to it; the driver
    needs no free device for this part.
    """
    with ray_connection(address) as ray:
        importance = ray.remote(num_cpus=1, num_gpus=num_gpus)(importance_in_store)
        ray.get(importance.remote(root, run_id, signed, token_scores))
        rewind = ray.remote(num_cpus=1, num_gpus=num_gpus)(rewind_in_store)
        return ray.get([rewind.remote(root, run_id, dict(o)) for o in options])
