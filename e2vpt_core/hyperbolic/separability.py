"""How well classes separate in each space: kNN accuracy, silhouette, class radius.

The same figures on the raw (Euclidean) embeddings, the Poincaré ball and the 2-D disk,
so a reader sees what the hyperbolic head and the projection add or lose. The paper reads
its figure as "E²VPT clusters lie nearer the boundary and mix less": `mean_class_radius`
and the kNN / silhouette columns measure exactly that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from sklearn.metrics import silhouette_score

from .geometry import hyperbolic_norm, poincare_distances


def knn_accuracy(distances: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (fraction) from a distance matrix.

    Majority vote of the k nearest other points; a tie goes to the class whose voter is
    nearest.
    """
    distances = np.array(distances, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        return float("nan")
    k = min(k, n - 1)
    np.fill_diagonal(distances, np.inf)
    neighbours = np.argpartition(distances, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(distances, neighbours, axis=1), axis=1)
    neighbours = np.take_along_axis(neighbours, order, axis=1)
    classes, encoded = np.unique(labels, return_inverse=True)
    votes = np.zeros((n, len(classes)))
    rows = np.arange(n)
    for rank in range(k):
        votes[rows, encoded[neighbours[:, rank]]] += 1 + 1e-3 * (k - rank) / k
    return float(np.mean(votes.argmax(axis=1) == encoded))


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette under the given distances; NaN with fewer than 2 classes."""
    labels = np.asarray(labels)
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return float("nan")
    distances = np.array(distances, dtype=np.float64)
    np.fill_diagonal(distances, 0.0)
    return float(silhouette_score(distances, labels, metric="precomputed"))


def mean_class_radius(radii: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the mean distance of their points from the origin."""
    frame = pd.DataFrame({"radius": np.asarray(radii, dtype=np.float64),
                          "label": np.asarray(labels)})
    return float(frame.groupby("label")["radius"].mean().mean())


def space_scores(
    distances: np.ndarray, radii: np.ndarray, euclidean_radii: np.ndarray,
    labels: np.ndarray, k: int = 5,
) -> dict[str, float]:
    """The figures of one space from its distance matrix and its points' radii."""
    return {
        "knn_accuracy": knn_accuracy(distances, labels, k),
        "silhouette": silhouette(distances, labels),
        "mean_class_radius": mean_class_radius(radii, labels),
        "mean_class_euclidean_radius": mean_class_radius(euclidean_radii, labels),
        "max_euclidean_radius": float(np.max(euclidean_radii)),
    }


def separability_table(
    labels: np.ndarray, *, embeddings: np.ndarray | None = None,
    ball: np.ndarray | None = None, curvature: float = 0.1,
    disk: np.ndarray | None = None, k: int = 5,
) -> pd.DataFrame:
    """One row per given space (`euclidean`, `ball`, `disk`), indexed by space.

    Columns: `knn_accuracy` (leave-one-out, fraction), `silhouette`, `mean_class_radius`
    (distance from the origin in the space's own metric: Euclidean norm, d_c(0, z), and
    d_1(0, z) on the unit disk), `mean_class_euclidean_radius` (on the disk: the radius
    seen in the figure, in [0, 1)) and `max_euclidean_radius`.
    """
    labels = np.asarray(labels)
    rows: dict[str, dict[str, float | str]] = {}
    if embeddings is not None:
        points = np.asarray(embeddings, dtype=np.float64)
        norm = np.linalg.norm(points, axis=1)
        rows["euclidean"] = {"distance": "euclidean",
                             **space_scores(cdist(points, points), norm, norm, labels, k)}
    for space, points, c in (("ball", ball, curvature), ("disk", disk, 1.0)):
        if points is None:
            continue
        points = np.asarray(points, dtype=np.float64)
        rows[space] = {"distance": f"poincare c={c:g}", **space_scores(
            poincare_distances(points, c), hyperbolic_norm(points, c),
            np.linalg.norm(points, axis=1), labels, k)}
    if not rows:
        raise ValueError("separability_table needs at least one of embeddings, ball, disk")
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("space")
