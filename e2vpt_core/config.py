"""`PromptConfig`: one dataclass describing E²VPT and every baseline it is compared with."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .methods import METHODS, Method, get_method, methods_where

# The linear layers of a ViT block LoRA may adapt (`PromptConfig.lora_targets`).
LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")
# Training augmentation (`TrainConfig.augment`, data/transforms.py): `auto` is the dataset
# kind's recipe; the others override it.
AUGMENTATIONS = ("auto", "none", "crop", "crop-flip")
# What `auto` means per dataset kind: the VTAB recipe (resize only) for generated and VTAB
# tasks, the FGVC one (random crop + horizontal flip) for FGVC, and only its crop for folder
# trees, whose classes are unknown: a mirrored digit, letter or arrow may be another class.
KIND_AUGMENTATION = {"builtin": "none", "vtab": "none", "fgvc": "crop-flip", "folder": "crop"}


def describe_kind_augmentation() -> str:
    """`auto`'s meaning in one line, for help texts: 'builtin: none, ..., folder: crop'."""
    return ", ".join(f"{kind}: {augment}" for kind, augment in KIND_AUGMENTATION.items())

_CHOICES = {
    "method": METHODS,
    "kv_sharing": ("shared", "separate"),
    "kv_position": ("before", "after"),
    "visual_init": ("vpt-uniform", "trunc-normal", "he"),
    "kv_init": ("kaiming-uniform", "trunc-normal"),
    "head_init": ("pytorch", "kaiming-normal"),
    "segment_layout": ("contiguous", "interleaved"),
    "prune_mode": ("zero", "remove"),
}

# The official code's prompt settings (docs/METHOD.md, "What the official code does
# differently"): 16 interleaved segments, masks trained as parameters in the first run,
# its head's initialisation. `TrainConfig(preset="official")` applies them.
OFFICIAL_PROMPT = {"num_segments": 16, "segment_layout": "interleaved", "trainable_masks": True,
                   "head_init": "kaiming-normal"}

# The reference code's lengths for most VTAB-1k tasks (docs/METHOD.md, "Training recipe").
DEFAULT_VISUAL_PROMPT_LEN = 10
DEFAULT_KV_PROMPT_LEN = 5


