"""Ball points → the Poincaré disk, through UMAP with a hyperboloid output space.

UMAP's built-in `poincare` input metric is the unit ball's (c = 1); a ball of curvature c
is scaled by √c onto it, which multiplies every distance by √c. UMAP's fuzzy graph
normalises each point's distances by its own bandwidth, so the result is unchanged.
umap is imported lazily (its import and numba compile take seconds).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Warnings umap always raises for this use and that say nothing about the result.
_UMAP_NOISE = (
    "Tensorflow not installed; ParametricUMAP will be unavailable",
    "gradient function is not yet implemented for poincare distance metric",
)
# Largest disk radius returned; representable below 1 in float32 too.
DISK_EDGE = 1.0 - 1e-6


@dataclass(frozen=True)
class ProjectionConfig:
    """UMAP settings; the defaults favour speed (10–20 s for 2000 points on one CPU core)."""

    n_neighbors: int = 15
    n_epochs: int = 200
    min_dist: float = 0.1
    random_state: int = 0
    low_memory: bool = True

    def __post_init__(self) -> None:
        if self.n_neighbors < 2 or self.n_epochs < 1 or self.min_dist < 0:
            raise ValueError(f"ProjectionConfig out of range: {self}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _umap_class() -> type:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(_UMAP_NOISE[0]),
                                category=ImportWarning)
        import umap
    _cache_compiled_kernels()
    return umap.UMAP


def _cache_compiled_kernels() -> None:
    """Keep UMAP's numba compilations on disk (numba's own cache, as `cache=True` would).

    umap declares its jitted functions without `cache=True`, so every process compiled them
    again: 10–15 s on its first projection, most of a first view's time. With the cache
    only the first process on a machine pays (`make setup` pays it: `python -m
    e2vpt_core.hyperbolic`). numba keys each entry on the source file and the CPU, so an
    updated umap recompiles; a machine where no cache folder is writable compiles as before.
    """
    from numba.core.registry import CPUDispatcher

    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in ("umap", "pynndescent"):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher):
                try:
                    value.enable_caching()
                except RuntimeError:  # numba found no writable cache folder for this file
                    return


def warm_up() -> float:
    """Compile UMAP's kernels for this view into numba's cache; returns the seconds taken."""
    start = time.perf_counter()
    points = np.random.default_rng(0).normal(scale=0.1, size=(64, 8))
    project_to_disk(points, 1.0, ProjectionConfig(n_epochs=2))
    return time.perf_counter() - start


def hyperboloid_to_disk(coords: np.ndarray) -> np.ndarray:
    """Hyperboloid (x, y) → disk (x, y)/(1 + z) with z = √(1 + x² + y²); radius < 1 always.

    Far points round to radius 1 in floating point; they are pulled back to `DISK_EDGE`.
    """
    coords = np.asarray(coords, dtype=np.float64)
    z = np.sqrt(1 + np.sum(coords ** 2, axis=1, keepdims=True))
    disk = coords / (1 + z)
    radius = np.linalg.norm(disk, axis=1, keepdims=True)
    return disk * np.minimum(1.0, DISK_EDGE / np.maximum(radius, 1e-300))


def project_to_disk(
    points: np.ndarray, curvature: float, config: ProjectionConfig | None = None
) -> np.ndarray:
    """UMAP of Poincaré-ball points (curvature c) to 2-D, as (N, 2) disk coordinates."""
    config = config or ProjectionConfig()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) < 4:
        raise ValueError(f"need at least 4 points of shape (N, d) to project, got "
                         f"{points.shape}")
    reducer = _umap_class()(
        n_neighbors=min(config.n_neighbors, len(points) - 1), n_components=2,
        metric="poincare", output_metric="hyperboloid", n_epochs=config.n_epochs,
        min_dist=config.min_dist, random_state=config.random_state, n_jobs=1,
        low_memory=config.low_memory,
    )
    torch_threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=re.escape(_UMAP_NOISE[1]),
                                    category=UserWarning)
            coords = reducer.fit_transform(points * np.sqrt(curvature))
    finally:
        # numba's OpenMP layer resets the process-wide OpenMP thread count that torch shares
        torch.set_num_threads(torch_threads)
    return hyperboloid_to_disk(coords)
