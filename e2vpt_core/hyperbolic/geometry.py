"""Poincaré-ball geometry: geoopt's ball for the maps, closed forms for pairwise distances.

geoopt is imported here and nowhere else: its import calls `torch.jit.script`, which
newer torch versions flag with a FutureWarning that would break `-W error` test runs.
Pairwise distances use the closed form instead of broadcasting `ball.dist` over (B, B, d),
which would need gigabytes for a batch of 900.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import torch
from scipy.spatial.distance import cdist

_JIT_WARNING = ("`torch.jit.script` is deprecated. Please switch to `torch.compile` or "
                "`torch.export`.")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=re.escape(_JIT_WARNING), category=FutureWarning)
    import geoopt

# Largest allowed √c‖x‖ for a point of the ball, so artanh and 1 − c‖x‖² stay finite.
_BALL_EDGE = 1.0 - 1e-5


def poincare_ball(curvature: float) -> geoopt.PoincareBall:
    """The Poincaré ball of curvature −c (radius 1/√c), as geoopt defines it."""
    if curvature <= 0:
        raise ValueError(f"curvature c={curvature} must be > 0")
    return geoopt.PoincareBall(c=curvature)


def expmap0(tangent: torch.Tensor, curvature: float) -> torch.Tensor:
    """Exponential map at the origin, then projection strictly inside the ball."""
    ball = poincare_ball(curvature)
    return ball.projx(ball.expmap0(tangent, project=False))


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, curvature: float) -> torch.Tensor:
    """Poincaré distances d_c(x_i, y_j), shape (len(x), len(y)); differentiable, no NaN.

    d_c = (2/√c) artanh(√c‖(−x) ⊕_c y‖) with the Möbius-sum norm written without the sum:
    ‖(−x) ⊕_c y‖² = ‖x − y‖² / (1 − 2c⟨x, y⟩ + c²‖x‖²‖y‖²). The clamps keep the gradient
    finite at x = y (self pairs) and at the boundary.
    """
    sqrt_c = curvature ** 0.5
    x_sq = (x * x).sum(-1, keepdim=True)
    y_sq = (y * y).sum(-1, keepdim=True).T
    inner = x @ y.T
    sq_diff = (x_sq + y_sq - 2 * inner).clamp_min(0)
    denominator = (1 - 2 * curvature * inner + curvature ** 2 * x_sq * y_sq).clamp_min(1e-15)
    mobius_norm = (sq_diff / denominator).clamp_min(1e-15).sqrt()
    return 2 / sqrt_c * torch.atanh((sqrt_c * mobius_norm).clamp_max(_BALL_EDGE))


def poincare_distances(points: np.ndarray, curvature: float) -> np.ndarray:
    """All pairwise Poincaré distances of `points` in float64, zero on the diagonal."""
    points = np.asarray(points, dtype=np.float64)
    sq_norm = np.sum(points ** 2, axis=1)
    conformal = np.clip(1 - curvature * sq_norm, 1e-15, None)
    delta = 2 * curvature * cdist(points, points, "sqeuclidean") / np.outer(conformal, conformal)
    distances = np.log1p(delta + np.sqrt(delta * (delta + 2))) / np.sqrt(curvature)  # arcosh(1+δ)
    np.fill_diagonal(distances, 0.0)
    return distances


def hyperbolic_norm(points: np.ndarray, curvature: float) -> np.ndarray:
    """Distance d_c(0, x) of each point from the origin: (2/√c) artanh(√c‖x‖)."""
    sqrt_c = np.sqrt(curvature)
    radius = np.linalg.norm(np.asarray(points, dtype=np.float64), axis=1)
    return 2 / sqrt_c * np.arctanh(np.clip(sqrt_c * radius, 0.0, _BALL_EDGE))
