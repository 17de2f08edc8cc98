"""What every prompted model shares: the trainable set, masks, and parameter summaries.

A subclass provides `backbone`, `config`, `visual_prompts` (the prompts the masks act on),
`token_mask`, `segment_mask` and `prompt_mask()`, and `_probed_blocks()` for the column
probes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..config import PromptConfig
from .layers import ColumnProbe, expand_segment_mask


class PromptedModelMixin:
    """Shared behaviour of PromptedViT and PromptedSwin (mixed into an nn.Module)."""

    def _init_shared(
        self, backbone: nn.Module, num_classes: int, config: PromptConfig,
        backbone_name: str | None, prompt_layers: int,
    ) -> None:
        """The attributes every prompted model sets the same way; call after nn.Module's
        __init__ and the backbone type check. `prompt_layers` (L) is the number of
        layers of `visual_prompts`."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 1")
        self.config = config
        self.backbone = backbone
        self.backbone_name = backbone_name
        # Where the backbone weights came from, so an artifact can rebuild it.
        self.backbone_source: dict[str, object] = {"pretrained": False, "checkpoint_path": None}
        self.num_classes = num_classes
        self.prompt_dropout = nn.Dropout(config.prompt_dropout)
        # Masks act on `visual_prompts`: shared by all its layers (reference code), or one
        # per layer with `masks_per_block`. They are parameters so that `mask_gradients()`
        # can expose dL/dmask, frozen unless `trainable_masks` (the official code).
        layers = (prompt_layers,) if config.masks_per_block else ()
        prompt_len = config.visual_prompt_len
        trainable = config.trainable_masks
        self.token_mask = nn.Parameter(torch.ones(*layers, prompt_len), requires_grad=trainable)
        self.segment_mask = nn.Parameter(
            torch.ones(*layers, prompt_len, config.num_segments), requires_grad=trainable
        )
        # Per-layer probes (ones) of the last `mask_gradients(per_layer=True)` on shared
        # masks; they act in the forward only while that context is open.
        self._layer_probes: tuple[torch.Tensor, torch.Tensor] | None = None
        self._probing = False
        # (blocks, P) key/value scales and logit biases while `column_probes()` is open.
        self._column_probes: ColumnProbe | None = None

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

    # ------------------------------------------------------------- trainable set
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

    # ------------------------------------------------------------- column probes
    def _probed_blocks(self) -> int:
        """How many blocks the column probes act in (raises ValueError where they cannot)."""
        raise NotImplementedError

    def supports_column_probes(self) -> bool:
        """Whether `column_probes()` applies: visual prompts in blocks it can re-sequence."""
        if self.visual_prompts is None:
            return False
        try:
            self._probed_blocks()
        except ValueError:
            return False
        return True

    @contextmanager
    def column_probes(self) -> Iterator[ColumnProbe]:
        """Probes on the prompt tokens' attention columns, (blocks, P) each, with
        gradients: a key/value scale (ones) and a logit bias (zeros, a log-mask).

        They act after the pre-norm LayerNorm, which cancels a whole-token mask, so their
        gradients can rank deep prompts. The forward is unchanged while they are open."""
        if self.visual_prompts is None:
            raise ValueError("the model has no visual prompts to probe")
        shape = (self._probed_blocks(), self.prompt_len)
        device = self.visual_prompts.device
        self._column_probes = ColumnProbe(
            torch.ones(shape, device=device, requires_grad=True),
            torch.zeros(shape, device=device, requires_grad=True))
        try:
            yield self._column_probes
        finally:
            self._column_probes = None

    def _prompt_probe(self, block: int) -> ColumnProbe | None:
        """Block `block`'s probes of the prompt tokens it holds (only the kept ones in
        `remove` mode), or None while `column_probes()` is closed."""
        if self._column_probes is None:
            return None
        layer = block if self.config.deep_prompts else 0
        tokens = (self.layer_kept_tokens()[layer] if self.config.prune_mode == "remove"
                  else slice(None))
        return ColumnProbe(*(probe[block][tokens] for probe in self._column_probes))

    # ------------------------------------------------------------------ summaries
    def backbone_parameter_count(self) -> int:
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
        s = self.parameter_summary()
        print(
            f"trainable params: {s['trainable_params']:,} || backbone params: "
            f"{s['backbone_params']:,} || trainable%: {s['trainable_percent']:.4f} || "
            f"effective params after pruning: {s['effective_params']:,}"
        )

    # -------------------------------------------------------------------- compact
    def compact(self) -> nn.Module:
        """A model holding only the kept prompt tokens (same logits as `remove` mode).

        With masks per block, layers may keep different numbers of tokens: each layer's
        are packed to the front of max_l P'_l slots, the empty slots are masked, and the
        compacted model runs in `remove` mode, which drops them. The backbone module is
        shared with this model, not copied.
        """
        kept = self.layer_kept_tokens()
        width = max(len(index) for index in kept) if self.visual_prompts is not None else 0
        config = self.config.replace(visual_prompt_len=width)
        if not width:
            config = config.replace(masks_per_block=False)
        elif self.masks_per_block:
            config = config.replace(prune_mode="remove")
        compacted = type(self)(self.backbone, self.num_classes, config, self.backbone_name)
        compacted.backbone_source = dict(self.backbone_source)
        compacted.to(device=self.token_mask.device)
        state = {
            name: tensor for name, tensor in self.state_dict().items()
            if not name.startswith("backbone.")
        }
        if self.visual_prompts is not None:
            del state["visual_prompts"]
            state.update(self._packed_prompts(kept, width))
        result = compacted.load_state_dict(state, strict=False)
        if result.unexpected_keys or any(
            not key.startswith("backbone.") for key in result.missing_keys
        ):
            raise RuntimeError(f"compact() state mismatch: {result}")
        compacted.train(self.training)
        return compacted

    def _packed_prompts(self, kept: list[torch.Tensor], width: int) -> dict[str, torch.Tensor]:
        """`visual_prompts` (L, width, d) and masks holding only the kept tokens, each
        layer's first; no `visual_prompts` when nothing is kept."""
        prompts = self.visual_prompts.detach()
        token, segment = self.token_mask.detach(), self.segment_mask.detach()
        if not width:
            return {"token_mask": token.new_zeros(0),
                    "segment_mask": segment.new_zeros(0, segment.shape[-1])}
        if not self.masks_per_block:
            return {"visual_prompts": prompts[:, kept[0]], "token_mask": token[kept[0]],
                    "segment_mask": segment[kept[0]]}
        layers, _, dim = prompts.shape
        packed = {"visual_prompts": prompts.new_zeros(layers, width, dim),
                  "token_mask": token.new_zeros(layers, width),
                  "segment_mask": segment.new_zeros(layers, width, segment.shape[-1])}
        for layer, index in enumerate(kept):
            count = len(index)
            packed["visual_prompts"][layer, :count] = prompts[layer, index]
            packed["token_mask"][layer, :count] = token[layer, index]
            packed["segment_mask"][layer, :count] = segment[layer, index]
        return packed
