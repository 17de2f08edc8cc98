"""`sweep_prune(..., ray_address=...)`: rewinds as Ray tasks (skipped without ray)."""

from __future__ import annotations

import builtins

import pytest

from e2vpt_core.config import PromptConfig
from e2vpt_core.prune import sweep_prune
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run


@pytest.fixture(scope="module")
def parent(tmp_path_factory, tiny_backbone) -> tuple[RunStore, str]:
    store = RunStore(tmp_path_factory.mktemp("ray-store"))
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=100, base_lr=2.0, device="cpu",
                         prompt=PromptConfig(method="e2vpt", visual_prompt_len=4,
                                             kv_prompt_len=2, num_segments=4))
    run_id = store.create_run(config.to_dict())
    assert train_run(config, store, run_id).status == "completed"
    return store, run_id


def test_missing_ray_names_the_extra_before_any_work(parent, monkeypatch):
    store, run_id = parent
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RuntimeError, match=r"pip install e2vpt-core\[ray\]"):
        sweep_prune(store, run_id, (0.25,), ray_address="local")
    assert not store.has_tensors(run_id, "importance")
    assert len(store.runs()) == 1


def test_two_rewinds_run_as_ray_tasks(parent):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install e2vpt-core[ray])")
    store, run_id = parent
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        table = sweep_prune(store, run_id, (0.0, 0.5), ray_address="local", timing_repeats=1)
    finally:
        ray.shutdown()
    assert list(table["token_ratio"]) == [0.0, 0.5]
    assert list(table["status"]) == ["completed", "completed"]
    assert table["best"].sum() == 1
    for child in table["run_id"]:
        run = store.get_run(child)
        assert run["kind"] == "rewind" and run["parent_id"] == run_id
    summary = store.get_run(run_id)["summary"]["prune_sweep"]
    assert [row["run_id"] for row in summary["table"]] == list(table["run_id"])
