"""The Poincaré-disk view of a run: embeddings → hyperbolic head → UMAP disk → figures.

Results are cached in the run store per (run, split, settings hash) as
`poincare_<split>_<hash>.safetensors` (disk, ball, labels, dataset indices), so the app
can redraw and compare runs without refitting; the figures go into the run's summary
under `hyperbolic_<split>`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import normalize_split
from ..store import RunStore
from ..train.config import TrainConfig
from . import DEFAULT_MAX_POINTS
from .embeddings import adapter_dir, run_embeddings
from .head import HeadConfig, apply_head, train_head
from .projection import ProjectionConfig, project_to_disk
from .separability import separability_table

CACHE_VERSION = 1


@dataclass
class EmbeddingView:
    """One run's view: disk coordinates (radius < 1), ball points, labels, figures."""

    run_id: str
    split: str
    disk: np.ndarray
    ball: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    table: pd.DataFrame
    settings: dict[str, Any]
    settings_hash: str
    timings: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    def figures(self) -> dict[str, float]:
        """Flat figures: the ball's unprefixed, then `disk_*` and `euclidean_*`."""
        ball, disk, euclid = (self.table.loc[s] for s in ("ball", "disk", "euclidean"))
        return {
            "knn_accuracy": ball["knn_accuracy"], "silhouette": ball["silhouette"],
            "mean_class_radius": ball["mean_class_radius"],
            "disk_knn_accuracy": disk["knn_accuracy"], "disk_silhouette": disk["silhouette"],
            "disk_mean_class_radius": disk["mean_class_euclidean_radius"],
            "max_disk_radius": disk["max_euclidean_radius"],
            "euclidean_knn_accuracy": euclid["knn_accuracy"],
            "euclidean_silhouette": euclid["silhouette"],
            "euclidean_mean_class_radius": euclid["mean_class_radius"],
        }

    def summary(self) -> dict[str, Any]:
        """Everything the CLI prints as JSON: ids, sizes, figures, timings (seconds)."""
        return {
            "run_id": self.run_id, "split": self.split, "num_points": len(self.labels),
            "num_classes": len(np.unique(self.labels)), "settings_hash": self.settings_hash,
            "cached": self.cached,
            **{key: _number(value) for key, value in self.figures().items()},
            **{f"{key}_seconds": round(value, 3) for key, value in self.timings.items()},
        }


@dataclass
class RunComparison:
    """Two runs' views on the same split (the paper's VPT vs E²VPT figure)."""

    a: EmbeddingView
    b: EmbeddingView
    same_data: bool

    def table(self) -> pd.DataFrame:
        """Both separability tables, indexed by (run, space)."""
        return pd.concat({self.a.run_id: self.a.table, self.b.run_id: self.b.table},
                         names=["run", "space"])


def _number(value: float) -> float | None:
    """A float for JSON; NaN (a silhouette with one class) becomes None."""
    return None if np.isnan(value) else float(value)


def settings_hash(settings: dict[str, Any]) -> str:
    """A short stable hash of the view settings, naming the cache file."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def sample_indices(size: int, max_points: int | None, seed: int) -> np.ndarray:
    """Sorted seeded subset of `range(size)` of at most `max_points` (all for None / 0)."""
    if max_points is not None and max_points < 0:
        raise ValueError(f"max_points={max_points} must be ≥ 0 (0 for all points)")
    if not max_points or max_points >= size:
        return np.arange(size)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return np.sort(order[:max_points].numpy())


def embedding_view(
    store: RunStore, run_id: str, split: str = "test", *, head: HeadConfig | None = None,
    projection: ProjectionConfig | None = None, max_points: int | None = DEFAULT_MAX_POINTS,
    head_split: str | None = None, sample_seed: int = 0, k: int = 5, device: str = "auto",
    refresh: bool = False,
) -> EmbeddingView:
    """The disk view of a run's `split`, computed once per settings and then read back.

    The head is trained on `head_split` (default: the run's training split), so the
    figures on the test split are not fitted to the points they measure.
    """
    start = time.perf_counter()
    head = head or HeadConfig()
    projection = projection or ProjectionConfig()
    split = normalize_split(split)
    adapter_dir(store, run_id)
    config = TrainConfig.from_dict(store.get_run(run_id)["config"])
    head_split = normalize_split(head_split or config.train_split)
    settings = {"version": CACHE_VERSION, "split": split, "head_split": head_split,
                "max_points": max_points or 0, "sample_seed": sample_seed,
                "head": head.to_dict(), "projection": projection.to_dict()}
    digest = settings_hash(settings)
    name = f"poincare_{split}_{digest}"

    embeddings, all_labels = run_embeddings(store, run_id, split, device=device, refresh=refresh)
    timings = {"extract": time.perf_counter() - start}
    cached = not refresh and store.has_tensors(run_id, name)
    if not cached:
        indices = sample_indices(len(all_labels), max_points, sample_seed)
        mark = time.perf_counter()
        head_data = (embeddings, all_labels) if head_split == split else \
            run_embeddings(store, run_id, head_split, device=device, refresh=refresh)
        timings["extract"] += time.perf_counter() - mark
        stored = _fit(head_data, embeddings[torch.from_numpy(indices)], head, projection,
                      timings)
        stored.update(labels=all_labels[torch.from_numpy(indices)],
                      indices=torch.from_numpy(indices))
        store.save_tensors(run_id, name, stored, metadata={"settings": json.dumps(settings)})
    else:
        stored = store.load_tensors(run_id, name)
    disk, ball, indices = (stored[key].numpy() for key in ("disk", "ball", "indices"))
    labels = all_labels.numpy()[indices]

    mark = time.perf_counter()
    table = separability_table(labels, embeddings=embeddings.numpy()[indices], ball=ball,
                         curvature=head.curvature, disk=disk, k=k)
    timings["separability"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - start
    view = EmbeddingView(run_id, split, disk, ball, labels, indices, table, settings, digest,
                         timings, cached)
    store.update_summary(run_id, **{f"hyperbolic_{split}": {
        "settings_hash": digest, **{key: _number(value) for key, value in view.figures().items()},
        "seconds": {key: round(value, 2) for key, value in timings.items()}}})
    return view


def _fit(
    head_data: tuple[torch.Tensor, torch.Tensor], embeddings: torch.Tensor, head: HeadConfig,
    projection: ProjectionConfig, timings: dict[str, float],
) -> dict[str, torch.Tensor]:
    """Train the head on `head_data`, map `embeddings` into the ball, project to the disk."""
    mark = time.perf_counter()
    fitted, _ = train_head(*head_data, head)
    ball = apply_head(fitted, embeddings)
    timings["head"] = time.perf_counter() - mark
    mark = time.perf_counter()
    disk = project_to_disk(ball.numpy(), head.curvature, projection)
    timings["projection"] = time.perf_counter() - mark
    return {"disk": torch.from_numpy(disk), "ball": ball}


def compare_runs(
    store: RunStore, run_a: str, run_b: str, split: str = "test", **options: Any
) -> RunComparison:
    """Both runs' views with the same settings; `options` go to :func:`embedding_view`.

    With the same dataset, data seed and `sample_seed`, both views show the same points.
    """
    data = [TrainConfig.from_dict(store.get_run(run)["config"]) for run in (run_a, run_b)]
    same_data = (data[0].dataset, data[0].data_seed) == (data[1].dataset, data[1].data_seed)
    return RunComparison(embedding_view(store, run_a, split, **options),
                         embedding_view(store, run_b, split, **options), same_data)
