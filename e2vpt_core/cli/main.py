"""The `e2vpt` command line (same as `python -m e2vpt_core`).

Every command exits 0 when done and non-zero with a one-line reason on bad input; with
`--json` the last line of stdout is one JSON object (or list, for `runs`). The run store is
`--store`, else `$E2VPT_STORE`, else `./runs` (see `store.location`), named on stderr at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from typing import Any

from ..methods import describe_default_base_lr
from ..store.location import resolve_store
from ..train.config import PAPER_LR_GRID, PAPER_WD_GRID, PRESETS, TrainConfig
from . import embed, protocol, prune
from .common import (
    ProgressBar,
    add_model_arguments,
    add_train_arguments,
    print_result,
    prompt_config,
    train_config,
)


def _train(args: argparse.Namespace) -> int:
    from ..store import RunStore
    from ..train import train_run
    from ..train.distributed import distributed_context
    from ..train.preflight import check_sources

    config = train_config(args, base_lr=args.lr, weight_decay=args.wd, preset=args.preset)
    check_sources(config)
    with distributed_context(config.device) as (rank, _world, broadcast):
        store = RunStore(args.store)
        run_id = broadcast(store.create_run(config.to_dict()) if rank == 0 else None)
        bar = ProgressBar(not args.quiet and rank == 0)
        result = train_run(config, store, run_id, progress=bar)
        bar.close()
    if rank != 0:
        return 0 if result.status == "completed" else 1
    return print_result(result.to_dict(), args.json)


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
    return print_result(result.to_dict(), args.json)


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


RUN_COLUMNS = ["id", "kind", "status", "method", "dataset", "val_top1", "test_top1",
               "trainable_params", "effective_params", "parent_id", "reason"]


def _runs(args: argparse.Namespace) -> int:
    from ..store import RunStore

    table = RunStore(args.store).runs()
    columns = [c for c in RUN_COLUMNS if c in table.columns]
    table = table[columns]
    if args.json:
        print(table.astype(object).where(table.notna(), None).to_json(orient="records"))
    elif table.empty:
        print(f"no runs in {args.store}")
    else:
        print(table.to_string(index=False))
    return 0


def _export(args: argparse.Namespace) -> int:
    import shutil

    from ..artifacts import check_adapter
    from ..store import RunStore

    store = RunStore(args.store)
    store.get_run(args.run)
    source = store.run_dir(args.run) / "adapter"
    if not source.is_dir():
        raise ValueError(f"run {args.run} has no adapter artifact (not completed?)")
    check_adapter(source)  # a damaged artifact is refused, not copied
    shutil.copytree(source, args.directory, dirs_exist_ok=True)
    check_adapter(args.directory)
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
COMMAND_MODULES = (prune, embed, protocol)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2vpt", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run")
    add_train_arguments(train)
    train.add_argument("--lr", type=float, default=None,
                       help=f"base lr (× batch / 256); default {describe_default_base_lr()}; "
                            "the paper searches 0.05–50")
    train.add_argument("--wd", type=float, default=TrainConfig.weight_decay, help="weight decay")
    train.add_argument("--preset", default=None, choices=PRESETS,
                       help="official: the official code's pruning pipeline (R = 16 "
                            "interleaved, trainable masks, signed scores, int() counts; "
                            "overrides --num-segments and --segment-layout)")
    train.set_defaults(handler=_train)

    sweep = commands.add_parser("sweep", help="lr × wd grid on train→val, then seeds → test")
    add_train_arguments(sweep)
    sweep.add_argument("--lrs", type=float, nargs="+", default=list(PAPER_LR_GRID))
    sweep.add_argument("--wds", type=float, nargs="+", default=list(PAPER_WD_GRID))
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    sweep.add_argument("--grid-epochs", type=int, default=None,
                       help="epochs of each grid run, a cheaper search; the final seeds "
                            "train --epochs (default: --epochs)")
    sweep.set_defaults(handler=_sweep)

    resume = commands.add_parser("resume", help="continue a run from its last checkpoint")
    resume.add_argument("run")
    for name, kwargs in (("--store", {"default": "runs"}), ("--json", {"action": "store_true"}),
                         ("--quiet", {"action": "store_true"})):
        resume.add_argument(name, **kwargs)
    resume.add_argument("--restart", action="store_true",
                        help="start the run over, discarding its checkpoint (e.g. a damaged one)")
    resume.set_defaults(handler=_resume)

    runs = commands.add_parser("runs", help="list runs")
    runs.add_argument("--store", default="runs")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(handler=_runs)

    export = commands.add_parser("export", help="copy a run's adapter artifact")
    export.add_argument("run")
    export.add_argument("directory")
    export.add_argument("--store", default="runs")
    export.set_defaults(handler=_export)

    params = commands.add_parser("params", help="trainable-parameter summary of a method")
    add_model_arguments(params, "vit_base_patch16_224")
    params.add_argument("--num-classes", type=int, default=100)
    params.add_argument("--json", action="store_true", help="print one JSON object")
    params.set_defaults(handler=_params)

    for module in COMMAND_MODULES:
        module.register(commands)
    for command in commands.choices.values():  # --store, else $E2VPT_STORE, else ./runs
        if command.get_default("store") is not None:
            command.set_defaults(store=None)
    return parser


def _print_warning(command: str) -> Any:
    """`warnings.showwarning` for the CLI: one line, like its errors."""
    def show(message: Warning | str, *_args: Any, **_kwargs: Any) -> None:
        print(f"e2vpt {command}: warning: {message}", file=sys.stderr)
    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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

