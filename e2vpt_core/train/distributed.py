"""Multi-process training under `torchrun` (DDP); a no-op for a plain single process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist


@contextmanager
def distributed_context(device: str) -> Iterator[tuple[int, int, Callable[[Any], Any]]]:
    """Yields (rank, world size, broadcast-from-rank-0). NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1, lambda value: value
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")

    def broadcast(value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    try:
        yield dist.get_rank(), world, broadcast
    finally:
        dist.destroy_process_group()
