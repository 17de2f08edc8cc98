"""Does a patch token's content still say where the token is, block by block?

Deep prompts read the patch tokens through attention, which sees content only, never a
token's index. If after a few blocks a token's content no longer tells its grid cell, no
prompt can recover *where* something is, however long it trains, even though a probe on
all tokens concatenated in place reads it from which token changed. This probe asks the
content directly: logistic regression from one patch token (after block b) to its own
grid index, on held-out images; chance is 1 / number of patches.

    python -m benchmarks.token_position_probe --backbones builtin-vit-tiny-scenes \
        builtin-vit-tiny-layout random
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.feature_probe import block_tokens, probe
from e2vpt_core.data import BUILTIN_TASKS, generate_builtin
from e2vpt_core.models.factory import build_backbone
from e2vpt_core.train.config import DEFAULT_BACKBONE

RANDOM = "random"  # the default architecture, untrained: what the position embedding alone gives


def patch_tokens_per_block(backbone: torch.nn.Module, images: np.ndarray) -> list[np.ndarray]:
    """The patch tokens entering block 1 and after every block: each (B·N, D)."""
    start = backbone.num_prefix_tokens
    return [x[:, start:].reshape(-1, x.shape[-1]).numpy() for x in block_tokens(backbone, images)]


def token_index_accuracy(backbone: torch.nn.Module, train: np.ndarray,
                         test: np.ndarray) -> list[float]:
    """Held-out top-1 % of predicting each token's grid index from its content, per depth."""
    train_tokens = patch_tokens_per_block(backbone, train)
    test_tokens = patch_tokens_per_block(backbone, test)
    patches = len(train_tokens[0]) // len(train)
    train_y = np.tile(np.arange(patches), len(train))
    test_y = np.tile(np.arange(patches), len(test))
    return [probe(a, train_y, b, test_y) for a, b in zip(train_tokens, test_tokens, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=[DEFAULT_BACKBONE],
                        help=f"built-in names, pretraining directories or {RANDOM!r}")
    parser.add_argument("--task", default="position", choices=sorted(BUILTIN_TASKS),
                        help="whose images to read (labels unused)")
    parser.add_argument("--images", type=int, default=200, help="per split")
    args = parser.parse_args()
    train = generate_builtin(args.task, "train")[0][:args.images]
    test = generate_builtin(args.task, "test")[0][:args.images]
    rows = []
    for name in args.backbones:
        backbone = (build_backbone(DEFAULT_BACKBONE, pretrained=False) if name == RANDOM
                    else build_backbone(name, pretrained=True)).eval()
        rows.append((name, token_index_accuracy(backbone, train, test)))
        print(name, " ".join(f"{a:.1f}" for a in rows[-1][1]), flush=True)
    depths = len(rows[0][1])
    print(f"\n{args.task} images, {args.images} per split; columns: the input to block 1, then "
          "after each block\n\n| backbone | " + " | ".join(
              ["input"] + [f"block {b}" for b in range(1, depths)]) + " |")
    print("| --- |" + " --- |" * depths)
    for name, accuracies in rows:
        print(f"| {name} | " + " | ".join(f"{a:.1f}" for a in accuracies) + " |")


if __name__ == "__main__":
    main()
