"""The method registry: what each method trains, which prompts it takes, where it runs.

One entry per method. The models, preflight, the CLI, the app and the budget page read these
entries instead of comparing method names, so adding a method is one entry here plus its
layers in `models/`. Plain data, no torch: forms and help texts read it for free.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKBONE_PARAMS = ("none", "all", "last-block", "biases")
HEADS = ("linear", "mlp")
BLOCK_MODULES = ("adapter", "adapter-plus", "lora", "ssf")
FAMILIES = ("vit", "swin")


@dataclass(frozen=True)
class Method:
    """One method. `backbone_params`: which backbone weights train (`none`, `all`,
    `last-block`: the last block and the final norms, `biases`); `block_modules`: the
    modules it adds to every block; `options`: the `PromptConfig` fields it reads besides
    the prompt lengths; `base_lr`: its default base learning rate (× batch / 256)."""

    name: str
    title: str
    summary: str
    backbone_params: str = "none"
    head: str = "linear"
    visual_prompts: bool = False
    kv_prompts: bool = False
    deep_prompts: bool = False
    block_modules: str | None = None
    families: tuple[str, ...] = FAMILIES
    base_lr: float = 0.1
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field, value, allowed in (
                ("backbone_params", self.backbone_params, BACKBONE_PARAMS),
                ("head", self.head, HEADS),
                ("block_modules", self.block_modules, (None, *BLOCK_MODULES))):
            if value not in allowed:
                raise ValueError(f"method {self.name!r}: {field}={value!r} is not one of "
                                 f"{list(allowed)}")
        if not set(self.families) <= set(FAMILIES):
            raise ValueError(f"method {self.name!r}: families {self.families} not in {FAMILIES}")
        if (self.kv_prompts or self.deep_prompts) and not self.visual_prompts:
            raise ValueError(f"method {self.name!r}: key-value or deep prompts come with "
                             "visual prompts")

    @property
    def prunable(self) -> bool:
        """Pruning (importance, masks, rewinds) acts on visual prompts."""
        return self.visual_prompts

    @property
    def head_only(self) -> bool:
        """Only a head trains on frozen features: no gradient flows into the backbone."""
        return (self.backbone_params == "none" and not self.visual_prompts
                and self.block_modules is None)

    def supports(self, family: str) -> bool:
        return family in self.families


# Prompts on a frozen backbone take larger steps than heads and weights do: on the bundled
# backbone 0.5 beats 0.1 on val for both deep prompt methods (docs/BENCHMARKS.md, "A default
# learning rate per method"); every other method keeps 0.1.
_PROMPT_LR = 0.5

REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("linear", "Linear probe", "a linear head on the frozen backbone's features"),
    Method("partial-1", "Partial-1", "the head, the last block and the final norms",
           backbone_params="last-block"),
    Method("mlp-3", "MLP-3", "a three-layer MLP head on frozen features", head="mlp",
           options=("mlp_hidden_dim",)),
    Method("bias", "Bias", "the head and every bias of the backbone (BitFit)",
           backbone_params="biases"),
    Method("adapter", "Adapter", "the head and a bottleneck adapter after every block's MLP",
           block_modules="adapter", options=("adapter_bottleneck",)),
    Method("adapter-plus", "Adapter+", "the head and a scaled adapter after every block "
           "(Steitz & Roth, 2024)", block_modules="adapter-plus",
           options=("adapter_bottleneck", "adapter_drop_path")),
    Method("lora", "LoRA", "the head and low-rank updates of the chosen linear layers",
           block_modules="lora", families=("vit",),
           options=("lora_rank", "lora_alpha", "lora_targets")),
    Method("ssf", "SSF", "the head and a scale and shift after every op", block_modules="ssf",
           families=("vit",)),
    Method("vpt-shallow", "VPT-shallow", "the head and P prompts entering the first block",
           visual_prompts=True),
    Method("vpt-deep", "VPT-deep", "the head and P prompts in every block",
           visual_prompts=True, deep_prompts=True, base_lr=_PROMPT_LR),
    Method("e2vpt", "E²VPT", "the head, P prompts in every block and T key-value prompts "
           "in every attention", visual_prompts=True, kv_prompts=True, deep_prompts=True,
           base_lr=_PROMPT_LR),
    Method("full", "Full fine-tuning", "every weight", backbone_params="all"),
)}

METHODS: tuple[str, ...] = tuple(REGISTRY)


def get_method(name: str) -> Method:
    """The registry entry of `name`; ValueError naming the choices when there is none."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose one of {list(METHODS)}") from None


def methods_where(**traits: object) -> tuple[str, ...]:
    """The names of the methods whose entries have every trait given, in registry order:
    `methods_where(visual_prompts=True)`."""
    return tuple(name for name, method in REGISTRY.items()
                 if all(getattr(method, trait) == value for trait, value in traits.items()))


def methods_for(family: str) -> tuple[str, ...]:
    """The names of the methods implemented for a backbone family (`vit`, `swin`)."""
    return tuple(name for name, method in REGISTRY.items() if method.supports(family))


def describe_default_base_lr() -> str:
    """The per-method default base lr in one line, for help texts."""
    by_lr: dict[float, list[str]] = {}
    for method in REGISTRY.values():
        by_lr.setdefault(method.base_lr, []).append(method.name)
    common = max(by_lr, key=lambda lr: len(by_lr[lr]))
    special = [f"{lr} for {' and '.join(names)}" for lr, names in by_lr.items() if lr != common]
    return ", ".join([*special, f"{common} for every other method"])
