"""`e2vpt groups`: seed groups as mean ± sd over their seeds, and the verdict on two groups.

A group is what `e2vpt train --seeds` (or the Train page's "Repeat over N seeds") made:
one run per seed, equal but for the seed (`store.groups`). Comparisons are on test top-1,
the reported split; the verdict is `stats.compare_groups` (Welch's test). No torch or
pandas at import: the parser stays instant.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from .common import add_json_argument, add_store_argument, print_result

SPLIT = "test"  # what groups are compared on: the split a paper reports
TEXT_COLUMNS = ["group_id", "name", "n", "status", "test_top1_text", "val_top1_mean"]


def plain(value: Any) -> Any:
    """A value JSON can hold as it is: numpy scalars as Python ones, NaN as null."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def group_result(store: Any, group_id: str, results: list[dict[str, Any]],
                 as_json: bool) -> int:
    """After `e2vpt train --seeds`: each run's line, then the group's mean ± sd; with
    --json one object (the group's figures and its `runs`). Exit 1 unless every seed
    completed."""
    from ..store.groups import summarize_groups, with_groups

    for result in results:
        print_result(result, False)
    runs = with_groups(store.runs())
    row = summarize_groups(runs[runs["group_id"] == group_id]).iloc[0].to_dict()
    figure = row["test_top1_text"] or "no test top-1"
    print(f"group {group_id} ({row['name']}): {SPLIT} top-1 {figure}; "
          f"{row['n_completed']} of {row['n']} runs completed")
    if as_json:
        print(json.dumps(plain({**row, "runs": results})))
    return 0 if row["n_completed"] == row["n"] else 1


def _groups(args: argparse.Namespace) -> int:
    from ..store import RunStore
    from ..store.groups import compare_stored_groups, list_groups

    store = RunStore(args.store)
    if args.compare:
        first, second = args.compare
        verdict = compare_stored_groups(store, first, second, SPLIT)
        print(f"{SPLIT} top-1: {verdict.sentence}")
        if args.json:
            print(json.dumps(plain({"split": SPLIT, "group_a": first, "group_b": second,
                                    **verdict.to_dict()})))
        return 0
    table = list_groups(store)
    if args.json:
        print(json.dumps(plain(table.to_dict("records"))))
    elif table.empty:
        print(f"no seed groups in {args.store} (`e2vpt train --seeds 0 1 2` makes one)")
    else:
        shown = table[TEXT_COLUMNS].astype(object).where(table[TEXT_COLUMNS].notna(), "-")
        shown["val_top1_mean"] = [v if v == "-" else f"{v:.2f}" for v in shown["val_top1_mean"]]
        print(shown.rename(columns={"test_top1_text": f"{SPLIT} top-1",
                                    "val_top1_mean": "val top-1 mean"}).to_string(index=False))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `groups` to the `e2vpt` parser."""
    groups = subparsers.add_parser(
        "groups", help="seed groups: mean ± sd over seeds, or the verdict on two groups",
        description="List the store's seed groups (made by `e2vpt train --seeds`), newest "
                    "first: runs, completed runs, test top-1 as mean ± sd over the seeds "
                    "that completed, val top-1 mean. With --compare, whether two groups' "
                    "test top-1 differ by more than their seed-to-seed noise (Welch's test).")
    add_store_argument(groups)
    groups.add_argument("--compare", nargs=2, metavar=("GROUP_A", "GROUP_B"), default=None,
                        help="group ids (see `e2vpt groups`): A − B on test top-1, its "
                             "uncertainty, p-value and a plain verdict")
    add_json_argument(groups, "the groups (a JSON list), or the verdict's fields")
    groups.set_defaults(handler=_groups)
