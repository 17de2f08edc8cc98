"""Training step time of E²VPT against VPT-deep on Swin-B, as ratios.

One randomly initialised Swin-B backbone is shared by all configurations (none of them trains
it); they are measured in one process and interleaved round by round, so a shared, noisy
machine slows them alike. Absolute times are meaningful only on a dedicated GPU.

    python benchmarks/swin_step_time.py                     # Swin-B, 224 px, batch 4, CPU
    python benchmarks/swin_step_time.py --device cuda       # bf16 autocast on a GPU
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import timm
import torch

from e2vpt_core import PromptConfig, create_model

CONFIGS = {
    "linear": PromptConfig("linear"),
    "vpt-deep P=10": PromptConfig("vpt-deep", visual_prompt_len=10),
    "e2vpt P=10 T=5": PromptConfig("e2vpt", visual_prompt_len=10, kv_prompt_len=5),
    "e2vpt P=0 T=5": PromptConfig("e2vpt", visual_prompt_len=0, kv_prompt_len=5),
}
RATIOS = [("e2vpt P=10 T=5", "vpt-deep P=10"), ("vpt-deep P=10", "linear"),
          ("e2vpt P=0 T=5", "linear")]


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
         labels: torch.Tensor, autocast: bool) -> None:
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="swin_base_patch4_window7_224")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="subset of configuration names")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast = device.type == "cuda"
    torch.manual_seed(0)
    backbone = timm.create_model(args.backbone, pretrained=False)
    size = backbone.pretrained_cfg["input_size"][-1]
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, 100, (args.batch_size,), device=device)

    names = [n for n in CONFIGS if not args.only or n in args.only]
    models = {}
    for name in names:
        model = create_model(backbone, 100, CONFIGS[name]).to(device).train()
        params = [p for _, p in model.trainable_parameters()]
        models[name] = (model, torch.optim.SGD(params, lr=0.01, momentum=0.9))
    for name in names:  # warm-up: allocator, kernels, autograd graph
        step(*models[name], images, labels, autocast)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            times[name].append(timed(lambda n=name: step(*models[n], images, labels, autocast),
                                     device))

    median = {name: statistics.median(values) for name, values in times.items()}
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"\n{args.backbone} (random weights), {size} px, batch {args.batch_size}, "
          f"{device.type}{' bf16 autocast' if autocast else ''}, {torch.get_num_threads()} "
          f"threads, {hardware or platform.machine()}, torch {torch.__version__}, "
          f"median of {args.rounds} interleaved rounds\n")
    print("| configuration | step time (s) | all rounds (s) |")
    print("| --- | --- | --- |")
    for name in names:
        rounds = ", ".join(f"{value:.2f}" for value in times[name])
        print(f"| {name} | {median[name]:.3f} | {rounds} |")
    print()
    for first, second in RATIOS:
        if first in median and second in median:
            print(f"{first} / {second}: {median[first] / median[second]:.3f}")


if __name__ == "__main__":
    main()
