"""Final CLS embeddings of a stored run, cached in its run directory.

Extraction is the slow part of the view for a real backbone, so each split is computed
once and kept as `embeddings_<split>.safetensors` (embeddings + labels) next to the run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..artifacts import load_adapter
from ..data import normalize_split
from ..models.vit import PromptedViT
from ..store import RunStore
from ..train.config import TrainConfig
from ..train.data import eval_loader
from ..train.device import resolve_device


def embeddings_name(split: str) -> str:
    """The run-store tensor name of a split's cached embeddings."""
    return f"embeddings_{normalize_split(split)}"


def adapter_dir(store: RunStore, run_id: str) -> Path:
    """The run's adapter artifact; a clear error for an unknown or unfinished run."""
    store.get_run(run_id)
    directory = store.run_dir(run_id) / "adapter"
    if not directory.is_dir():
        raise FileNotFoundError(f"run {run_id} has no adapter artifact (not completed?)")
    return directory


@torch.no_grad()
def extract_embeddings(
    model: PromptedViT, loader: DataLoader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """`forward_embedding` over a loader: (N, d) float32 embeddings and (N,) labels."""
    was_training = model.training
    model.eval().to(device)
    embeddings, labels = [], []
    for images, batch_labels in loader:
        embeddings.append(model.forward_embedding(images.to(device)).float().cpu())
        labels.append(batch_labels.long())
    model.train(was_training)
    return torch.cat(embeddings), torch.cat(labels)


def run_embeddings(
    store: RunStore, run_id: str, split: str = "test", *, batch_size: int = 128,
    device: str = "auto", refresh: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A run's CLS embeddings and labels on `split` (eval transform), from the cache if there."""
    name = embeddings_name(split)
    directory = adapter_dir(store, run_id)
    if not refresh and store.has_tensors(run_id, name):
        cached = store.load_tensors(run_id, name)
        return cached["embeddings"], cached["labels"]
    config = TrainConfig.from_dict(store.get_run(run_id)["config"])
    model = load_adapter(directory)
    loader = eval_loader(config, model.backbone, split, batch_size=batch_size)
    embeddings, labels = extract_embeddings(model, loader, resolve_device(device))
    store.save_tensors(run_id, name, {"embeddings": embeddings, "labels": labels}, metadata={
        "dataset": config.dataset, "split": normalize_split(split),
        "data_seed": str(config.data_seed)})
    return embeddings, labels
