"""Poincaré-ball maps and distances against their closed forms; the disk map stays inside."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from e2vpt_core.hyperbolic.geometry import (
    expmap0,
    hyperbolic_norm,
    pairwise_distance,
    poincare_ball,
    poincare_distances,
)
from e2vpt_core.hyperbolic.projection import DISK_EDGE, hyperboloid_to_disk

CURVATURES = (0.1, 1.0, 2.5)


def _mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """x ⊕_c y = ((1 + 2c⟨x,y⟩ + c‖y‖²) x + (1 − c‖x‖²) y) / (1 + 2c⟨x,y⟩ + c²‖x‖²‖y‖²)."""
    xy, xx, yy = (x * y).sum(), (x * x).sum(), (y * y).sum()
    numerator = (1 + 2 * c * xy + c * yy) * x + (1 - c * xx) * y
    return numerator / (1 + 2 * c * xy + c ** 2 * xx * yy)


def _distance(x: torch.Tensor, y: torch.Tensor, c: float) -> float:
    """d_c(x, y) = (2/√c) artanh(√c ‖(−x) ⊕_c y‖)."""
    return 2 / math.sqrt(c) * math.atanh(math.sqrt(c) * _mobius_add(-x, y, c).norm().item())


def _ball_points(n: int, dim: int, c: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)
    radii = torch.rand(n, 1, generator=generator, dtype=torch.float64) * 0.95 / math.sqrt(c)
    return directions * radii


@pytest.mark.parametrize("c", CURVATURES)
def test_expmap0_matches_closed_form(c):
    tangent = torch.randn(16, 5, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64) * 0.7
    norm = tangent.norm(dim=1, keepdim=True)
    expected = torch.tanh(math.sqrt(c) * norm) * tangent / (math.sqrt(c) * norm)
    torch.testing.assert_close(expmap0(tangent, c), expected)


@pytest.mark.parametrize("c", CURVATURES)
def test_expmap0_of_a_long_vector_stays_inside_the_ball(c):
    point = expmap0(torch.full((2, 8), 1e3), c)
    assert torch.all(point.norm(dim=1) < 1 / math.sqrt(c))


@pytest.mark.parametrize("c", CURVATURES)
def test_pairwise_distance_matches_mobius_closed_form(c):
    x, y = _ball_points(6, 4, c, seed=1), _ball_points(5, 4, c, seed=2)
    expected = torch.tensor([[_distance(a, b, c) for b in y] for a in x], dtype=torch.float64)
    torch.testing.assert_close(pairwise_distance(x, y, c), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(poincare_ball(c).dist(x[:, None], y[None]), expected,
                               rtol=1e-5, atol=1e-5)
    numpy_x = x.numpy()
    full = poincare_distances(np.concatenate([numpy_x, y.numpy()]), c)
    np.testing.assert_allclose(full[:6, 6:], expected.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.diag(full), 0.0)
    origin = torch.zeros(4, dtype=torch.float64)
    np.testing.assert_allclose(hyperbolic_norm(numpy_x, c), [_distance(origin, p, c) for p in x],
                               rtol=1e-9)


def test_pairwise_distance_has_a_finite_gradient_at_self_pairs():
    points = _ball_points(5, 3, 0.1, seed=3).float().requires_grad_()
    pairwise_distance(points, points, 0.1).sum().backward()
    assert torch.isfinite(points.grad).all()


def test_poincare_distance_is_accurate_for_close_points():
    x = np.array([[0.5, 0.0], [0.5 + 1e-9, 0.0]])
    expected = _distance(torch.tensor(x[0]), torch.tensor(x[1]), 1.0)
    assert poincare_distances(x, 1.0)[0, 1] == pytest.approx(expected, rel=1e-6)


def test_curvature_must_be_positive():
    with pytest.raises(ValueError, match="curvature"):
        poincare_ball(0.0)


def test_hyperboloid_to_disk_is_the_inverse_of_the_disk_lift():
    disk = np.array([[0.0, 0.0], [0.3, -0.4], [-0.9, 0.1], [0.2, 0.97]])
    squared = np.sum(disk ** 2, axis=1, keepdims=True)
    hyperboloid = 2 * disk / (1 - squared)  # the (x, y) of the lifted point
    np.testing.assert_allclose(hyperboloid_to_disk(hyperboloid), disk, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e8, 1e20])
def test_every_disk_point_is_strictly_inside_the_unit_circle(scale):
    coords = np.random.default_rng(0).normal(size=(500, 2)) * scale
    radius = np.linalg.norm(hyperboloid_to_disk(coords), axis=1)
    assert np.all(radius < 1.0) and np.all(radius.astype(np.float32) < 1.0)
    assert radius.max() <= DISK_EDGE + 1e-12


def test_every_package_export_resolves():
    import e2vpt_core.hyperbolic as hyperbolic

    for name in hyperbolic.__all__:
        assert getattr(hyperbolic, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute"):
        hyperbolic.not_a_name  # noqa: B018
