"""Separability figures rank well-separated clusters above mixed ones, in every space."""

from __future__ import annotations

import math

import numpy as np
import pytest

from e2vpt_core.hyperbolic.separability import (
    knn_accuracy,
    mean_class_radius,
    separability_table,
    silhouette,
)


def _clusters(spread: float, radius: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three 6-D clusters around centres at `radius` from the origin, `spread` wide."""
    rng = np.random.default_rng(seed)
    centres = np.eye(6)[:3] * radius
    labels = np.repeat(np.arange(3), 40)
    return centres[labels] + rng.normal(scale=spread, size=(len(labels), 6)), labels


# maps the three cluster axes to directions 120° apart in the plane
_PLANE = np.array([[math.cos(a), math.sin(a)] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
                  + [[0.0, 0.0]] * 3)


def _to_ball(points: np.ndarray, c: float) -> np.ndarray:
    """Squash into the ball of curvature c (radius 1/√c), keeping directions."""
    norm = np.linalg.norm(points, axis=1, keepdims=True)
    return np.tanh(norm) * points / norm / math.sqrt(c)


def test_knn_accuracy_on_a_hand_checked_line():
    points = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 5.4])
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    distances = np.abs(points[:, None] - points[None])
    # with k = 1 only the point at 5.4 (nearest: 2.0, class 0) is wrong
    assert knn_accuracy(distances, labels, k=1) == pytest.approx(6 / 7)
    # k = 2, 1–1 tie: the nearer voter decides; 5.4 still goes to class 0
    assert knn_accuracy(distances, labels, k=2) == pytest.approx(6 / 7)


def test_silhouette_and_radius_helpers():
    distances = np.abs(np.subtract.outer([0.0, 0.1, 5.0, 5.1], [0.0, 0.1, 5.0, 5.1]))
    assert silhouette(distances, np.array([0, 0, 1, 1])) > 0.9
    assert math.isnan(silhouette(distances, np.zeros(4, dtype=int)))
    # class means 1 and 4: the mean over classes ignores class sizes
    assert mean_class_radius(np.array([1.0, 1.0, 1.0, 4.0]), np.array([0, 0, 0, 1])) == 2.5


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_separated_clusters_rank_above_mixed_ones_in_every_space(c):
    separated, labels = _clusters(spread=0.2, radius=3.0)
    mixed, _ = _clusters(spread=2.0, radius=0.3)
    scores = {}
    for name, points in (("separated", separated), ("mixed", mixed)):
        ball = _to_ball(points, c)
        disk = _to_ball(points @ _PLANE, 1.0)
        scores[name] = separability_table(labels, embeddings=points, ball=ball, curvature=c,
                                    disk=disk)
    assert list(scores["separated"].index) == ["euclidean", "ball", "disk"]
    for space in ("euclidean", "ball", "disk"):
        good, bad = scores["separated"].loc[space], scores["mixed"].loc[space]
        assert good["knn_accuracy"] > bad["knn_accuracy"] + 0.3, space
        assert good["silhouette"] > bad["silhouette"] + 0.3, space
    assert scores["separated"].loc["ball", "knn_accuracy"] == 1.0
    assert scores["separated"].loc["disk", "max_euclidean_radius"] < 1.0


def test_clusters_near_the_boundary_have_the_larger_radius():
    near, labels = _clusters(spread=0.05, radius=3.0)
    far_inside, _ = _clusters(spread=0.05, radius=0.5)
    c = 0.1
    boundary = separability_table(labels, ball=_to_ball(near, c), curvature=c).loc["ball"]
    centre = separability_table(labels, ball=_to_ball(far_inside, c), curvature=c).loc["ball"]
    assert boundary["mean_class_radius"] > centre["mean_class_radius"] + 1.0
    assert boundary["mean_class_euclidean_radius"] < 1 / math.sqrt(c)
    # the hyperbolic radius grows without bound towards the edge, the Euclidean one does not
    assert boundary["mean_class_radius"] > boundary["mean_class_euclidean_radius"]


def test_separability_needs_a_space():
    with pytest.raises(ValueError, match="at least one"):
        separability_table(np.zeros(3))
