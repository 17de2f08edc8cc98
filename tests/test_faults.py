"""Faults a careful user's bad day brings: processes killed at chosen points, a second
trainer, damaged and read-only stores. Each test checks what the store holds afterwards.

The trainer runs in a child process (`RUNNER`) that kills itself with SIGKILL at the
point named by FAULT=<point>:<n>, the n-th time it gets there:
  metrics     after the n-th metrics row is committed (mid-epoch)
  checkpoint  while writing the n-th checkpoint: part of its temporary file is written
  lease       right after the run is set running (its lease taken)
  slow        never killed; each metrics row takes n seconds (time to act while it trains)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from e2vpt_core import PromptConfig
from e2vpt_core.cli import main
from e2vpt_core.jobs import run_worker, submit_train
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig

RUNNER = '''
import os, signal, sys, time
import e2vpt_core.fileio as fileio
import e2vpt_core.store.runs as store_module
from e2vpt_core import jobs
from e2vpt_core.cli import main

point, _, count = os.environ.get("FAULT", "").partition(":")
seen = {"n": 0}


def reached():
    seen["n"] += 1
    return seen["n"] == int(count)


def die():
    os.kill(os.getpid(), signal.SIGKILL)


RunStore = store_module.RunStore
log_metrics, set_status, save_file = RunStore.log_metrics, RunStore.set_status, \\
    fileio.save_file


def metrics(self, *args):
    log_metrics(self, *args)
    if point == "slow":
        time.sleep(float(count))
    elif point == "metrics" and reached():
        die()


def status(self, run_id, status, reason=None):
    set_status(self, run_id, status, reason)
    if point == "lease" and status == "running" and reached():
        die()


def save(tensors, path, metadata=None):
    if point == "checkpoint" and os.path.basename(path).startswith(".checkpoint.") \\
            and reached():
        with open(path, "wb") as handle:
            handle.write(b"partial")
        die()
    save_file(tensors, path, metadata=metadata)


RunStore.log_metrics, RunStore.set_status, fileio.save_file = metrics, status, save
sys.exit(jobs.main(sys.argv[2:]) if sys.argv[1] == "worker" else main(sys.argv[1:]))
'''

EPOCHS, STEPS = 2, 8  # builtin:position has 800 training images: 8 batches of 100


def _train_args(backbone: str, store: Path) -> list[str]:
    return ["train", "--backbone", backbone, "--dataset", "builtin:position", "--method",
            "vpt-deep", "-P", "2", "--num-segments", "4", "--epochs", str(EPOCHS),
            "--batch-size", "100", "--device", "cpu", "--store", str(store), "--quiet"]


def _spawn(tmp_path: Path, args: list[str], fault: str) -> subprocess.Popen:
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    env = {**os.environ, "FAULT": fault, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(runner), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(predicate, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _only_run(store: RunStore) -> str:
    runs = store.runs()
    assert len(runs) == 1
    return runs["id"].iloc[0]


def _adapter(store: RunStore, run_id: str) -> dict[str, torch.Tensor]:
    return load_file(store.run_dir(run_id) / "adapter" / "adapter_model.safetensors")


def _assert_complete_once(store: RunStore, run_id: str) -> None:
    """Every step logged exactly once, one evaluation per epoch, nobody left owning it."""
    assert store.get_run(run_id)["status"] == "completed"
    assert list(store.metrics(run_id, ["train/loss"])["step"]) == \
        list(range(1, EPOCHS * STEPS + 1))
    assert len(store.metrics(run_id, ["val/top1"])) == EPOCHS
    assert store.owner(run_id) is None


@pytest.fixture(scope="module")
def reference(tiny_backbone, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The adapter of the same run, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    torch.set_num_threads(1)
    assert main(_train_args(tiny_backbone, root)) == 0
    store = RunStore(root)
    return _adapter(store, _only_run(store))


def _error(err: str) -> str:
    """The one error line a refused command prints (no traceback, nothing else wrong)."""
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _resume(store: RunStore, run_id: str, capsys, *extra: str) -> tuple[int, str]:
    """`e2vpt resume` in this process: its exit code and its error line ("" if none)."""
    capsys.readouterr()
    code = main(["resume", run_id, "--store", str(store.root), "--quiet", *extra])
    err = capsys.readouterr().err
    return code, _error(err) if code else ""


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["lease:1", "metrics:5", "checkpoint:2"])
def test_a_trainer_killed_at_any_point_resumes_to_the_same_result(
        fault, tmp_path, tiny_backbone, reference, capsys):
    store = RunStore(tmp_path / "store")
    child = _spawn(tmp_path, _train_args(tiny_backbone, store.root), fault)
    assert child.wait() == -signal.SIGKILL, child.stderr.read()
    run_id = _only_run(store)
    assert store.get_run(run_id)["status"] == "running"
    assert store.owner(run_id) is None  # its owner died: the lease is not held
    if store.has_tensors(run_id, "checkpoint"):  # never the partial one
        store.load_tensors(run_id, "checkpoint")
    assert _resume(store, run_id, capsys) == (0, "")
    _assert_complete_once(store, run_id)
    for name, tensor in _adapter(store, run_id).items():
        assert torch.equal(tensor, reference[name]), name


@pytest.mark.slow
def test_a_second_trainer_is_refused_naming_the_owner_until_it_dies(
        tmp_path, tiny_backbone, capsys):
    store = RunStore(tmp_path / "store")
    child = _spawn(tmp_path, _train_args(tiny_backbone, store.root), "slow:0.5")
    try:
        _wait(lambda: not store.runs().empty and store.owner(_only_run(store)) is not None,
              "the trainer to own its run")
        run_id = _only_run(store)
        code, err = _resume(store, run_id, capsys)
        assert code == 2 and f"pid {child.pid}" in err, err
        assert main(["runs", "--store", str(store.root)]) == 0  # reading is never refused
    finally:
        child.kill()
        child.wait()
    assert store.get_run(run_id)["status"] == "running"  # the refusal changed nothing
    assert _resume(store, run_id, capsys) == (0, "")
    _assert_complete_once(store, run_id)


@pytest.mark.slow
def test_a_run_queued_or_trained_by_the_worker_is_refused_then_taken_over(
        tmp_path, tiny_backbone, capsys):
    """The queued case used to let the worker restart the run under the CLI's feet."""
    store = RunStore(tmp_path / "store")
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=EPOCHS,
                         batch_size=100, device="cpu",
                         prompt=PromptConfig("vpt-deep", visual_prompt_len=2, num_segments=4))
    job_id, run_id = submit_train(store, config)
    code, err = _resume(store, run_id, capsys)
    assert code == 2 and f"queued as job {job_id}" in err, err
    assert store.get_run(run_id)["status"] == "queued" and store.metrics(run_id).empty

    worker = _spawn(tmp_path, ["worker", "--store", str(store.root), "--poll", "0.05"],
                    "slow:0.5")
    try:
        _wait(lambda: store.owner(run_id) is not None, "the worker to own the run")
        code, err = _resume(store, run_id, capsys)
        assert code == 2 and f"pid {worker.pid}" in err, err
    finally:
        worker.kill()
        worker.wait()
    assert _resume(store, run_id, capsys) == (0, "")  # its worker died: taken over
    job = store.get_job(job_id)
    assert job["status"] == "cancelled" and "taken over" in job["error"]
    assert run_worker(store, idle_exit=0, poll=0.01, log=lambda line: None) == 0
    _assert_complete_once(store, run_id)


