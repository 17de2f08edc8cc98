"""Do the token scores choose better than chance? Accuracy against prune ratio, no retraining.

For each built-in task and seed: train an E²VPT parent, score its prompt tokens with every
token score, then evaluate the parent on val with the tokens each score prunes first, at
every token ratio (no retraining, `prune.noretrain`). A score's area under that curve is
compared with random masks of the same counts (≥ 5 draws, mean ± sd) and with the reverse
order (most important pruned first): a score with signal sits above random, and its
reverse below.

    python benchmarks/prune_signal.py --tasks orientation texture --seeds 0 1 2 \\
        --epochs 10 --store /tmp/signal-store --results /tmp/prune_signal.jsonl

Rows are appended to ``--results`` as each (task, seed) finishes, and the summary covers
the whole file, so an interrupted run loses at most one parent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from e2vpt_core import PromptConfig
from e2vpt_core.prune.importance import run_importance
from e2vpt_core.prune.noretrain import curve_area, no_retrain_curve, run_batches
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run
from e2vpt_core.train.config import DEFAULT_BACKBONE

# (name, token_scores, signed): the paper's, the reference code's, and the candidates.
SCORES = [("mask (paper)", "mask", False), ("mask signed (reference)", "mask", True),
          ("segments", "segments", False), ("kv", "kv", False), ("logit", "logit", False),
          ("taylor", "taylor", False), ("loo", "loo", False)]


def train_parent(store: RunStore, args: argparse.Namespace, task: str, seed: int) -> str:
    config = TrainConfig(backbone=args.backbone, dataset=f"builtin:{task}",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=args.prompts,
                                             kv_prompt_len=args.kv_prompts),
                         epochs=args.epochs, base_lr=args.lr, batch_size=args.batch_size,
                         seed=seed, eval_splits=("val",), device=args.device)
    result = train_run(config, store)
    if result.status != "completed":
        raise RuntimeError(f"parent on {task}, seed {seed}: {result.status} {result.reason}")
    return result.run_id


def parent_curves(store: RunStore, run_id: str, args: argparse.Namespace, mode: str,
                  ) -> list[dict]:
    """Every score's curve and its reverse, and the random draws, for one parent."""
    model, batches, _ = run_batches(store, run_id)
    options = dict(ratios=args.ratios, segment_ratio=0.0, mode=mode)
    importance = run_importance(store, run_id)
    rows = [{"score": "random", **row} for row in no_retrain_curve(
        model, batches, importance.token, importance.segment, draws=args.draws,
        seed=1000, orders=("random",), **options)]
    for name, token_scores, signed in SCORES:
        scores = run_importance(store, run_id, signed=signed, token_scores=token_scores)
        rows += [{"score": name, **row} for row in no_retrain_curve(
            model, batches, scores.token, scores.segment, orders=("importance", "reverse"),
            **options)]
    return [{"mode": mode, **row} for row in rows]


def areas(rows: list[dict]) -> pd.DataFrame:
    """One row per (task, seed, score, order, draw): the area under its curve."""
    frame = pd.DataFrame(rows)
    keys = ["task", "mode", "seed_parent", "score", "order", "seed"]
    return (frame.groupby(keys)
            .apply(lambda g: curve_area(g["token_ratio"], g["top1"]), include_groups=False)
            .rename("area").reset_index())


def summary(rows: list[dict]) -> pd.DataFrame:
    """Per task, mode and score: mean area of the score and of its reverse over parent
    seeds, random's mean ± sd over all draws, and the score's margin over random in sd
    units."""
    table = areas(rows)
    random = table[table["score"] == "random"].groupby(["task", "mode"])["area"]
    out = []
    scored = table[table["score"] != "random"]
    for (task, mode, score), group in scored.groupby(["task", "mode", "score"]):
        chosen = group[group["order"] == "importance"]["area"]
        reverse = group[group["order"] == "reverse"]["area"]
        mean, sd = random.mean()[(task, mode)], random.std()[(task, mode)]
        out.append({"task": task, "mode": mode, "score": score, "parents": len(chosen),
                    "area": round(chosen.mean(), 2), "reverse": round(reverse.mean(), 2),
                    "random": f"{mean:.2f} ± {sd:.2f}",
                    "margin_sd": round((chosen.mean() - mean) / sd, 2) if sd else None})
    return pd.DataFrame(out)


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["orientation", "texture"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--prompts", "-P", type=int, default=10)
    parser.add_argument("--kv-prompts", "-T", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ratios", type=float, nargs="+",
                        default=[round(0.1 * i, 1) for i in range(10)])
    parser.add_argument("--draws", type=int, default=5, help="random masks per parent")
    parser.add_argument("--modes", nargs="+", choices=("zero", "remove"), default=["zero"],
                        help="zero: pruned tokens are zeroed (still attended to, as the "
                             "LayerNorm's bias); remove: they leave the sequence")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--store", default="runs-prune-signal")
    parser.add_argument("--results", type=Path, default=Path("prune_signal.jsonl"))
    args = parser.parse_args(argv)
    if args.draws < 5:
        print(f"warning: {args.draws} random draws; the comparison asks for at least 5")
    if len(args.ratios) < 2:
        parser.error("--ratios needs at least two ratios for an area")
    return args


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    store = RunStore(args.store)
    start = time.perf_counter()
    for task in args.tasks:
        for seed in args.seeds:
            run_id = train_parent(store, args, task, seed)
            rows = [row for mode in args.modes for row in parent_curves(store, run_id, args,
                                                                        mode)]
            with open(args.results, "a") as f:
                for row in rows:
                    f.write(json.dumps({"task": task, "seed_parent": seed, "parent": run_id,
                                        **row}) + "\n")
            parent = statistics.mean(r["top1"] for r in rows if r["token_ratio"] == 0.0)
            print(f"{task} seed {seed}: parent {run_id} val {parent:.1f}", flush=True)
    table = summary([json.loads(line) for line in args.results.read_text().splitlines()])
    print(markdown(table))
    print(f"\n{time.perf_counter() - start:.0f} s")
    return table


if __name__ == "__main__":
    main()
