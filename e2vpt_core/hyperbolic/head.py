"""The hyperbolic head of the embedding view (after Ermolov et al. 2022;
docs/METHOD.md, "Hyperbolic embedding view").

A linear map d → 128 (orthogonal init), feature clipping to radius r, the exponential map
at the origin of the Poincaré ball of curvature c, trained on frozen CLS embeddings with a
pairwise cross-entropy whose logits are −d_c(z_i, z_j)/τ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .geometry import expmap0, pairwise_distance


@dataclass(frozen=True)
class HeadConfig:
    """The head and its training; the defaults are the paper's figure settings.

    With lr 3e-5 and 50 steps the head barely leaves its orthogonal init, so the picture is
    close to an orthogonal projection of the embeddings; raise `lr` / `steps` to train it.
    """

    dim: int = 128
    curvature: float = 0.1
    clip_radius: float = 2.3
    temperature: float = 0.2
    lr: float = 3e-5
    weight_decay: float = 0.01
    batch_size: int = 900
    steps: int = 50
    grad_clip: float | None = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "dim": self.dim >= 1, "curvature": self.curvature > 0,
            "clip_radius": self.clip_radius > 0, "temperature": self.temperature > 0,
            "lr": self.lr >= 0, "weight_decay": self.weight_decay >= 0,
            "batch_size": self.batch_size >= 2, "steps": self.steps >= 0,
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"HeadConfig.{name}={getattr(self, name)!r} is out of range")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class HyperbolicHead(nn.Module):
    """Embeddings (B, d) → points of the Poincaré ball (B, dim)."""

    def __init__(self, in_dim: int, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(in_dim, config.dim)
        nn.init.orthogonal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        features = self.linear(embeddings)
        norm = features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        features = features * (self.config.clip_radius / norm).clamp(max=1.0)
        return expmap0(features, self.config.curvature)


def contrastive_loss(
    points: torch.Tensor, labels: torch.Tensor, curvature: float, temperature: float
) -> torch.Tensor:
    """Supervised-contrastive cross-entropy with logits −d_c(z_i, z_j)/τ.

    Each anchor's softmax runs over every other sample (self-pairs masked out); its loss is
    the mean −log-probability of the samples of its class. Anchors without a positive in
    the batch are skipped; a batch with none gives a zero loss that still has a gradient.
    """
    logits = -pairwise_distance(points, points, curvature) / temperature
    self_pairs = torch.eye(len(points), dtype=torch.bool, device=points.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_pairs
    counts = positives.sum(dim=1)
    anchors = counts > 0
    if not anchors.any():
        return points.sum() * 0.0
    positive_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(positive_log_prob[anchors] / counts[anchors]).mean()


def train_head(
    embeddings: torch.Tensor, labels: torch.Tensor, config: HeadConfig
) -> tuple[HyperbolicHead, list[float]]:
    """Fit a head on frozen embeddings (CPU, seeded); returns it with the per-step losses.

    Each step draws a batch of `batch_size` samples without replacement (the whole set
    when it is smaller). The global torch RNG is left as it was.
    """
    embeddings = embeddings.detach().float().cpu()
    labels = labels.detach().long().cpu()
    if len(embeddings) != len(labels) or len(embeddings) < 2:
        raise ValueError(f"need ≥ 2 embeddings with one label each, got {len(embeddings)} "
                         f"embeddings and {len(labels)} labels")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = HyperbolicHead(embeddings.shape[1], config)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(embeddings))
    losses = []
    head.train()
    for _ in range(config.steps):
        index = torch.randperm(len(embeddings), generator=generator)[:batch]
        loss = contrastive_loss(head(embeddings[index]), labels[index], config.curvature,
                                config.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(head.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return head.eval(), losses


@torch.no_grad()
def apply_head(head: HyperbolicHead, embeddings: torch.Tensor) -> torch.Tensor:
    """Ball points of `embeddings` under a fitted head."""
    return head(embeddings.detach().float().cpu())
