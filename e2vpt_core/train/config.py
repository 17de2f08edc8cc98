"""`TrainConfig`: everything that defines a training run, stored as JSON with the run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..catalog import DEFAULT_BACKBONE
from ..config import AUGMENTATIONS, OFFICIAL_PROMPT, PromptConfig

# The paper's grid (docs/METHOD.md, "Training recipe"): base learning rates and weight decays.
PAPER_LR_GRID = (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05)
PAPER_WD_GRID = (0.01, 0.001, 0.0001, 0.0)
PRESETS = ("official",)


@dataclass
class TrainConfig:
    """A run: backbone, data, method and the paper's recipe (SGD, warm-up + cosine).

    `augment` is the training augmentation: `auto` the dataset kind's recipe
    (`config.KIND_AUGMENTATION`), else `none`, `crop` or `crop-flip`.

    `seed` drives initialisation, batch order and dropout; `data_seed` picks the generated
    built-in task instance (and a folder's val split), so runs over seeds share their data;
    `init_seed` (None: `seed`) overrides the seed of the prompt and head initialisation
    alone, so a fresh-init rewind draws new values with the parent's batch order.

    `base_lr=None` takes the method's default (its registry entry's `base_lr`); the run stores
    the number, so `replace(prompt=...)` keeps it rather than re-resolving it.

    `preset="official"` is the official code's pipeline: its prompt settings and head init
    (`OFFICIAL_PROMPT`, applied here over the prompt's own), fp32 (`amp` off), the lr
    updated once per epoch (`optim.EpochWarmupCosine`), and for pruning the run the signed
    mean gradient over one pass of the shuffled, augmented training loader, counts rounded
    down (int(total · percent / 100)) and rewinds from a fresh init (`prune.rewind`).
    """

    backbone: str = DEFAULT_BACKBONE
    checkpoint: str | None = None
    pretrained: bool = True
    dataset: str = "builtin:digits"
    train_split: str = "train"
    augment: str = "auto"
    eval_splits: tuple[str, ...] = ("val", "test")
    prompt: PromptConfig = field(default_factory=PromptConfig)
    epochs: int = 100
    warmup_epochs: float | None = None
    base_lr: float | None = None
    weight_decay: float = 0.0001
    momentum: float = 0.9
    batch_size: int = 64
    seed: int = 0
    data_seed: int = 0
    init_seed: int | None = None
    grad_clip: float | None = None
    num_workers: int | None = None
    device: str = "auto"
    amp: bool = True
    # Recompute each block's activations in backward (`set_grad_checkpointing`): less
    # memory, about one more forward per step, the same results.
    grad_checkpointing: bool = False
    log_every: int = 1
    importance_every: int = 10
    # Rewinding (pruning): fixed 0/1 masks, and optionally the `init` tensors of an earlier
    # run as starting values (lottery-ticket rewinding); None means a fresh random init.
    # Nested lists shaped like the model's masks: (P,) and (P, R), or with masks per
    # block (L, P) and (L, P, R).
    token_mask: list | None = None
    segment_mask: list | None = None
    init_from_run: str | None = None
    preset: str | None = None
    # The seed group the run belongs to (`store.groups`): runs equal but for `seed`, read
    # as mean ± sd. None for a run on its own; it never changes what is trained.
    group_id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.prompt, dict):
            self.prompt = PromptConfig.from_dict(self.prompt)
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"TrainConfig.preset={self.preset!r} is not allowed; choose one "
                             f"of {list(PRESETS)} or None")
        if self.preset == "official":
            self.amp = False  # the official code trains in fp32
            if self.token_mask is None:  # rewinds fix their masks
                self.prompt = self.prompt.replace(**OFFICIAL_PROMPT)
        if self.base_lr is None:
            self.base_lr = self.prompt.spec.base_lr
        self.eval_splits = tuple(self.eval_splits)
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"TrainConfig.augment={self.augment!r} is not allowed; choose one "
                             f"of {list(AUGMENTATIONS)}")
        for name in ("base_lr", "weight_decay", "momentum", "warmup_epochs", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float))
                                          and math.isfinite(value)):
                raise ValueError(f"TrainConfig.{name}={value!r} must be a finite number")
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "base_lr": self.base_lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "momentum": 0 <= self.momentum < 1,
            "log_every": self.log_every >= 1,
            "importance_every": self.importance_every >= 1,
            "num_workers": self.num_workers is None or self.num_workers >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} is out of range")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"TrainConfig.warmup_epochs={self.warmup_epochs} must be in [0, epochs)")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip={self.grad_clip} must be > 0")

    @property
    def prompt_init_seed(self) -> int:
        """The seed of the prompt and head initialisation: `init_seed`, else `seed`."""
        return self.seed if self.init_seed is None else self.init_seed

    @property
    def warmup(self) -> float:
        """The paper warms up for 10 of 100 epochs; shorter runs keep that 10 %."""
        return self.warmup_epochs if self.warmup_epochs is not None else 0.1 * self.epochs

    def lr(self) -> float:
        """The paper's linear scaling: lr = base_lr × batch_size / 256."""
        return self.base_lr * self.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["prompt"] = self.prompt.to_dict()
        values["eval_splits"] = list(self.eval_splits)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
