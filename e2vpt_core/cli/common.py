"""What the `e2vpt` commands share: model and training flags, the progress bar, results."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import AUGMENTATIONS, LORA_TARGETS, PromptConfig, describe_kind_augmentation
from ..methods import METHODS
from ..train.config import DEFAULT_BACKBONE, TrainConfig


def add_model_arguments(parser: argparse.ArgumentParser, default_backbone: str) -> None:
    parser.add_argument("--backbone", default=default_backbone,
                        help="timm name with tag, a built-in name, or a timm-style directory")
    parser.add_argument("--checkpoint", default=None, help="local backbone weights file")
    parser.add_argument("--method", default="e2vpt", choices=METHODS, metavar="METHOD",
                        help=f"one of {', '.join(METHODS)} (default: e2vpt)")
    parser.add_argument("-P", "--visual-prompt-len", type=int, default=None)
    parser.add_argument("-T", "--kv-prompt-len", type=int, default=None)
    parser.add_argument("--kv-sharing", default="shared", choices=("shared", "separate"))
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--segment-layout", default="contiguous",
                        choices=("contiguous", "interleaved"))
    parser.add_argument("--prompt-dropout", type=float, default=0.1)
    parser.add_argument("--masks-per-block", action="store_true",
                        help="one token / segment mask per prompt layer instead of shared")
    parser.add_argument("--adapter-bottleneck", type=int, default=PromptConfig.adapter_bottleneck,
                        help="bottleneck width of adapter and adapter-plus")
    parser.add_argument("--adapter-drop-path", type=float,
                        default=PromptConfig.adapter_drop_path,
                        help="adapter-plus: per-sample drop rate of the adapter branch in "
                             "training")
    parser.add_argument("--lora-rank", type=int, default=PromptConfig.lora_rank)
    parser.add_argument("--lora-alpha", type=float, default=PromptConfig.lora_alpha,
                        help="LoRA updates are scaled by alpha / rank")
    parser.add_argument("--lora-targets", default=PromptConfig.lora_targets,
                        help=f"comma-separated subset of {','.join(LORA_TARGETS)}")


def prompt_config(args: argparse.Namespace) -> PromptConfig:
    return PromptConfig(
        method=args.method, visual_prompt_len=args.visual_prompt_len,
        kv_prompt_len=args.kv_prompt_len, kv_sharing=args.kv_sharing,
        num_segments=args.num_segments, segment_layout=args.segment_layout,
        prompt_dropout=args.prompt_dropout, masks_per_block=args.masks_per_block,
        adapter_bottleneck=args.adapter_bottleneck,
        adapter_drop_path=args.adapter_drop_path, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, lora_targets=args.lora_targets,
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, DEFAULT_BACKBONE)
    parser.add_argument("--random-init", action="store_true",
                        help="do not load the backbone's pretrained weights")
    parser.add_argument("--dataset", default="builtin:digits",
                        help="builtin:TASK | vtab:/path/vtab-1k/TASK | fgvc:/path | folder:/path")
    parser.add_argument("--augment", default="auto", choices=AUGMENTATIONS,
                        help="training augmentation; auto: the dataset kind's recipe ("
                             f"{describe_kind_augmentation()})")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--warmup-epochs", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grad-clip", type=float, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true", help="no bf16 autocast on a GPU")
    parser.add_argument("--store", default="runs", help="run store directory")
    parser.add_argument("--create-store", action="store_true",
                        help="create the store named by --store or E2VPT_STORE if missing")
    parser.add_argument("--json", action="store_true", help="last stdout line is JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def train_config(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    values = dict(
        backbone=args.backbone, checkpoint=args.checkpoint, pretrained=not args.random_init,
        dataset=args.dataset, augment=args.augment, prompt=prompt_config(args),
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs, batch_size=args.batch_size, seed=args.seed,
        grad_clip=args.grad_clip, num_workers=args.workers, device=args.device,
        amp=not args.no_amp,
    )
    values.update(overrides)
    return TrainConfig(**values)


class ProgressBar:
    """A tqdm bar on stderr fed by the loop's progress callback."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar = enabled, None

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None or self.bar.total != event["total_steps"] or event["step"] == 1:
            self.close()
            self.bar = tqdm(total=event["total_steps"], file=sys.stderr, unit="step")
        self.bar.n = event["step"]
        postfix = {"epoch": event["epoch"], "loss": f"{event.get('loss', 0):.3f}"}
        for key, value in event.items():
            if key.endswith("/top1"):
                postfix[key] = f"{value:.1f}"
        self.bar.set_postfix(postfix, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def print_result(result: dict[str, Any], as_json: bool) -> int:
    scores = ", ".join(f"{k} {v:.2f}" for k, v in result.items()
                       if k.endswith("_top1") and isinstance(v, float))
    line = f"run {result['run_id']}: {result['status']}"
    if result.get("reason"):
        line += f" ({result['reason']})"
    print(line + (f"; {scores}" if scores else ""))
    if as_json:
        print(json.dumps(result, default=str))
    return 0 if result["status"] == "completed" else 1
