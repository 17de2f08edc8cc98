"""Building blocks of prompted ViTs that call into a timm block's own submodules.

The backbone's modules are used as they are (same weights, same state-dict keys); only the
order of calls is written out here, so that key-value prompts, adapters and the per-op
tuners of `peft_layers` (LoRA, SSF) can be inserted without touching timm's classes.

A `run(name, module, x)` callable applies one named op of a block (`norm1`, `qkv`, `proj`,
`norm2`, `fc1`, `fc2`): `call_op` calls the module as it is, `BlockTuner.run` adds its tuner.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import Attention, Mlp
from timm.models.vision_transformer import Block
from torch import nn


def expand_segment_mask(segment_mask: torch.Tensor, width: int, layout: str) -> torch.Tensor:
    """(…, P, R) segment mask → (…, P, width) mask over prompt dimensions.

    `contiguous`: segment j covers dims [j·w/R, (j+1)·w/R). `interleaved` (the reference
    code): segment j covers dims {j, j+R, j+2R, …}.
    """
    num_segments = segment_mask.shape[-1]
    repeats = width // num_segments
    if layout == "contiguous":
        return segment_mask.repeat_interleave(repeats, dim=-1)
    if layout == "interleaved":
        return segment_mask.repeat(*([1] * (segment_mask.dim() - 1)), repeats)
    raise ValueError(f"unknown segment_layout {layout!r}; choose 'contiguous' or 'interleaved'")


def segment_of_dim(width: int, num_segments: int, layout: str) -> torch.Tensor:
    """Segment index of every prompt dimension, shape (width,)."""
    dims = torch.arange(width)
    if layout == "contiguous":
        return dims // (width // num_segments)
    return dims % num_segments


OpRunner = Callable[[str, nn.Module, torch.Tensor], torch.Tensor]
# Token rows a block computes outputs for: a slice, or indices along the sequence.
Rows = slice | torch.Tensor


def select_rows(x: torch.Tensor, rows: Rows, dim: int) -> torch.Tensor:
    """x's `rows` along `dim` (a view for a slice, a copy for indices)."""
    if isinstance(rows, slice):
        return x[(slice(None),) * dim + (rows,)]
    return x.index_select(dim, rows)


