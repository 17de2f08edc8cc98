"""Time of one training step (forward + backward + SGD step) per method, as ratios.

All configurations are measured in one process and interleaved round by round, so that a
shared, noisy machine slows them alike; ratios are to linear probing measured in the same
run. Absolute times are meaningful only on a dedicated GPU. Each configuration runs in the
precision training uses on the device (`bf16_autocast`: a GPU, or a CPU with native bf16
units), those named ", fp32" without autocast.

    python benchmarks/step_time.py                      # ViT-B/16, 224 px, batch 8, CPU
    python benchmarks/step_time.py --device cuda        # bf16 autocast on a GPU
    python benchmarks/step_time.py --threads 2 --rounds 7 --only "e2vpt P=10 T=5" \
        "e2vpt P=10 T=5, fp32" "e2vpt P=10 T=5, fp32, every row computed"  # precision
    python benchmarks/step_time.py --only "e2vpt P=10 T=5" "e2vpt P=10 T=5, every row computed" \
        "vpt-deep P=10" "frozen backbone, forward + backward to the input" --rounds 7
    python benchmarks/step_time.py --backbone swin_base_patch4_window7_224 --batch-size 4 \
        --only linear "vpt-deep P=10" "e2vpt P=10 T=5"    # Swin-B
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import timm
import torch

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.train.device import bf16_autocast

CONFIGS = {
    "linear": PromptConfig("linear"),
    "partial-1": PromptConfig("partial-1"),
    "mlp-3": PromptConfig("mlp-3"),
    "bias": PromptConfig("bias"),
    "adapter": PromptConfig("adapter"),
    "adapter-plus": PromptConfig("adapter-plus"),
    "lora r=8 qkv": PromptConfig("lora"),
    "ssf": PromptConfig("ssf"),
    "vpt-shallow P=10": PromptConfig("vpt-shallow", visual_prompt_len=10),
    "vpt-deep P=10": PromptConfig("vpt-deep", visual_prompt_len=10),
    "e2vpt P=10 T=5": PromptConfig("e2vpt", visual_prompt_len=10, kv_prompt_len=5),
    "e2vpt P=10 T=5 zero, 50% pruned": PromptConfig("e2vpt", prune_mode="zero"),
    "e2vpt P=10 T=5 remove, 50% pruned": PromptConfig("e2vpt", prune_mode="remove"),
    "full": PromptConfig("full"),
    "e2vpt P=10 T=5, grad checkpointing": PromptConfig("e2vpt"),
    "e2vpt P=10 T=5, every row computed": PromptConfig("e2vpt"),
    "e2vpt P=10 T=5, fp32": PromptConfig("e2vpt"),
    "e2vpt P=10 T=5, fp32, every row computed": PromptConfig("e2vpt"),
    "vpt-deep P=10, every row computed": PromptConfig("vpt-deep", visual_prompt_len=10),
}
FROZEN = "frozen backbone, forward + backward to the input"
FP32 = ", fp32"  # a configuration named with it runs without autocast


class _FrozenBackbone(torch.nn.Module):
    """The backbone alone, frozen, with a gradient taken to its input: the floor under any
    prompt method's step (the input is the only leaf that needs a gradient)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.lift = torch.nn.Parameter(torch.ones(()))  # gives the optimizer one tensor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images * self.lift)

    def trainable_parameters(self):
        return [("lift", self.lift)]


def build(name: str, config: PromptConfig | None, backbone: str, device: torch.device):
    if config is None:
        model = _FrozenBackbone(timm.create_model(backbone, num_classes=100)).to(device).eval()
        return model, torch.optim.SGD([model.lift], lr=0.01, momentum=0.9)
    model = create_model(backbone, 100, config).to(device)
    model.skip_unread_tokens = "every row computed" not in name
    if "pruned" in name:
        mask = torch.zeros(config.visual_prompt_len)
        mask[: config.visual_prompt_len // 2] = 1.0
        model.set_masks(mask)
    model.set_grad_checkpointing("grad checkpointing" in name)
    model.train()
    params = [p for _, p in model.trainable_parameters()]
    return model, torch.optim.SGD(params, lr=0.01, momentum=0.9)


def step(model, optimizer, images, labels, autocast: bool) -> None:
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
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="subset of configuration names")
    parser.add_argument("--both-precisions", action="store_true",
                        help="time each configuration in fp32 too (a ', fp32' twin)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast = bf16_autocast(device)
    torch.manual_seed(0)
    size = timm.create_model(args.backbone).pretrained_cfg["input_size"][-1]
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, 100, (args.batch_size,), device=device)

    configs = {**CONFIGS, FROZEN: None, FROZEN + FP32: None}
    names = [n for n in configs if not args.only or n in args.only]
    if args.both_precisions:
        twins = [name + FP32 for name in names if FP32 not in name]
        configs.update({twin: configs[twin.removesuffix(FP32)] for twin in twins})
        names += [twin for twin in twins if twin not in names]
    models = {name: build(name, configs[name], args.backbone, device) for name in names}
    precision = {name: autocast and FP32 not in name for name in names}
    for name in names:  # warm-up: allocator, kernels, autograd graph
        step(*models[name], images, labels, precision[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            times[name].append(timed(
                lambda n=name: step(*models[n], images, labels, precision[n]), device))

    median = {name: statistics.median(values) for name, values in times.items()}
    base_name = "linear" if "linear" in median else names[0]
    base = median[base_name]
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"\n{args.backbone}, batch {args.batch_size}, {device.type}"
          f"{' bf16 autocast (but the fp32 rows)' if autocast else ' fp32'}, "
          f"{torch.get_num_threads()} threads, "
          f"{hardware or platform.machine()}, torch {torch.__version__}, "
          f"median of {args.rounds} interleaved rounds\n")
    print(f"| method | step time (s) | × {base_name} | all rounds (s) |")
    print("| --- | --- | --- | --- |")
    for name in names:
        rounds = ", ".join(f"{value:.2f}" for value in times[name])
        print(f"| {name} | {median[name]:.3f} | {median[name] / base:.2f} | {rounds} |")
    pairs = [("e2vpt P=10 T=5", "vpt-deep P=10"), ("e2vpt P=10 T=5", FROZEN),
             ("e2vpt P=10 T=5, every row computed", "e2vpt P=10 T=5"),
             ("vpt-deep P=10, every row computed", "vpt-deep P=10"),
             ("e2vpt P=10 T=5, fp32", "e2vpt P=10 T=5"),
             ("e2vpt P=10 T=5, fp32, every row computed", "e2vpt P=10 T=5"),
             (FROZEN + FP32, FROZEN),
             ("e2vpt P=10 T=5 remove, 50% pruned", "e2vpt P=10 T=5 zero, 50% pruned")]
    pairs += [(name, name.removesuffix(FP32)) for name in names
              if name.endswith(FP32) and (name, name.removesuffix(FP32)) not in pairs]
    for first, second in pairs:
        if first in median and second in median:
            print(f"\n{first} / {second}: {median[first] / median[second]:.3f}")


if __name__ == "__main__":
    main()
