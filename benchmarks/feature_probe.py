"""What does a backbone's frozen representation hold? Logistic regression on its features.

For every built-in task (train800 → test1000, top-1 %), one probe per representation:
``pixels`` (the raw image), ``cls`` (the final normed CLS token, what the head reads),
``patches`` (the mean of the final patch tokens), ``blocks`` (the CLS token after every
block, concatenated: what deep prompts could reach) and ``grid`` (every final patch token,
concatenated in place: whether *where* something is survives in the patch tokens, which
prompts read through attention). A quick check of a pretraining checkpoint before any
prompt is tuned on it.

    python benchmarks/feature_probe.py                          # the default backbone
    python benchmarks/feature_probe.py --backbone /tmp/ckpt --tasks digits texture
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from e2vpt_core.data import BUILTIN_TASKS, generate_builtin
from e2vpt_core.models.factory import build_backbone
from e2vpt_core.pretrain import to_input
from e2vpt_core.train.config import DEFAULT_BACKBONE

REPRESENTATIONS = ("pixels", "cls", "patches", "blocks", "grid")


@torch.no_grad()
def block_tokens(backbone: torch.nn.Module, images: np.ndarray) -> list[torch.Tensor]:
    """All tokens (B, 1 + N, D) entering block 1, then after every block."""
    x = backbone.norm_pre(backbone._pos_embed(backbone.patch_embed(
        to_input(images, torch.device("cpu")))))
    tokens = [x]
    for block in backbone.blocks:
        tokens.append(x := block(x))
    return tokens


@torch.no_grad()
def representations(backbone: torch.nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    tokens = block_tokens(backbone, images)
    per_block = [x[:, 0] for x in tokens[1:]]
    x = backbone.norm(tokens[-1])
    patches = x[:, backbone.num_prefix_tokens:]  # (B, N, D)
    return {"pixels": images.reshape(len(images), -1) / 255.0, "cls": x[:, 0].numpy(),
            "patches": patches.mean(1).numpy(), "blocks": torch.cat(per_block, 1).numpy(),
            "grid": patches.flatten(1).numpy()}


def probe(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    return 100.0 * model.fit(train, train_y).score(test, test_y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE,
                        help="a built-in name or a pretraining output directory")
    parser.add_argument("--tasks", nargs="+", default=sorted(BUILTIN_TASKS))
    parser.add_argument("--representations", nargs="+", default=list(REPRESENTATIONS),
                        choices=REPRESENTATIONS)
    args = parser.parse_args()
    backbone = build_backbone(args.backbone, pretrained=True).eval()
    print(f"backbone {args.backbone}\n\n| task | " + " | ".join(args.representations)
          + " |\n| --- |" + " --- |" * len(args.representations))
    for task in args.tasks:
        (x, y), (tx, ty) = generate_builtin(task, "train"), generate_builtin(task, "test")
        train, test = representations(backbone, x), representations(backbone, tx)
        scores = [probe(train[k], y, test[k], ty) for k in args.representations]
        print(f"| {task} | " + " | ".join(f"{s:.1f}" for s in scores) + " |", flush=True)


if __name__ == "__main__":
    main()