@dataclass
class PromptConfig:
    """How a frozen backbone is adapted.

    `visual_prompt_len` (P) and `kv_prompt_len` (T) default to the paper's 10 / 5 for
    the methods that use them and to 0 otherwise; setting them for a method that has no
    such prompts is an error rather than being silently ignored.

    `masks_per_block=False` shares one token mask (P) and segment mask (P, R) across the
    prompt layers, as the reference code does; `True` gives every layer its own, (L, P)
    and (L, P, R), so pruning can keep different tokens in different blocks.

    `trainable_masks=True` trains the masks with the prompts (SGD and weight decay move
    them), as the official code does in its first run (`OFFICIAL_PROMPT`).

    `head_init` is how the head starts: `pytorch` (nn.Linear's default) or `kaiming-normal`,
    the official code's (VPT's MLP head): kaiming-normal weights (fan_out, gain √2) and a
    constant last bias, −log(99); the trained head is saved, so only training depends on it.

    `lora_rank` (r), `lora_alpha` (α, update scale α/r) and `lora_targets` (comma-separated
    subset of `LORA_TARGETS`, canonical order) configure `lora`; `adapter_bottleneck` is the
    width of `adapter` and `adapter-plus` (8: Adapter+'s default on ViT-B), and
    `adapter_drop_path` the rate at which training drops `adapter-plus`'s branch per sample
    (0.1, Adapter+'s recipe). Like `adapter_bottleneck`, they are ignored by other methods.
    """

    method: str = "e2vpt"
    visual_prompt_len: int | None = None
    kv_prompt_len: int | None = None
    kv_sharing: str = "shared"
    kv_position: str = "before"
    prompt_dropout: float = 0.1
    visual_init: str = "vpt-uniform"
    kv_init: str = "kaiming-uniform"
    num_segments: int = 8
    segment_layout: str = "contiguous"
    prune_mode: str = "zero"
    masks_per_block: bool = False
    trainable_masks: bool = False
    adapter_bottleneck: int = 8
    adapter_drop_path: float = 0.1
    mlp_hidden_dim: int | None = None
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_targets: str = "qkv"
    head_init: str = "pytorch"

    def __post_init__(self) -> None:
        for field, allowed in _CHOICES.items():
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(
                    f"PromptConfig.{field}={value!r} is not allowed; choose one of {list(allowed)}"
                )
        self.visual_prompt_len = self._resolve_length(
            "visual_prompt_len", self.visual_prompt_len, "visual_prompts",
            DEFAULT_VISUAL_PROMPT_LEN,
        )
        self.kv_prompt_len = self._resolve_length(
            "kv_prompt_len", self.kv_prompt_len, "kv_prompts", DEFAULT_KV_PROMPT_LEN
        )
        for rate in ("prompt_dropout", "adapter_drop_path"):
            if not 0.0 <= getattr(self, rate) < 1.0:
                raise ValueError(
                    f"PromptConfig.{rate}={getattr(self, rate)!r} must be in [0, 1)")
        for flag in ("masks_per_block", "trainable_masks"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(
                    f"PromptConfig.{flag}={getattr(self, flag)!r} must be True or False")
        if self.masks_per_block and not self.has_visual_prompts:
            raise ValueError(
                "PromptConfig.masks_per_block=True needs visual prompts (vpt-shallow, "
                f"vpt-deep or e2vpt with visual_prompt_len > 0), not method={self.method!r} "
                f"with visual_prompt_len={self.visual_prompt_len}")
        _require_positive_int("num_segments", self.num_segments)
        _require_positive_int("adapter_bottleneck", self.adapter_bottleneck)
        if self.mlp_hidden_dim is not None:
            _require_positive_int("mlp_hidden_dim", self.mlp_hidden_dim)
        _require_positive_int("lora_rank", self.lora_rank)
        alpha = self.lora_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
                math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"PromptConfig.lora_alpha={alpha!r} must be a number > 0")
        self.lora_targets = _canonical_targets(self.lora_targets)

    def _resolve_length(self, field: str, value: int | None, trait: str, default: int) -> int:
        """A prompt length: the default where the method has such prompts (`trait` of its
        registry entry), else 0; a length given to a method without them is refused."""
        takes = getattr(self.spec, trait)
        if value is None:
            return default if takes else 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"PromptConfig.{field}={value!r} must be an integer >= 0")
        if value < 0:
            raise ValueError(f"PromptConfig.{field}={value} must be >= 0")
        if value > 0 and not takes:
            raise ValueError(
                f"PromptConfig.{field}={value} is only used by methods "
                f"{list(methods_where(**{trait: True}))}, "
                f"not by method={self.method!r}; leave it unset or 0"
            )
        return value

    @property
    def spec(self) -> Method:
        """The registry entry of `method`: what it trains and which prompts it takes."""
        return get_method(self.method)

    @property
    def has_visual_prompts(self) -> bool:
        return self.visual_prompt_len > 0

    @property
    def has_kv_prompts(self) -> bool:
        return self.kv_prompt_len > 0

    @property
    def lora_target_names(self) -> tuple[str, ...]:
        return tuple(self.lora_targets.split(","))

    @property
    def deep_prompts(self) -> bool:
        """Deep prompts are replaced before every block; shallow ones enter once."""
        return self.spec.deep_prompts

    @classmethod
    def for_method(
        cls, method: str, visual_prompt_len: int | None = None,
        kv_prompt_len: int | None = None, **fields: Any,
    ) -> PromptConfig:
        """A config that takes each prompt length only where `method` has such prompts.

        For forms and sweeps over methods, where one P and one T apply to whichever
        methods use them; `PromptConfig(...)` itself refuses a length a method cannot use.
        """
        spec = get_method(method)
        if not spec.visual_prompts:
            visual_prompt_len = None
        if not spec.kv_prompts:
            kv_prompt_len = None
        return cls(method, visual_prompt_len=visual_prompt_len, kv_prompt_len=kv_prompt_len,
                   **fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PromptConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown PromptConfig fields {unknown}; known fields: {sorted(known)}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> PromptConfig:
        return dataclasses.replace(self, **changes)


def _require_positive_int(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"PromptConfig.{field}={value!r} must be an integer >= 1")


def _canonical_targets(value: Any) -> str:
    """`lora_targets` as a comma-separated subset of LORA_TARGETS in their order, so that
    equal settings compare and serialise equal ("fc1, qkv" → "qkv,fc1")."""
    names = {name.strip() for name in value.split(",")} if isinstance(value, str) else set()
    if not names or not names <= set(LORA_TARGETS):
        raise ValueError(f"PromptConfig.lora_targets={value!r} must name one or more of "
                         f"{list(LORA_TARGETS)}, comma-separated")
    return ",".join(name for name in LORA_TARGETS if name in names)
