"""Top-1 and per-class accuracy of a model on a loader."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, num_classes: int, device: torch.device,
    amp: bool = False,
) -> dict[str, object]:
    """Returns top1 (%), mean per-class accuracy (%), per-class accuracy list and loss."""
    was_training = model.training
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.long)
    total = torch.zeros(num_classes, dtype=torch.long)
    loss_sum, count = 0.0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images)
        loss_sum += torch.nn.functional.cross_entropy(
            logits.float(), labels, reduction="sum").item()
        hits = (logits.argmax(dim=1) == labels).cpu()
        labels = labels.cpu()
        total += torch.bincount(labels, minlength=num_classes)
        correct += torch.bincount(labels[hits], minlength=num_classes)
        count += len(labels)
    model.train(was_training)
    present = total > 0
    per_class = torch.where(present, correct / total.clamp(min=1), torch.nan)
    return {
        "top1": 100.0 * correct.sum().item() / max(count, 1),
        "mean_per_class": 100.0 * per_class[present].mean().item() if present.any() else 0.0,
        "per_class": [None if torch.isnan(v) else round(100.0 * v.item(), 3) for v in per_class],
        "loss": loss_sum / max(count, 1),
        "samples": count,
    }
