"""`e2vpt runs`, `e2vpt rename`, `e2vpt tag`: list the store's runs by name, name and tag them.

Each row carries its seed and `group_id` (None outside a seed group; see `e2vpt groups`).

Names and tags are the app's (`store.names`: `display_name` and `tags` in the run summary),
so a run renamed here is renamed on the Runs page too. No torch is imported.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from .common import add_json_argument, add_store_argument

RUN_COLUMNS = ["id", "name", "tags", "kind", "status", "method", "dataset", "seed",
               "group_id", "val_top1", "test_top1", "trainable_params", "effective_params",
               "parent_id", "reason"]
_COUNTS = ("trainable_params", "effective_params")


def _runs(args: argparse.Namespace) -> int:
    from ..store import RunStore
    from ..store.groups import with_groups
    from ..store.names import run_names, run_tags

    table = with_groups(RunStore(args.store).runs())  # `group_id` and `seed` of each run
    names, tags = run_names(table), run_tags(table)
    table["name"] = [names.get(run_id) for run_id in table["id"]]
    table["tags"] = [tags.get(run_id, []) for run_id in table["id"]]
    table = table[[c for c in RUN_COLUMNS if c in table.columns]]
    if args.json:
        print(table.astype(object).where(table.notna(), None).to_json(orient="records"))
    elif table.empty:
        print(f"no runs in {args.store}")
    else:
        print(_text(table))
    return 0


def _text(table: Any) -> str:
    """The table for a terminal: tags joined, accuracies to 2 decimals, counts whole, a
    missing value `-`."""
    def cell(column: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if column == "tags":
            return ", ".join(value) or "-"
        if column.endswith("_top1"):
            return f"{value:.2f}"
        return f"{value:,.0f}" if column in _COUNTS else str(value)

    shown = table.astype(object).apply(lambda column: [cell(column.name, v) for v in column])
    return shown.to_string(index=False)


def _rename(args: argparse.Namespace) -> int:
    from ..store import RunStore
    from ..store.names import rename

    rename(RunStore(args.store), args.run, args.name)
    shown = " ".join(args.name.split())
    print(f"run {args.run}: " + (f"named {shown!r}" if shown else "back to its derived name"))
    if args.json:
        print(json.dumps({"run_id": args.run, "name": shown or None}))
    return 0


def _tag(args: argparse.Namespace) -> int:
    from ..store import RunStore
    from ..store.names import tag

    tags = tag(RunStore(args.store), args.run, args.tags, remove=args.remove)
    print(f"run {args.run}: tags " + (", ".join(tags) if tags else "(none)"))
    if args.json:
        print(json.dumps({"run_id": args.run, "tags": tags}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `runs`, `rename` and `tag` to the `e2vpt` parser."""
    runs = subparsers.add_parser(
        "runs", help="list runs, newest first, with their names and tags",
        description="List the store's runs, newest first: id, name (the user's, else one "
                    "derived from method, prompt lengths and task, as the app shows it), "
                    "tags, status and accuracies.")
    add_store_argument(runs)
    add_json_argument(runs, "a JSON list of the runs (with `name` and `tags`)")
    runs.set_defaults(handler=_runs)

    rename = _run_command(
        subparsers, "rename", _rename, "give a run a name (shown by `e2vpt runs` and the app)",
        "Give a run a readable name, kept in its summary as the app keeps it. An empty name "
        "('') goes back to the derived one.")
    rename.add_argument("name", help="the new name; '' for the derived name")

    tag = _run_command(
        subparsers, "tag", _tag, "add tags to a run, or remove them",
        "Add tags to a run (kept in order, without repeats), or remove them with --remove. "
        "A comma separates tags, as in the app.")
    tag.add_argument("tags", nargs="+", metavar="TAG", help="tags to add (or remove)")
    tag.add_argument("--remove", action="store_true", help="remove the tags instead")


def _run_command(subparsers: argparse._SubParsersAction, name: str, handler: Any, brief: str,
                 description: str) -> argparse.ArgumentParser:
    """A command on one run: its id, --store and --json."""
    parser = subparsers.add_parser(name, help=brief, description=description)
    parser.add_argument("run", help="run id (see `e2vpt runs`)")
    add_store_argument(parser)
    add_json_argument(parser)
    parser.set_defaults(handler=handler)
    return parser