@pytest.mark.slow
def test_a_truncated_checkpoint_is_named_and_restart_starts_over(
        tmp_path, tiny_backbone, reference, capsys):
    store = RunStore(tmp_path / "store")
    child = _spawn(tmp_path, _train_args(tiny_backbone, store.root), f"metrics:{STEPS + 3}")
    assert child.wait() == -signal.SIGKILL, child.stderr.read()
    run_id = _only_run(store)
    path = store.run_dir(run_id) / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, err = _resume(store, run_id, capsys)
    assert code == 2 and str(path) in err and "--restart" in err, err
    assert store.get_run(run_id)["status"] == "running"  # refused before any change
    assert _resume(store, run_id, capsys, "--restart") == (0, "")
    _assert_complete_once(store, run_id)
    for name, tensor in _adapter(store, run_id).items():
        assert torch.equal(tensor, reference[name]), name


# ------------------------------------------------------------- damaged and read-only stores
@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory) -> RunStore:
    root = tmp_path_factory.mktemp("trained")
    torch.set_num_threads(1)
    assert main(_train_args(tiny_backbone, root)) == 0  # with a live importance snapshot
    return RunStore(root)


def _copy(store: RunStore, directory: Path) -> RunStore:
    shutil.copytree(store.root, directory / "store")
    return RunStore(directory / "store")


