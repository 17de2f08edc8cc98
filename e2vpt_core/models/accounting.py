"""Parameter counts users report (as PEFT's print_trainable_parameters), pruning included."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn


class ParameterAccountingMixin:
    """Trainable, backbone and effective (after pruning) parameter counts of an nn.Module.

    The model provides `backbone`, `visual_prompts` and `prompt_mask()` (the masks)."""

    backbone: nn.Module
    visual_prompts: nn.Parameter | None
    prompt_mask: Callable[[], torch.Tensor]
    named_parameters: Callable[..., Iterator[tuple[str, nn.Parameter]]]

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of every parameter that requires a gradient."""
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def backbone_parameter_count(self) -> int:
        """All parameters of the backbone, frozen or not."""
        return sum(p.numel() for p in self.backbone.parameters())

    def parameter_summary(self) -> dict[str, float]:
        """Trainable count, its % of the backbone, and the count left after pruning."""
        trainable = sum(p.numel() for _, p in self.trainable_parameters())
        pruned = 0
        if self.visual_prompts is not None:
            mask = self.prompt_mask().detach().expand_as(self.visual_prompts)
            pruned = int((mask == 0).sum())
        backbone = self.backbone_parameter_count()
        return {
            "trainable_params": trainable,
            "backbone_params": backbone,
            "trainable_percent": 100.0 * trainable / backbone,
            "effective_params": trainable - pruned,
        }

    def print_trainable_parameters(self) -> None:
        """One line of `parameter_summary()`, in PEFT's format plus the effective count."""
        s = self.parameter_summary()
        print(
            f"trainable params: {s['trainable_params']:,} || backbone params: "
            f"{s['backbone_params']:,} || trainable%: {s['trainable_percent']:.4f} || "
            f"effective params after pruning: {s['effective_params']:,}"
        )
