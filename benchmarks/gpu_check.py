"""The CUDA path end to end on ViT-B/16 with bf16 autocast, as one markdown report.

For anyone with a CUDA GPU (`bash benchmarks/gpu_check.sh`): a training step of every
method in `e2vpt_core.methods.METHODS` against the frozen backbone's own forward + backward,
the run's DataLoader with workers and pinned memory, then a real run in a temporary store
(train, importance, rewind in `remove` mode, embeddings) and the `remove` vs `zero`
inference time of the pruned model. Without a GPU it stops with one line; `--cpu-smoke`
runs the same logic on a tiny random ViT on the CPU in seconds, which is what CI tests.

    bash benchmarks/gpu_check.sh                       # table to gpu_check.md
    bash benchmarks/gpu_check.sh --update-docs         # and into docs/BENCHMARKS.md
    python -m benchmarks.gpu_check --cpu-smoke --out /tmp/smoke.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchmarks.step_time import build, step, timed
from e2vpt_core import PromptConfig
from e2vpt_core.methods import METHODS
from e2vpt_core.models import build_backbone

HEADING = "## CUDA end-to-end check (`benchmarks/gpu_check.sh`)"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
BACKBONE_ROW = "frozen backbone, forward + backward"
E2VPT_ROW = "e2vpt P=10 T=5"
VPT_ROW = "vpt-deep P=10"
CHECKPOINTING = "grad checkpointing"  # rows whose model runs `set_grad_checkpointing(True)`
NO_GPU = ("gpu_check: no CUDA GPU is visible to torch (torch.cuda.is_available() is False; "
          "torch {version}, CUDA build {cuda}). Run it on a machine with an NVIDIA GPU, or "
          "pass --cpu-smoke to check the logic on the CPU with a tiny model.")


def step_configs() -> dict[str, PromptConfig]:
    """Every method at its defaults (new methods join by themselves), E²VPT with half its
    tokens pruned in both prune modes, and E²VPT and full fine-tuning with activation
    checkpointing (the step memory column compares them)."""
    configs = {}
    for method in METHODS:
        config = PromptConfig(method)
        lengths = [f"{key}={value}" for key, value in (
            ("P", config.visual_prompt_len), ("T", config.kv_prompt_len)) if value]
        configs[" ".join([method, *lengths])] = config
    for mode in ("zero", "remove"):
        configs[f"e2vpt P=10 T=5, 50% pruned, {mode}"] = PromptConfig("e2vpt", prune_mode=mode)
    for method in ("e2vpt", "full"):  # memory against time: `set_grad_checkpointing`
        configs[f"{method}, {CHECKPOINTING}"] = PromptConfig(method)
    return configs


def backbone_step(backbone: torch.nn.Module, autocast: bool) -> Callable:
    """Forward + backward of the bare, frozen backbone: the input asks for a gradient, so
    every block runs backward and no weight gets one. No method that tunes something in the
    first block can train faster than this."""
    def run(images: torch.Tensor, labels: torch.Tensor) -> None:
        images = images.detach().requires_grad_(True)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(backbone(images), labels)
        loss.backward()

    return run


def step_table(backbone_name: str, device: torch.device, batch: int, rounds: int,
               repeat: int) -> tuple[list[str], list[str], list[str]]:
    """Markdown rows (ms per step, images/s, × the frozen backbone, step memory), the
    rows of configurations that failed, and the ratios; every configuration is timed in
    each round, interleaved."""
    autocast = device.type == "cuda"
    frozen = build_backbone(backbone_name)
    frozen.reset_classifier(100)
    frozen.requires_grad_(False)
    size = tuple(frozen.patch_embed.img_size)
    torch.manual_seed(0)
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.randint(0, 100, (batch,), device=device)
    steps: dict[str, Callable] = {BACKBONE_ROW: backbone_step(frozen.to(device).eval(), autocast)}
    failed = []
    for name, config in step_configs().items():
        try:
            model, optimizer = build(name, config, backbone_name, device)
            steps[name] = (lambda i, t, m=model, o=optimizer: step(m, o, i, t, autocast))
            steps[name](images, labels)  # warm-up: allocator, kernels, autograd graph
        except Exception as error:  # one broken method must not hide the others' numbers
            steps.pop(name, None)
            failed.append(f"| {name} | failed: {type(error).__name__}: {error} | | | |")
    steps[BACKBONE_ROW](images, labels)
    times: dict[str, list[float]] = {name: [] for name in steps}
    memory: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in steps.items():
            if device.type == "cuda":
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(timed(lambda r=run: [r(images, labels) for _ in range(repeat)],
                                     device) / repeat)
            if device.type == "cuda":
                memory[name] = (torch.cuda.max_memory_allocated(device) - before) / 2**30
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median[BACKBONE_ROW]
    rows = [f"| {name} | {1000 * value:.1f} | {batch / value:.0f} | {value / base:.2f} | "
            f"{f'{memory[name]:.2f}' if name in memory else '—'} |"
            for name, value in median.items()]
    ratios = []
    if E2VPT_ROW in median:
        ratios.append(f"E²VPT training throughput / the frozen backbone's forward + backward "
                      f"throughput: **{base / median[E2VPT_ROW]:.2f}** (step time "
                      f"{median[E2VPT_ROW] / base:.2f}×).")
    if E2VPT_ROW in median and VPT_ROW in median:
        ratios.append(f"E²VPT / VPT-deep step time at P = 10: "
                      f"{median[E2VPT_ROW] / median[VPT_ROW]:.3f}.")
    checkpointed, full = f"e2vpt, {CHECKPOINTING}", "full"
    if checkpointed in memory and full in memory and E2VPT_ROW in median:
        ratios.append(f"E²VPT with grad checkpointing: step memory "
                      f"{memory[checkpointed] / memory[full]:.2f}× full fine-tuning's, step "
                      f"time {median[checkpointed] / median[E2VPT_ROW]:.2f}× E²VPT's without.")
    return rows, failed, ratios


def loader_rows(dataset: str, backbone_name: str, device: torch.device, batch: int,
                workers: Sequence[int], batches: int) -> list[str]:
    """The run's own training loader (JPEG decoding, transforms) to the device: images/s
    per worker count, unpinned and (on CUDA) pinned with non-blocking copies."""
    from e2vpt_core.train import TrainConfig
    from e2vpt_core.train.data import build_loaders

    backbone = build_backbone(backbone_name)
    rows = []
    pins = (False, True) if device.type == "cuda" else (False,)
    for count in workers:
        for pin in pins:
            config = TrainConfig(backbone=backbone_name, dataset=dataset, batch_size=batch,
                                 num_workers=count, eval_splits=())
            loader, sampler, _, _ = build_loaders(config, backbone,
                                                  device if pin else torch.device("cpu"))
            sampler.set_epoch(0)
            iterator = iter(loader)
            next(iterator)  # worker start-up is not throughput
            timed_batches = min(batches, len(loader) - 2)  # full batches only

            def drain(it=iterator, n=timed_batches) -> None:
                for _ in range(n):
                    next(it)[0].to(device, non_blocking=True)

            rate = timed_batches * batch / timed(drain, device)
            rows.append(f"| {count} | {'yes' if pin else 'no'} | {rate:.0f} |")
    return rows


def pipeline_rows(dataset: str, backbone_name: str, pretrained: bool, device: torch.device,
                  batch: int, workers: int) -> tuple[list[str], bool]:
    """A real run in a temporary store: train (1 epoch), importance, a 50 % `remove`
    rewind, embeddings, then `remove` vs `zero` inference of the rewound model. The rows,
    and whether every stage ran."""
    from e2vpt_core.artifacts import load_adapter
    from e2vpt_core.hyperbolic.embeddings import run_embeddings
    from e2vpt_core.prune import run_importance
    from e2vpt_core.prune.rewind import rewind_run
    from e2vpt_core.prune.sweep import time_modes, timing_batch
    from e2vpt_core.store import RunStore
    from e2vpt_core.train import TrainConfig, train_run

    rows = []

    def stage(name: str, fn: Callable, describe: Callable) -> object:
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rows.append(f"| {name} | {describe(result)} | {time.perf_counter() - start:.1f} |")
        return result

    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        config = TrainConfig(backbone=backbone_name, pretrained=pretrained, dataset=dataset,
                             epochs=1, batch_size=batch, base_lr=1.0, device=device.type,
                             num_workers=workers, eval_splits=("val",),
                             prompt=PromptConfig("e2vpt", visual_prompt_len=10,
                                                 kv_prompt_len=5))
        run_id = store.create_run(config.to_dict())
        trained = stage("train e2vpt P=10 T=5, 1 epoch", lambda: train_run(config, store, run_id),
                        lambda r: f"{r.status}, val top-1 {r.metrics.get('val_top1', 0):.1f}"
                                  + (f" ({r.reason})" if r.reason else ""))
        if trained.status != "completed":
            return rows, False
        stage("importance pass (train split)", lambda: run_importance(store, run_id),
              lambda r: f"{len(r.token)} token scores")
        rewound = stage("rewind, 50 % tokens removed, 1 epoch",
                        lambda: rewind_run(store, run_id, 0.5, mode="remove", epochs=1),
                        lambda r: f"{r.status}, val top-1 {r.metrics.get('val_top1', 0):.1f}")
        if rewound.status != "completed":
            return rows, False
        stage("embeddings of the rewound model (val)",
              lambda: run_embeddings(store, rewound.run_id, "val", device=device.type),
              lambda r: f"{tuple(r[0].shape)} float32")
        model = load_adapter(store.run_dir(rewound.run_id) / "adapter").to(device)
        images = timing_batch(model, batch).to(device)
        for label, autocast in (("fp32", False), ("bf16 autocast", True)):
            if autocast and device.type != "cuda":
                continue
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                ms = time_modes(model, images, repeats=10)
            rows.append(f"| inference {label}, batch {batch}: remove vs zero | "
                        f"{ms['ms_remove']:.1f} vs {ms['ms_zero']:.1f} ms "
                        f"({ms['ms_remove'] / ms['ms_zero']:.2f}×) | |")
    return rows, True


def load_weights(name: str) -> tuple[bool, str]:
    """Whether the pretrained weights load (downloaded or cached), and the report's note."""
    try:
        build_backbone(name, pretrained=True)
    except Exception as error:  # offline, no hub access, unknown tag: time random init
        return False, (f"random init: the pretrained weights could not be loaded "
                       f"({type(error).__name__}: {str(error).splitlines()[0][:160]})")
    return True, "pretrained weights"