@pytest.mark.parametrize("damage", ["truncated", "one byte changed", "config not JSON"])
def test_a_damaged_adapter_is_refused_by_export_and_embed(damage, trained, tmp_path, capsys):
    store = _copy(trained, tmp_path)
    run_id = _only_run(store)
    adapter = store.run_dir(run_id) / "adapter"
    weights, config = adapter / "adapter_model.safetensors", adapter / "adapter_config.json"
    data = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(data[:-10])
    elif damage == "one byte changed":
        weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        config.write_text(config.read_text()[:-5])
    damaged = config if damage.startswith("config") else weights
    capsys.readouterr()
    for command in (["export", run_id, str(tmp_path / "out")],
                    ["embed", run_id, "--umap-epochs", "5", "--head-steps", "1"]):
        assert main([*command, "--store", str(store.root)]) == 2, command
        assert str(damaged) in _error(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_damaged_adapter_is_a_message_on_the_pruning_page(trained, tmp_path, monkeypatch):
    from app_helpers import open_page

    store = _copy(trained, tmp_path)
    weights = store.run_dir(_only_run(store)) / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    monkeypatch.setenv("E2VPT_STORE", str(store.root))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    app = open_page("pruning.py")  # fails on an exception
    shown = [element.value for element in [*app.error, *app.warning]]
    assert any(str(weights) in text for text in shown), shown


def test_a_damaged_database_is_one_line_in_the_cli(trained, tmp_path, capsys):
    store = _copy(trained, tmp_path)
    store.db_path.write_bytes(os.urandom(4096))
    capsys.readouterr()
    for command in (["runs"], ["resume", "any-run"], ["export", "any-run", "out"]):
        assert main([*command, "--store", str(store.root)]) == 2
        assert str(store.db_path) in _error(capsys.readouterr().err)


def test_a_damaged_database_is_a_message_on_every_app_page(tmp_path, monkeypatch):
    from app_helpers import APP
    from streamlit.testing.v1 import AppTest

    store = RunStore(tmp_path / "store")
    store.db_path.write_bytes(os.urandom(4096))
    monkeypatch.setenv("E2VPT_STORE", str(store.root))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    app = AppTest.from_file(APP, default_timeout=120).run()
    for page in (None, "runs.py", "pruning.py", "embeddings.py"):
        if page is not None:
            app.switch_page(f"../pages/{page}").run()
        assert not app.exception, (page, app.exception)
        assert any(str(store.db_path) in error.value for error in app.error), page


READER = '''
import json, os, sys
from e2vpt_core.cli import build_parser, main
import e2vpt_core.artifacts, e2vpt_core.train.checkpoint, pandas.io.sql, shutil

build_parser()  # every import before losing access to root's Python
if os.getuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
codes = [main(args) for args in json.loads(sys.argv[1])]
print(json.dumps(codes))
'''


@pytest.mark.slow
def test_a_read_only_store_can_be_listed_and_exported(trained, tiny_backbone):
    """Read-only as another user sees it (files 0444, directories 0555); as root, the
    reader drops to `nobody` (pytest's own temporary directories are private to root)."""
    directory = Path(tempfile.mkdtemp())
    try:
        directory.chmod(0o755)
        store = _copy(trained, directory)
        backbone = shutil.copytree(tiny_backbone, directory / "backbone")
        run_id = _only_run(store)
        out = directory / "out"
        out.mkdir()
        out.chmod(0o777)
        for path in backbone.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        backbone.chmod(0o755)
        for path in [store.root, *store.root.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        commands = [["runs", "--store", str(store.root), "--json"],
                    ["export", run_id, str(out / "artifact"), "--store", str(store.root)],
                    _train_args(str(backbone), store.root)]
        result = subprocess.run([sys.executable, "-c", READER, json.dumps(commands)],
                                capture_output=True, text=True, timeout=300)
        exported = (out / "artifact" / "adapter_model.safetensors").is_file()
    finally:
        for path in [directory, *directory.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(directory)
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "[0, 0, 2]", result.stderr
    rows = next(json.loads(line) for line in lines if line.startswith("[{"))
    assert rows[0]["id"] == run_id
    assert "read-only" in _error(result.stderr)
    assert exported
