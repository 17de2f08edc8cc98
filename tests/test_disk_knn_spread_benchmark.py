"""benchmarks/disk_knn_spread.py: one row per (sample seed, UMAP seed) of a stored run, and
a summary that matches a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import disk_knn_spread
from e2vpt_core import PromptConfig
from e2vpt_core.hyperbolic import ProjectionConfig
from e2vpt_core.hyperbolic.view import embedding_view
from e2vpt_core.store import RunStore
from e2vpt_core.train import train_run
from e2vpt_core.train.config import TrainConfig

POINTS, UMAP_EPOCHS = 60, 20


@pytest.mark.slow
def test_each_pair_is_one_view_and_the_head_ignores_the_umap_seed(tiny_backbone, tmp_path):
    store = RunStore(tmp_path)
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=64, device="cpu",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                                             num_segments=4))
    run_id = train_run(config, store).run_id
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = disk_knn_spread.view_spread(store, run_id, [0, 1], [0, 1], points=POINTS,
                                           umap_epochs=UMAP_EPOCHS)
        again = embedding_view(store, run_id, "test", max_points=POINTS, sample_seed=1,
                               projection=ProjectionConfig(random_state=0,
                                                           n_epochs=UMAP_EPOCHS))
    finally:
        torch.set_num_threads(threads)
    assert [(r["sample_seed"], r["umap_seed"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert rows[2]["disk"] == round(100 * again.figures()["disk_knn_accuracy"], 1)
    # the head and the drawn points depend on the sample seed only
    assert rows[0]["ball"] == rows[1]["ball"] and rows[2]["ball"] == rows[3]["ball"]
    assert rows[0]["euclidean"] == rows[1]["euclidean"]
    assert all(0 <= r[key] <= 100 for r in rows for key in ("disk", "ball", "euclidean"))


def test_summary_matches_numpy():
    disk, ball = [68.4, 73.2, 63.2, 70.0], [79.0, 79.0, 75.8, 75.8]
    rows = [{"disk": d, "ball": b} for d, b in zip(disk, ball, strict=True)]
    summary = disk_knn_spread.summarize(rows, test_top1=85.1)
    assert summary["disk_mean"] == round(float(np.mean(disk)), 1)
    assert summary["disk_sd"] == round(float(np.std(disk, ddof=1)), 1)
    assert (summary["disk_min"], summary["disk_max"]) == (63.2, 73.2)
    assert summary["ratio_mean"] == round(float(np.mean(disk)) / 85.1, 3)
    assert summary["ball_mean"] == round(float(np.mean(ball)), 1)
