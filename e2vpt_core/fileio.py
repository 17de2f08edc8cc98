"""Crash-safe file writes shared by artifacts and the run store."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so orphans cannot be told from writes
    fcntl = None

# Where a store keeps files: its root, runs/<id>/, runs/<id>/adapter/.
_TMP_PATTERNS = (".*.tmp", "*/.*.tmp", "*/*/.*.tmp")


def atomic_write(target: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)`, then rename onto `target`: readers never see a partial file.

    The temporary file stays locked (flock) until it is renamed, so `remove_orphan_tmp`
    can tell one being written from one a killed writer left behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(handle)


def remove_orphan_tmp(root: Path) -> list[Path]:
    """Delete the temporary files of writes whose process died (kill -9 mid-checkpoint);
    files still locked by a live writer, on this machine or another, are left alone."""
    if fcntl is None:
        return []
    removed = []
    for pattern in _TMP_PATTERNS:
        for path in root.glob(pattern):
            try:
                handle = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
                removed.append(path)
            except OSError:  # being written, or a read-only store
                continue
            finally:
                os.close(handle)
    return removed
