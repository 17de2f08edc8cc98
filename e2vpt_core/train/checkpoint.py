"""Training checkpoints in the run store: trained tensors, masks and momentum buffers.

One safetensors file, replaced atomically at the end of every epoch; the epoch and step
travel as safetensors metadata. Data order and dropout are seeded per epoch, so resuming at
an epoch boundary reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import torch

from ..artifacts import trainable_state_dict
from ..models.vit import PromptedViT
from ..store import DamagedFileError, RunStore

CHECKPOINT = "checkpoint"


def save_checkpoint(
    store: RunStore, run_id: str, model: PromptedViT, optimizer: torch.optim.Optimizer,
    epoch: int, step: int,
) -> None:
    names = {id(p): name for name, p in model.trainable_parameters()}
    tensors = {f"model/{name}": tensor for name, tensor in trainable_state_dict(model).items()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            buffer = optimizer.state.get(param, {}).get("momentum_buffer")
            if buffer is not None:
                tensors[f"momentum/{names[id(param)]}"] = buffer
    store.save_tensors(run_id, CHECKPOINT, tensors,
                       metadata={"epoch": str(epoch), "step": str(step)})


def read_checkpoint(store: RunStore, run_id: str) -> tuple[dict[str, torch.Tensor], int, int]:
    """The checkpoint's tensors, epochs completed and global step. A damaged file is a
    one-line DamagedFileError naming it and the way out (`resume --restart`)."""
    restart = f"`e2vpt resume {run_id} --restart` starts the run over"
    try:
        tensors, metadata = store.load_tensors_with_metadata(run_id, CHECKPOINT)
    except DamagedFileError as error:
        raise DamagedFileError(f"{error}; {restart}") from error
    epoch, step = metadata.get("epoch", ""), metadata.get("step", "")
    if not (epoch.isdigit() and step.isdigit()):
        path = store.run_dir(run_id) / f"{CHECKPOINT}.safetensors"
        raise DamagedFileError(f"{path} records no epoch and step; {restart}")
    return tensors, int(epoch), int(step)


def load_checkpoint(
    store: RunStore, run_id: str, model: PromptedViT, optimizer: torch.optim.Optimizer,
) -> tuple[int, int]:
    """Restore in place; returns (epochs completed, global step)."""
    tensors, epoch, step = read_checkpoint(store, run_id)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            kind, name = key.split("/", 1)
            if kind == "model":
                params[name].copy_(value)
            else:
                param = params[name]
                optimizer.state[param]["momentum_buffer"] = value.to(param.device).clone()
    return epoch, step
