"""`e2vpt protocol`: the paper's full pipeline on one dataset or a VTAB / FGVC suite."""

from __future__ import annotations

import argparse
import json
import sys

from ..prune.options import DEFAULT_RATIOS, DEFAULT_SEGMENT_RATIOS
from ..train.config import PAPER_LR_GRID, PAPER_WD_GRID
from .common import ProgressBar, add_train_arguments, train_config


def _protocol(args: argparse.Namespace) -> int:
    from ..protocol import results_markdown, run_protocol, run_suite
    from ..store import RunStore

    config = train_config(args)
    store = RunStore(args.store)
    grids = (args.lrs, args.wds, args.token_ratios, args.segment_ratios, args.seeds)
    bar = ProgressBar(not args.quiet and args.ray is None)
    if args.ray is not None and not args.quiet:
        print(f"training on the Ray cluster {args.ray!r}; follow the runs with `e2vpt runs` "
              "or the app", file=sys.stderr)
    try:
        if args.suite:
            result = run_suite(store, args.suite, config, *grids, progress=bar,
                               ray_address=args.ray)
            text = result["report"]
        else:
            result = run_protocol(store, config, *grids, progress=bar, ray_address=args.ray)
            text = results_markdown(result)
    finally:
        bar.close()
    print(text, end="" if text.endswith("\n") else "\n")
    print(f"results in {store.run_dir(result['run_id'])}/results.md")
    if args.json:
        print(json.dumps(result, default=str))
    return 0 if result["status"] == "completed" else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `protocol` to the `e2vpt` parser."""
    parser = subparsers.add_parser(
        "protocol", help="grid → prune sweep → final seeds (the paper's pipeline)",
        description="The paper's pipeline: lr × wd grid on train → val, rewind at every "
                    "token × segment prune ratio (best on val), final seeds on trainval → "
                    "test. The defaults (40 grid runs, 27 rewinds, 5 seeds per dataset) "
                    "mean thousands of trainings for a whole suite.")
    add_train_arguments(parser)
    parser.add_argument("--suite", default=None,
                        help="vtab:/path/vtab-1k or fgvc:/path: every task folder found "
                             "(replaces --dataset), compared with the paper's numbers")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(PAPER_LR_GRID),
                        help="base learning rates of the grid (the paper's)")
    parser.add_argument("--wds", type=float, nargs="+", default=list(PAPER_WD_GRID),
                        help="weight decays of the grid (the paper's)")
    parser.add_argument("--token-ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS),
                        help="token prune ratios of the rewind sweep")
    parser.add_argument("--segment-ratios", type=float, nargs="+",
                        default=list(DEFAULT_SEGMENT_RATIOS),
                        help="segment prune ratios of the rewind sweep (a grid with the "
                             "token ratios)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="seeds of the final runs on trainval → test")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="spread the trainings (grid, importance and rewinds, seeds; all "
                             "tasks of a suite at once) over a Ray cluster: 'local' starts "
                             "one here, 'auto' joins this node's, ray://HOST:PORT connects as "
                             "a client; the store and data must be on a disk every node "
                             "sees under the same path (pip install e2vpt-core[ray])")
    parser.set_defaults(handler=_protocol)
