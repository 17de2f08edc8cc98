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


def per_prompt_layer(model: torch.nn.Module, grads: torch.Tensor) -> torch.Tensor:
    """(batches, blocks, P) → (batches, layers, P): shallow prompts have one layer, probed
    in every block."""
    return grads if model.config.deep_prompts else grads.sum(1, keepdim=True)


def check_mask_score(scores: dict, name: str, layer_grads: torch.Tensor) -> None:
    """A stored column score against per-batch mask gradients (batches, layers, P): E|g| and
    E g per layer, and over layers summed first."""
    torch.testing.assert_close(scores[f"{name}_layer_signed"], layer_grads.mean(0).float())
    torch.testing.assert_close(scores[f"{name}_layer"], layer_grads.abs().mean(0).float())
    torch.testing.assert_close(scores[f"{name}_signed"], layer_grads.sum(1).mean(0).float())
    torch.testing.assert_close(scores[name], layer_grads.sum(1).abs().mean(0).float())
