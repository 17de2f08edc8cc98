"""The paper's optimiser and schedule: SGD with momentum, linear warm-up from 0, cosine."""

from __future__ import annotations

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
