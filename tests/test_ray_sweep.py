"""The Ray backend on a local instance (2 CPUs, started once for the module): a prune
sweep's rewinds, and a whole suite whose results equal those of the suite run in turn."""

from __future__ import annotations

import builtins
import json

import pytest
from cli_helpers import last_json
from data_fixtures import make_vtab_suite

from e2vpt_core.cli import main
from e2vpt_core.config import PromptConfig
from e2vpt_core.protocol.suite import run_suite
from e2vpt_core.prune import sweep_prune
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

PROMPT = PromptConfig(method="e2vpt", visual_prompt_len=4, kv_prompt_len=2, num_segments=4)
GRIDS = dict(lrs=(2.0,), wds=(0.0,), token_ratios=(0.0, 0.5), segment_ratios=(0.0,),
             seeds=(0, 1))
ARGS = ["--epochs", "1", "--batch-size", "100", "--device", "cpu", "-P", "4", "-T", "2",
        "--num-segments", "4", "--lrs", "2.0", "--wds", "0.0", "--token-ratios", "0.0", "0.5",
        "--segment-ratios", "0.0", "--seeds", "0", "1", "--quiet", "--json"]


@pytest.fixture(scope="module")
def local_ray():
    """One small instance for the module: Ray's start-up is the slow part of these tests."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -r "
                              "requirements-dev.txt)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def parent(tmp_path_factory, tiny_backbone) -> tuple[RunStore, str]:
    store = RunStore(tmp_path_factory.mktemp("ray-store"))
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=100, base_lr=2.0, device="cpu", prompt=PROMPT)
    run_id = store.create_run(config.to_dict())
    assert train_run(config, store, run_id).status == "completed"
    return store, run_id


def test_missing_ray_names_the_extra_before_any_work(parent, tmp_path, tiny_backbone,
                                                     monkeypatch):
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
    suite_store = RunStore(tmp_path / "store")
    base = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", prompt=PROMPT)
    with pytest.raises(RuntimeError, match=r"pip install e2vpt-core\[ray\]"):
        run_suite(suite_store, f"vtab:{make_vtab_suite(tmp_path / 'vtab-1k')}", base,
                  **GRIDS, ray_address="local")
    assert suite_store.runs().empty


def test_no_cluster_at_the_address_is_one_line_and_no_run(tmp_path, tiny_backbone, capsys):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()  # runs before the module's instance starts
    store = tmp_path / "store"
    code = main(["protocol", "--dataset", "builtin:position", "--backbone", tiny_backbone,
                 "--store", str(store), "--create-store", "--ray", "auto", *ARGS])
    assert code == 2
    assert "cannot connect to the Ray cluster 'auto'" in capsys.readouterr().err
    assert RunStore(store).runs().empty


@pytest.mark.slow
def test_two_rewinds_run_as_ray_tasks(parent, local_ray):
    store, run_id = parent
    table = sweep_prune(store, run_id, (0.0, 0.5), ray_address="local", timing_repeats=1)
    assert list(table["token_ratio"]) == [0.0, 0.5]
    assert list(table["status"]) == ["completed", "completed"]
    assert table["best"].sum() == 1
    assert store.has_tensors(run_id, "importance")  # computed by a Ray task
    for child in table["run_id"]:
        run = store.get_run(child)
        assert run["kind"] == "rewind" and run["parent_id"] == run_id
    summary = store.get_run(run_id)["summary"]["prune_sweep"]
    assert [row["run_id"] for row in summary["table"]] == list(table["run_id"])


def _without_ids(value):
    """A result with its run ids (which differ between any two runs) left out."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if not k.endswith("run_id")}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


@pytest.mark.slow
def test_suite_on_ray_gives_the_results_of_the_suite_run_in_turn(
        tmp_path, tiny_backbone, local_ray, capsys):
    root = make_vtab_suite(tmp_path / "vtab-1k")
    base = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                       batch_size=100, device="cpu", prompt=PROMPT)
    in_turn = RunStore(tmp_path / "in-turn")
    expected = run_suite(in_turn, f"vtab:{root}", base, **GRIDS)
    assert expected["status"] == "completed"

    store = tmp_path / "on-ray"
    code = main(["protocol", "--suite", f"vtab:{root}", "--backbone", tiny_backbone,
                 "--store", str(store), "--create-store", "--ray", "local", *ARGS])
    out = capsys.readouterr().out
    assert code == 0, out
    result = last_json(out)
    assert result["report"] == expected["report"]
    assert _without_ids(result) == _without_ids(json.loads(json.dumps(expected, default=str)))
    on_ray = RunStore(store)
    for task, summary in result["tasks"].items():
        ours = json.loads((on_ray.run_dir(summary["run_id"]) / "results.json").read_text())
        theirs = json.loads((in_turn.run_dir(expected["tasks"][task]["run_id"])
                             / "results.json").read_text())
        assert [row["stage"] for row in ours["rows"]] == ["grid", "prune", "prune", "final",
                                                          "final"]
        ours, theirs = _without_ids(ours), _without_ids(theirs)
        for index, (row, want) in enumerate(zip(ours.pop("rows"), theirs.pop("rows"),
                                                strict=True)):
            assert row == want, f"{task} row {index}: on Ray {row}, in turn {want}"
        assert ours == theirs
    runs = on_ray.runs()
    assert sorted(runs["kind"]) == sorted(in_turn.runs()["kind"])
    assert {on_ray.get_run(run_id)["status"] for run_id in runs["id"]} == {"completed"}
