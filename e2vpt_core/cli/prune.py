"""`e2vpt prune`, `e2vpt rewind`, `e2vpt sweep-prune`: pruning commands of a stored run.

The choices and defaults come from `prune.options` (no torch); the engine is imported
inside the handlers, so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..prune.options import (
    CONTROLS,
    DEFAULT_RANDOM_SEEDS,
    DEFAULT_RATIOS,
    INITS,
    LEAVE_ONE_OUT,
    MAX_RATIO,
    MODES,
    ORDERS,
    TOKEN_SCORES,
)
from .common import (
    GRAD_CHECKPOINTING_HELP,
    ProgressBar,
    add_json_argument,
    add_store_argument,
    print_result,
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="id of a completed run with visual prompts "
                        "(vpt-shallow, vpt-deep, e2vpt)")
    parser.add_argument("--signed", action="store_true",
                        help="signed mean gradient (reference code) instead of E|grad| (paper)")
    parser.add_argument("--token-scores", default="mask", choices=TOKEN_SCORES,
                        help="token score: d/d token mask (paper; ~0 for deep prompts), sum "
                             "of its segment scores, a key/value mask (kv) or log-mask "
                             "logit bias (logit) after the LayerNorm, sum |grad * prompt| "
                             f"(taylor), or loo: {LEAVE_ONE_OUT}")
    parser.add_argument("--order", default="importance", choices=ORDERS,
                        help="prune lowest scores first, at random (a control with the same "
                             "counts), or highest first (reverse)")
    parser.add_argument("--seed", type=int, default=0, help="the draw of --order random")
    parser.add_argument("--min-segments", type=int, default=None,
                        help="segments always kept per token (default: max(1, R // 4))")
    add_store_argument(parser)
    add_json_argument(parser, "the result")


def _add_ratios(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-ratio", type=float, required=True,
                        help=f"fraction of prompt tokens to prune, in [0, {MAX_RATIO}]")
    parser.add_argument("--segment-ratio", type=float, default=0.0,
                        help=f"segments pruned per kept token, in [0, {MAX_RATIO}]")


def _add_rewind_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--init", default="fresh", choices=INITS,
                        help="fresh random init (reference) or the parent's initial values")
    parser.add_argument("--mode", default="zero", choices=MODES,
                        help="zero pruned prompts, or drop them from the sequence")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of each rewind (default: the parent's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _prune(args: argparse.Namespace) -> int:
    from ..prune.rewind import prune_run
    from ..store import RunStore

    result = prune_run(RunStore(args.store), args.run, args.token_ratio, args.segment_ratio,
                       args.signed, args.token_scores, args.min_segments, args.order,
                       args.seed, args.evaluate, args.mode)
    where = "(layer, token) pairs" if result["masks_per_block"] else "tokens"
    print(f"run {args.run}: pruned {result['num_tokens'] - result['num_kept_tokens']} of "
          f"{result['num_tokens']} {where}, keeping {result['kept_tokens']}; effective params "
          f"{result['effective_params']:,} of {result['trainable_params']:,}; masks stored")
    for key, value in result.items():
        if key.endswith("_top1_masked"):
            split = key.removesuffix("_top1_masked")
            print(f"{split} top-1 without retraining: {value:.2f} ({args.mode} mode); "
                  f"parent {result[f'{split}_top1_parent']:.2f}")
    if args.json:
        print(json.dumps(result))
    return 0


def _rewind(args: argparse.Namespace) -> int:
    """Like `e2vpt train`, works under `torchrun` (rank 0 creates the child run)."""
    from ..prune.rewind import prunable_config, rewind_run
    from ..store import RunStore
    from ..train.distributed import distributed_context

    store = RunStore(args.store)
    device = prunable_config(store, args.run).device
    with distributed_context(device) as (rank, _world, broadcast):
        bar = ProgressBar(not args.quiet and rank == 0)
        try:
            result = rewind_run(store, args.run, args.token_ratio, args.segment_ratio,
                                init=args.init, mode=args.mode, epochs=args.epochs,
                                progress=bar, signed=args.signed,
                                token_scores=args.token_scores,
                                min_segments=args.min_segments, rank=rank,
                                broadcast=broadcast, order=args.order, seed=args.seed,
                                grad_checkpointing=args.grad_checkpointing or None)
        finally:
            bar.close()
    if rank != 0:
        return 0 if result.status == "completed" else 1
    return print_result(result.to_dict(), args.json)


def _sweep_prune(args: argparse.Namespace) -> int:
    from ..prune.controls import sweep_verdicts
    from ..prune.sweep import sweep_prune
    from ..store import RunStore

    bar = ProgressBar(not args.quiet and args.workers == 1 and args.ray is None)
    try:
        table = sweep_prune(RunStore(args.store), args.run, args.ratios, args.segment_ratios,
                            init=args.init, mode=args.mode, epochs=args.epochs,
                            signed=args.signed, token_scores=args.token_scores,
                            min_segments=args.min_segments, workers=args.workers, progress=bar,
                            ray_address=args.ray, combined=args.combined,
                            order=args.order, seed=args.seed, select_on=args.select_on,
                            controls=args.controls, random_seeds=args.random_seeds)
    finally:
        bar.close()
    marks = ("order", "seed") if args.controls == "random" else ()
    columns = [c for c in ("token_ratio", "segment_ratio", *marks, "run_id", "status", "val_top1",
                           "test_top1", "effective_params", "ms_zero", "ms_remove", "best")
               if c in table.columns]
    print(table[columns].to_string(index=False))
    best = table[table["best"]]
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    summary: dict[str, Any] = {"run_id": args.run, "status": "failed",
                               "select_on": args.select_on, "table": records}
    if best.empty:
        print(f"run {args.run}: every rewind failed")
    else:
        row = records[int(best.index[0])]
        summary.update(status="completed", best_token_ratio=row["token_ratio"],
                       best_segment_ratio=row["segment_ratio"], best_run_id=row["run_id"])
        print(f"run {args.run}: best on {args.select_on}: token ratio {row['token_ratio']}, "
              f"segment ratio {row['segment_ratio']} (run {row['run_id']})")
    if args.controls == "random":
        summary["verdicts"] = sweep_verdicts(records, args.select_on, args.order)
        for entry in summary["verdicts"]:
            print("\n".join(entry[key] for key in ("verdict_text", "verdict_test_text")
                            if key in entry))
    if args.json:
        print(json.dumps(summary, default=str))
    return 0 if summary["status"] == "completed" else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the pruning commands to the `e2vpt` parser."""
    prune = subparsers.add_parser("prune", help="importance scores and masks for a run")
    _add_common(prune)
    _add_ratios(prune)
    prune.add_argument("--evaluate", action="store_true",
                       help="also evaluate the parent with the masks on its first eval split, "
                            "no retraining (val_top1_masked, val_top1_parent)")
    prune.add_argument("--mode", default="zero", choices=MODES,
                       help="with --evaluate: zero pruned prompts, or drop them from the "
                            "sequence")
    prune.set_defaults(handler=_prune)

    rewind = subparsers.add_parser("rewind", help="prune a run and retrain with fixed masks")
    _add_common(rewind)
    _add_ratios(rewind)
    _add_rewind_options(rewind)
    rewind.add_argument("--grad-checkpointing", action="store_true",
                        help=GRAD_CHECKPOINTING_HELP + " (default: as the parent)")
    rewind.set_defaults(handler=_rewind)

    sweep = subparsers.add_parser("sweep-prune", help="rewind at every ratio, pick the best")
    _add_common(sweep)
    sweep.add_argument("--ratios", type=float, nargs="+", default=None,
                       help="token prune ratios (default: "
                            f"{' '.join(map(str, DEFAULT_RATIOS))}; for a run of the official "
                            "preset the official grid: token and segment ratios 0.1 … 0.9, "
                            "one per pruned count)")
    sweep.add_argument("--segment-ratios", type=float, nargs="+", default=None,
                       help="segment prune ratios; every token ratio is rewound at each "
                            "(default: 0, or the official grid, see --ratios)")
    sweep.add_argument("--select-on", default="val", metavar="SPLIT",
                       help="the eval split whose top-1 picks the best pair; test is refused "
                            "(the reported test figure would be chosen on test)")
    sweep.add_argument("--controls", default="none", choices=CONTROLS,
                       help="random: also rewind random masks of the same counts at every "
                            "pair, one per --random-seeds, and give a verdict per pair")
    sweep.add_argument("--random-seeds", type=int, nargs="+", metavar="SEED",
                       default=list(DEFAULT_RANDOM_SEEDS),
                       help="the draws of --controls random (with fewer than 2 the "
                            "verdict says there are too few draws)")
    sweep.add_argument("--combined", action="store_true",
                       help="prune tokens and segments at one ratio each (r, r), no grid")
    sweep.add_argument("--workers", type=int, default=1, help="local processes")
    sweep.add_argument("--ray", metavar="ADDRESS", default=None,
                       help="run rewinds as Ray tasks on this cluster ('local' starts one; "
                            "needs pip install e2vpt-core[ray])")
    _add_rewind_options(sweep)
    sweep.set_defaults(handler=_sweep_prune)
