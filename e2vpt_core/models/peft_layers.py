"""LoRA, SSF and Adapter+: the parameter-efficient methods that act on a block's ops.

As with the prompts, every tensor these methods train lives in the prompted model, never in
the backbone: timm's modules are called as they are (their state-dict keys stay timm's, the
backbone can be shared by `compact()`, an artifact holds only the trained tensors). LoRA and
SSF reach inside a block through `layers.prompted_block_forward`, whose `run(name, module,
x)` is a `BlockTuner.run`; Adapter+ acts on a block's output and needs no re-sequencing.

Hugging Face PEFT's LoRA is not used: it injects wrapper modules into the model it adapts
(the backbone's keys become `…qkv.base_layer.weight`), so the backbone is no longer timm's
and cannot be shared; it is one more dependency; and it has neither SSF nor Adapter+. The
LoRA below is the same function in a few lines.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from ..config import PromptConfig
from .layers import check_standard_block

SSF_OPS = ("norm1", "qkv", "proj", "norm2", "fc1", "fc2")


class LoRA(nn.Module):
    """Low-rank update of one frozen linear layer (Hu et al., 2022): W x + b + (α/r)·B A x.

    A is kaiming-uniform (nn.Linear's own init, as in the LoRA paper's code), B is zero, so
    the layer is unchanged until B is trained."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = alpha / rank

    def adapt(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """(α/r)·B A, the update `merge_lora` adds to the frozen weight."""
        return (self.lora_b @ self.lora_a) * self.scaling


class SSF(nn.Module):
    """Scale and shift of an op's output per channel (Lian et al., NeurIPS 2022): γ ⊙ y + β.

    γ = 1 and β = 0, so the model starts as the backbone (the SSF code draws γ ~ N(1, 0.02),
    β ~ N(0, 0.02) instead); being affine, it could be merged into the op it follows."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))
        self.shift = nn.Parameter(torch.zeros(width))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.scale + self.shift

    def adapt(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self(out)


class AdapterPlus(nn.Module):
    """Adapter+ (Steitz & Roth, CVPR 2024) in its Post position, on a block's output (after
    the FFN's residual sum) with its own skip: x + s ⊙ (W_up GELU(W_down x + b_down) + b_up).

    No layer norm inside; a learned per-channel scale s (init 1); Houlsby init (weights from
    a normal with std 0.01 truncated at ±2 std, biases 0), so a block starts near the
    identity (its output moves by products of two such weights), not exactly at it. In
    training the branch is dropped per sample at rate `drop_path` (stochastic depth on the
    adapter, as Adapter+ trains; the kept ones are scaled by 1 / (1 - rate))."""

    def __init__(self, width: int, bottleneck: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, width)
        self.scale = nn.Parameter(torch.ones(width))
        for layer in (self.down, self.up):
            nn.init.trunc_normal_(layer.weight, std=0.01, a=-0.02, b=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.up(self.act(self.down(x))) * self.scale)


class BlockTuner(nn.ModuleDict):
    """One block's LoRA or SSF modules by op name (`qkv`, `proj`, `fc1`, `fc2`, `norm1`,
    `norm2`); `run` is the block's `OpRunner`."""

    def run(self, name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = module(x)
        return self[name].adapt(x, out) if name in self else out


def block_ops(block: nn.Module) -> dict[str, nn.Module]:
    """The ops of a timm ViT block that LoRA and SSF act on, by name."""
    attn, mlp = block.attn, block.mlp
    return {"norm1": block.norm1, "qkv": attn.qkv, "proj": attn.proj, "norm2": block.norm2,
            "fc1": mlp.fc1, "fc2": mlp.fc2}


def _out_width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    return module.normalized_shape[-1]  # a LayerNorm (or timm's RmsNorm)


def block_tuners(blocks: nn.Sequential, config: PromptConfig) -> nn.ModuleList | None:
    """Per block, LoRA on `config.lora_targets` or SSF after every op; None for the other
    methods. Blocks other than timm's standard Block / Attention / Mlp are refused."""
    kind = config.spec.block_modules
    if kind == "lora":
        ops = config.lora_target_names
    elif kind == "ssf":
        ops = SSF_OPS
    else:
        return None
    tuners = nn.ModuleList()
    for index, block in enumerate(blocks):
        check_standard_block(block, index, f"method {config.method!r}")
        if {"fc1", "fc2"} & set(ops) and type(block.mlp) is not Mlp:
            raise ValueError(f"method {config.method!r} on fc1 / fc2 needs timm's Mlp; block "
                             f"{index} uses {type(block.mlp).__name__}")
        modules = {name: op for name, op in block_ops(block).items() if name in ops}
        if kind == "lora":
            tuners.append(BlockTuner({
                name: LoRA(op.in_features, op.out_features, config.lora_rank,
                           config.lora_alpha) for name, op in modules.items()}))
        else:
            tuners.append(BlockTuner({name: SSF(_out_width(op)) for name, op in modules.items()}))
    return tuners


def merge_lora(model: nn.Module) -> nn.Module:
    """A `linear`-method copy of a `lora` model whose backbone holds W + (α/r)·B A in every
    adapted linear layer, with the same head: the same logits (up to float rounding) at the
    plain backbone's inference cost. The model given is not changed.

    The merged backbone is no longer the one `backbone_name` names, so the copy has no
    name: an artifact saved from it cannot be mistaken for one on the original backbone."""
    if model.config.spec.block_modules != "lora":
        raise ValueError(f"merge_lora needs a model of method 'lora', not {model.config.method!r}")
    backbone = copy.deepcopy(model.backbone)
    with torch.no_grad():
        for block, tuner in zip(backbone.blocks, model.tuners, strict=True):
            ops = block_ops(block)
            for name, lora in tuner.items():
                ops[name].weight += lora.delta_weight().to(ops[name].weight.dtype)
    merged = type(model)(backbone, model.num_classes, model.config.replace(method="linear"))
    merged.to(device=model.head.weight.device, dtype=model.head.weight.dtype)
    merged.head.load_state_dict(model.head.state_dict())
    merged.train(model.training)
    return merged
