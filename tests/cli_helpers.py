"""Reading what the `e2vpt` commands print."""

from __future__ import annotations

import json
from typing import Any


def last_json(output: str) -> Any:
    """With --json, the last line of stdout is one JSON value."""
    return json.loads(output.strip().splitlines()[-1])
