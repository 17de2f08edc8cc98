"""`e2vpt attention RUN`: what a run's prompts look at, on one image, block by block."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import add_json_argument, add_store_argument


def register(subparsers: Any) -> None:
    """Add the `attention` command to the `e2vpt` parser."""
    parser = subparsers.add_parser(
        "attention", help="attention of the class token and the prompts on one image",
        description="For one image, per block: the class token's attention mass on each "
                    "visual prompt, on the key-value prompts and on the patches, and each "
                    "prompt's attention over the patches (averaged over heads), recomputed "
                    "from the model's own queries and keys and checked against its output.")
    parser.add_argument("run", help="id of a completed prompt run (see `e2vpt runs`)")
    parser.add_argument("--split", default="test", help="split the image comes from")
    parser.add_argument("--index", type=int, default=0, help="the image's index in the split")
    add_store_argument(parser)
    add_json_argument(parser)
    parser.set_defaults(handler=_attention)


def _attention(args: argparse.Namespace) -> int:
    from ..prune.attention import run_prompt_attention
    from ..store import RunStore

    result = run_prompt_attention(RunStore(args.store), args.run, args.split, args.index)
    print(f"run {args.run}, {result['split']} image {args.index} ({result['class']}): "
          "class token's attention per block")
    print("block | visual prompts | key-value prompts | patches | most attended prompt")
    for block, row in enumerate(result["cls_to_prompts"]):
        prompts = [v for v in row if v is not None]
        top = max(range(len(row)), key=lambda p: -1 if row[p] is None else row[p]) \
            if prompts else None
        print(f"{block:5d} | {sum(prompts):14.3f} | {sum(result['cls_to_kv'][block]):17.3f} | "
              f"{result['cls_to_patches'][block]:7.3f} | "
              f"{'-' if top is None else f'prompt {top}'}")
    if args.json:
        print(json.dumps(result))
    return 0
