"""The base every prompted model builds on, so ViT and Swin share one constructor path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import PromptConfig
from .accounting import ParameterAccountingMixin
from .compaction import compact_prompts
from .masks import PromptMaskMixin, new_masks
from .probes import ColumnProbeMixin

ModelT = TypeVar("ModelT", bound="PromptedModel")


class PromptedModel(PromptMaskMixin, ColumnProbeMixin, ParameterAccountingMixin, nn.Module):
    """What PromptedViT and PromptedSwin share: a frozen backbone in eval mode, the method's
    trainable set, the masks, the column probes and the parameter counts.

    A subclass checks its backbone, calls this constructor, then adds its prompts, head and
    modules and calls `_select_trainable()`. It provides `visual_prompts` (the prompts the
    masks act on, or None) and the hooks `_prompt_width()`, `_probed_blocks()` and
    `_partial_tuning_prefixes()`."""

    grad_checkpointing = False

    def __init__(
        self, backbone: nn.Module, num_classes: int, config: PromptConfig,
        backbone_name: str | None, prompt_layers: int,
    ) -> None:
        """`prompt_layers` (L) is the number of layers of `visual_prompts`."""
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 1")
        self.config = config
        self.backbone = backbone
        self.backbone_name = backbone_name
        # Where the backbone weights came from, so an artifact can rebuild it.
        self.backbone_source: dict[str, object] = {"pretrained": False, "checkpoint_path": None}
        self.num_classes = num_classes
        self.prompt_dropout = nn.Dropout(config.prompt_dropout)
        self.token_mask, self.segment_mask = new_masks(config, prompt_layers)

    def train(self, mode: bool = True) -> nn.Module:
        """Only the prompt dropout trains: the backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations during backward instead of keeping them
        (timm's convention). Prompt tuning backpropagates through the whole frozen backbone,
        so its activation memory is close to full fine-tuning's; this trades it for one more
        forward per block, with the same logits and gradients."""
        self.grad_checkpointing = enable

    def _run_block(self, block_forward: Callable[..., Any], *args: Any) -> Any:
        """`block_forward(*args)`, checkpointed while grad checkpointing is on and autograd
        records (non-reentrant, so parameters it closes over still get their gradients and
        dropout inside it replays the same mask)."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block_forward, *args, use_reentrant=False)
        return block_forward(*args)

    @property
    def prompt_len(self) -> int:
        return self.config.visual_prompt_len

    def _partial_tuning_prefixes(self) -> tuple[str, ...]:
        """Backbone parameter-name prefixes of the last block and the final norms."""
        raise NotImplementedError

    def _select_trainable(self) -> None:
        """The backbone parameters the method's registry entry trains: `all`, `last-block`
        (the last block and final norms, names from `_partial_tuning_prefixes()`), `biases`,
        or `none`."""
        which = self.config.spec.backbone_params
        partial = self._partial_tuning_prefixes() if which == "last-block" else ()
        for name, param in self.backbone.named_parameters():
            trainable = {"all": True, "last-block": name.startswith(partial),
                         "biases": name.endswith("bias"), "none": False}[which]
            param.requires_grad_(trainable)

    def _check_compactable(self) -> None:
        """Raise ValueError where `compact_prompts()` cannot express this model."""

    def compact(self: ModelT) -> ModelT:
        """`compact_prompts(self)`: a model holding only the kept prompt tokens."""
        return compact_prompts(self)
