"""What every prompted model shares: the trainable set, masks, and parameter summaries.

A subclass provides `backbone`, `config`, `visual_prompts` (the prompts the masks act on),
`token_mask`, `segment_mask` and `prompt_mask()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..config import PromptConfig
from .layers import expand_segment_mask


class PromptedModelMixin:
    """Shared behaviour of PromptedViT and PromptedSwin (mixed into an nn.Module)."""

    def _init_shared(
        self, backbone: nn.Module, num_classes: int, config: PromptConfig,
        backbone_name: str | None,
    ) -> None:
        """The attributes every prompted model sets the same way; call after nn.Module's
        __init__ and the backbone type check."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 1")
        self.config = config
        self.backbone = backbone
        self.backbone_name = backbone_name
        # Where the backbone weights came from, so an artifact can rebuild it.
        self.backbone_source: dict[str, object] = {"pretrained": False, "checkpoint_path": None}
        self.num_classes = num_classes
        self.prompt_dropout = nn.Dropout(config.prompt_dropout)
        # Masks are shared by all blocks (reference code) and act on `visual_prompts`. They
        # are frozen parameters so that `mask_gradients()` can expose dL/dmask.
        prompt_len = config.visual_prompt_len
        self.token_mask = nn.Parameter(torch.ones(prompt_len), requires_grad=False)
        self.segment_mask = nn.Parameter(
            torch.ones(prompt_len, config.num_segments), requires_grad=False
        )
        # Per-layer probes (ones) of the last `mask_gradients(per_layer=True)`; they act in
        # the forward only while that context is open.
        self._layer_probes: tuple[torch.Tensor, torch.Tensor] | None = None
        self._probing = False

    def train(self, mode: bool = True) -> nn.Module:
        """Only the prompt dropout trains: the backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    @property
    def prompt_len(self) -> int:
        return self.config.visual_prompt_len

    def kept_tokens(self) -> torch.Tensor:
        return torch.nonzero(self.token_mask.detach() != 0).flatten()

    def set_masks(
        self, token_mask: torch.Tensor | None = None, segment_mask: torch.Tensor | None = None
    ) -> None:
        """Install 0/1 masks (e.g. from pruning); shapes must be (P,) and (P, R)."""
        for target, value in ((self.token_mask, token_mask), (self.segment_mask, segment_mask)):
            if value is None:
                continue
            value = torch.as_tensor(value, dtype=target.dtype)
            if value.shape != target.shape:
                raise ValueError(f"mask shape {tuple(value.shape)} != {tuple(target.shape)}")
            if not torch.all((value == 0) | (value == 1)):
                raise ValueError("masks must contain only 0 and 1")
            with torch.no_grad():
                target.copy_(value)

    # ------------------------------------------------------------- trainable set
    def _select_trainable(self) -> None:
        """Backbone parameters per method: all (`full`), the last block and final norms
        (`partial-1`, names from `_partial_tuning_prefixes()`), biases (`bias`), or none."""
        method = self.config.method
        partial = self._partial_tuning_prefixes() if method == "partial-1" else ()
        for name, param in self.backbone.named_parameters():
            if method == "full":
                trainable = True
            elif method == "partial-1":
                trainable = name.startswith(partial)
            elif method == "bias":
                trainable = name.endswith("bias")
            else:
                trainable = False
            param.requires_grad_(trainable)

    def prompt_mask(self) -> torch.Tensor:
        """(P, d) multiplicative mask: token mask × segment mask over each segment's dims
        (d: `_prompt_width()`, the width of the prompts the masks act on)."""
        dims = expand_segment_mask(
            self.segment_mask, self._prompt_width(), self.config.segment_layout
        )
        return self.token_mask[:, None] * dims

    def masked_visual_prompts(self) -> torch.Tensor:
        """(L, P, d) prompts × `prompt_mask()` (× the per-layer probes, all ones, while
        they are active: same values, but backward then splits the gradient by layer)."""
        prompts = self.visual_prompts * self.prompt_mask()
        if not self._probing:
            return prompts
        token_probe, segment_probe = self._layer_probes
        dims = expand_segment_mask(segment_probe, prompts.shape[-1], self.config.segment_layout)
        return prompts * token_probe[..., None] * dims

    @contextmanager
    def mask_gradients(self, per_layer: bool = False) -> Iterator[None]:
        """Let backward() fill `token_mask.grad` and `segment_mask.grad` (importance).

        `per_layer=True` also fills `layer_mask_grads()`: the same gradients per prompt
        layer, (L, P) and (L, P, R), as if every layer had its own masks. With all masks at
        1 they sum over layers to the shared masks' gradients."""
        masks = (self.token_mask, self.segment_mask)
        for mask in masks:
            mask.grad = None
            mask.requires_grad_(True)
        self._layer_probes = None
        if per_layer and self.visual_prompts is not None:
            layers = self.visual_prompts.shape[0]
            self._layer_probes = tuple(
                torch.ones(layers, *mask.shape, dtype=mask.dtype, device=mask.device,
                           requires_grad=True)
                for mask in masks)
            self._probing = True
        try:
            yield
        finally:
            self._probing = False
            for mask in masks:
                mask.requires_grad_(False)

    def layer_mask_grads(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-layer token (L, P) and segment (L, P, R) mask gradients accumulated since the
        last `clear_mask_grads()` under `mask_gradients(per_layer=True)`, or None."""
        if self._layer_probes is None or self._layer_probes[0].grad is None:
            return None
        return self._layer_probes[0].grad, self._layer_probes[1].grad

    def clear_mask_grads(self) -> None:
        """Drop the shared and per-layer mask gradients (backward accumulates into them)."""
        self.token_mask.grad = self.segment_mask.grad = None
        for probe in self._layer_probes or ():
            probe.grad = None

    # ------------------------------------------------------------------ summaries
    def backbone_parameter_count(self) -> int:
        return sum(p.numel() for p in self.backbone.parameters())

    def parameter_summary(self) -> dict[str, float]:
        """Trainable count, its % of the backbone, and the count left after pruning."""
        trainable = sum(p.numel() for _, p in self.trainable_parameters())
        pruned = 0
        if self.visual_prompts is not None:
            removed_entries = int((self.prompt_mask().detach() == 0).sum())
            pruned = removed_entries * self.visual_prompts.shape[0]
        backbone = self.backbone_parameter_count()
        return {
            "trainable_params": trainable,
            "backbone_params": backbone,
            "trainable_percent": 100.0 * trainable / backbone,
            "effective_params": trainable - pruned,
        }

    def print_trainable_parameters(self) -> None:
        s = self.parameter_summary()
        print(
            f"trainable params: {s['trainable_params']:,} || backbone params: "
            f"{s['backbone_params']:,} || trainable%: {s['trainable_percent']:.4f} || "
            f"effective params after pruning: {s['effective_params']:,}"
        )

    # -------------------------------------------------------------------- compact
    def compact(self) -> nn.Module:
        """A model holding only the kept prompt tokens (same logits as `remove` mode).

        The backbone module is shared with this model, not copied.
        """
        kept = self.kept_tokens()
        config = self.config.replace(visual_prompt_len=len(kept))
        if self.visual_prompts is None or not len(kept):
            config = config.replace(visual_prompt_len=0)
        compacted = type(self)(self.backbone, self.num_classes, config, self.backbone_name)
        compacted.backbone_source = dict(self.backbone_source)
        compacted.to(device=self.token_mask.device)
        state = {
            name: tensor for name, tensor in self.state_dict().items()
            if not name.startswith("backbone.")
        }
        if self.visual_prompts is not None:
            if len(kept):
                state["visual_prompts"] = state["visual_prompts"][:, kept]
            else:
                del state["visual_prompts"]
            state["token_mask"] = state["token_mask"][kept]
            state["segment_mask"] = state["segment_mask"][kept]
        result = compacted.load_state_dict(state, strict=False)
        if result.unexpected_keys or any(
            not key.startswith("backbone.") for key in result.missing_keys
        ):
            raise RuntimeError(f"compact() state mismatch: {result}")
        compacted.train(self.training)
        return compacted
