"""`e2vpt embed` and `compare_runs` on a real tiny stored run (one UMAP fit for the module)."""

from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from cli_helpers import last_json
from timm.data import resolve_model_data_config

from e2vpt_core import PromptConfig, load_adapter
from e2vpt_core.cli import build_parser, main
from e2vpt_core.data import build_transform, load_dataset
from e2vpt_core.hyperbolic import HeadConfig, ProjectionConfig, compare_runs
from e2vpt_core.hyperbolic.view import DEFAULT_MAX_POINTS
from e2vpt_core.store import RunStore
from e2vpt_core.train import train_run
from e2vpt_core.train.config import TrainConfig

DATASET = "builtin:position"
POINTS, UMAP_EPOCHS, HEAD_STEPS = 120, 30, 5
FIGURE_KEYS = ("knn_accuracy", "silhouette", "mean_class_radius", "max_disk_radius",
               "disk_knn_accuracy", "disk_silhouette", "disk_mean_class_radius",
               "euclidean_knn_accuracy", "euclidean_silhouette", "euclidean_mean_class_radius")


def _train_config(backbone: str) -> TrainConfig:
    return TrainConfig(backbone=backbone, dataset=DATASET, epochs=1, batch_size=64,
                       device="cpu", prompt=PromptConfig("e2vpt", visual_prompt_len=4,
                                                         kv_prompt_len=2, num_segments=4))


@pytest.fixture(scope="module")
def embedded(tiny_backbone, tmp_path_factory) -> SimpleNamespace:
    """A trained tiny run and the output of `e2vpt embed --json` on it (the only UMAP fit)."""
    root = tmp_path_factory.mktemp("hyperbolic-store")
    store = RunStore(root)
    result = train_run(_train_config(tiny_backbone), store)
    assert result.status == "completed", result.reason
    stdout, threads = io.StringIO(), torch.get_num_threads()
    torch.set_num_threads(1)  # numba's OpenMP layer must not reset it (checked below)
    try:
        with contextlib.redirect_stdout(stdout):
            code = main(["embed", result.run_id, "--store", str(root), "--max-points",
                         str(POINTS), "--umap-epochs", str(UMAP_EPOCHS), "--head-steps",
                         str(HEAD_STEPS), "--json"])
        threads_after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    output = stdout.getvalue()
    return SimpleNamespace(store=store, root=root, run_id=result.run_id, code=code,
                           output=output, summary=last_json(output),
                           threads_after=threads_after)


