"""What a wider or deeper bundled ViT would cost the quick demo: E²VPT training steps per shape.

The quick demo must finish in 4 minutes on 2 CPU cores, so the backbone a GPU could
pretrain (`python -m e2vpt_core.pretrain --embed-dim/--depth/--num-heads`) is bounded by
its cost on a CPU. Each shape gets an E²VPT model (the demo's method, P = 10, T = 5, random
weights: the cost does not depend on them) and timed training steps (forward, backward,
SGD) at the CLI's batch of 64; the shapes are interleaved round by round so a busy machine
slows them alike, and each is reported as a ratio to the bundled shape in the same run.

    python benchmarks/backbone_shapes.py --threads 1
    python benchmarks/backbone_shapes.py --shapes 6x192x3 8x192x6 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from timm.models.vision_transformer import VisionTransformer

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.pretrain import BUILTIN_VIT_TINY_KWARGS

DEFAULT_SHAPES = ("6x192x3", "8x192x6", "6x240x4", "8x224x4", "12x256x8")


def parse_shape(text: str) -> dict[str, int]:
    """'DEPTHxWIDTHxHEADS' → VisionTransformer shape arguments."""
    try:
        depth, width, heads = (int(part) for part in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not DEPTHxWIDTHxHEADS") from None
    if width % heads:
        raise argparse.ArgumentTypeError(f"{text!r}: width {width} is not a multiple of {heads}")
    return {"depth": depth, "embed_dim": width, "num_heads": heads}


def build(shape: dict[str, int]) -> torch.nn.Module:
    backbone = VisionTransformer(**{**BUILTIN_VIT_TINY_KWARGS, **shape}, num_classes=0)
    return create_model(backbone, 10, PromptConfig("e2vpt"))


def step_seconds(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", type=parse_shape,
                        default=[parse_shape(s) for s in DEFAULT_SHAPES])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per shape and round")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    models = [build(shape) for shape in args.shapes]
    optimizers = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)
                  for m in models]
    times: list[list[float]] = [[] for _ in models]
    for model, optimizer in zip(models, optimizers, strict=True):
        step_seconds(model, optimizer, x, y, 1)  # warm-up
    for _ in range(args.rounds):
        for i, (model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
            times[i].append(step_seconds(model, optimizer, x, y, args.steps))
    base = statistics.median(times[0])
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"{args.rounds} rounds of {args.steps} steps; ratio to the first shape")
    print("| blocks × width × heads | backbone parameters | fp16 size | E²VPT step, ratio |")
    print("| --- | --- | --- | --- |")
    for shape, model, measured in zip(args.shapes, models, times, strict=True):
        size = sum(p.numel() for p in model.backbone.parameters())
        label = f"{shape['depth']} × {shape['embed_dim']} × {shape['num_heads']}"
        print(f"| {label} | {size / 1e6:.2f} M | {2 * size / 1e6:.1f} MB | "
              f"{statistics.median(measured) / base:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
