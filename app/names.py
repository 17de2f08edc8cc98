"""Readable run and job names for the app: the run names come from the engine
(`e2vpt_core.store.names`, shared with `e2vpt runs`), the job names are built here.

A name the user gave (`display_name` in the run summary, see `rename`) wins. Plain
functions of store frames: no Streamlit here.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from e2vpt_core.store.names import (
    NAME_KEY,
    TAGS_KEY,
    config_name,
    parse_tags,
    rename,
    rewind_name,
    run_names,
    run_tags,
    task_name,
)

__all__ = ["NAME_KEY", "TAGS_KEY", "config_name", "job_name", "parse_tags", "rename",
           "rewind_name", "run_names", "run_tags", "task_name"]


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
