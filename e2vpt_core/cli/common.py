"""What the `e2vpt` commands share: model and training flags, help, the progress bar, results.

No torch here: building the parser (and so `--help` and argument errors) stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import AUGMENTATIONS, LORA_TARGETS, PromptConfig, describe_kind_augmentation
from ..methods import METHODS
from ..train.config import DEFAULT_BACKBONE, TrainConfig


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where it is None or off, or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)

GRAD_CHECKPOINTING_HELP = ("recompute each block's activations in backward: much less "
                           "memory, about one more forward per step, the same results")


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, metavar="DIR",
                        help="run store directory (default: $E2VPT_STORE, else ./runs)")


def add_json_argument(parser: argparse.ArgumentParser, what: str = "one JSON object") -> None:
    parser.add_argument("--json", action="store_true",
                        help=f"also print {what} as the last line of stdout")


def add_model_arguments(parser: argparse.ArgumentParser, default_backbone: str) -> None:
    parser.add_argument("--backbone", default=default_backbone,
                        help="timm name with tag, a built-in name, or a timm-style directory")
    parser.add_argument("--checkpoint", default=None, help="local backbone weights file")
    parser.add_argument("--method", default="e2vpt", choices=METHODS, metavar="METHOD",
                        help=f"one of {', '.join(METHODS)}")
    parser.add_argument("-P", "--visual-prompt-len", type=int, default=None,
                        help="visual prompt tokens per layer (default: 10 for the methods "
                             "with visual prompts)")
    parser.add_argument("-T", "--kv-prompt-len", type=int, default=None,
                        help="key-value prompt tokens per layer (default: 5 for e2vpt)")
    parser.add_argument("--kv-sharing", default="shared", choices=("shared", "separate"),
                        help="one key-value prompt for keys and values, or one each")
    parser.add_argument("--num-segments", type=int, default=8,
                        help="segments per visual prompt token (R), the unit of segment "
                             "pruning")
    parser.add_argument("--segment-layout", default="contiguous",
                        choices=("contiguous", "interleaved"),
                        help="which embedding dimensions form a segment")
    parser.add_argument("--prompt-dropout", type=float, default=0.1,
                        help="dropout on the prompts in training")
    parser.add_argument("--masks-per-block", action="store_true",
                        help="one token / segment mask per prompt layer instead of shared")
    parser.add_argument("--adapter-bottleneck", type=int, default=PromptConfig.adapter_bottleneck,
                        help="bottleneck width of adapter and adapter-plus")
    parser.add_argument("--adapter-drop-path", type=float,
                        default=PromptConfig.adapter_drop_path,
                        help="adapter-plus: per-sample drop rate of the adapter branch in "
                             "training")
    parser.add_argument("--lora-rank", type=int, default=PromptConfig.lora_rank,
                        help="rank r of the LoRA updates")
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


def add_train_arguments(parser: argparse.ArgumentParser, seeds: bool = False) -> None:
    """The training flags; `seeds` adds `--seeds` (one run per seed, one group) as the
    alternative to `--seed`."""
    add_model_arguments(parser, DEFAULT_BACKBONE)
    parser.add_argument("--random-init", action="store_true",
                        help="do not load the backbone's pretrained weights")
    parser.add_argument("--dataset", default="builtin:digits",
                        help="builtin:TASK | vtab:/path/vtab-1k/TASK | fgvc:/path | folder:/path")
    parser.add_argument("--augment", default="auto", choices=AUGMENTATIONS,
                        help="training augmentation; auto: the dataset kind's recipe ("
                             f"{describe_kind_augmentation()})")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs")
    parser.add_argument("--warmup-epochs", type=float, default=None,
                        help="linear warm-up before the cosine decay (default: 10 %% of "
                             "--epochs)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per SGD step (over all processes under torchrun)")
    seed_flags = parser.add_mutually_exclusive_group() if seeds else parser
    seed_flags.add_argument("--seed", type=int, default=0,
                            help="initialisation, batch order and dropout")
    if seeds:
        seed_flags.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                                help="one run per seed, one after another, equal but for "
                                     "the seed: a group read as mean ± sd (`e2vpt groups`)")
    parser.add_argument("--grad-clip", type=float, default=None,
                        help="clip the gradient norm to this value (default: no clipping)")
    parser.add_argument("--workers", type=int, default=None,
                        help="data loader processes (default: 0 for built-in tasks, else up "
                             "to 8)")
    parser.add_argument("--device", default="auto",
                        help="auto (a GPU when there is one, else the CPU), cpu, cuda, cuda:N")
    parser.add_argument("--no-amp", action="store_true",
                        help="no bf16 autocast (used on a GPU, or a CPU with native bf16 "
                             "units: AMX / AVX512-BF16)")
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help=GRAD_CHECKPOINTING_HELP)
    add_store_argument(parser)
    parser.add_argument("--create-store", action="store_true",
                        help="create the store named by --store or E2VPT_STORE if missing")
    add_json_argument(parser, "the result")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def train_config(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    values = dict(
        backbone=args.backbone, checkpoint=args.checkpoint, pretrained=not args.random_init,
        dataset=args.dataset, augment=args.augment, prompt=prompt_config(args),
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs, batch_size=args.batch_size, seed=args.seed,
        grad_clip=args.grad_clip, num_workers=args.workers, device=args.device,
        amp=not args.no_amp, grad_checkpointing=args.grad_checkpointing,
    )
    values.update(overrides)
    return TrainConfig(**values)


class ProgressBar:
    """A tqdm bar on stderr fed by the loop's progress callback.

    A bar starts at the step of its first event (`initial`), so a resumed run shows its
    position and the rate counts only steps timed here; it advances by increments. The
    postfix shows the training loss of step events and the accuracies of evaluations."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar = enabled, None

    def _starts_a_run(self, step: int, total: int, epoch_end: bool) -> bool:
        """Steps grow within a run; an epoch's end repeats its last step."""
        return (self.bar is None or self.bar.total != total or step < self.bar.n
                or (step == self.bar.n and not epoch_end))

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        step, total = event["step"], event["total_steps"]
        postfix = {"epoch": event["epoch"]}
        if "loss" in event:
            postfix["loss"] = f"{event['loss']:.3f}"
        for key, value in event.items():
            if key.endswith("/top1"):
                postfix[key] = f"{value:.1f}"
        if self._starts_a_run(step, total, bool(event.get("epoch_end"))):
            self.close()
            self.bar = tqdm(total=total, initial=step, file=sys.stderr, unit="step",
                            postfix=postfix)
        elif step > self.bar.n:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(step - self.bar.n)  # draws at most every 0.1 s
        else:  # an evaluation: draw its accuracy now
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
