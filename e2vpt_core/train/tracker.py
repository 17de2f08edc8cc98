"""Live importance while a run trains: running averages of the mask gradients.

In the training package (not in `prune`, which builds on training) so that the loop can
keep the app's live heatmaps without importing the pruning code that imports it.
"""

from __future__ import annotations

import torch

from ..models.vit import PromptedViT


class ImportanceTracker:
    """Cheap running scores during training: call `update(model)` after each backward.

    Sums stay on the gradients' device (no host sync per step) until `snapshot()`.
    The backward must run inside `model.mask_gradients()` so the mask gradients exist.
    `decay=None` keeps a running mean over all updates; a float in (0, 1) keeps an
    exponential moving average (bias-corrected, so early snapshots are not pulled to 0).
    """

    def __init__(self, decay: float | None = None) -> None:
        if decay is not None and not 0.0 < decay < 1.0:
            raise ValueError(f"ImportanceTracker decay={decay!r} must be in (0, 1) or None")
        self.decay = decay
        self.steps = 0
        self._sums: dict[str, torch.Tensor] = {}

    def update(self, model: PromptedViT) -> None:
        token_grad, segment_grad = model.token_mask.grad, model.segment_mask.grad
        if token_grad is None or segment_grad is None:
            raise ValueError("no mask gradients: run backward() inside model.mask_gradients()")
        if model.masks_per_block:  # what one shared mask would get: the sum over layers
            token_grad, segment_grad = token_grad.sum(0), segment_grad.sum(0)
        values = {
            "token": token_grad.detach().abs(), "segment": segment_grad.detach().abs(),
            "token_signed": token_grad.detach(), "segment_signed": segment_grad.detach(),
        }
        per_layer = model.layer_mask_grads()
        if per_layer is not None:
            token_layer, segment_layer = (grad.detach() for grad in per_layer)
            values.update(token_layer=token_layer.abs(), segment_layer=segment_layer.abs(),
                          token_layer_signed=token_layer,
                          segment_layer_signed=segment_layer)
        self.steps += 1
        for key, value in values.items():
            value = value.float()
            previous = self._sums.get(key)
            if previous is None:
                previous = torch.zeros_like(value)
            if self.decay is None:
                self._sums[key] = previous + value
            else:
                self._sums[key] = self.decay * previous + (1.0 - self.decay) * value

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The four score tensors (the stored `importance` layout) and `steps`."""
        if not self.steps:
            raise ValueError("ImportanceTracker has no updates yet")
        if self.decay is None:
            scale = 1.0 / self.steps
        else:
            scale = 1.0 / (1.0 - self.decay ** self.steps)
        out = {key: (value * scale).cpu() for key, value in self._sums.items()}
        out["steps"] = torch.tensor(self.steps)
        return out
