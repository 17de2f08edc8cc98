"""The `e2vpt` command line (same as `python -m e2vpt_core`).

Every command exits 0 when done and non-zero with a one-line reason on bad input; with
`--json` the last line of stdout is one JSON object (or list, for `runs` and `groups`). The
run store is `--store`, else `$E2VPT_STORE`, else `./runs` (see `store.location`), named on
stderr at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from typing import Any

from ..methods import describe_default_base_lr
from ..train.config import PAPER_LR_GRID, PAPER_WD_GRID, PRESETS, TrainConfig
from . import attention, embed, groups, protocol, prune, report, runs
from .common import (
    HelpFormatter,
    ProgressBar,
    add_json_argument,
    add_model_arguments,
    add_store_argument,
    add_train_arguments,
    print_result,
    prompt_config,
    train_config,
)

DESCRIPTION = """\
E²VPT visual prompt tuning on timm vision transformers: train, sweep and resume runs,
prune and rewind them, embed them in the Poincaré disk, run the paper's protocol.

Every run lives in a run store: --store DIR, else $E2VPT_STORE, else ./runs (the store
the app reads too), named on stderr when a command ends. Only train, sweep and protocol
create a missing store, and only with --create-store; reading commands never do.

Every command exits 0 when done, 1 when a run it trained did not complete, 2 with a
one-line reason on bad input, 128 + N when stopped by signal N (the run is resumable).
With --json the last line of stdout is one JSON value (a list for `runs` and `groups`,
else an object).

