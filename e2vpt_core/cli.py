"""The `e2vpt` command line (same as `python -m e2vpt_core`)."""

from __future__ import annotations

import argparse
import json
import sys

from .config import METHODS, PromptConfig


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="vit_base_patch16_224",
                        help="timm name with tag, or a built-in backbone name")
    parser.add_argument("--checkpoint", default=None, help="local backbone weights file")
    parser.add_argument("--pretrained", action="store_true", help="load the tag's weights")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--method", default="e2vpt", choices=METHODS)
    parser.add_argument("-P", "--visual-prompt-len", type=int, default=None)
    parser.add_argument("-T", "--kv-prompt-len", type=int, default=None)
    parser.add_argument("--num-segments", type=int, default=8)


def _params(args: argparse.Namespace) -> int:
    from .models import create_model

    config = PromptConfig(
        method=args.method,
        visual_prompt_len=args.visual_prompt_len,
        kv_prompt_len=args.kv_prompt_len,
        num_segments=args.num_segments,
    )
    model = create_model(args.backbone, args.num_classes, config,
                         pretrained=args.pretrained, checkpoint_path=args.checkpoint)
    summary = model.parameter_summary()
    if args.json:
        print(json.dumps({"backbone": args.backbone, **config.to_dict(), **summary}))
    else:
        model.print_trainable_parameters()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2vpt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    params = commands.add_parser("params", help="trainable-parameter summary of a method")
    _add_model_arguments(params)
    params.add_argument("--json", action="store_true", help="print one JSON object")
    params.set_defaults(handler=_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"e2vpt {args.command}: error: {error}", file=sys.stderr)
        return 2
