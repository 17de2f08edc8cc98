"""Ray for the protocol: connect to a cluster, train stored runs as Ray tasks.

Ray is optional (`pip install e2vpt-core[ray]`) and imported only when asked for. Each
task opens the run store itself, as a process-pool worker does, so the store directory
(and the data) must be reachable under the same path from every Ray node (a shared disk).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from ..store import RunStore
from .config import TrainConfig
from .device import resolve_device
from .grid import Trainer
from .loop import ProgressFn, RunResult, train_run


def import_ray() -> ModuleType:
    """The `ray` module, or an error saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise RuntimeError("the Ray backend needs ray: pip install e2vpt-core[ray] "
                           "(or pip install ray)") from error
    return ray


@contextmanager
def ray_connection(address: str) -> Iterator[ModuleType]:
    """Ray connected for the block: `local` starts a private instance here, `auto` joins
    the cluster this node belongs to, `ray://host:port` connects as a Ray client.

    An instance already initialised (a test's, a notebook's, an outer block's) is used as
    it is and left open; a connection made here is closed again.
    """
    ray = import_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        try:
            ray.init(address=address)
        except ConnectionError as error:  # `auto` with no cluster on this node, say
            raise RuntimeError(f"cannot connect to the Ray cluster {address!r}: {error}") \
                from error
    try:
        yield ray
    finally:
        if connected_here:
            ray.shutdown()


def task_gpus(config: TrainConfig) -> float:
    """GPUs a task asks for: one when the run trains on CUDA, so Ray makes it visible."""
    return 1.0 if resolve_device(config.device).type == "cuda" else 0.0


def train_in_store(root: str, run_id: str) -> dict[str, Any]:
    """Train a stored run in another process (a Ray task) from the config the store holds;
    the result as a plain dict."""
    store = RunStore(root)
    config = TrainConfig.from_dict(store.get_run(run_id)["config"])
    return train_run(config, store, run_id).to_dict()


def ray_trainer(num_gpus: float) -> Trainer:
    """A `Trainer` that creates every run first, then trains them all at once as Ray tasks
    (ray must be initialised); per-step progress stays in the store, not the callback."""
    def train_all(store: RunStore, configs: Sequence[TrainConfig], kind: str,
                  parent_id: str | None = None,
                  progress: ProgressFn | None = None) -> list[RunResult]:
        ray = import_ray()
        run_ids = [store.create_run(c.to_dict(), kind=kind, parent_id=parent_id)
                   for c in configs]
        task = ray.remote(num_cpus=1, num_gpus=num_gpus)(train_in_store)
        results = ray.get([task.remote(str(store.root), run_id) for run_id in run_ids])
        return [RunResult(r.pop("run_id"), r.pop("status"), r.pop("reason", None), r)
                for r in results]

    return train_all
