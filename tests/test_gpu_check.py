"""benchmarks/gpu_check.sh: its logic on the CPU (`--cpu-smoke`), and the no-GPU stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from e2vpt_core.methods import METHODS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_without_a_gpu_it_stops_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "report.md"
    assert gpu_check.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU" in err and "--cpu-smoke" in err
    assert not out.exists()


@pytest.mark.slow
def test_cpu_smoke_covers_every_method_and_stage(tmp_path):
    out, docs = tmp_path / "report.md", tmp_path / "BENCHMARKS.md"
    docs.write_text("# Benchmarks\n\n## Earlier\n\ntext\n")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", "--out", str(out),
                           "--update-docs", "--docs", str(docs)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    report = out.read_text()
    rows = {line.split(" | ")[0][2:]: line for line in report.splitlines()
            if line.startswith("| ")}
    for method in METHODS:  # new methods are picked up without editing the script
        name = next(n for n in rows if n.split()[0] == method)
        assert "failed" not in rows[name]
    assert gpu_check.BACKBONE_ROW in rows and "e2vpt P=10 T=5, 50% pruned, remove" in rows
    for name in ("e2vpt, grad checkpointing", "full, grad checkpointing"):
        assert "failed" not in rows[name]
    assert "E²VPT training throughput / the frozen backbone's" in report
    for stage in ("train e2vpt", "importance pass", "rewind, 50 % tokens removed",
                  "embeddings of the rewound model", "inference fp32"):
        assert any(name.startswith(stage) for name in rows), stage
    assert "| 1 | no |" in report  # a loader with a worker process
    assert "CPU smoke run" in report and "not a GPU figure" in report
    assert docs.read_text() == "# Benchmarks\n\n## Earlier\n\ntext\n\n" + report


def test_docs_section_is_replaced_in_place(tmp_path):
    docs = tmp_path / "BENCHMARKS.md"
    docs.write_text("# B\n\n## A\n\na\n\n" + gpu_check.HEADING + "\n\nold\n\n## C\n\nc\n")
    gpu_check.update_docs(docs, gpu_check.HEADING + "\n\nnew\n")
    assert docs.read_text() == "# B\n\n## A\n\na\n\n" + gpu_check.HEADING + "\n\nnew\n\n## C\n\nc\n"
