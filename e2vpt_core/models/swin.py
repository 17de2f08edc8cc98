"""`PromptedSwin`: E²VPT and its baselines around a frozen timm SwinTransformer.

Same public surface as `PromptedViT`, adapted to a hierarchy of stages (docs/METHOD.md,
"Backbones"):

- Visual prompts live next to the patch grid, not in it: inside every block they are copied
  into every window (in front of the window's tokens) and their outputs are averaged over the
  windows. `visual_prompts` holds the FIRST stage's prompts, (depth₀, P, d₀) for the deep
  methods and (1, P, d₀) for `vpt-shallow` (the tensor the masks act on, so rewinding and
  importance code written for ViT applies unchanged); `later_visual_prompts[s - 1]` holds
  stage s's (depth_s, P, d_s) for the deep methods (empty otherwise). `stage_prompts()`
  lists all stages.
  `vpt-uniform` init uses each stage's own width: v = sqrt(6 / (3·patch² + d_s)).
- Deep methods replace the prompts before every block, so at a stage boundary the previous
  stage's prompts are simply replaced by the next stage's own (as VPT-deep on Swin does).
  `vpt-shallow` prompts enter block 0 once and are carried through; at patch merging they are
  merged like patches (each prompt fills its own 2×2 neighbourhood).
- `kv_prompts[s][b]` is block b of stage s: (H_s, T, d_h) in that block's key/value space.
- `token_mask` (P) and `segment_mask` (P×R) prune the first stage's prompts only (R must
  divide d₀; with `masks_per_block`, (depth₀, P) and (depth₀, P, R)); later stages keep
  all P prompts. `prune_mode="remove"` drops pruned tokens
  from the first stage; `compact()` exists for `vpt-shallow` only, since one `PromptConfig`
  length cannot describe P' first-stage and P later-stage prompts.
- The head sits on the global average over the patch tokens after the final norm (timm's
  own pooling); prompts never reach it.
- `adapter-plus` puts one `AdapterPlus` on every block's output (`post_adapters[s][b]`);
  methods whose registry entry names only ViTs (`lora`, `ssf`) are refused here.
"""

from __future__ import annotations

import math

import torch
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from ..config import PromptConfig
from ..methods import methods_for
from .common import PromptedModel
from .layers import (
    Adapter,
    init_kv_prompts,
    init_visual_prompts,
    make_head,
)
from .peft_layers import AdapterPlus
from .swin_layers import check_patch_merging, check_swin_block, merge_prompts, prompted_swin_block


