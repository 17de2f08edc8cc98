"""Is the GPU ever starved? Data-loader images/s against model training images/s.

Builds the training loader exactly as a run does (list files, JPEG decoding, the recipe's
transforms, workers) over a VTAB-1k-layout task on disk, and times it for several worker
counts; then times training steps of the model on the chosen device. Without a dataset a
built-in task is exported to a temporary VTAB-1k tree (JPEG) first.

    python benchmarks/data_throughput.py --backbone vit_base_patch16_224 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.data import export_builtin
from e2vpt_core.models import build_backbone
from e2vpt_core.train import TrainConfig
from e2vpt_core.train.data import build_loaders


def loader_throughput(config: TrainConfig, backbone, batches: int) -> float:
    loader, sampler, _, _ = build_loaders(config, backbone, torch.device("cpu"))
    sampler.set_epoch(0)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            images, _ = next(iterator)
        except StopIteration:
            sampler.set_epoch(1)
            iterator = iter(loader)
            images, _ = next(iterator)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def model_throughput(backbone, device: torch.device, batch: int, steps: int) -> float:
    model = create_model(backbone, 100, PromptConfig("e2vpt")).to(device).train()
    optimizer = torch.optim.SGD([p for _, p in model.trainable_parameters()], lr=0.01)
    size = backbone.patch_embed.img_size
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.randint(0, 100, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--dataset", default=None, help="vtab:/path/task (default: exported)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--model-steps", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    backbone = build_backbone(args.backbone, pretrained=False)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or "vtab:" + str(
            export_builtin("counting", tmp, image_format="jpg"))
        print(f"backbone {args.backbone}, input {tuple(backbone.patch_embed.img_size)}, "
              f"dataset {dataset}, batch {args.batch_size}\n")
        print("| what | images/s |\n| --- | --- |")
        for workers in args.workers:
            config = TrainConfig(backbone=args.backbone, dataset=dataset,
                                 batch_size=args.batch_size, num_workers=workers,
                                 eval_splits=())
            rate = loader_throughput(config, backbone, args.batches)
            print(f"| loader, {workers} workers | {rate:.1f} |")
    rate = model_throughput(backbone, torch.device(args.device), args.batch_size,
                            args.model_steps)
    print(f"| E²VPT training steps on {args.device} | {rate:.1f} |")


if __name__ == "__main__":
    main()