def update_docs(path: Path, section: str) -> None:
    """Put the report under its own heading in `path`, replacing an earlier one there."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(HEADING)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + ("" if end == -1 else "\n" + text[end + 1:])
    path.write_text(text)


def write_smoke_backbone(directory: Path) -> str:
    """A tiny random ViT (2 blocks, width 48, 16 patches of a 32 px image) in timm's hub
    layout, so the smoke run takes seconds on one CPU core."""
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    from e2vpt_core.pretrain.files import write_hub_config

    args = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=48, depth=2, num_heads=3)
    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    write_hub_config(directory, args, (0.5,) * 3, (0.5,) * 3, "gpu-check-smoke")
    save_file(VisionTransformer(**args, num_classes=0).state_dict(),
              str(directory / "model.safetensors"))
    return str(directory)


def report(args: argparse.Namespace, device: torch.device, tmp: Path) -> tuple[str, list[str]]:
    """The markdown section and the configurations that failed."""
    from e2vpt_core.data import export_builtin

    backbone = args.backbone or write_smoke_backbone(tmp / "smoke-vit")
    pretrained, weights = ((True, "random init: the smoke run's tiny ViT") if not args.backbone
                           else load_weights(backbone))
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else platform.processor() or platform.machine())
    steps, failed, ratios = step_table(backbone, device, args.batch_size, args.rounds,
                                       args.repeat)
    dataset = "vtab:" + str(export_builtin("counting", tmp, image_format="jpg"))
    loaders = loader_rows(dataset, backbone, device, args.batch_size, args.workers,
                          args.batches)
    stages, complete = pipeline_rows(dataset, backbone, pretrained, device, args.batch_size,
                                     max(args.workers))
    mode = "CPU smoke run (tiny model; not a GPU figure)" if args.cpu_smoke else "CUDA"
    name = args.backbone or "tiny ViT, 2 blocks, width 48, 32 px"
    lines = [HEADING, "",
             f"{mode}: `{name}` ({weights}), {hardware}, torch {torch.__version__}"
             f"{', bf16 autocast' if device.type == 'cuda' else ', fp32'}, batch "
             f"{args.batch_size}, {time.strftime('%Y-%m-%d')}.", "",
             f"Training step (forward + backward + SGD step), median of {args.rounds} "
             f"interleaved rounds of {args.repeat} steps:", "",
             "| configuration | ms / step | images/s | × frozen backbone fwd + bwd | "
             "step memory (GiB) |", "| --- | --- | --- | --- | --- |", *steps, *failed, "",
             *ratios, "",
             "The run's training loader (built-in `counting` task as JPEG, recipe transforms) "
             "into the device:", "", "| workers | pinned | images/s |", "| --- | --- | --- |",
             *loaders, "", "A run end to end in a temporary store:", "",
             "| stage | result | wall (s) |", "| --- | --- | --- |", *stages, ""]
    if not complete:
        failed.append("the end-to-end run stopped early (see its stages)")
    return "\n".join(lines), failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the same logic on a tiny random ViT on the CPU (seconds)")
    parser.add_argument("--backbone", default=None,
                        help="default vit_base_patch16_224 (a tiny ViT with --cpu-smoke)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 (32 smoke)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (1 smoke)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="steps per timing, default 10 (1 smoke)")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="loader worker counts, default 0 4 8 (0 1 smoke)")
    parser.add_argument("--batches", type=int, default=10, help="loader batches timed")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    parser.add_argument("--update-docs", action="store_true",
                        help=f"also write the section into {DOCS.name} under its heading")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    for name, full, small in (("backbone", "vit_base_patch16_224", None),
                              ("batch_size", 64, 32), ("rounds", 5, 1), ("repeat", 10, 1),
                              ("workers", [0, 4, 8], [0, 1])):
        if getattr(args, name) is None:
            setattr(args, name, small if smoke else full)
    if not smoke and not torch.cuda.is_available():
        print(NO_GPU.format(version=torch.__version__, cuda=torch.version.cuda),
              file=sys.stderr)
        return 2
    device = torch.device("cpu" if smoke else "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        section, failed = report(args, device, Path(tmp))
    print(section)
    args.out.write_text(section)
    print(f"gpu_check: table written to {args.out}", file=sys.stderr)
    if args.update_docs:
        update_docs(args.docs, section)
        print(f"gpu_check: section '{HEADING}' written to {args.docs}", file=sys.stderr)
    for line in failed:
        print(f"gpu_check: FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
