"""Accuracy against prune ratio on the built-in tasks, for both rewind inits and prune modes.

For each task: train an E²VPT run on the bundled backbone (train800, val200 and test
evaluated), score its prompts once, then rewind at every token ratio × segment ratio
with each (init, mode) pair (`sweep_prune`, which also times `zero` vs `remove`
inference). The unpruned parent is the 0 % row. Beside every rewound ratio, the same
ratio with random masks of the same counts, rewound the same way (`--random-seeds`, at
least 3): the lottery-ticket control that tells whether the scores matter at all.

    python benchmarks/prune_table.py --tasks orientation texture --epochs 10 \\
        --store /tmp/prune-store --results /tmp/prune.jsonl

Rows are appended to ``--results`` as they finish and the table covers the whole file,
so an interrupted run loses at most the sweep in progress.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd
import torch

from e2vpt_core import PromptConfig
from e2vpt_core.prune import sweep_prune
from e2vpt_core.prune.importance import TOKEN_SCORES
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run
from e2vpt_core.train.config import DEFAULT_BACKBONE

COMBOS = [("fresh", "zero"), ("fresh", "remove"), ("original", "zero"), ("original", "remove")]


def parent_run(store: RunStore, task: str, epochs: int, lr: float,
               masks_per_block: bool = False, backbone: str = DEFAULT_BACKBONE,
               prompts: int | None = None) -> dict:
    config = TrainConfig(backbone=backbone, dataset=f"builtin:{task}",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=prompts,
                                             masks_per_block=masks_per_block),
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


def random_column(table: pd.DataFrame, ratios: list[str], combo: str) -> pd.Series:
    """Test top-1 of the random-mask rewinds of one (init, mode): 'mean ± sd (n)'."""
    random = table[(table["order"] == "random") & (table["combo"] == combo)]
    stats = random.groupby(ratios)["test_top1"].agg(["mean", "std", "count"])
    return stats.apply(lambda r: f"{r['mean']:.1f} ± {0.0 if pd.isna(r['std']) else r['std']:.1f}"
                                 f" ({int(r['count'])})", axis=1)


def print_table(rows: list[dict]) -> None:
    """Test top-1 per (task, token ratio) and (init, mode), each beside its random-mask
    control; effective params; timings."""
    table = pd.DataFrame(rows)
    table["combo"] = table["init"] + " / " + table["mode"]
    for column, default in (("segment_ratio", 0.0), ("masks", "shared"),
                            ("token_scores", "mask"), ("order", "importance")):
        table[column] = table.get(column, pd.Series(default, index=table.index)).fillna(default)
    ratios = ["task", "masks", "token_scores", "token_ratio", "segment_ratio"]
    scored = table[table["order"] != "random"]
    accuracy = scored.pivot_table(index=ratios, columns="combo", values="test_top1").round(1)
    combos = [f"{i} / {m}" for i, m in COMBOS if f"{i} / {m}" in accuracy]
    accuracy = accuracy[combos]
    for combo in combos:
        random = random_column(table, ratios, combo)
        if not random.empty:
            accuracy.insert(accuracy.columns.get_loc(combo) + 1, f"{combo} random", random)
    accuracy["effective params"] = scored.groupby(ratios)["effective_params"].first()
    parents = table.groupby(["task", "parent"])[["parent_test_top1"]].first()
    print("unpruned parents (test top-1):")
    print(markdown(parents))
    print()
    print(markdown(accuracy))
    timed = scored.dropna(subset=["ms_zero", "ms_remove"])
    ratio = (timed["ms_remove"] / timed["ms_zero"]).groupby(timed["token_ratio"]).median()
    print("\nremove / zero inference time, median over the rewinds at each ratio:")
    print(markdown(ratio.round(3).rename("remove / zero").to_frame()))


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--token-scores", choices=TOKEN_SCORES, default="mask")
    parser.add_argument("--random-seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="random-mask rewinds beside each ratio (the control; >= 3)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("-P", "--prompts", type=int, default=None)
    args = parser.parse_args(argv)
    if args.random_seeds and len(args.random_seeds) < 3:
        print(f"warning: {len(args.random_seeds)} random seeds; the control asks for 3")
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
            parent = parent_run(store, task, args.epochs, args.lr, args.masks_per_block,
                                args.backbone, args.prompts)
        masks = store.get_run(parent["run_id"])["config"]["prompt"].get("masks_per_block")
        print(f"{task}: parent {parent['run_id']} val {parent['val_top1']:.1f} "
              f"test {parent['test_top1']:.1f}", flush=True)
        combos = [(i, m) for i, m in COMBOS if i in args.inits and m in args.modes]
        # the random controls first, so the parent's stored sweep is the scored one
        orders = [("random", seed) for seed in args.random_seeds] + [("importance", 0)]
        for (init, mode), (order, seed) in itertools.product(combos, orders):
            table = sweep_prune(store, parent["run_id"], ratios=args.ratios,
                                segment_ratios=args.segment_ratios, init=init, mode=mode,
                                token_scores=args.token_scores, timing_repeats=3,
                                order=order, seed=seed)
            with open(args.results, "a") as f:
                for row in table.to_dict("records"):
                    row = {"task": task, "init": init, "mode": mode, "epochs": args.epochs,
                           "parent": parent["run_id"], "parent_test_top1": parent["test_top1"],
                           "masks": "per block" if masks else "shared",
                           "token_scores": args.token_scores, "order": order,
                           "order_seed": seed, **row}
                    f.write(json.dumps(row, default=str) + "\n")
            print(f"{task} {init}/{mode} {order} {seed}: "
                  f"{table['test_top1'].round(1).tolist()}", flush=True)
    print_table([json.loads(line) for line in args.results.read_text().splitlines()])
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
