"""Which run store a command uses: `--store DIR`, else `$E2VPT_STORE`, else `./runs`.

The app reads `E2VPT_STORE` too, so a CLI run started from any directory lands where the
app looks. A store the user named (flag or variable) that does not exist is a typo until
proven otherwise: it is created only with `--create-store`, and only by the commands that
make runs. Commands that only read never create a store, not even `./runs`.
"""

from __future__ import annotations

import os
from pathlib import Path

STORE_ENV = "E2VPT_STORE"
DEFAULT_STORE = "runs"


def store_dir(named: str | None = None) -> Path:
    """The absolute store directory: `named`, else `$E2VPT_STORE`, else `./runs`."""
    return Path(named or os.environ.get(STORE_ENV) or DEFAULT_STORE).expanduser().resolve()


def resolve_store(named: str | None, *, makes_runs: bool, create: bool = False) -> Path:
    """`store_dir(named)`, checked; ValueError when it is missing and may not be created."""
    from_env = os.environ.get(STORE_ENV) or None
    source = "--store" if named else f"${STORE_ENV}" if from_env else None
    path = store_dir(named)
    if path.exists() and not path.is_dir():
        raise ValueError(f"run store {path} is not a directory")
    if path.is_dir():
        return path
    if not makes_runs:
        named_by = f"named by {source}" if source else f"the default; set {STORE_ENV} or --store"
        raise ValueError(f"no run store at {path} ({named_by})")
    if source and not create:
        raise ValueError(f"run store {path} (named by {source}) does not exist; pass "
                         "--create-store to create it")
    return path
