"""The training loop end to end: live metrics, failure on a non-finite loss, kill and resume,
and DDP on the CPU with two processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import last_json

from e2vpt_core import PromptConfig, load_adapter
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

ROOT = Path(__file__).resolve().parents[1]


def _config(backbone: str, **changes) -> TrainConfig:
    values = dict(backbone=backbone, dataset="builtin:position", epochs=2, batch_size=32,
                  base_lr=2.0, weight_decay=0.0, warmup_epochs=0.5, eval_splits=("val", "test"),
                  prompt=PromptConfig("e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                                      num_segments=4), device="cpu")
    values.update(changes)
    return TrainConfig(**values)


def test_a_run_reports_live_and_stores_its_artifact(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    events = []
    result = train_run(_config(tiny_backbone), store, progress=events.append)
    assert result.status == "completed", result.reason
    metrics = store.metrics(result.run_id)
    steps_per_epoch = 800 // 32
    losses = metrics[metrics["name"] == "train/loss"]
    assert list(losses["step"]) == list(range(1, 2 * steps_per_epoch + 1))
    lrs = metrics[metrics["name"] == "train/lr"]["value"].tolist()
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(2.0 * 32 / 256, rel=0.05)
    assert len(metrics[metrics["name"] == "val/top1"]) == 2
    assert events[-1]["epoch_end"] and events[-1]["step"] == 2 * steps_per_epoch
    run = store.get_run(result.run_id)
    assert run["status"] == "completed"
    for key in ("val_top1", "test_top1", "trainable_params", "effective_params"):
        assert key in run["summary"], key
    model = load_adapter(store.run_dir(result.run_id) / "adapter").eval()
    init = store.load_tensors(result.run_id, "init")["visual_prompts"]
    assert not torch.equal(model.visual_prompts.detach(), init)
    per_class = store.load_tensors(result.run_id, "per_class_test")["accuracy"]
    assert per_class.shape == (8,)
    live = store.load_tensors(result.run_id, "importance_live")
    assert live["segment"].shape == (4, 4) and live["token"].shape == (4,)
    assert int(live["steps"]) == 2 * steps_per_epoch
    assert torch.all(live["segment"] > 0)


def test_absurd_learning_rate_fails_with_a_reason(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    result = train_run(_config(tiny_backbone, base_lr=1e30, epochs=3), store)
    assert result.status == "failed"
    assert "non-finite loss" in result.reason
    run = store.get_run(result.run_id)
    assert run["status"] == "failed" and "non-finite loss" in run["reason"]


def test_bad_dataset_fails_the_run_without_raising(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    result = train_run(_config(tiny_backbone, dataset="vtab:/nonexistent/cifar"), store)
    assert result.status == "failed" and "/nonexistent/cifar" in result.reason


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "e2vpt_core", *args]


def _train_args(backbone: str, store: Path, epochs: int, batch: int = 16,
                amp: bool = True) -> list[str]:
    return ["train", "--backbone", backbone, "--dataset", "builtin:orientation",
            "--method", "e2vpt", "-P", "4", "-T", "2", "--num-segments", "4",
            "--epochs", str(epochs), "--batch-size", str(batch), "--lr", "1.0", "--wd", "0.0001",
            "--prompt-dropout", "0", "--device", "cpu", "--store", str(store),
            "--create-store", "--json", "--quiet", *([] if amp else ["--no-amp"])]


def _final_state(store: RunStore, run_id: str) -> dict[str, torch.Tensor]:
    return store.load_tensors(run_id, "checkpoint")


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_backbone):
    epochs = 3
    reference = subprocess.run(_cli(*_train_args(tiny_backbone, tmp_path / "a", epochs)),
                               capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert reference.returncode == 0, reference.stderr
    expected = last_json(reference.stdout)

    store = RunStore(tmp_path / "b")
    process = subprocess.Popen(_cli(*_train_args(tiny_backbone, tmp_path / "b", epochs)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    steps_per_epoch = 800 // 16
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and process.poll() is None:
        runs = store.runs()
        if len(runs):
            metrics = store.metrics(runs.iloc[0]["id"], ["train/loss"])
            if len(metrics) and metrics["step"].max() > steps_per_epoch + 5:
                os.kill(process.pid, signal.SIGKILL)
                killed_at = int(metrics["step"].max())
                break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert killed_at is not None and killed_at < epochs * steps_per_epoch, "not killed mid-run"
    run_id = store.runs().iloc[0]["id"]
    assert store.get_run(run_id)["status"] == "running"  # what a crash leaves behind

    resumed = subprocess.run(_cli("resume", run_id, "--store", str(tmp_path / "b"), "--json",
                                  "--quiet"), capture_output=True, text=True, cwd=ROOT,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    result = last_json(resumed.stdout)
    assert result["status"] == "completed"
    assert result["val_top1"] == expected["val_top1"]
    assert result["test_top1"] == expected["test_top1"]
    state_a = _final_state(RunStore(tmp_path / "a"), expected["run_id"])
    state_b = _final_state(store, run_id)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    losses = store.metrics(run_id, ["train/loss"])
    assert list(losses["step"]) == list(range(1, epochs * steps_per_epoch + 1))
    reference_losses = RunStore(tmp_path / "a").metrics(expected["run_id"], ["train/loss"])
    assert losses["value"].tolist() == reference_losses["value"].tolist()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_two_process_ddp_matches_one_process(tmp_path, tiny_backbone):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "e2vpt_core"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # fp32: two half batches match one whole batch to 1e-5 only without bf16 autocast (on
    # by default on a CPU with native bf16 units), whose rounding differs between them.
    ddp = subprocess.run(torchrun + _train_args(tiny_backbone, tmp_path / "ddp", 1, batch=32,
                                                amp=False),
                         capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(_cli(*_train_args(tiny_backbone, tmp_path / "one", 1, batch=32,
                                              amp=False)),
                            capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert single.returncode == 0, single.stderr
    ddp_result = last_json(ddp.stdout)
    single_result = last_json(single.stdout)
    state_ddp = _final_state(RunStore(tmp_path / "ddp"), ddp_result["run_id"])
    state_one = _final_state(RunStore(tmp_path / "one"), single_result["run_id"])
    for key in state_one:
        assert torch.allclose(state_ddp[key], state_one[key], atol=1e-5, rtol=1e-4), key
    initial = RunStore(tmp_path / "one").load_tensors(single_result["run_id"], "init")
    assert not torch.allclose(initial["visual_prompts"], state_one["model/visual_prompts"])


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_two_process_ddp_rewind_matches_one_process(tmp_path, tiny_backbone):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # fp32 (the rewinds inherit the parent's amp=False): see the test above.
    parent = subprocess.run(_cli(*_train_args(tiny_backbone, tmp_path / "ddp", 1, batch=32,
                                              amp=False)),
                            capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert parent.returncode == 0, parent.stderr
    parent_id = last_json(parent.stdout)["run_id"]
    shutil.copytree(tmp_path / "ddp", tmp_path / "one")
    rewind = ["rewind", parent_id, "--token-ratio", "0.5", "--segment-ratio", "0.25",
              "--init", "original", "--epochs", "1", "--json", "--quiet", "--store"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "e2vpt_core"]
    ddp = subprocess.run(torchrun + rewind + [str(tmp_path / "ddp")], capture_output=True,
                         text=True, cwd=ROOT, timeout=600, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(_cli(*rewind, str(tmp_path / "one")), capture_output=True,
                            text=True, cwd=ROOT, timeout=600, env=env)
    assert single.returncode == 0, single.stderr
    ddp_result, single_result = last_json(ddp.stdout), last_json(single.stdout)
    assert ddp_result["kept_tokens"] == single_result["kept_tokens"]
    children = RunStore(tmp_path / "ddp").runs()
    assert list(children["kind"]).count("rewind") == 1  # rank 0 alone created the child
    state_ddp = _final_state(RunStore(tmp_path / "ddp"), ddp_result["run_id"])
    state_one = _final_state(RunStore(tmp_path / "one"), single_result["run_id"])
    for key in state_one:
        assert torch.allclose(state_ddp[key], state_one[key], atol=1e-5, rtol=1e-4), key


def test_rewind_keeps_pruned_entries_zero_and_can_start_from_original_init(
        tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    first = train_run(_config(tiny_backbone, epochs=1), store)
    assert first.status == "completed", first.reason
    token_mask = [1.0, 0.0, 1.0, 1.0]
    segment_mask = [[1.0, 1.0, 0.0, 1.0]] + [[1.0] * 4] * 3
    rewind = _config(tiny_backbone, epochs=1, token_mask=token_mask, segment_mask=segment_mask,
                     init_from_run=first.run_id)
    result = train_run(rewind, store)
    assert result.status == "completed", result.reason
    prompts = store.load_tensors(result.run_id, "checkpoint")["model/visual_prompts"]
    assert torch.all(prompts[:, 1] == 0)
    assert torch.all(prompts[:, 0, 24:36] == 0)  # segment 2 of 4 over 48 dims, contiguous
    assert torch.all(prompts[:, 0, :24] != 0) and torch.all(prompts[:, 2] != 0)
    original = store.load_tensors(first.run_id, "init")
    rewound_init = store.load_tensors(result.run_id, "init")
    kept = torch.tensor(token_mask).bool()
    assert torch.equal(rewound_init["visual_prompts"][:, kept][:, 1:],
                       original["visual_prompts"][:, kept][:, 1:])
    assert torch.equal(rewound_init["kv_prompts"], original["kv_prompts"])
    pruned_params = 2 * (48 + 12)  # 2 blocks × (token 1 + one segment of token 0)
    assert result.metrics["effective_params"] == result.metrics["trainable_params"] - pruned_params


def test_sweep_picks_the_best_grid_pair_then_runs_seeds(tmp_path, tiny_backbone):
    from e2vpt_core.train.grid import sweep

    store = RunStore(tmp_path)
    base = _config(tiny_backbone, epochs=1)
    result = sweep(base, store, lrs=[1e30, 1.0], wds=[0.0], seeds=[0, 1])
    assert result["status"] == "completed"
    grid = {row["base_lr"]: row for row in result["grid"]}
    assert grid[1e30]["status"] == "failed" and "non-finite" in grid[1e30]["reason"]
    assert result["best_base_lr"] == 1.0 and result["best_weight_decay"] == 0.0
    assert [row["seed"] for row in result["finals"]] == [0, 1]
    scores = [row["test_top1"] for row in result["finals"]]
    assert result["test_top1_mean"] == pytest.approx(sum(scores) / 2)
    children = store.runs()
    children = children[children["parent_id"] == result["run_id"]]
    assert sorted(children["kind"]) == ["final", "final", "grid", "grid"]
    final_config = store.get_run(result["finals"][0]["run_id"])["config"]
    assert final_config["train_split"] == "trainval" and final_config["eval_splits"] == ["test"]
    assert store.get_run(result["run_id"])["summary"]["completed_seeds"] == 2


def test_sweep_grid_epochs_shorten_the_grid_and_not_the_finals(tmp_path, tiny_backbone):
    from e2vpt_core.train.grid import sweep

    store = RunStore(tmp_path)
    result = sweep(_config(tiny_backbone, epochs=2), store, lrs=[0.5, 1.0], wds=[0.0],
                   seeds=[0], grid_epochs=1)
    assert result["status"] == "completed", result
    epochs = {row["run_id"]: store.get_run(row["run_id"])["config"]["epochs"]
              for row in result["grid"] + result["finals"]}
    assert [epochs[row["run_id"]] for row in result["grid"]] == [1, 1]
    assert epochs[result["finals"][0]["run_id"]] == 2
    parent = store.get_run(result["run_id"])["config"]
    assert parent["epochs"] == 2 and parent["grid"]["epochs"] == 1
