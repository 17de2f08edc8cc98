"""The hyperbolic head: clipping, the contrastive loss, and that training separates classes."""

from __future__ import annotations

import math

import pytest
import torch

from e2vpt_core.hyperbolic.geometry import hyperbolic_norm, pairwise_distance
from e2vpt_core.hyperbolic.head import (
    HeadConfig,
    HyperbolicHead,
    apply_head,
    contrastive_loss,
    train_head,
)
from e2vpt_core.hyperbolic.separability import separability_table


def _toy(n: int = 160, dim: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by one of 64 noisy dimensions: a random 4-D projection
    (the untrained head) keeps little of it."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    points = torch.randn(n, dim, generator=generator)
    points[:, 0] += (labels.float() * 2 - 1) * 1.5
    return points, labels


def test_loss_matches_a_hand_computed_value():
    points = torch.tensor([[0.1, 0.0], [0.2, 0.1], [-0.3, 0.2], [0.0, -0.4]],
                          dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])  # only the two class-0 points have a positive
    c, tau = 0.5, 0.2
    distances = pairwise_distance(points, points, c)
    expected = 0.0
    for anchor, positive in ((0, 1), (1, 0)):
        others = [j for j in range(4) if j != anchor]
        log_norm = math.log(sum(math.exp(-distances[anchor, j].item() / tau) for j in others))
        expected += (distances[anchor, positive].item() / tau + log_norm) / 2
    assert contrastive_loss(points, labels, c, tau).item() == pytest.approx(expected, rel=1e-9)


def test_loss_without_positives_is_zero_and_differentiable():
    points = torch.rand(3, 2, requires_grad=True)
    loss = contrastive_loss(points * 0.5, torch.tensor([0, 1, 2]), 0.1, 0.2)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(points.grad, torch.zeros(3, 2))


def test_head_clips_features_before_the_exponential_map():
    config = HeadConfig(dim=8, clip_radius=2.3, curvature=0.1)
    torch.manual_seed(0)
    head = HyperbolicHead(16, config)
    long, short = torch.randn(4, 16) * 100, torch.randn(4, 16) * 1e-3
    # d_c(0, expmap0(v)) = 2‖v‖, so a clipped feature lands at hyperbolic radius 2r
    radius = hyperbolic_norm(apply_head(head, long).numpy(), config.curvature)
    assert radius == pytest.approx([2 * 2.3] * 4, rel=1e-4)
    features = head.linear(short).detach()
    radius = hyperbolic_norm(apply_head(head, short).numpy(), config.curvature)
    assert radius == pytest.approx((2 * features.norm(dim=1)).tolist(), rel=1e-4)
    weight = head.linear.weight.detach()
    torch.testing.assert_close(weight @ weight.T, torch.eye(8), atol=1e-5, rtol=0)


def test_training_separates_a_toy_two_class_set():
    points, labels = _toy()
    config = HeadConfig(dim=4, lr=1e-2, steps=60, batch_size=128, seed=0)
    untrained, _ = train_head(points, labels, HeadConfig(dim=4, steps=0, seed=0))
    trained, losses = train_head(points, labels, config)
    before = separability_table(labels.numpy(), ball=apply_head(untrained, points).numpy(),
                          curvature=config.curvature).loc["ball"]
    after = separability_table(labels.numpy(), ball=apply_head(trained, points).numpy(),
                         curvature=config.curvature).loc["ball"]
    assert losses[-1] < 0.5 * losses[0]
    assert after["knn_accuracy"] > before["knn_accuracy"] + 0.15
    assert after["knn_accuracy"] > 0.9
    assert after["silhouette"] > before["silhouette"] + 0.2


def test_training_is_seeded_and_leaves_the_global_rng_alone():
    points, labels = _toy(n=40)
    config = HeadConfig(dim=4, lr=1e-3, steps=3, batch_size=16, seed=7)
    state = torch.get_rng_state()
    first, first_losses = train_head(points, labels, config)
    assert torch.equal(torch.get_rng_state(), state)
    second, second_losses = train_head(points, labels, config)
    assert first_losses == second_losses
    torch.testing.assert_close(first.linear.weight, second.linear.weight, rtol=0, atol=0)
    other, _ = train_head(points, labels, HeadConfig(dim=4, steps=0, seed=8))
    assert not torch.equal(first.linear.weight, other.linear.weight)


def test_paper_defaults_and_validation():
    config = HeadConfig()
    assert (config.dim, config.curvature, config.clip_radius, config.temperature) == \
        (128, 0.1, 2.3, 0.2)
    assert (config.lr, config.weight_decay, config.batch_size, config.steps,
            config.grad_clip) == (3e-5, 0.01, 900, 50, 3.0)
    with pytest.raises(ValueError, match="temperature"):
        HeadConfig(temperature=0)
    with pytest.raises(ValueError, match="2 embeddings"):
        train_head(torch.zeros(1, 3), torch.zeros(1), config)
