"""Column probes on the prompt tokens' attention, since a token mask cannot rank deep prompts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..config import PromptConfig
from .layers import ColumnProbe


class ColumnProbeMixin:
    """`column_probes()` and each block's share of them (`_prompt_probe()`).

    The model provides `config`, `visual_prompts`, `prompt_len`, `layer_kept_tokens()` (the
    masks) and `_probed_blocks()`, and passes `_prompt_probe(block)` to its blocks."""

    config: PromptConfig
    visual_prompts: nn.Parameter | None
    prompt_len: int
    layer_kept_tokens: Callable[[], list[torch.Tensor]]
    # (blocks, P) key/value scales and logit biases while `column_probes()` is open.
    _column_probes: ColumnProbe | None = None

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
