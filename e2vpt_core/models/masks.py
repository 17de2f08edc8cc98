"""Token and segment masks in one place, so that pruning's whole view of a model reads here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..config import PromptConfig
from .layers import expand_segment_mask


def new_masks(config: PromptConfig, prompt_layers: int) -> tuple[nn.Parameter, nn.Parameter]:
    """All-ones token (P,) and segment (P, R) masks, or (L, P) and (L, P, R) with
    `masks_per_block` (L = `prompt_layers`, the layers of `visual_prompts`).

    Masks act on `visual_prompts`: shared by all its layers (reference code), or one per
    layer with `masks_per_block`. They are parameters so that `mask_gradients()` can expose
    dL/dmask, frozen unless `trainable_masks` (the official code)."""
    layers = (prompt_layers,) if config.masks_per_block else ()
    prompt_len, trainable = config.visual_prompt_len, config.trainable_masks
    token_mask = nn.Parameter(torch.ones(*layers, prompt_len), requires_grad=trainable)
    segment_mask = nn.Parameter(
        torch.ones(*layers, prompt_len, config.num_segments), requires_grad=trainable
    )
    return token_mask, segment_mask


class PromptMaskMixin:
    """Masks over `visual_prompts`, the kept tokens, and the masks' gradients (importance).

    The model provides `config`, `visual_prompts`, `token_mask` and `segment_mask` (from
    `new_masks`), and `_prompt_width()`."""

    config: PromptConfig
    visual_prompts: nn.Parameter | None
    token_mask: nn.Parameter
    segment_mask: nn.Parameter
    # Per-layer probes (ones) of the last `mask_gradients(per_layer=True)` on shared masks;
    # they act in the forward only while that context is open.
    _layer_probes: tuple[torch.Tensor, torch.Tensor] | None = None
    _probing: bool = False

    def _prompt_width(self) -> int:
        """The width d of the prompts the masks act on."""
        raise NotImplementedError

    @property
    def masks_per_block(self) -> bool:
        return self.config.masks_per_block

    def kept_tokens(self) -> torch.Tensor:
        """Indices of the kept tokens of shared masks (masks per block:
        `layer_kept_tokens()`)."""
        if self.masks_per_block:
            raise ValueError("masks per block keep different tokens per layer; use "
                             "layer_kept_tokens()")
        return torch.nonzero(self.token_mask.detach() != 0).flatten()

    def layer_kept_tokens(self) -> list[torch.Tensor]:
        """Kept token indices of every prompt layer (the same list L times for shared
        masks)."""
        if self.masks_per_block:
            return [torch.nonzero(mask != 0).flatten() for mask in self.token_mask.detach()]
        layers = self.visual_prompts.shape[0] if self.visual_prompts is not None else 1
        return [self.kept_tokens()] * layers

    def set_masks(
        self, token_mask: torch.Tensor | None = None, segment_mask: torch.Tensor | None = None
    ) -> None:
        """Install 0/1 masks (e.g. from pruning): (P,) and (P, R), or (L, P) and (L, P, R)
        with masks per block."""
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

    def prompt_mask(self) -> torch.Tensor:
        """(P, d) multiplicative mask, or (L, P, d) with masks per block: token mask ×
        segment mask over each segment's dims (d: `_prompt_width()`, the width of the
        prompts the masks act on)."""
        dims = expand_segment_mask(
            self.segment_mask, self._prompt_width(), self.config.segment_layout
        )
        return self.token_mask[..., None] * dims

    def masked_visual_prompts(self) -> torch.Tensor:
        """(L, P, d) prompts × `prompt_mask()` (× the per-layer probes, all ones, while
        they are active: same values, but backward then splits the gradient by layer)."""
        prompts = self.visual_prompts * self.prompt_mask()
        if not self._probing:
            return prompts
        token_probe, segment_probe = self._layer_probes
        dims = expand_segment_mask(segment_probe, prompts.shape[-1], self.config.segment_layout)
        return prompts * token_probe[..., None] * dims

    def layer_visual_prompts(self) -> list[torch.Tensor]:
        """Per prompt layer, the (P_l, d) prompts that enter it: masked, and in `remove`
        mode only that layer's kept tokens."""
        prompts = list(self.masked_visual_prompts().unbind(0))
        if self.config.prune_mode == "remove":
            prompts = [layer[kept] for layer, kept in
                       zip(prompts, self.layer_kept_tokens(), strict=True)]
        return prompts

    @contextmanager
    def mask_gradients(self, per_layer: bool = False) -> Iterator[None]:
        """Let backward() fill `token_mask.grad` and `segment_mask.grad` (importance).

        `per_layer=True` also fills `layer_mask_grads()`: the same gradients per prompt
        layer, (L, P) and (L, P, R), as if every layer had its own masks. With all masks at
        1 they sum over layers to the shared masks' gradients. (Masks per block have
        per-layer gradients of their own.)"""
        masks = (self.token_mask, self.segment_mask)
        trainable = [mask.requires_grad for mask in masks]
        for mask in masks:
            mask.grad = None
            mask.requires_grad_(True)
        self._layer_probes = None
        if per_layer and self.visual_prompts is not None and not self.masks_per_block:
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
            for mask, was_trainable in zip(masks, trainable, strict=True):
                mask.requires_grad_(was_trainable)

    def layer_mask_grads(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-layer token (L, P) and segment (L, P, R) mask gradients accumulated since the
        last `clear_mask_grads()` under `mask_gradients(per_layer=True)` (any
        `mask_gradients()` with masks per block), or None."""
        if self.masks_per_block:
            if self.token_mask.grad is None:
                return None
            return self.token_mask.grad, self.segment_mask.grad
        if self._layer_probes is None or self._layer_probes[0].grad is None:
            return None
        return self._layer_probes[0].grad, self._layer_probes[1].grad

    def clear_mask_grads(self) -> None:
        """Drop the shared and per-layer mask gradients (backward accumulates into them)."""
        self.token_mask.grad = self.segment_mask.grad = None
        for probe in self._layer_probes or ():
            probe.grad = None
