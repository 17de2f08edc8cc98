"""The `e2vpt` command line, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import last_json

from e2vpt_core import load_adapter
from e2vpt_core.cli import main
from e2vpt_core.data import BUILTIN_TASKS, load_dataset
from e2vpt_core.methods import get_method
from e2vpt_core.store import RunStore

ROOT = Path(__file__).resolve().parents[1]



@pytest.mark.parametrize("task", sorted(BUILTIN_TASKS))
def test_every_builtin_task_trains_from_the_cli(task, tmp_path, tiny_backbone, capsys):
    code = main(["train", "--backbone", tiny_backbone, "--dataset", f"builtin:{task}",
                 "--method", "e2vpt", "-P", "4", "-T", "2", "--num-segments", "4",
                 "--epochs", "1", "--batch-size", "64", "--lr", "1.0", "--store", str(tmp_path),
                 "--json", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = last_json(out)
    assert result["status"] == "completed"
    for key in ("run_id", "val_top1", "test_top1", "trainable_params", "effective_params"):
        assert key in result, key
    assert 0.0 <= result["test_top1"] <= 100.0
    assert out.splitlines()[0].startswith(f"run {result['run_id']}: completed")


def test_runs_export_and_params(tmp_path, tmp_path_factory, tiny_backbone, capsys):
    main(["train", "--backbone", tiny_backbone, "--dataset", "builtin:digits", "--method",
          "vpt-deep", "-P", "3", "--num-segments", "4", "--epochs", "1", "--store",
          str(tmp_path), "--json", "--quiet"])
    run_id = last_json(capsys.readouterr().out)["run_id"]
    assert main(["runs", "--store", str(tmp_path), "--json"]) == 0
    rows = last_json(capsys.readouterr().out)
    assert rows[0]["id"] == run_id and rows[0]["method"] == "vpt-deep"
    assert RunStore(tmp_path).get_run(run_id)["config"]["base_lr"] == get_method("e2vpt").base_lr
    assert rows[0]["status"] == "completed"
    assert main(["runs", "--store", str(tmp_path)]) == 0
    assert run_id in capsys.readouterr().out

    artifact = tmp_path_factory.mktemp("export") / "artifact"  # outside the store
    assert main(["export", run_id, str(artifact), "--store", str(tmp_path)]) == 0
    model = load_adapter(artifact).eval()
    dataset = load_dataset("builtin:digits", "val")
    images = torch.stack([dataset[i][0] for i in range(4)])
    assert model(images * 2 - 1).shape == (4, 10)

    assert main(["params", "--backbone", "vit_base_patch16_224", "-P", "10", "-T", "5",
                 "--json"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["trainable_params"] == 12 * 15 * 768 + 768 * 100 + 100


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--dataset", "builtin:nope"], "nope"),
        (["train", "--dataset", "vtab:/does/not/exist/cifar"], "/does/not/exist/cifar"),
        (["train", "--backbone", "vit_unknown_patch99"], "unknown timm model"),
        (["train", "-P", "-2"], "visual_prompt_len=-2"),
        (["resume", "nonexistent-run"], "no run 'nonexistent-run'"),
        (["export", "nonexistent-run", "out"], "no run 'nonexistent-run'"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(args, message, tmp_path):
    process = subprocess.run([sys.executable, "-m", "e2vpt_core", *args, "--store",
                              str(tmp_path), "--quiet"] if args[0] == "train" else
                             [sys.executable, "-m", "e2vpt_core", *args, "--store",
                              str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                             timeout=300)
    assert process.returncode != 0
    lines = [line for line in process.stderr.splitlines() if line.strip()] + [
        line for line in process.stdout.splitlines() if line.strip()]
    assert any(message in line for line in lines), process.stderr + process.stdout
    assert "Traceback" not in process.stderr
