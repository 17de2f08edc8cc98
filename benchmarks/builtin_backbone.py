"""Does the bundled backbone help? Built-in tasks, pretrained against random init.

Linear probe: logistic regression (scikit-learn) on frozen pooled features, train800 → test.
Prompt methods: full `train_run`s with the paper's recipe for a few epochs, train800 → test.

    python benchmarks/builtin_backbone.py                       # linear probe only
    python benchmarks/builtin_backbone.py --methods vpt-deep e2vpt --epochs 10
    python benchmarks/builtin_backbone.py --backbone-dir /tmp/ckpt   # another checkpoint

``--inits random`` runs one half only (random init does not depend on the
checkpoint, so it can run while pretraining continues); ``--results FILE``
appends every score as a JSON line and prints the table over all the scores
the file holds, so halves run apart end up in one table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.data import BUILTIN_TASKS, load_dataset
from e2vpt_core.models.factory import BUILTIN_BACKBONES
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run


@torch.no_grad()
def features(model, task: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    dataset = load_dataset(f"builtin:{task}", split)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))]) * 2 - 1  # mean/std 0.5
    model.eval()
    pooled = torch.cat([model.forward_embedding(batch) for batch in images.split(250)])
    return pooled.numpy(), np.asarray(dataset.targets)


def linear_probe(backbone: str, pretrained: bool, task: str) -> float:
    torch.manual_seed(0)
    model = create_model(backbone, 2, PromptConfig("linear"), pretrained=pretrained)
    train_x, train_y = features(model, task, "train")
    test_x, test_y = features(model, task, "test")
    scaler = StandardScaler().fit(train_x)
    classifier = LogisticRegression(C=0.1, max_iter=2000)
    classifier.fit(scaler.transform(train_x), train_y)
    return 100.0 * classifier.score(scaler.transform(test_x), test_y)


def prompt_run(backbone: str, pretrained: bool, task: str, method: str, epochs: int,
               base_lr: float, store: RunStore) -> float | None:
    config = TrainConfig(backbone=backbone, pretrained=pretrained, dataset=f"builtin:{task}",
                         prompt=PromptConfig(method), epochs=epochs, base_lr=base_lr,
                         weight_decay=0.0001, batch_size=64, eval_splits=("test",),
                         device="cpu")
    result = train_run(config, store)
    return result.metrics.get("test_top1")


def print_table(scores: dict[tuple[str, str, bool], float | None], tasks: list[str],
                columns: list[str]) -> None:
    """Markdown table; a blank cell was not run, "failed" is a run that failed."""
    def cell(key: tuple[str, str, bool]) -> str:
        if key not in scores:
            return ""
        return "failed" if scores[key] is None else f"{scores[key]:.1f}"

    print("| task | " + " | ".join(f"{c} pretrained | {c} random | Δ" for c in columns) + " |")
    print("| --- |" + " --- | --- | --- |" * len(columns))
    for task in tasks:
        cells = []
        for column in columns:
            pair = [scores.get((task, column, p)) for p in (True, False)]
            delta = f"{pair[0] - pair[1]:+.1f}" if None not in pair else "–"
            cells.append(f"{cell((task, column, True))} | {cell((task, column, False))} | {delta}")
        print(f"| {task} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone-dir", default=None,
                        help="a checkpoint directory to test instead of the bundled one")
    parser.add_argument("--tasks", nargs="+", default=sorted(BUILTIN_TASKS))
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--no-linear-probe", action="store_true")
    parser.add_argument("--inits", nargs="+", choices=("pretrained", "random"),
                        default=["pretrained", "random"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON-lines file: scores are appended; the table covers all of it")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = args.backbone_dir or "builtin-vit-tiny"
    if args.backbone_dir and not (Path(args.backbone_dir) / "config.json").exists():
        shutil.copy(BUILTIN_BACKBONES["builtin-vit-tiny"] / "config.json",
                    Path(args.backbone_dir) / "config.json")

    columns = ([] if args.no_linear_probe else ["linear probe"]) + args.methods
    scores: dict[tuple[str, str, bool], float | None] = {}
    if args.results and args.results.exists():
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            scores[(row["task"], row["column"], row["pretrained"])] = row["score"]
    print(f"backbone {backbone}; prompt runs: {args.epochs} epochs, base lr {args.lr}\n")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        for task in args.tasks:
            for column in columns:
                for pretrained in (init == "pretrained" for init in args.inits):
                    if column == "linear probe":
                        score = linear_probe(backbone, pretrained, task)
                    else:
                        score = prompt_run(backbone, pretrained, task, column,
                                           args.epochs, args.lr, store)
                    scores[(task, column, pretrained)] = score
                    row = {"task": task, "column": column, "pretrained": pretrained,
                           "score": score, "epochs": args.epochs, "backbone": backbone}
                    print(json.dumps(row), flush=True)
                    if args.results:
                        with open(args.results, "a") as f:
                            f.write(json.dumps(row) + "\n")
    columns += sorted({c for _, c, _ in scores} - set(columns))
    print()
    print_table(scores, args.tasks, columns)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
