"""Crash-safe file writes, and the safetensors files that the run store, artifacts and
pretraining write and read with them."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

if TYPE_CHECKING:  # torch is imported where tensors are written, not with this module
    import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so orphans cannot be told from writes
    fcntl = None

# Where a store keeps files: its root, runs/<id>/, runs/<id>/adapter/.
_TMP_PATTERNS = (".*.tmp", "*/.*.tmp", "*/*/.*.tmp")


def atomic_write(target: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)`, then rename onto `target`: readers never see a partial file.

    The temporary file stays locked (flock) until it is renamed, so `remove_orphan_tmp`
    can tell one being written from one a killed writer left behind. Its data reach the
    disk (fsync) before the rename, and the rename before we return (the directory's
    fsync): without them a power cut can leave the new name on an empty file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are meant to be shared
        _fsync(tmp)  # the file `write` wrote, whichever descriptor it used
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(handle)
    _fsync(target.parent, directory=True)


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    """Flush a file (or a directory's entries) to disk. Directories cannot be opened on
    Windows, and some file systems refuse to sync them: there the rename is all we have."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if not directory:
            raise
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if not directory or error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def copy_files(source: Path, target: Path) -> None:
    """Copy the files under `source` to the same places under `target`, each atomically:
    a name already there (a file, or a link) is replaced, never written through."""
    for path in sorted(source.rglob("*")):
        if path.is_file():
            atomic_write(target / path.relative_to(source),
                         lambda tmp, path=path: shutil.copyfile(path, tmp))


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


class DamagedFileError(ValueError):
    """A stored tensor file that cannot be read (truncated, overwritten); names the file."""


def save_file(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
              metadata: dict[str, str] | None = None) -> None:
    """safetensors' serialisation written into `path` itself. safetensors' own `save_file`
    puts a new file at the path, so the lock `atomic_write` holds on its temporary file
    would no longer cover it, and another process opening the store would delete it as a
    killed writer's orphan. (safetensors.torch is imported on the first write: it imports
    torch.)"""
    from safetensors.torch import save

    Path(path).write_bytes(save(tensors, metadata=metadata))


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (detached, contiguous, on the CPU) to `path` atomically."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A file's tensors and metadata; a damaged file is a one-line DamagedFileError."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, \
                handle.metadata() or {}
    except SafetensorError as error:
        raise DamagedFileError(f"{path} is damaged: {error}") from error
