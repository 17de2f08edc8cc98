"""Poincaré-ball embedding view of a run: head, UMAP disk, separability (docs/METHOD.md,
"Hyperbolic embedding view").

    from e2vpt_core.hyperbolic import compare_runs
    comparison = compare_runs(RunStore("runs"), vpt_run, e2vpt_run, "test")
    comparison.a.disk, comparison.a.labels, comparison.table()

Names load on first use, so `e2vpt` commands that never draw the view do not pay for
importing geoopt, scikit-learn and umap.
"""

from __future__ import annotations

from ..lazy import lazy_names

DEFAULT_MAX_POINTS = 2000  # points drawn per view; here so the app reads it without the view

_EXPORTS = {name: f".{module}" for name, module in {
    "EmbeddingView": "view", "RunComparison": "view", "compare_runs": "view",
    "embedding_view": "view", "HeadConfig": "head", "HyperbolicHead": "head",
    "contrastive_loss": "head", "train_head": "head", "apply_head": "head",
    "ProjectionConfig": "projection", "hyperboloid_to_disk": "projection",
    "project_to_disk": "projection", "separability_table": "separability",
    "knn_accuracy": "separability", "silhouette": "separability",
    "mean_class_radius": "separability", "run_embeddings": "embeddings",
    "extract_embeddings": "embeddings", "expmap0": "geometry",
    "pairwise_distance": "geometry", "poincare_ball": "geometry",
    "poincare_distances": "geometry", "hyperbolic_norm": "geometry",
}.items()}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_names(__name__, globals(), _EXPORTS)