def call_op(name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The `OpRunner` of an untuned block: the module as it is."""
    return module(x)


class ColumnProbe(NamedTuple):
    """Per-column probes of one attention, (N,) each, for importance scores that act after
    the pre-norm LayerNorm: `scale` multiplies each column's key and value, `bias` is added
    to each column's attention logits (a log-mask: -inf removes the column)."""

    scale: torch.Tensor
    bias: torch.Tensor


def kv_prompted_attention(
    attn: Attention,
    x: torch.Tensor,
    key_prompt: torch.Tensor | None,
    value_prompt: torch.Tensor | None,
    position: str = "before",
    probe: ColumnProbe | None = None,
    run: OpRunner = call_op,
    rows: Rows | None = None,
) -> torch.Tensor:
    """timm `Attention.forward` with prompts joined to the keys and values.

    x: (B, N, C); key_prompt / value_prompt: (H, T, d_h) or None, already in key/value
    space (after the qkv projection and the head split, no norm applied). Queries are
    untouched, so the output keeps length N, or only the query `rows` when given (every
    token stays a key and value). `probe` acts on x's own N columns; `run` applies the
    `qkv` and `proj` linears.
    """
    batch, length, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    qkv = run("qkv", attn.qkv, x).reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B, H, N, d_h)
    if rows is not None:
        q, x = select_rows(q, rows, dim=2), select_rows(x, rows, dim=1)  # (B, H, N_q, d_h)
    queries = x.shape[1]
    gate = getattr(attn, "gate", None)
    gate = gate(x).sigmoid() if gate is not None else None
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = None
    if probe is not None:
        scale = probe.scale.to(k.dtype)[:, None]
        k, v, bias = k * scale, v * scale, probe.bias.to(q.dtype)

    if key_prompt is not None:
        key_prompt = key_prompt.to(k.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        value_prompt = value_prompt.to(v.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        pad = None if bias is None else bias.new_zeros(key_prompt.shape[2])
        if position == "before":
            k, v = torch.cat([key_prompt, k], dim=2), torch.cat([value_prompt, v], dim=2)
            bias = None if bias is None else torch.cat([pad, bias])
        else:
            k, v = torch.cat([k, key_prompt], dim=2), torch.cat([v, value_prompt], dim=2)
            bias = None if bias is None else torch.cat([bias, pad])

    if bias is not None:
        bias = bias.expand(queries, -1)  # (N_q, S): every query, the same column biases
    dropout = attn.attn_drop.p if attn.training else 0.0
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    x = x.transpose(1, 2).reshape(batch, queries, heads * head_dim)  # (B, N_q, C)
    x = attn.norm(x)
    if gate is not None:
        x = x * gate
    return attn.proj_drop(run("proj", attn.proj, x))


def mlp_forward(mlp: Mlp, x: torch.Tensor, run: OpRunner) -> torch.Tensor:
    """timm `Mlp.forward` with `fc1` and `fc2` applied through `run`."""
    h = mlp.norm(mlp.drop1(mlp.act(run("fc1", mlp.fc1, x))))
    return mlp.drop2(run("fc2", mlp.fc2, h))


def prompted_block_forward(
    block: Block,
    x: torch.Tensor,
    kv_prompt: tuple[torch.Tensor, torch.Tensor] | None,
    adapter: nn.Module | None,
    kv_position: str,
    probe: ColumnProbe | None = None,
    run: OpRunner | None = None,
    rows: Rows | None = None,
) -> torch.Tensor:
    """timm `Block.forward` (pre-norm, layer scale, drop path) with KV prompts, an adapter,
    column probes and per-op tuners (`run`, which needs timm's `Mlp`).

    With `rows`, only those tokens' outputs are computed (B, N_q, C): every token is still
    a key and value, and every op after the attention acts per token, so the kept rows are
    exactly what the full block gives them."""
    op = call_op if run is None else run
    h = op("norm1", block.norm1, x)
    if kv_prompt is None and probe is None and run is None and rows is None:
        h = block.attn(h)
    else:
        keys, values = kv_prompt if kv_prompt is not None else (None, None)
        h = kv_prompted_attention(block.attn, h, keys, values, kv_position, probe, op, rows)
        if rows is not None:
            x = select_rows(x, rows, dim=1)
    x = x + block.drop_path1(block.ls1(h))
    h = op("norm2", block.norm2, x)
    h = block.mlp(h) if run is None else mlp_forward(block.mlp, h, op)
    if adapter is not None:
        h = adapter(h)
    return x + block.drop_path2(block.ls2(h))


def check_standard_block(block: nn.Module, index: int, needs: str) -> None:
    """KV prompts and adapters re-sequence timm's `Block`; other block types are refused."""
    if type(block) is not Block:
        raise ValueError(
            f"{needs} needs timm's standard vision_transformer.Block; block {index} is "
            f"{type(block).__name__}"
        )
    if type(block.attn) is not Attention:
        raise ValueError(
            f"{needs} needs timm's standard Attention; block {index} uses "
            f"{type(block.attn).__name__}"
        )


class Adapter(nn.Module):
    """Bottleneck adapter on a block's MLP output (Pfeiffer placement), identity at init."""

    def __init__(self, width: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


# The official code's head bias: −log((1 − p) / p) for a prior probability p = 0.01.
OFFICIAL_HEAD_BIAS = -math.log((1 - 0.01) / 0.01)


def make_head(kind: str, width: int, num_classes: int, mlp_hidden_dim: int | None,
              init: str = "pytorch") -> nn.Module:
    """The head a method's registry entry names: `linear`, or `mlp`, three layers; `init`
    is `PromptConfig.head_init`."""
    if kind == "linear":
        head: nn.Module = nn.Linear(width, num_classes)
    else:
        hidden = mlp_hidden_dim or width
        head = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
    init_head(head, init)
    return head


def init_head(head: nn.Module, scheme: str) -> None:
    """In place. `pytorch` keeps nn.Linear's default; `kaiming-normal` is the official
    code's (VPT's MLP head): every linear layer's weight N(0, 2 / fan_out), the last
    layer's bias `OFFICIAL_HEAD_BIAS` (a constant shift of the logits)."""
    if scheme == "pytorch":
        return
    if scheme != "kaiming-normal":
        raise ValueError(f"unknown head_init {scheme!r}")
    linears = [module for module in head.modules() if isinstance(module, nn.Linear)]
    with torch.no_grad():
        for linear in linears:
            nn.init.kaiming_normal_(linear.weight, a=0, mode="fan_out")
        nn.init.constant_(linears[-1].bias, OFFICIAL_HEAD_BIAS)


def init_visual_prompts(prompts: torch.Tensor, scheme: str, patch_area: int, in_chans: int) -> None:
    """In place. `vpt-uniform`: U(-v, v), v = sqrt(6 / (C·patch² + d)) as in VPT."""
    width = prompts.shape[-1]
    with torch.no_grad():
        if scheme == "vpt-uniform":
            bound = math.sqrt(6.0 / (in_chans * patch_area + width))
            prompts.uniform_(-bound, bound)
        elif scheme == "trunc-normal":
            nn.init.trunc_normal_(prompts, std=0.02)
        elif scheme == "he":
            prompts.normal_(0.0, math.sqrt(2.0 / width))
        else:
            raise ValueError(f"unknown visual_init {scheme!r}")


def init_kv_prompts(prompts: torch.Tensor, scheme: str) -> None:
    """In place, per block. Kaiming-uniform on an (H, T, d_h) tensor has fan_in = T·d_h."""
    with torch.no_grad():
        for layer_prompt in prompts:
            if scheme == "kaiming-uniform":
                nn.init.kaiming_uniform_(layer_prompt)
            elif scheme == "trunc-normal":
                nn.init.trunc_normal_(layer_prompt, std=0.02)
            else:
                raise ValueError(f"unknown kv_init {scheme!r}")
