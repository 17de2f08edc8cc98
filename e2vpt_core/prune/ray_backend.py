"""Rewinds of a prune sweep as Ray tasks, for sweeps larger than one machine.

Ray is optional (`pip install e2vpt-core[ray]`) and imported only when a sweep asks for
it. Each task opens the run store itself, as a process-pool worker does, so the store
directory must be reachable under the same path from every Ray node (a shared disk).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .rewind import rewind_in_store


def import_ray() -> ModuleType:
    """The `ray` module, or an error saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise RuntimeError("the Ray backend needs ray: pip install e2vpt-core[ray] "
                           "(or pip install ray)") from error
    return ray


def ray_rewinds(
    address: str, root: str, run_id: str, options: Sequence[dict[str, Any]],
    num_gpus: float = 0.0,
) -> list[dict[str, Any]]:
    """Run one `rewind_run(**option)` per option as a Ray task; results in option order.

    Connects with `ray.init(address=address)` ("local" starts a private local instance)
    unless Ray is already initialised; a connection made here is closed again. Each task
    asks for `num_gpus` GPUs so that Ray makes them visible to it.
    """
    ray = import_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(address=address)
    try:
        task = ray.remote(num_cpus=1, num_gpus=num_gpus)(rewind_in_store)
        return ray.get([task.remote(root, run_id, dict(o)) for o in options])
    finally:
        if connected_here:
            ray.shutdown()
