"""Direct computations of token scores, shared by the ViT and Swin score tests."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.func import functional_call


def direct_taylor(model: torch.nn.Module,
                  batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """(L, P) mean over batches of Σ|∂L/∂p ⊙ p|, by autograd on a copy of the prompts."""
    per_batch = []
    for images, labels in batches:
        prompts = model.visual_prompts.detach().clone().requires_grad_(True)
        logits = functional_call(model, {"visual_prompts": prompts}, (images,))
        grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, labels), prompts)
        per_batch.append((grad * prompts.detach()).abs().sum(-1))
    return torch.stack(per_batch).mean(0).float()