def test_embed_prints_the_figures_and_ends_with_json(embedded):
    assert embedded.code == 0, embedded.output
    summary = embedded.summary
    for key in FIGURE_KEYS:
        assert isinstance(summary[key], float), key
    for key in ("knn_accuracy", "disk_knn_accuracy", "euclidean_knn_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    for key in ("silhouette", "disk_silhouette", "euclidean_silhouette"):
        assert -1.0 <= summary[key] <= 1.0, key
    assert 0.0 < summary["max_disk_radius"] < 1.0
    assert summary["mean_class_radius"] > 0.0
    assert (summary["run_id"], summary["split"]) == (embedded.run_id, "test")
    assert summary["num_points"] == POINTS and summary["num_classes"] > 1
    assert summary["cached"] is False
    assert embedded.threads_after == 1  # UMAP left torch's thread count alone
    for key in ("extract", "head", "projection", "separability", "total"):
        assert summary[f"{key}_seconds"] >= 0.0, key
    lines = embedded.output.splitlines()
    assert lines[0].startswith(f"run {embedded.run_id} test: {POINTS} points")
    assert any(line.startswith("disk ") for line in lines)
    assert f"poincare_test_{summary['settings_hash']}.safetensors" in embedded.output


def test_stored_disk_coordinates_are_strictly_inside_the_unit_circle(embedded):
    store, run_id = embedded.store, embedded.run_id
    stored = store.load_tensors(run_id, f"poincare_test_{embedded.summary['settings_hash']}")
    radius = stored["disk"].norm(dim=1)
    assert stored["disk"].shape == (POINTS, 2)
    assert torch.all(radius < 1.0) and torch.all(radius > 0.0)
    assert radius.max().item() == pytest.approx(embedded.summary["max_disk_radius"])
    assert stored["ball"].shape == (POINTS, HeadConfig().dim)
    assert torch.all(stored["ball"].norm(dim=1) < 1 / HeadConfig().curvature ** 0.5)
    cached = store.load_tensors(run_id, "embeddings_test")
    assert torch.equal(stored["labels"], cached["labels"][stored["indices"]])
    assert len(torch.unique(stored["indices"])) == POINTS
    figures = store.get_run(run_id)["summary"]["hyperbolic_test"]
    assert figures["knn_accuracy"] == pytest.approx(embedded.summary["knn_accuracy"])
    seconds = figures["seconds"]  # where the view's time went, for the demo's benchmark
    assert set(seconds) == {"extract", "head", "projection", "separability", "total"}
    assert seconds["total"] >= seconds["head"] + seconds["projection"] > 0


def test_cached_embeddings_are_the_models_cls_embeddings(embedded):
    store, run_id = embedded.store, embedded.run_id
    cached = store.load_tensors(run_id, "embeddings_test")
    model = load_adapter(store.run_dir(run_id) / "adapter").eval()
    transform = build_transform(DATASET, resolve_model_data_config(model.backbone), train=False)
    dataset = load_dataset(DATASET, "test", transform)
    assert cached["embeddings"].shape == (len(dataset), model.backbone.embed_dim)
    images = torch.stack([dataset[i][0] for i in range(4)])
    with torch.no_grad():
        expected = model.forward_embedding(images)
    torch.testing.assert_close(cached["embeddings"][:4], expected, rtol=1e-4, atol=1e-4)
    assert cached["labels"][:4].tolist() == [dataset[i][1] for i in range(4)]


def test_compare_runs_reads_the_cached_view(embedded):
    store, run_id = embedded.store, embedded.run_id
    comparison = compare_runs(store, run_id, run_id, "test", max_points=POINTS,
                              head=HeadConfig(steps=HEAD_STEPS),
                              projection=ProjectionConfig(n_epochs=UMAP_EPOCHS))
    assert comparison.same_data
    for view in (comparison.a, comparison.b):
        assert view.cached and view.settings_hash == embedded.summary["settings_hash"]
        assert view.disk.shape == (POINTS, 2) and view.labels.shape == (POINTS,)
        assert np.all(np.linalg.norm(view.disk, axis=1) < 1.0)
        for key in FIGURE_KEYS:
            assert view.summary()[key] == pytest.approx(embedded.summary[key], rel=1e-9), key
    table = comparison.table()
    assert table.index.names == ["run", "space"]
    assert set(table.index.get_level_values("space")) == {"euclidean", "ball", "disk"}


@pytest.mark.parametrize("make_run", ["unknown", "no adapter"])
def test_bad_runs_exit_2_with_one_line(make_run, tmp_path, capsys):
    store = RunStore(tmp_path)
    run_id = "nope" if make_run == "unknown" else store.create_run(TrainConfig().to_dict())
    assert main(["embed", run_id, "--store", str(tmp_path), "--json"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("e2vpt embed: error:")
    assert ("no run 'nope'" if make_run == "unknown" else "no adapter") in lines[0]
    assert captured.out == ""


def test_cli_defaults_are_the_engine_defaults():
    args = build_parser().parse_args(["embed", "RUN"])
    head, projection = HeadConfig(), ProjectionConfig()
    assert (args.head_steps, args.head_lr, args.curvature) == \
        (head.steps, head.lr, head.curvature)
    assert (args.umap_epochs, args.neighbors) == (projection.n_epochs, projection.n_neighbors)
    assert args.max_points == DEFAULT_MAX_POINTS and args.split == "test"