`e2vpt COMMAND --help` shows a command's options and their defaults. Docs: README.md,
docs/METHOD.md (the method), docs/ARCHITECTURE.md (the code); `make run` starts the app."""


def _train(args: argparse.Namespace) -> int:
    from ..store import RunStore
    from ..store.groups import check_seeds, new_group_id
    from ..train import train_run
    from ..train.distributed import distributed_context
    from ..train.preflight import check_sources

    config = train_config(args, base_lr=args.lr, weight_decay=args.wd, preset=args.preset)
    seeds = None if args.seeds is None else check_seeds(args.seeds)  # before any run exists
    check_sources(config)
    with distributed_context(config.device) as (rank, _world, broadcast):
        store = RunStore(args.store)
        group = None
        if seeds is not None:  # one run per seed, equal but for it: one group
            group = broadcast(new_group_id(store, config.to_dict()) if rank == 0 else None)
        configs = [config] if seeds is None else [config.replace(seed=seed, group_id=group)
                                                  for seed in seeds]
        bar = ProgressBar(not args.quiet and rank == 0)
        results = []
        for each in configs:
            run_id = broadcast(store.create_run(each.to_dict()) if rank == 0 else None)
            result = train_run(each, store, run_id, progress=bar)
            results.append({**result.to_dict(), "group_id": group, "seed": each.seed})
        bar.close()
    if rank != 0:
        return 0 if all(r["status"] == "completed" for r in results) else 1
    if group is None:
        return print_result(results[0], args.json)
    return groups.group_result(store, group, results, args.json)


def _resume(args: argparse.Namespace) -> int:
    from ..store import RunStore
    from ..train import train_run
    from ..train.checkpoint import CHECKPOINT, read_checkpoint

    store = RunStore(args.store)
    run = store.get_run(args.run)
    if run["status"] == "completed":
        raise ValueError(f"run {args.run} is already completed")
    config = TrainConfig.from_dict(run["config"])
    with store.own_run(args.run):  # refused, naming the owner, while another trains it
        if args.restart:
            store.delete_tensors(args.run, CHECKPOINT)
        elif store.has_tensors(args.run, CHECKPOINT):
            read_checkpoint(store, args.run)  # a damaged one is refused before any change
        bar = ProgressBar(not args.quiet)
        result = train_run(config, store, args.run, resume=not args.restart, progress=bar)
        bar.close()
    return print_result({**result.to_dict(), "group_id": config.group_id, "seed": config.seed},
                        args.json)


def _sweep(args: argparse.Namespace) -> int:
    from ..store import RunStore
    from ..train.grid import sweep
    from ..train.preflight import check_sources

    config = train_config(args)
    check_sources(config)
    bar = ProgressBar(not args.quiet)
    result = sweep(config, RunStore(args.store), args.lrs, args.wds, args.seeds, progress=bar,
                   grid_epochs=args.grid_epochs)
    bar.close()
    if result["status"] == "completed":
        print(f"sweep {result['run_id']}: best base_lr {result['best_base_lr']}, wd "
              f"{result['best_weight_decay']}; test top-1 {result['test_top1_mean']:.2f} ± "
              f"{result['test_top1_std']:.2f} over {result['completed_seeds']} seeds")
    else:
        print(f"sweep {result['run_id']}: failed ({result['reason']})")
    if args.json:
        print(json.dumps(result, default=str))
    return 0 if result["status"] == "completed" else 1


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..artifacts import check_adapter
    from ..fileio import copy_files
    from ..store import RunStore

    store = RunStore(args.store)
    store.get_run(args.run)
    source, target = store.run_dir(args.run) / "adapter", Path(args.directory)
    if not source.is_dir():
        raise ValueError(f"run {args.run} has no adapter artifact (not completed?)")
    if store.contains(target):  # the run's own adapter folder included
        raise ValueError(f"{target} is inside the run store {store.root}; export writes "
                         "only outside it, --force or not")
    if (target.exists() or target.is_symlink()) and not args.force:
        raise ValueError(f"{target} exists ({'a folder' if target.is_dir() else 'a file'});"
                         " choose a new path, or pass --force to overwrite it")
    check_adapter(source)  # a damaged artifact is refused, not copied
    if not target.is_dir():
        target.unlink(missing_ok=True)  # --force: a file (or a dangling link) is replaced
    copy_files(source, target)
    check_adapter(target)
    print(f"exported run {args.run} to {args.directory}")
    return 0


def _params(args: argparse.Namespace) -> int:
    from ..models import create_model

    config = prompt_config(args)
    model = create_model(args.backbone, args.num_classes, config,
                         pretrained=False, checkpoint_path=args.checkpoint)
    summary = model.parameter_summary()
    if args.json:
        print(json.dumps({"backbone": args.backbone, **config.to_dict(), **summary}))
    else:
        model.print_trainable_parameters()
    return 0


# Modules that add their own subcommands: each has `register(subparsers)`.
COMMAND_MODULES = (runs, groups, prune, embed, attention, protocol, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2vpt", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     title="commands")

    train = commands.add_parser("train", help="train one run, or one per seed (--seeds)")
    add_train_arguments(train, seeds=True)
    train.add_argument("--lr", type=float, default=None,
                       help=f"base lr (× batch / 256); default {describe_default_base_lr()}; "
                            "the paper searches 0.05–50")
    train.add_argument("--wd", type=float, default=TrainConfig.weight_decay, help="weight decay")
    train.add_argument("--preset", default=None, choices=PRESETS,
                       help="official: the official code's pipeline (R = 16 interleaved, "
                            "trainable masks, its head init, fp32, the lr stepped per epoch, "
                            "signed scores, int() counts; overrides --num-segments, "
                            "--segment-layout and amp)")
    train.set_defaults(handler=_train)

    sweep = commands.add_parser("sweep", help="lr × wd grid on train→val, then seeds → test")
    add_train_arguments(sweep)
    sweep.add_argument("--lrs", type=float, nargs="+", default=list(PAPER_LR_GRID),
                       help="base learning rates of the grid (the paper's)")
    sweep.add_argument("--wds", type=float, nargs="+", default=list(PAPER_WD_GRID),
                       help="weight decays of the grid (the paper's)")
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                       help="seeds of the final runs at the best lr and wd")
    sweep.add_argument("--grid-epochs", type=int, default=None,
                       help="epochs of each grid run, a cheaper search; the final seeds "
                            "train --epochs (default: --epochs)")
    sweep.set_defaults(handler=_sweep)

    resume = commands.add_parser("resume", help="continue a run from its last checkpoint")
    resume.add_argument("run", help="id of a run that did not complete (see `e2vpt runs`)")
    add_store_argument(resume)
    add_json_argument(resume, "the result")
    resume.add_argument("--quiet", action="store_true", help="no progress bar")
    resume.add_argument("--restart", action="store_true",
                        help="start the run over, discarding its checkpoint (e.g. a damaged one)")
    resume.set_defaults(handler=_resume)

    export = commands.add_parser("export", help="copy a run's adapter artifact")
    export.add_argument("run", help="id of a completed run")
    export.add_argument("directory", help="where to write the adapter artifact")
    add_store_argument(export)
    export.add_argument("--force", action="store_true",
                        help="overwrite an existing DIRECTORY: a file there is replaced, a "
                             "folder gets the artifact's files over its own (never a path "
                             "inside the run store)")
    export.set_defaults(handler=_export)

    params = commands.add_parser("params", help="trainable-parameter summary of a method")
    add_model_arguments(params, "vit_base_patch16_224")
    params.add_argument("--num-classes", type=int, default=100,
                        help="classes of the head (its size counts)")
    add_json_argument(params, "the summary")
    params.set_defaults(handler=_params)

    for module in COMMAND_MODULES:
        module.register(commands)
    for command in commands.choices.values():
        command.formatter_class = HelpFormatter  # defaults shown in every command's help
    return parser


def _print_warning(command: str) -> Any:
    """`warnings.showwarning` for the CLI: one line, like its errors."""
    def show(message: Warning | str, *_args: Any, **_kwargs: Any) -> None:
        print(f"e2vpt {command}: warning: {message}", file=sys.stderr)
    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..store.location import resolve_store  # after parsing: --help never loads the store

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning(args.command)
            if hasattr(args, "store"):
                args.store = resolve_store(args.store, makes_runs=hasattr(args, "create_store"),
                                           create=getattr(args, "create_store", False))
            code = args.handler(args)
        if hasattr(args, "store"):  # stderr: with --json the last stdout line is the JSON
            print(f"e2vpt {args.command}: store {args.store}", file=sys.stderr)
        return code
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"e2vpt {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM while training (Terminated)
        from ..train.loop import Terminated

        by = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        print(f"e2vpt {args.command}: stopped by {by.name}; a run it was training is "
              "cancelled and can be resumed (e2vpt resume RUN)", file=sys.stderr)
        return 128 + by
    finally:
        sys.stdout.flush()

