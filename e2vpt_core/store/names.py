"""Readable run names and the user's names and tags, shared by `e2vpt runs` and the app.

Run ids are timestamps, which say nothing about what a run is; these names say method,
task and prompt lengths, and for a rewind its ratios and parent, as W&B and TensorBoard
show a run's name rather than its id. A name the user gave (`display_name` in the run
summary) wins; tags live beside it (`tags`), so naming needs no schema change. Plain
functions of `RunStore.runs()` frames: no torch, no Streamlit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

import pandas as pd

from ..catalog import DEFAULT_BACKBONE
from ..methods import REGISTRY
from .runs import RunStore

NAME_KEY, TAGS_KEY = "display_name", "tags"  # user settings, kept in the run summary


def task_name(dataset: str | None) -> str:
    """`builtin:orientation` → `orientation`; a path spec → its last folder."""
    if not dataset:
        return "?"
    _, _, rest = str(dataset).partition(":")
    rest = rest or str(dataset)
    return PurePath(rest.split(":")[0].rstrip("/")).name or rest


def config_name(config: dict[str, Any]) -> str:
    """Method, prompt lengths and task of a training config, e.g. `e2vpt P10 T5 · digits`.

    A prompt method without any prompts trains the head alone, and its name says so."""
    prompt = config.get("prompt", {})
    method = prompt.get("method", "?")
    spec = REGISTRY.get(method)
    visual, kv = (spec.visual_prompts, spec.kv_prompts) if spec else (False, False)
    lengths = []
    if visual:
        lengths.append(f"P{prompt.get('visual_prompt_len', 0)}")
    if kv:
        lengths.append(f"T{prompt.get('kv_prompt_len', 0)}")
    name = " ".join([method, *lengths])
    if visual and not (prompt.get("visual_prompt_len") or prompt.get("kv_prompt_len")):
        name += " (head only)"
    if prompt.get("masks_per_block"):
        name += " per-block"
    parts = [name, task_name(config.get("dataset"))]
    backbone = config.get("backbone")
    if backbone and backbone != DEFAULT_BACKBONE:
        parts.append(PurePath(str(backbone)).name)
    return " · ".join(parts)


def _percent(ratio: Any) -> str:
    return f"{round(100 * float(ratio))} %"


def rewind_name(token_ratio: Any, segment_ratio: Any, parent: str) -> str:
    """`rewind 50 % tok / 25 % seg of <parent>` (ratios unknown: `rewind of <parent>`)."""
    if token_ratio is None or pd.isna(token_ratio):
        return f"rewind of {parent}"
    segment = 0.0 if segment_ratio is None or pd.isna(segment_ratio) else segment_ratio
    return f"rewind {_percent(token_ratio)} tok / {_percent(segment)} seg of {parent}"


def _value(row: pd.Series, key: str) -> Any:
    value = row.get(key)
    return None if value is None or (not isinstance(value, (list, str)) and pd.isna(value)) \
        else value


def run_names(runs: pd.DataFrame) -> dict[str, str]:
    """A unique readable name for every run of a `RunStore.runs()` frame, by id.

    Parents are named before their rewinds (oldest first), so a rewind's name holds its
    parent's; equal names get the id's random suffix (`#3fa2`)."""
    names: dict[str, str] = {}
    if runs.empty:
        return names
    for _, row in runs.sort_values("created_at").iterrows():
        custom = _value(row, NAME_KEY)
        if custom:
            names[row["id"]] = str(custom)
            continue
        parent = _value(row, "parent_id")
        parent_name = names.get(parent, parent)
        if row["kind"] == "rewind":
            names[row["id"]] = rewind_name(_value(row, "token_ratio"),
                                           _value(row, "segment_ratio"), parent_name)
            continue
        name = config_name(json.loads(row["config"]))
        names[row["id"]] = name if row["kind"] == "train" else f"{row['kind']}: {name}"
    counts = pd.Series(list(names.values())).value_counts()
    return {run_id: f"{name} #{run_id.rsplit('-', 1)[-1]}" if counts[name] > 1 else name
            for run_id, name in names.items()}


def run_tags(runs: pd.DataFrame) -> dict[str, list[str]]:
    """The user's tags of every run, by id."""
    if runs.empty or TAGS_KEY not in runs.columns:
        return {run_id: [] for run_id in runs.get("id", [])}
    return {row["id"]: list(_value(row, TAGS_KEY) or []) for _, row in runs.iterrows()}


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags trimmed, without empties or repeats, in the order given; a comma separates
    tags (as in the app's text field), so `a,b` is two."""
    return parse_tags(",".join(tags))


def parse_tags(text: str) -> list[str]:
    """Comma-separated tags, trimmed, without empties or repeats, in the order given."""
    return list(dict.fromkeys(tag.strip() for tag in text.split(",") if tag.strip()))


def rename(store: RunStore, run_id: str, name: str, tags: Iterable[str] | None = None) -> None:
    """Give a run the user's name (blank: back to the derived one) and, if given, its tags.

    White space is collapsed, so a name is one line. An unknown run raises KeyError."""
    store.get_run(run_id)  # an unknown run raises KeyError, not a silent no-op
    values: dict[str, Any] = {NAME_KEY: " ".join(name.split()) or None}
    if tags is not None:
        values[TAGS_KEY] = clean_tags(tags)
    store.update_summary(run_id, **values)


def tag(store: RunStore, run_id: str, tags: Iterable[str], remove: bool = False) -> list[str]:
    """Add `tags` to a run's tags (or remove them); its tags afterwards."""
    given = clean_tags(tags)
    if not given:
        raise ValueError("no tag given (tags are non-blank; a comma separates two)")
    current = list(store.get_run(run_id)["summary"].get(TAGS_KEY) or [])
    updated = [t for t in current if t not in given] if remove else clean_tags(current + given)
    store.update_summary(run_id, **{TAGS_KEY: updated})
    return updated
