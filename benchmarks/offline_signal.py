"""Does prompt tuning learn on the offline default? Every built-in task, seeds and references.

For each task, train800 → test1000, test top-1 %:

- ``pixels``: logistic regression on the raw pixels (the floor a backbone must clear);
- ``cnn``: a small CNN trained from scratch on the same 800 images (what the images teach
  without any pretraining: a reference of what is learnable);
- ``linear``, ``vpt-deep``, ``e2vpt``, ...: the engine's ``train_run`` with the CLI's default
  recipe (or ``--epochs`` / ``--lr``) on the bundled backbone, one run per seed.

    python benchmarks/offline_signal.py --seeds 0 1 2 --results signal.jsonl
    python benchmarks/offline_signal.py --tasks texture --methods e2vpt --seeds 0
    python benchmarks/offline_signal.py --tasks distance --methods e2vpt --references \
        --seeds 0 1 2 --lr 0.5 --threads 1 --no-amp       # fp32 where bf16 is the default

Rows go to a JSON-lines file as they finish (``--results``); the table is printed over the
whole file (mean ± sd over seeds), so parts run apart end up in one table. Each engine row
records the base lr it ran with (the CLI's default depends on the method); rows of other
lrs, ``--epochs`` or ``--backbone`` get their own columns (``e2vpt, lr 0.5``), and so do
rows that record the precision they trained in (``precision``: bf16 autocast on a CPU with
native bf16 units unless ``--no-amp``; rows written before 2026-12-07 hold none, and ran in
fp32). Rows written before 2026-12-06 hold ``"lr": null`` for the default of that time, 0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from e2vpt_core import PromptConfig
from e2vpt_core.data import BUILTIN_TASKS, builtin_classes, generate_builtin
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run
from e2vpt_core.train.device import training_precision

REFERENCES = ("pixels", "cnn")


def pixel_probe(task: str, seed: int) -> float:
    (x, y), (tx, ty) = generate_builtin(task, "train"), generate_builtin(task, "test")
    clf = make_pipeline(StandardScaler(),
                        LogisticRegression(C=0.01, max_iter=3000, random_state=seed))
    clf.fit(x.reshape(len(x), -1) / 255, y)
    return 100.0 * clf.score(tx.reshape(len(tx), -1) / 255, ty)


def _cnn(num_classes: int) -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(3, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2),
                         *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, num_classes))


def cnn_from_scratch(task: str, seed: int, epochs: int = 60) -> float:
    """A 6-conv CNN, AdamW + cosine, no augmentation (flips would change some labels)."""
    torch.manual_seed(seed)
    x, y = generate_builtin(task, "train")
    tx, ty = generate_builtin(task, "test")

    def tensor(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        return x.float() / 127.5 - 1

    x, tx = tensor(x), tensor(tx)
    y = torch.from_numpy(np.asarray(y))
    model = _cnn(int(y.max()) + 1)
    steps = epochs * ((len(x) + 63) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(part).argmax(1) for part in tx.split(500)])
    return 100.0 * (pred.numpy() == np.asarray(ty)).mean()


def engine_run(dataset: str, method: str, seed: int, store: RunStore, epochs: int | None,
               lr: float | None, backbone: str | None, augment: str = "auto",
               amp: bool = True) -> tuple[float | None, float, str | None]:
    """Test top-1 of one `train_run` on a dataset spec with the CLI defaults (overridable),
    None if it failed, the base lr it ran with (the CLI's default depends on the method
    and has changed over time, so a row records the number rather than "the default") and
    the precision it trained in."""
    changes = {k: v for k, v in (("epochs", epochs), ("base_lr", lr), ("backbone", backbone))
               if v is not None}
    config = TrainConfig(dataset=dataset, prompt=PromptConfig(method), seed=seed,
                         augment=augment, eval_splits=("test",), device="cpu", amp=amp,
                         **changes)
    precision = training_precision(amp, torch.device("cpu"))
    return train_run(config, store).metrics.get("test_top1"), config.base_lr, precision


def record(row: dict, rows: list[dict], results: Path | None) -> None:
    """Print a finished row, keep it, and append it to the JSON-lines file if there is one."""
    print(json.dumps(row), flush=True)
    rows.append(row)
    if results:
        with open(results, "a") as f:
            f.write(json.dumps(row) + "\n")


def column_label(row: dict) -> str:
    """A table column: the method plus every recipe field the row overrides, so rows of
    different recipes in one results file never share a column."""
    if row["column"] in REFERENCES:
        return row["column"]
    overrides = [f"{key} {row[key]:g}" if isinstance(row[key], float) else f"{key} {row[key]}"
                 for key in ("lr", "epochs", "backbone", "precision")
                if row.get(key) is not None]
    return ", ".join([row["column"], *overrides])


def print_table(rows: list[dict], tasks: list[str]) -> None:
    """Markdown: mean ± sd (n seeds) per task and column."""
    columns = list(dict.fromkeys(column_label(r) for r in rows))
    by_cell = defaultdict(list)
    for r in rows:
        if r["score"] is not None:
            by_cell[r["task"], column_label(r)].append(r["score"])
    print("| task (chance) | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for task in tasks:
        cells = []
        for column in columns:
            scores = by_cell[task, column]
            if not scores:
                cells.append("")
            elif len(scores) == 1:
                cells.append(f"{scores[0]:.1f} (1)")
            else:
                cells.append(f"{statistics.mean(scores):.1f} ± {statistics.stdev(scores):.1f}"
                             f" ({len(scores)})")
        chance = 100 / len(builtin_classes(task))
        print(f"| {task} ({chance:.1f}) | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=sorted(BUILTIN_TASKS))
    parser.add_argument("--methods", nargs="*", default=["linear", "vpt-deep", "e2vpt"])
    parser.add_argument("--references", nargs="*", default=list(REFERENCES),
                        choices=REFERENCES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the CLI's")
    parser.add_argument("--lr", type=float, default=None, help="base lr; default: the CLI's")
    parser.add_argument("--backbone", default=None,
                        help="a backbone name or checkpoint directory; default: the CLI's")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-amp", action="store_true", help="train in fp32 everywhere")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if args.results and args.results.exists():
        rows = [json.loads(line) for line in args.results.read_text().splitlines() if line]
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        for task in args.tasks:
            for seed in args.seeds:
                for column in args.references + args.methods:
                    start, lr, precision = time.perf_counter(), None, None
                    if column == "pixels":
                        score = pixel_probe(task, seed)
                    elif column == "cnn":
                        score = cnn_from_scratch(task, seed)
                    else:
                        score, lr, precision = engine_run(
                            f"builtin:{task}", column, seed, store, args.epochs, args.lr,
                            args.backbone, amp=not args.no_amp)
                    row = {"task": task, "column": column, "seed": seed, "score": score,
                           "epochs": args.epochs, "lr": lr, "backbone": args.backbone,
                           "precision": precision,
                           "seconds": round(time.perf_counter() - start, 1)}
                    record(row, rows, args.results)
    print()
    print_table(rows, args.tasks)


if __name__ == "__main__":
    main()
