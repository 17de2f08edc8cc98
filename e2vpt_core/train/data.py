"""Loaders for training: seeded per-epoch batch order, shared by single- and multi-process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from timm.data import resolve_model_data_config
from torch.utils.data import DataLoader, Sampler

from ..data import build_transform, load_dataset, verify_dataset
from .config import TrainConfig


def epoch_seed(seed: int, epoch: int) -> int:
    """One seed per (run seed, epoch): data order and dropout of an epoch depend on nothing else."""
    return seed * 1_000_003 + epoch


class EpochBatchSampler(Sampler[list[int]]):
    """Global batches from a seeded permutation; rank r of W takes the r-th slice of each.

    An epoch's order depends on (seed, epoch) alone (`set_epoch`), so a resumed run replays
    the batches an uninterrupted one would have seen. With W processes of batch B/W each,
    the averaged gradient equals one process of batch B on the same indices.

    Every image is used every epoch: the last batch is smaller when B does not divide the
    training set (180 images at B = 64: 64, 64, 52), where dropping it would lose 52 images
    an epoch on a small dataset. A smaller batch is harmless here: the ViTs have LayerNorm,
    no batch statistics. Under DDP the last batch is cut to a multiple of W, so each rank
    gets an equal share and the averaged gradient is still exact; at most W - 1 images of
    an epoch wait for the next one, a different few each epoch.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        if size < batch_size:
            raise ValueError(f"batch size {batch_size} is larger than the training set ({size})")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batch_sizes(self) -> list[int]:
        """Global batch sizes of an epoch: full ones, then the rest cut to a multiple of W."""
        full, rest = divmod(self.size, self.batch_size)
        rest -= rest % self.world
        return [self.batch_size] * full + ([rest] if rest else [])

    def __len__(self) -> int:
        return len(self._batch_sizes())

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        for index, size in enumerate(self._batch_sizes()):
            local = size // self.world
            start = index * self.batch_size + self.rank * local
            yield order[start:start + local]


def default_workers(dataset_spec: str) -> int:
    """Generated tasks live in memory (no workers); image files get up to 8 workers."""
    if dataset_spec.startswith("builtin:"):
        return 0
    return min(8, os.cpu_count() or 1)


def _workers(config: TrainConfig) -> int:
    return default_workers(config.dataset) if config.num_workers is None else config.num_workers


def eval_loader(
    config: TrainConfig, backbone: torch.nn.Module, split: str, batch_size: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A split of the run's dataset with the deterministic eval transform, in order: for
    evaluation, importance scores and embeddings alike."""
    transform = build_transform(config.dataset, resolve_model_data_config(backbone), train=False,
                                augment=config.augment)
    dataset = load_dataset(config.dataset, split, transform, seed=config.data_seed)
    return DataLoader(dataset, batch_size=batch_size or max(2 * config.batch_size, 64),
                      num_workers=_workers(config), pin_memory=pin_memory)


def build_loaders(
    config: TrainConfig, backbone: torch.nn.Module, device: torch.device, rank: int = 0,
    world: int = 1,
) -> tuple[DataLoader, EpochBatchSampler, dict[str, DataLoader], int]:
    """Train loader (+ its sampler), one eval loader per split, and the class count.

    Every split is verified first (cached when unchanged since `check_sources`), so an
    image broken since the run was submitted fails it now, not at its last evaluation."""
    verify_dataset(config.dataset, [config.train_split, *config.eval_splits],
                   seed=config.data_seed)
    workers = _workers(config)
    pin = device.type == "cuda"
    train_set = load_dataset(
        config.dataset, config.train_split,
        build_transform(config.dataset, resolve_model_data_config(backbone), train=True,
                        augment=config.augment),
        seed=config.data_seed)
    sampler = EpochBatchSampler(len(train_set), config.batch_size, config.seed, rank, world)
    train_loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers,
                              pin_memory=pin, persistent_workers=workers > 0)
    eval_loaders = {split: eval_loader(config, backbone, split, pin_memory=pin)
                    for split in config.eval_splits}  # same classes: verified above
    return train_loader, sampler, eval_loaders, train_set.num_classes
