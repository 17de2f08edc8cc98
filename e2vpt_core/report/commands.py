"""The commands that reproduce a stored run: `e2vpt train` from its config, `e2vpt rewind`
from a rewind's recorded settings.

Shown by the Runs page and written into the HTML report, so a reader can rerun exactly
what was run; what no flag can express is named rather than dropped.
"""

from __future__ import annotations

import shlex
from typing import Any

from ..config import PromptConfig
from ..train.config import TrainConfig

TRAINED_KINDS = ("train", "grid", "final")  # runs `e2vpt train` makes from their config alone
# The commands that made the other kinds, named when the report cannot spell them out.
MADE_BY = {"sweep": "e2vpt sweep", "protocol": "e2vpt protocol", "suite": "e2vpt protocol"}

# TrainConfig / PromptConfig field → `e2vpt train` flag (None: a boolean flag, see below).
_TRAIN_FLAGS = {"backbone": "--backbone", "checkpoint": "--checkpoint",
                "dataset": "--dataset", "augment": "--augment", "epochs": "--epochs",
                "warmup_epochs": "--warmup-epochs", "batch_size": "--batch-size",
                "seed": "--seed", "grad_clip": "--grad-clip", "num_workers": "--workers",
                "device": "--device", "base_lr": "--lr", "weight_decay": "--wd",
                "preset": "--preset"}
_PROMPT_FLAGS = {"method": "--method", "visual_prompt_len": "-P", "kv_prompt_len": "-T",
                 "kv_sharing": "--kv-sharing", "num_segments": "--num-segments",
                 "segment_layout": "--segment-layout", "prompt_dropout": "--prompt-dropout",
                 "adapter_bottleneck": "--adapter-bottleneck", "lora_rank": "--lora-rank",
                 "lora_alpha": "--lora-alpha", "lora_targets": "--lora-targets"}


def reproduce_command(config: dict[str, Any], store: str | None = None) -> tuple[str, list[str]]:
    """The `e2vpt train` command that rebuilds `config`, and the fields it cannot express.

    Only values that differ from the CLI's defaults are spelled out."""
    train = TrainConfig.from_dict(config)
    prompt = train.prompt
    default_prompt = PromptConfig(prompt.method)
    default = TrainConfig(prompt=default_prompt)  # the defaults the CLI gives this method
    words = ["e2vpt", "train"]
    for name, flag in _TRAIN_FLAGS.items():
        value = getattr(train, name)
        if name in ("backbone", "dataset", "epochs") or value != getattr(default, name):
            words += [flag, str(value)]
    for name, flag in _PROMPT_FLAGS.items():
        value = getattr(prompt, name)
        if name == "method" or value != getattr(default_prompt, name):
            words += [flag, str(value)]
    if prompt.masks_per_block:
        words.append("--masks-per-block")
    if not train.pretrained:
        words.append("--random-init")
    if not train.amp:
        words.append("--no-amp")
    if train.grad_checkpointing:
        words.append("--grad-checkpointing")
    if store is not None:
        words += ["--store", store]
    expressible = set(_TRAIN_FLAGS) | {"prompt", "pretrained", "amp", "grad_checkpointing",
                                       "group_id"}  # a group id changes nothing trained
    missing = [name for name, value in train.to_dict().items()
               if name not in expressible and value != default.to_dict()[name]]
    by_preset = ("trainable_masks", "head_init") if train.preset == "official" else ()
    missing += [f"prompt.{name}" for name, value in prompt.to_dict().items()
                if name not in (*_PROMPT_FLAGS, "masks_per_block", *by_preset)
                and value != default_prompt.to_dict()[name]]
    return shlex.join(words), missing


def group_command(configs: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The `e2vpt train --seeds` command that trains a seed group again (its members'
    configs, equal but for the seed), and the fields it cannot express."""
    command, missing = reproduce_command({**configs[0], "seed": TrainConfig.seed})
    seeds = [str(config.get("seed", TrainConfig.seed)) for config in configs]
    return shlex.join([*shlex.split(command), "--seeds", *seeds]), missing


def rewind_command(run: dict[str, Any], parent_config: dict[str, Any]) -> str:
    """The `e2vpt rewind` command that made a rewind run (`RunStore.get_run`'s form) of
    its parent, from the settings recorded in its summary; the masks it selects are the
    ones in the run's config (`token_mask`, `segment_mask`)."""
    summary, config = run["summary"], run["config"]
    words = ["e2vpt", "rewind", str(run["parent_id"]),
             "--token-ratio", str(summary.get("token_ratio", 0.0))]
    if summary.get("segment_ratio"):
        words += ["--segment-ratio", str(summary["segment_ratio"])]
    for key, flag, default in (("init", "--init", "fresh"), ("mode", "--mode", "zero"),
                               ("token_scores", "--token-scores", "mask"),
                               ("order", "--order", "importance"),
                               ("order_seed", "--seed", 0)):
        if summary.get(key, default) != default:
            words += [flag, str(summary[key])]
    if summary.get("importance") == "signed":
        words.append("--signed")
    if config.get("epochs") != parent_config.get("epochs"):
        words += ["--epochs", str(config.get("epochs"))]
    if config.get("grad_checkpointing") and not parent_config.get("grad_checkpointing"):
        words.append("--grad-checkpointing")
    return shlex.join(words)


def run_commands(run: dict[str, Any], parent: dict[str, Any] | None = None,
                 ) -> tuple[list[str], list[str]]:
    """The shell lines that reproduce `run` (a `RunStore.get_run` dict; `parent` is its
    parent's, for a rewind), and the config fields they cannot set. A rewind needs its
    parent first: its lines are the parent's command, then the rewind of that run."""
    if run["kind"] in TRAINED_KINDS:
        command, missing = reproduce_command(run["config"])
        return [command], missing
    if run["kind"] == "rewind" and parent is not None:
        lines = [f"# the parent, run {parent['id']}:"]
        missing: list[str] = []
        if parent["kind"] in TRAINED_KINDS:
            command, missing = reproduce_command(parent["config"])
            lines.append(command)
        lines += ["# then the rewind (the parent's id is the one the line above prints):",
                  rewind_command(run, parent["config"])]
        return lines, missing
    made_by = MADE_BY.get(run["kind"], f"a {run['kind']} run")
    return [f"# made by {made_by}: its settings are in the config below"], []
