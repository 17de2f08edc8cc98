"""UMAP's numba kernels are kept in numba's on-disk cache, so only the first process on a
machine compiles them (`python -m e2vpt_core.hyperbolic`, run by `make setup`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_warm_up_writes_umap_kernels_to_the_cache_and_a_second_process_reads_them(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # numba's own override
    command = [sys.executable, "-m", "e2vpt_core.hyperbolic"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "compiled and cached" in first.stdout
    index = sorted(path for path in tmp_path.rglob("*.nbi") if "umap" in str(path))
    assert index, "no UMAP kernel was cached"
    stamps = {path: path.stat().st_mtime_ns for path in index}
    data = list(tmp_path.rglob("*.nbc"))
    assert data

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    # The second process loaded the kernels instead of compiling: no index was rewritten.
    assert {path: path.stat().st_mtime_ns for path in index} == stamps
