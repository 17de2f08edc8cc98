"""`e2vpt report`: one self-contained HTML file of runs and seed groups, to share.

The engine (`report.html`: plotly, pandas, torch) is imported inside the handler, so the
parser stays instant.
"""

from __future__ import annotations

import argparse
import sys

from .common import add_store_argument

DESCRIPTION = """\
Write one HTML file that opens offline (plotly.js inlined, no server): the final table
(val / test top-1 beside chance and the linear probe; mean ± sd of each seed group), the
training curves, the pruning trade-off of pruned runs, the Poincaré disks of a pair of
runs, each run's config and the commands that reproduce it, and the environment.

An id that is not a run is read as a seed group. The file is never written inside the
store; a disk not stored yet is computed (minutes on a CPU) and cached in the run's folder,
as `e2vpt embed` does, unless --no-disks."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` command to the `e2vpt` parser."""
    parser = subparsers.add_parser("report", help="a shareable HTML report of runs and groups",
                                   description=DESCRIPTION)
    parser.add_argument("ids", nargs="+", metavar="RUN_OR_GROUP",
                        help="run ids (see `e2vpt runs`) or seed-group ids")
    parser.add_argument("--out", required=True, metavar="FILE.html",
                        help="the report's file (outside the run store)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    parser.add_argument("--no-disks", action="store_true",
                        help="for two runs, draw only Poincaré disks already stored; never "
                             "compute one")
    parser.add_argument("--disk-split", default="test",
                        help="split the Poincaré disks of two runs are drawn on")
    add_store_argument(parser)
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..report.html import write_report
    from ..store import RunStore

    def log(message: str) -> None:
        print(f"e2vpt report: {message}", file=sys.stderr, flush=True)

    out = Path(args.out)
    size = write_report(RunStore(args.store), args.ids, out, force=args.force,
                        compute_disks=not args.no_disks, disk_split=args.disk_split, log=log)
    print(f"report of {', '.join(args.ids)} written to {out} ({size / 1e6:.1f} MB)")
    return 0
