"""Peak training memory and step time with activation checkpointing, against full fine-tuning.

Prompt tuning backpropagates through the whole frozen backbone, so it keeps nearly the
activations full fine-tuning keeps. `model.set_grad_checkpointing(True)` recomputes each
block in backward instead. Each configuration runs in a fresh process (one training step to
warm up, then timed steps); memory is the step's peak above the built model: on a GPU
`torch.cuda.max_memory_allocated`, on a CPU the process's peak resident set (ru_maxrss)
above its size before the first step. Rounds alternate the configurations, so a shared
machine slows them alike; times are reported as ratios to E²VPT without checkpointing.

    python benchmarks/grad_checkpointing.py                       # ViT-B/16, batch 32, CPU
    python benchmarks/grad_checkpointing.py --device cuda         # bf16 autocast on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "e2vpt P=10 T=5": ("e2vpt", False),
    "e2vpt P=10 T=5, grad checkpointing": ("e2vpt", True),
    "full fine-tuning": ("full", False),
    "full fine-tuning, grad checkpointing": ("full", True),
}
BASE = "e2vpt P=10 T=5"


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(name: str, backbone: str, batch: int, steps: int, device_name: str) -> dict:
    """One configuration in this process: peak step memory (bytes) and seconds per step."""
    import torch

    from e2vpt_core import PromptConfig, create_model

    method, checkpointing = CONFIGS[name]
    device = torch.device(device_name)
    model = create_model(backbone, 100, PromptConfig(method)).to(device).train()
    model.set_grad_checkpointing(checkpointing)
    optimizer = torch.optim.SGD([p for _, p in model.trainable_parameters()], lr=0.01,
                                momentum=0.9)
    size = tuple(model.backbone.patch_embed.img_size)
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.randint(0, 100, (batch,), device=device)
    autocast = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        before = _resident_bytes()
    step()  # also allocates the momentum buffers, part of training memory
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"name": name, "peak_bytes": peak, "step_s": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_base_patch16_224",
                        help="timm name (random init: no download)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="processes per configuration")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure(args.child, args.backbone, args.batch_size, args.steps,
                                 args.device)))
        return

    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for round_index in range(args.rounds):
        for name in CONFIGS:
            command = [sys.executable, __file__, "--child", name, *sys.argv[1:]]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {round_index + 1}: {name}: {results[name][-1]}", file=sys.stderr)
    peak = {n: max(r["peak_bytes"] for r in rs) for n, rs in results.items()}
    step = {n: statistics.median(r["step_s"] for r in rs) for n, rs in results.items()}
    full = peak["full fine-tuning"]
    print(f"\n{args.backbone}, batch {args.batch_size}, {args.device}, "
          f"{args.rounds} alternating rounds, {time.strftime('%Y-%m-%d')}\n")
    print("| configuration | step peak memory (GiB) | × full fine-tuning | step time × E²VPT |")
    print("| --- | --- | --- | --- |")
    for name in CONFIGS:
        print(f"| {name} | {peak[name] / 2**30:.2f} | {peak[name] / full:.2f} | "
              f"{step[name] / step[BASE]:.2f} |")


if __name__ == "__main__":
    main()
