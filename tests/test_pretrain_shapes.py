"""Pretraining a ViT of another width, depth or head count, and images rendered by workers.

Both exist for a GPU, where a wider backbone is affordable and one CPU core cannot render
images as fast as the model takes them; tested here on tiny shapes and a few steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.pretrain import PretrainConfig, parse_args, pretrain
from e2vpt_core.pretrain.tasks import build_task, training_batches

COMMON = dict(data="scenes", batch_size=4, warmup_steps=1, heldout_size=4, eval_every=1,
              log_every=1, precision="fp32")
SHAPE = dict(embed_dim=48, num_heads=4, depth=2)
ROOT = Path(__file__).resolve().parents[1]


def scene_task(batch_size: int = 3):
    return build_task("scenes", num_classes=200, seed=0, parent_steps=0, heldout_size=2,
                      batch_size=batch_size, label_smoothing=0.1)


def test_a_wider_vit_pretrains_loads_and_refuses_a_resume_of_another_shape(tmp_path):
    out = tmp_path / "wide"
    recipe = pretrain(PretrainConfig(out=str(out), steps=2, workers=1, **SHAPE, **COMMON))
    assert {k: recipe["model"]["kwargs"][k] for k in SHAPE} == SHAPE
    assert recipe["args"]["workers"] == 1 and recipe["steps_done"] == 2
    assert "0.06 M parameters" in (out / "pretrain.log").read_text()
    model = create_model(str(out), 3, PromptConfig("e2vpt"), pretrained=True)
    assert model.backbone.embed_dim == 48 and len(model.backbone.blocks) == 2
    assert model.backbone.blocks[0].attn.num_heads == 4

    child = tmp_path / "child"
    with pytest.raises(ValueError, match="embed_dim 48, depth 2, num_heads 4; resume it"):
        pretrain(PretrainConfig(out=str(child), steps=1, resume_from=str(out), **COMMON))
    assert not child.exists()
    resumed = pretrain(PretrainConfig(out=str(child), steps=1, resume_from=str(out),
                                      **SHAPE, **COMMON))
    assert resumed["total_steps"] == 3


@pytest.mark.parametrize(("shape", "message"), [
    (dict(embed_dim=50, num_heads=4), "multiple of --num-heads 4"),
    (dict(depth=0), "--depth 0 positive"),
    (dict(workers=-1), "--workers must be >= 0"),
])
def test_a_bad_shape_or_worker_count_is_refused_before_anything_is_written(
        tmp_path, capsys, shape, message):
    with pytest.raises(ValueError, match=message):
        PretrainConfig(out=str(tmp_path / "x"), **shape)
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in shape.items()]
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--out", str(tmp_path / "x"), *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_workers_take_turns_each_on_its_own_reproducible_stream():
    stream = training_batches(scene_task(), workers=2)
    got = [next(stream) for _ in range(4)]
    # Reference: worker w's stream is the task reseeded with w, batches taken in turn.
    expected = []
    for worker in (0, 1):
        task = scene_task()
        task.reseed(worker)
        expected.append([task.next_batch() for _ in range(2)])
    for i, (images, targets) in enumerate(got):
        ref_images, ref_targets = expected[i % 2][i // 2]
        np.testing.assert_array_equal(images, ref_images)
        np.testing.assert_array_equal(targets["present"], ref_targets["present"])
    assert not np.array_equal(got[0][0], got[1][0])

    in_process = training_batches(scene_task(), workers=0)
    direct = scene_task()
    for _ in range(2):
        np.testing.assert_array_equal(next(in_process)[0], direct.next_batch()[0])


def test_fractal_workers_draw_reseeded_streams():
    def task():
        return build_task("fractal", num_classes=3, seed=0, parent_steps=0, heldout_size=2,
                          batch_size=2, label_smoothing=0.1)

    first, second = next(training_batches(task(), 1)), next(training_batches(task(), 1))
    np.testing.assert_array_equal(first[0], second[0])
    reference = task()
    reference.reseed(0)
    images, targets = reference.next_batch()
    np.testing.assert_array_equal(first[0], images)
    np.testing.assert_array_equal(first[1]["labels"], targets["labels"])
    unseeded = task().next_batch()[0]
    assert not np.array_equal(first[0], unseeded)


@pytest.mark.slow
def test_a_stop_signal_to_the_whole_process_group_still_saves(tmp_path):
    """Ctrl-C and `timeout` signal every process of the group, the workers included: the
    training process must still finish its step and save, not die of a dead worker."""
    out = tmp_path / "stopped"
    command = [sys.executable, "-m", "e2vpt_core.pretrain", "--out", str(out), "--data",
               "scenes", "--depth", "1", "--embed-dim", "48", "--num-heads", "4", "--workers",
               "2", "--steps", "100000", "--batch-size", "8", "--heldout-size", "8",
               "--log-every", "1", "--precision", "fp32"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        log = out / "pretrain.log"
        if log.exists() and "step 3/" in log.read_text():
            os.killpg(process.pid, signal.SIGTERM)
            break
        time.sleep(0.1)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and "Traceback" not in err, err
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["complete"] is False and recipe["steps_done"] >= 3
