"""Readable run and job names, derived from the stored config and summary.

Run ids are timestamps, which say nothing about what a run is; these names say method,
task and prompt lengths, and for a rewind its ratios and parent, as W&B and TensorBoard
show a run's name rather than its id. A name the user gave (`display_name` in the run
summary, see `rename`) wins. Plain functions of store frames: no Streamlit here.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any

import pandas as pd

from e2vpt_core.methods import REGISTRY
from e2vpt_core.store import RunStore
from e2vpt_core.train.config import DEFAULT_BACKBONE

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


def parse_tags(text: str) -> list[str]:
    """Comma-separated tags, trimmed, without empties or repeats, in the order given."""
    return list(dict.fromkeys(tag.strip() for tag in text.split(",") if tag.strip()))


def rename(store: RunStore, run_id: str, name: str, tags: list[str]) -> None:
    """Give a run the user's name (blank: back to the derived one) and tags."""
    store.get_run(run_id)  # an unknown run raises KeyError, not a silent no-op
    store.update_summary(run_id, **{NAME_KEY: name.strip() or None, TAGS_KEY: tags})


def job_name(job: pd.Series | dict[str, Any], names: dict[str, str]) -> str:
    """What a queued or running job does, in run names, starting with what it is:
    `train <run>`, `rewind … of <run>`, `importance of <run>`, `embed <run> vs <run>`."""
    payload = job["payload"]
    payload = json.loads(payload) if isinstance(payload, str) else payload
    run_id = job.get("run_id")
    kind = job["kind"]
    if kind == "train":
        return f"train {names.get(run_id, run_id)}"
    if kind == "rewind":
        if run_id and run_id in names:
            return names[run_id]
        parent = names.get(payload["parent"], payload["parent"])
        return rewind_name(payload["token_ratio"], payload.get("segment_ratio"), parent)
    if kind == "importance":
        return f"importance of {names.get(payload['run'], payload['run'])}"
    if kind == "embed":
        shown = " vs ".join(names.get(run, run) for run in payload["runs"])
        return f"embed {shown} ({payload['split']})"
    return f"{kind} job"
