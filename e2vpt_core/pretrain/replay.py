"""Rebuild a pretrained backbone from its own recipe: every recorded stage, in order.

A bundled backbone is the last of a chain of runs, each resuming from the one before
(`recipe.json` nests them under `continuation_of`). Replaying runs each stage again with its
recorded arguments, so one command rebuilds the model from nothing:

    python -m e2vpt_core.pretrain.replay assets/builtin-vit-tiny-layout --out DIR

Stages are written to `DIR/stages/NN-DATA`, the last one to `DIR` itself. `--device`,
`--threads` and `--precision` may differ from the recording: the image stream does not
depend on them, the floating-point rounding does, so the result then matches the recording
closely, not bit for bit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .loop import RECIPE_FILE, PretrainConfig, pretrain


def recorded_stages(directory: str | Path) -> list[dict]:
    """The recipes of the chain that made `directory`, oldest first."""
    path = Path(directory) / RECIPE_FILE
    if not path.is_file():
        raise ValueError(f"{path} not found: a pretrained directory holds its recipe.json")
    stages, recipe = [], json.loads(path.read_text())
    while recipe:
        stages.append(recipe)
        recipe = (recipe.get("continuation_of") or {}).get("recipe")
    return stages[::-1]


def stage_configs(stages: list[dict], out: str | Path, **overrides: object,
                  ) -> list[PretrainConfig]:
    """One config per stage: its recorded arguments, chained through fresh directories
    under `out`, and stopped where the recorded stage stopped."""
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    out, configs = Path(out), []
    for index, stage in enumerate(stages):
        args = {**defaults, **stage["args"]}  # an older stage records no newer argument
        unknown = sorted(set(args) - set(defaults))
        if unknown:
            raise ValueError(f"stage {index + 1} records arguments this version does not know: "
                             f"{unknown}")
        last = index == len(stages) - 1
        args.update(overrides)
        args["out"] = str(out if last else out / "stages" / f"{index + 1:02d}-{args['data']}")
        args["resume_from"] = configs[-1].out if configs else None
        args["log_file"] = None
        if not stage.get("complete", True):  # stopped before the end of its schedule
            args["stop_after"] = stage["steps_done"]
        configs.append(PretrainConfig(**args))
    return configs


def replay(source: str | Path, out: str | Path, **overrides: object) -> dict:
    """Run every stage of `source`'s recipe again into `out`; the last stage's recipe."""
    return _run(stage_configs(recorded_stages(source), out, **overrides), source)


def _run(configs: list[PretrainConfig], source: str | Path) -> dict:
    recipe: dict = {}
    for config in configs:
        recipe = pretrain(config, command=["replay", str(source), "--out", configs[-1].out])
    return recipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m e2vpt_core.pretrain.replay",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a pretrained directory (its recipe.json is replayed)")
    parser.add_argument("--out", required=True, help="where the rebuilt model goes")
    parser.add_argument("--device", default=None, help="override the recorded device")
    parser.add_argument("--threads", type=int, default=None,
                        help="override the recorded CPU threads")
    parser.add_argument("--precision", default=None, choices=("auto", "bf16", "fp32"),
                        help="override the recorded autocast (bf16 is slow on CPUs without "
                             "native bf16)")
    args = parser.parse_args(argv)
    overrides = {name: getattr(args, name) for name in ("device", "threads", "precision")
                 if getattr(args, name) is not None}
    try:
        stages = stage_configs(recorded_stages(args.source), args.out, **overrides)
    except (ValueError, KeyError) as error:
        parser.error(str(error))
    steps = sum(c.stop_after or c.steps for c in stages)
    print(f"replaying {len(stages)} stages ({steps:,} steps) of {args.source} into {args.out}")
    _run(stages, args.source)


if __name__ == "__main__":
    main()
