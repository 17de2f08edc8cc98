"""`PromptedViT`: E²VPT and its baselines around a frozen timm VisionTransformer.

Token order entering block 0: [prefix tokens (CLS, registers), P visual prompts, patches].
Deep prompts replace the P prompt positions before every block; key-value prompts are joined
to the keys and values inside every attention. Prompts never get a positional embedding and
are stripped before the final norm and pooling.
"""

from __future__ import annotations

import math

import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from ..config import PromptConfig
from .common import PromptedModel
from .layers import (
    Adapter,
    ColumnProbe,
    Rows,
    check_standard_block,
    init_kv_prompts,
    init_visual_prompts,
    make_head,
    prompted_block_forward,
)
from .peft_layers import SSF, AdapterPlus, block_tuners


class PromptedViT(PromptedModel):
    """A prompt-tuned (or otherwise parameter-efficiently tuned) timm ViT.

    The backbone is frozen except where the method says otherwise (`partial-1`, `bias`,
    `full`) and always stays in eval mode, so backbone dropout and drop-path are off;
    only the prompt dropout is active in training. Rows of a block's output that nothing
    reads are not computed (`skip_unread_tokens`; off, every block computes every token).
    `lora` and `ssf` keep their modules in
    `tuners` (one `BlockTuner` per block), `ssf` also `ssf_patch_embed` and `ssf_norm`;
    `adapter-plus` keeps one `AdapterPlus` per block in `post_adapters`.
    """

    skip_unread_tokens = True

    def __init__(
        self,
        backbone: VisionTransformer,
        num_classes: int,
        config: PromptConfig,
        backbone_name: str | None = None,
    ) -> None:
        if not isinstance(backbone, VisionTransformer):
            raise ValueError(
                f"unsupported backbone {type(backbone).__name__}: PromptedViT needs a timm "
                "VisionTransformer"
            )
        depth = len(backbone.blocks)
        prompt_layers = depth if config.deep_prompts else 1
        super().__init__(backbone, num_classes, config, backbone_name, prompt_layers)
        self.num_prefix_tokens = backbone.num_prefix_tokens
        width = backbone.embed_dim

        if config.has_visual_prompts and width % config.num_segments:
            raise ValueError(
                f"PromptConfig.num_segments={config.num_segments} must divide the backbone "
                f"width {width}"
            )
        spec = config.spec
        if not spec.supports("vit"):
            raise ValueError(f"method {config.method!r} is not implemented for ViT backbones")
        if config.has_kv_prompts or spec.block_modules == "adapter":
            need = "key-value prompts" if config.has_kv_prompts else "the adapter method"
            for index, block in enumerate(backbone.blocks):
                check_standard_block(block, index, need)

        self.head = make_head(spec.head, width, num_classes, config.mlp_hidden_dim,
                              config.head_init)

        prompt_len = config.visual_prompt_len
        self.visual_prompts: nn.Parameter | None = None
        if prompt_len:
            self.visual_prompts = nn.Parameter(torch.empty(prompt_layers, prompt_len, width))
            patch_area = math.prod(backbone.patch_embed.patch_size)
            in_chans = backbone.patch_embed.proj.in_channels
            init_visual_prompts(self.visual_prompts, config.visual_init, patch_area, in_chans)

        self.kv_prompts: nn.Parameter | None = None
        self.kv_value_prompts: nn.Parameter | None = None
        if config.has_kv_prompts:
            attn = backbone.blocks[0].attn
            shape = (depth, attn.num_heads, config.kv_prompt_len, attn.head_dim)
            self.kv_prompts = nn.Parameter(torch.empty(shape))
            init_kv_prompts(self.kv_prompts, config.kv_init)
            if config.kv_sharing == "separate":
                self.kv_value_prompts = nn.Parameter(torch.empty(shape))
                init_kv_prompts(self.kv_value_prompts, config.kv_init)

        self.adapters: nn.ModuleList | None = None
        if spec.block_modules == "adapter":
            self.adapters = nn.ModuleList(
                Adapter(width, config.adapter_bottleneck) for _ in range(depth)
            )
        self.tuners = block_tuners(backbone.blocks, config)
        ssf = spec.block_modules == "ssf"
        self.ssf_patch_embed = SSF(width) if ssf else None
        self.ssf_norm = SSF(backbone.num_features) if ssf else None
        self.post_adapters: nn.ModuleList | None = None
        if spec.block_modules == "adapter-plus":
            self.post_adapters = nn.ModuleList(
                AdapterPlus(width, config.adapter_bottleneck, config.adapter_drop_path)
                for _ in range(depth)
            )
        self._standard_blocks = all(type(block) is Block and type(block.attn) is Attention
                                    for block in backbone.blocks)
        self._select_trainable()
        self.backbone.eval()

    # ------------------------------------------------------- hooks of the base
    def _partial_tuning_prefixes(self) -> tuple[str, ...]:
        return (f"blocks.{len(self.backbone.blocks) - 1}.", "norm.", "fc_norm.")

    def _prompt_width(self) -> int:
        return self.backbone.embed_dim

    def _probed_blocks(self) -> int:
        for index, block in enumerate(self.backbone.blocks):
            check_standard_block(block, index, "column probes")
        return len(self.backbone.blocks)

    def _block_probe(self, index: int, length: int, num_prompts: int) -> ColumnProbe | None:
        """Block `index`'s probe over its `length` columns: the prompt tokens' probes,
        identity on the prefix and the patches."""
        prompt = self._prompt_probe(index)
        if prompt is None or not num_prompts:
            return None
        prefix, rest = self.num_prefix_tokens, length - self.num_prefix_tokens - num_prompts
        return ColumnProbe(
            torch.cat([prompt.scale.new_ones(prefix), prompt.scale, prompt.scale.new_ones(rest)]),
            torch.cat([prompt.bias.new_zeros(prefix), prompt.bias, prompt.bias.new_zeros(rest)]))

    # --------------------------------------------------------------------- forward
    def _kv_prompt(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.kv_prompts is None:
            return None
        keys = self.kv_prompts[index]
        values = keys if self.kv_value_prompts is None else self.kv_value_prompts[index]
        return keys, values

    def _with_prompts(self, x: torch.Tensor, prompts: torch.Tensor, replacing: int) -> torch.Tensor:
        """x with `prompts` (P_l, d) after the prefix, in place of the `replacing` prompt
        tokens it holds (layers may differ in P_l when pruned with masks per block)."""
        prefix = self.num_prefix_tokens
        prompts = self.prompt_dropout(prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1))
        return torch.cat([x[:, :prefix], prompts, x[:, prefix + replacing:]], dim=1)

    def _read_rows(self, index: int, x: torch.Tensor, num_prompts: int) -> Rows | None:
        """The rows of block `index`'s output that anything reads, or None for all of them.

        The last block feeds only the class token to a `token`-pooled head; a block whose
        prompts the next block replaces (deep prompts) or the final norm strips (the last
        block) feeds only its other rows. Every token stays a key and value, so skipping
        the rest changes no logit and no gradient, and saves their queries, projection and
        MLP. A block with a forward hook anywhere inside is run whole: the hook expects
        timm's call and every row."""
        backbone = self.backbone
        if not self.skip_unread_tokens or not self._standard_blocks:
            return None
        if any(m._forward_hooks or m._forward_pre_hooks for m in backbone.blocks[index].modules()):
            return None
        last = index == len(backbone.blocks) - 1
        if last and backbone.global_pool == "token" and backbone.attn_pool is None:
            return slice(0, 1)
        if num_prompts and (last or self.config.deep_prompts):
            prefix = self.num_prefix_tokens
            length, device = x.shape[1], x.device
            return torch.cat([torch.arange(prefix, device=device),
                              torch.arange(prefix + num_prompts, length, device=device)])
        return None

    def _block_forward(self, index: int, x: torch.Tensor, num_prompts: int,
                       rows: Rows | None = None) -> torch.Tensor:
        """Block `index` on x (B, N, d) holding `num_prompts` prompt tokens after the prefix,
        with this method's key-value prompts, adapters, probes or tuners; only the output
        `rows` when given."""
        block = self.backbone.blocks[index]
        kv_prompt = self._kv_prompt(index)
        adapter = None if self.adapters is None else self.adapters[index]
        probe = self._block_probe(index, x.shape[1], num_prompts)
        run = None if self.tuners is None else self.tuners[index].run
        plain = kv_prompt is None and adapter is None and probe is None and run is None
        if plain and rows is None:
            x = block(x)
        else:
            x = prompted_block_forward(
                block, x, kv_prompt, adapter, self.config.kv_position, probe, run, rows
            )
        return x if self.post_adapters is None else self.post_adapters[index](x)

    def forward_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised backbone output (B, d): the head's input.

        SSF's final scale and shift acts on this pooled output: for token or average
        pooling that equals acting after the final norm (it is per channel and affine)."""
        backbone = self.backbone
        x = backbone.patch_embed(images)
        if self.ssf_patch_embed is not None:
            x = self.ssf_patch_embed(x)
        x = backbone._pos_embed(x)
        x = backbone.patch_drop(x)
        x = backbone.norm_pre(x)

        prompts = [] if self.visual_prompts is None else self.layer_visual_prompts()
        num_prompts = 0  # prompt tokens now in x, after the prefix
        for index in range(len(backbone.blocks)):
            if prompts and (index == 0 or self.config.deep_prompts):
                layer_prompts = prompts[index if self.config.deep_prompts else 0]
                x = self._with_prompts(x, layer_prompts, replacing=num_prompts)
                num_prompts = layer_prompts.shape[0]
            rows = self._read_rows(index, x, num_prompts)
            x = self._run_block(self._block_forward, index, x, num_prompts, rows)
            if rows is not None:
                num_prompts = 0  # their rows were not computed
        if num_prompts:
            prefix = self.num_prefix_tokens
            x = torch.cat([x[:, :prefix], x[:, prefix + num_prompts:]], dim=1)
        x = backbone.forward_head(backbone.norm(x), pre_logits=True)
        return x if self.ssf_norm is None else self.ssf_norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_embedding(images))
