"""Real small images that are not built in, through a `folder:` tree: the engine against
logistic regression and 1-NN on the raw pixels of the same training images.

The issue's real-image check (prompt tuning must clearly beat a pixel logistic regression)
is run by the planners on sets kept aside. The one real image set on this offline machine
is scikit-learn's bundled copy of UCI's optdigits (1,797 handwritten digits, 8 × 8, 17 grey
levels). ``--export-sklearn-digits DIR`` writes it as a split tree (800 train / 200 val /
797 test, stratified, seeded), upsampled to 32 × 32 RGB PNGs; any other class-per-folder
tree with ``train/`` and ``test/`` runs the same way.

    python -m benchmarks.real_images --export-sklearn-digits /tmp/uci-digits
    python -m benchmarks.real_images --folder /tmp/uci-digits --methods linear e2vpt \
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

from benchmarks.offline_signal import record
from e2vpt_core import PromptConfig
from e2vpt_core.data.folder import load_folder
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

SPLIT_SIZES = {"train": 800, "val": 200}  # the rest is test
REFERENCES = ("pixels", "pixels-1nn")


def export_sklearn_digits(root: Path, seed: int = 0, size: int = 32) -> dict[str, int]:
    """Write scikit-learn's digits as ``root/{train,val,test}/<digit>/<index>.png``.

    Stratified: each split takes its share of every class. Returns images per split."""
    digits = load_digits()
    everything = np.arange(len(digits.target))
    train, rest = train_test_split(everything, train_size=SPLIT_SIZES["train"],
                                   stratify=digits.target, random_state=seed)
    val, test = train_test_split(rest, train_size=SPLIT_SIZES["val"],
                                 stratify=digits.target[rest], random_state=seed)
    order = {"train": train, "val": val, "test": test}
    for split, indices in order.items():
        for index in indices:
            grey = (digits.images[index] * (255 / 16)).round().astype(np.uint8)
            image = Image.fromarray(grey).resize((size, size), Image.BILINEAR).convert("RGB")
            folder = root / split / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{index:04d}.png")
    return {split: len(indices) for split, indices in order.items()}


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


def engine_run(root: Path, method: str, seed: int, store: RunStore, epochs: int | None,
               backbone: str | None) -> float | None:
    changes = {k: v for k, v in (("epochs", epochs), ("backbone", backbone)) if v is not None}
    config = TrainConfig(dataset=f"folder:{root}", prompt=PromptConfig(method), seed=seed,
                         eval_splits=("test",), device="cpu", **changes)
    return train_run(config, store).metrics.get("test_top1")


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
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--methods", nargs="*", default=["linear", "e2vpt"])
    parser.add_argument("--references", nargs="*", default=list(REFERENCES),
                        choices=REFERENCES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the CLI's")
    parser.add_argument("--backbone", default=None, help="default: the CLI's")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export_sklearn_digits:
        counts = export_sklearn_digits(args.export_sklearn_digits)
        print(f"wrote {counts} to {args.export_sklearn_digits}")
    if not args.folder:
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        for seed in args.seeds:
            for column in args.references + args.methods:
                start = time.perf_counter()
                if column in REFERENCES:
                    score = pixel_reference(args.folder, column, seed)
                else:
                    score = engine_run(args.folder, column, seed, store, args.epochs,
                                       args.backbone)
                row = {"folder": str(args.folder), "column": column, "seed": seed,
                       "score": score, "epochs": args.epochs, "backbone": args.backbone,
                       "seconds": round(time.perf_counter() - start, 1)}
                record(row, rows, args.results)
    print("\n".join(["", *summary(rows)]))


if __name__ == "__main__":
    main()