class PromptedSwin(PromptedModel):
    """A prompt-tuned (or otherwise parameter-efficiently tuned) timm Swin Transformer.

    The backbone is frozen except where the method says otherwise (`partial-1`: the last
    stage's last block and the final norm; `bias`; `full`) and always stays in eval mode.
    """

    def __init__(
        self,
        backbone: SwinTransformer,
        num_classes: int,
        config: PromptConfig,
        backbone_name: str | None = None,
    ) -> None:
        if not isinstance(backbone, SwinTransformer):
            raise ValueError(
                f"unsupported backbone {type(backbone).__name__}: PromptedSwin needs a timm "
                "SwinTransformer"
            )
        spec = config.spec
        if not spec.supports("swin"):
            raise ValueError(
                f"method {config.method!r} is implemented for ViT backbones (timm "
                f"VisionTransformer) only, not for Swin; on Swin use one of "
                f"{list(methods_for('swin'))}"
            )
        first_layers = len(backbone.layers[0].blocks) if config.deep_prompts else 1
        super().__init__(backbone, num_classes, config, backbone_name, first_layers)
        self.stage_depths = [len(stage.blocks) for stage in backbone.layers]
        self.stage_widths = [stage.blocks[0].dim for stage in backbone.layers]
        self._check_backbone()

        self.head = make_head(spec.head, backbone.num_features, num_classes,
                              config.mlp_hidden_dim, config.head_init)

        prompt_len = config.visual_prompt_len
        self.visual_prompts: nn.Parameter | None = None
        self.later_visual_prompts = nn.ParameterList()
        if prompt_len:
            self.visual_prompts = self._new_visual_prompts(first_layers, self.stage_widths[0])
            if config.deep_prompts:
                for depth, width in zip(self.stage_depths[1:], self.stage_widths[1:], strict=True):
                    self.later_visual_prompts.append(self._new_visual_prompts(depth, width))

        self.kv_prompts: nn.ParameterList | None = None
        self.kv_value_prompts: nn.ParameterList | None = None
        if config.has_kv_prompts:
            self.kv_prompts = self._new_kv_prompts()
            if config.kv_sharing == "separate":
                self.kv_value_prompts = self._new_kv_prompts()

        self.adapters: nn.ModuleList | None = None
        if spec.block_modules == "adapter":
            self.adapters = nn.ModuleList(
                nn.ModuleList(Adapter(width, config.adapter_bottleneck) for _ in range(depth))
                for depth, width in zip(self.stage_depths, self.stage_widths, strict=True)
            )
        self.post_adapters: nn.ModuleList | None = None
        if spec.block_modules == "adapter-plus":
            self.post_adapters = nn.ModuleList(
                nn.ModuleList(AdapterPlus(width, config.adapter_bottleneck,
                                          config.adapter_drop_path) for _ in range(depth))
                for depth, width in zip(self.stage_depths, self.stage_widths, strict=True)
            )
        self._select_trainable()
        self.backbone.eval()

    def _check_backbone(self) -> None:
        config = self.config
        if config.has_visual_prompts and self.stage_widths[0] % config.num_segments:
            raise ValueError(
                f"PromptConfig.num_segments={config.num_segments} must divide the first Swin "
                f"stage's width {self.stage_widths[0]} (pruning acts on the first stage)"
            )
        if (config.has_visual_prompts or config.has_kv_prompts
                or config.spec.block_modules == "adapter"):
            need = f"method {config.method!r} with prompts or adapters"
            for s, stage in enumerate(self.backbone.layers):
                for b, block in enumerate(stage.blocks):
                    check_swin_block(block, f"layers.{s}.blocks.{b}", need)
        if config.has_visual_prompts and not config.deep_prompts:
            for s, stage in enumerate(self.backbone.layers):
                check_patch_merging(stage.downsample, f"layers.{s}.downsample")

    def _new_visual_prompts(self, layers: int, width: int) -> nn.Parameter:
        patch_embed = self.backbone.patch_embed
        prompts = nn.Parameter(torch.empty(layers, self.config.visual_prompt_len, width))
        init_visual_prompts(prompts, self.config.visual_init, math.prod(patch_embed.patch_size),
                            patch_embed.proj.in_channels)
        return prompts

    def _new_kv_prompts(self) -> nn.ParameterList:
        prompts = nn.ParameterList()
        for stage in self.backbone.layers:
            attn = stage.blocks[0].attn
            head_dim = attn.qkv.out_features // (3 * attn.num_heads)
            shape = (len(stage.blocks), attn.num_heads, self.config.kv_prompt_len, head_dim)
            tensor = nn.Parameter(torch.empty(shape))
            init_kv_prompts(tensor, self.config.kv_init)
            prompts.append(tensor)
        return prompts

    # ------------------------------------------------------- hooks of the base
    def _partial_tuning_prefixes(self) -> tuple[str, ...]:
        last_stage = len(self.backbone.layers) - 1
        return (f"layers.{last_stage}.blocks.{self.stage_depths[-1] - 1}.", "norm.")

    def _prompt_width(self) -> int:
        """The masks act on the first stage's prompts (same semantics as PromptedViT)."""
        return self.stage_widths[0]

    def _probed_blocks(self) -> int:
        """Column probes act where the masks do: in the first stage's blocks."""
        for b, block in enumerate(self.backbone.layers[0].blocks):
            check_swin_block(block, f"layers.0.blocks.{b}", "column probes")
        return self.stage_depths[0]

    # --------------------------------------------------------------------- forward
    def stage_prompts(self) -> list[list[torch.Tensor]]:
        """Per stage, per prompt layer, (P, d_s) prompts: the first stage's masked (and in
        `remove` mode only the kept tokens), later stages' as they are. Empty without
        visual prompts."""
        if self.visual_prompts is None:
            return []
        later = [list(prompts.unbind(0)) for prompts in self.later_visual_prompts]
        return [self.layer_visual_prompts(), *later]

    def _kv_prompt(self, stage: int, block: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.kv_prompts is None:
            return None
        keys = self.kv_prompts[stage][block]
        values = keys if self.kv_value_prompts is None else self.kv_value_prompts[stage][block]
        return keys, values

    def _batch_prompts(self, prompts: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        if not prompts.shape[0]:  # every first-stage token removed
            return None
        prompts = prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.prompt_dropout(prompts)

    def _block_forward(
        self, s: int, b: int, x: torch.Tensor, prompts: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Block b of stage s on the windows' tokens x and the visual prompts (or None)."""
        block = self.backbone.layers[s].blocks[b]
        kv_prompt = self._kv_prompt(s, b)
        adapter = None if self.adapters is None else self.adapters[s][b]
        probe = self._prompt_probe(b) if s == 0 else None
        if prompts is None and kv_prompt is None and adapter is None:
            x = block(x)
        else:
            x, prompts = prompted_swin_block(
                block, x, prompts, kv_prompt, adapter, self.config.kv_position, probe
            )
        if self.post_adapters is not None:
            x = self.post_adapters[s][b](x)
        return x, prompts

    def forward_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised backbone output (B, d_last): the head's input."""
        backbone, deep = self.backbone, self.config.deep_prompts
        x = backbone.patch_embed(images)
        stage_prompts = self.stage_prompts()
        prompts: torch.Tensor | None = None
        for s, stage in enumerate(backbone.layers):
            x = stage.downsample(x)
            if prompts is not None and not deep:
                prompts = merge_prompts(stage.downsample, prompts)
            for b in range(len(stage.blocks)):
                if stage_prompts and (deep or (s == 0 and b == 0)):
                    prompts = self._batch_prompts(stage_prompts[s][b], x)
                x, prompts = self._run_block(self._block_forward, s, b, x, prompts)
        x = backbone.norm(x)
        return backbone.forward_head(x, pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_embedding(images))

    # ------------------------------------------------------------------ summaries

    def backbone_signature(self) -> dict[str, object]:
        """Shapes an adapter artifact depends on; checked when it is loaded."""
        backbone = self.backbone
        return {
            "architecture": "swin",
            "embed_dim": self.stage_widths,
            "depths": self.stage_depths,
            "num_heads": [stage.blocks[0].attn.num_heads for stage in backbone.layers],
            "window_size": [list(stage.blocks[0].window_size) for stage in backbone.layers],
            "patch_size": list(backbone.patch_embed.patch_size),
        }

    # -------------------------------------------------------------------- compact
    def _check_compactable(self) -> None:
        """Only models without later-stage prompts (`vpt-shallow`, or no visual prompts)
        compact: deep methods keep P prompts in later stages, which one config length
        cannot express."""
        if len(self.later_visual_prompts):
            raise ValueError(
                "compact() on Swin supports vpt-shallow only: deep methods prune the first "
                "stage's prompts but keep P prompts in later stages; use "
                "prune_mode='remove' for the same logits"
            )
