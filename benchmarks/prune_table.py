"""Accuracy against prune ratio on the built-in tasks, for both rewind inits and prune modes.

For each task: train an E²VPT run on the bundled backbone (train800, val200 and test
evaluated), score its prompts once, then rewind at every token ratio × segment ratio
with each (init, mode) pair (`sweep_prune`, which also times `zero` vs `remove`
inference). The unpruned parent is the 0 % row.

    python benchmarks/prune_table.py --tasks orientation texture --epochs 10 \\
        --store /tmp/prune-store --results /tmp/prune.jsonl

Rows are appended to ``--results`` as they finish and the table covers the whole file,
so an interrupted run loses at most the sweep in progress.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from e2vpt_core import PromptConfig
from e2vpt_core.prune import sweep_prune
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

COMBOS = [("fresh", "zero"), ("fresh", "remove"), ("original", "zero"), ("original", "remove")]


def parent_run(store: RunStore, task: str, epochs: int, lr: float,
               masks_per_block: bool = False) -> dict:
    config = TrainConfig(backbone="builtin-vit-tiny", dataset=f"builtin:{task}",
                         prompt=PromptConfig("e2vpt", masks_per_block=masks_per_block),
                         epochs=epochs, base_lr=lr,
                         weight_decay=0.0001, batch_size=64, eval_splits=("val", "test"),
                         device="cpu")
    result = train_run(config, store)
    if result.status != "completed":
        raise RuntimeError(f"parent run on {task} {result.status}: {result.reason}")
    return {"run_id": result.run_id, **result.metrics}


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table of a frame with its index as leading columns (no tabulate needed)."""
    flat = frame.reset_index()
    lines = ["| " + " | ".join(map(str, flat.columns)) + " |",
             "|" + " --- |" * len(flat.columns)]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
              for row in flat.itertuples(index=False)]
    return "\n".join(lines)


def print_table(rows: list[dict]) -> None:
    """Test top-1 per (task, token ratio) and (init, mode); effective params; timings."""
    table = pd.DataFrame(rows)
    table["combo"] = table["init"] + " / " + table["mode"]
    table["segment_ratio"] = table.get("segment_ratio", 0.0)
    table["masks"] = table.get("masks", "shared")
    table["token_scores"] = table.get("token_scores", "mask")
    ratios = ["task", "masks", "token_scores", "token_ratio", "segment_ratio"]
    accuracy = table.pivot_table(index=ratios, columns="combo", values="test_top1").round(1)
    combos = [f"{i} / {m}" for i, m in COMBOS if f"{i} / {m}" in accuracy]
    accuracy = accuracy[combos]
    accuracy["effective params"] = table.groupby(ratios)["effective_params"].first()
    parents = table.groupby(["task", "parent"])[["parent_test_top1"]].first()
    print("unpruned parents (test top-1):")
    print(markdown(parents))
    print()
    print(markdown(accuracy))
    timed = table.dropna(subset=["ms_zero", "ms_remove"])
    ratio = (timed["ms_remove"] / timed["ms_zero"]).groupby(timed["token_ratio"]).median()
    print("\nremove / zero inference time, median over the rewinds at each ratio:")
    print(markdown(ratio.round(3).rename("remove / zero").to_frame()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["orientation", "texture"])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                        help="token ratios")
    parser.add_argument("--segment-ratios", type=float, nargs="+", default=[0.0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--store", default="runs-prune-table")
    parser.add_argument("--results", type=Path, default=Path("prune_table.jsonl"))
    parser.add_argument("--parent", default=None,
                        help="a completed E²VPT run in --store to prune (one task only)")
    parser.add_argument("--inits", nargs="+", choices=("fresh", "original"),
                        default=["fresh", "original"])
    parser.add_argument("--modes", nargs="+", choices=("zero", "remove"),
                        default=["zero", "remove"])
    parser.add_argument("--masks-per-block", action="store_true",
                        help="train the parent with one mask per prompt layer")
    parser.add_argument("--token-scores", choices=("mask", "segments"), default="mask")
    args = parser.parse_args()
    if args.parent and len(args.tasks) != 1:
        parser.error("--parent goes with exactly one --tasks entry")
    if args.threads:
        torch.set_num_threads(args.threads)
    store = RunStore(args.store)
    start = time.perf_counter()
    for task in args.tasks:
        if args.parent:
            stored = store.get_run(args.parent)
            parent = {"run_id": args.parent, **stored["summary"]}
        else:
            parent = parent_run(store, task, args.epochs, args.lr, args.masks_per_block)
        masks = store.get_run(parent["run_id"])["config"]["prompt"].get("masks_per_block")
        print(f"{task}: parent {parent['run_id']} val {parent['val_top1']:.1f} "
              f"test {parent['test_top1']:.1f}", flush=True)
        combos = [(i, m) for i, m in COMBOS if i in args.inits and m in args.modes]
        for init, mode in combos:
            table = sweep_prune(store, parent["run_id"], ratios=args.ratios,
                                segment_ratios=args.segment_ratios, init=init, mode=mode,
                                token_scores=args.token_scores, timing_repeats=3)
            with open(args.results, "a") as f:
                for row in table.to_dict("records"):
                    row = {"task": task, "init": init, "mode": mode, "epochs": args.epochs,
                           "parent": parent["run_id"], "parent_test_top1": parent["test_top1"],
                           "masks": "per block" if masks else "shared",
                           "token_scores": args.token_scores, **row}
                    f.write(json.dumps(row, default=str) + "\n")
            print(f"{task} {init}/{mode}: {table['test_top1'].round(1).tolist()}", flush=True)
    print_table([json.loads(line) for line in args.results.read_text().splitlines()])
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
