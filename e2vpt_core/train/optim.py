"""The paper's optimiser and schedule: SGD with momentum, linear warm-up from 0, cosine."""

from __future__ import annotations

import math

import torch
from timm.scheduler import CosineLRScheduler

from ..models.vit import PromptedViT
from .config import TrainConfig


def decays(name: str) -> bool:
    """Weight decay pulls a tensor to 0: right for prompts and weights, wrong for the head's
    biases (the reference code skips them) and for the channel scales of SSF and Adapter+,
    which start at 1 and would be shrunk toward switching their branch off."""
    return not ((name.startswith("head.") and name.endswith("bias")) or name.endswith(".scale"))


def build_optimizer(model: PromptedViT, config: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum; weight decay where `decays` says."""
    decay, no_decay = [], []
    for name, param in model.trainable_parameters():
        (decay if decays(name) else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=config.lr(),
                           momentum=config.momentum)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> CosineLRScheduler:
    """Per-step schedule (timm): lr·s/W during warm-up, then lr·½(1 + cos(π(s−W)/(S−W)))."""
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=0.0,
        warmup_t=warmup_steps,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        cycle_limit=1,
        t_in_epochs=False,
    )


def epoch_lr_factor(epoch: int, warmup: float, epochs: int) -> float:
    """The official code's lr factor for an epoch (VPT's warm-up cosine, stepped once per
    epoch): epoch / max(1, W) during the W warm-up epochs, so epoch 0 runs at lr 0; then
    ½(1 + cos(π·p)) with p = (epoch − W) / max(1, E − W)."""
    if epoch < warmup:
        return epoch / max(1.0, warmup)
    progress = (epoch - warmup) / max(1.0, epochs - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class EpochWarmupCosine:
    """`epoch_lr_factor` of each step's epoch times the lr the optimizer was built with:
    the lr changes only between epochs. Like timm's `step_update`, the lr follows from the
    global step alone, so a resumed run gets the same lr."""

    def __init__(self, optimizer: torch.optim.Optimizer, epochs: int, warmup: float,
                 steps_per_epoch: int) -> None:
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.epochs, self.warmup = epochs, warmup
        self.steps_per_epoch = max(1, steps_per_epoch)

    def step_update(self, num_updates: int) -> None:
        factor = epoch_lr_factor(num_updates // self.steps_per_epoch, self.warmup, self.epochs)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor


def build_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> CosineLRScheduler | EpochWarmupCosine:
    """The run's schedule: per step (the toolkit's), or per epoch under the official preset."""
    if config.preset == "official":
        return EpochWarmupCosine(optimizer, config.epochs, config.warmup, steps_per_epoch)
    return build_scheduler(optimizer, config.epochs * steps_per_epoch,
                           round(config.warmup * steps_per_epoch))
