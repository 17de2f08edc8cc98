"""`run_protocol` / `run_suite` / `e2vpt protocol` end to end on a tiny backbone (CPU)."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest
from cli_helpers import last_json
from data_fixtures import make_vtab_suite

from e2vpt_core.cli import main
from e2vpt_core.config import PromptConfig
from e2vpt_core.data.vtab import VTAB_TASKS
from e2vpt_core.protocol import run_protocol
from e2vpt_core.protocol.suite import PAPER_E2VPT, suite_report
from e2vpt_core.prune.sweep import pick_best
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig

GRIDS = dict(lrs=(2.0, 0.5), wds=(0.0,), token_ratios=(0.0, 0.5), segment_ratios=(0.0,),
             seeds=(0, 1))
ARGS = ["--epochs", "1", "--batch-size", "100", "--device", "cpu", "-P", "4", "-T", "2",
        "--num-segments", "4", "--lrs", "2.0", "0.5", "--wds", "0.0", "--token-ratios", "0.0",
        "0.5", "--segment-ratios", "0.0", "--seeds", "0", "1", "--quiet", "--json"]


def _base(backbone: str, dataset: str = "builtin:position") -> TrainConfig:
    return TrainConfig(backbone=backbone, dataset=dataset, epochs=1, batch_size=100,
                       device="cpu", prompt=PromptConfig(method="e2vpt", visual_prompt_len=4,
                                                         kv_prompt_len=2, num_segments=4))


@pytest.fixture(scope="module")
def protocol(tmp_path_factory, tiny_backbone):
    store = RunStore(tmp_path_factory.mktemp("protocol"))
    return store, run_protocol(store, _base(tiny_backbone), **GRIDS)


def test_pipeline_runs_end_to_end_with_one_row_per_training(protocol):
    store, result = protocol
    assert result["status"] == "completed", result.get("reason")
    stages = [row["stage"] for row in result["rows"]]
    assert stages == ["grid", "grid", "prune", "prune", "final", "final"]
    rows = pd.DataFrame(result["rows"])
    assert rows.groupby("stage")["chosen"].sum().to_dict() == {"grid": 1, "prune": 1,
                                                                "final": 0}
    chosen = rows[rows["chosen"].astype(bool)]
    assert chosen.iloc[0]["base_lr"] == result["best_base_lr"]
    assert chosen.iloc[1]["token_ratio"] == result["best_token_ratio"]
    finals = rows[rows["stage"] == "final"]
    assert list(finals["seed"]) == [0, 1]
    assert result["test_top1_mean"] == pytest.approx(statistics.fmean(finals["test_top1"]))
    assert result["test_top1_std"] == pytest.approx(statistics.stdev(finals["test_top1"]))

    pruned = store.get_run(result["pruned_run_id"])["config"]
    for run_id in finals["run_id"]:
        run = store.get_run(run_id)
        assert run["kind"] == "final" and run["parent_id"] == result["run_id"]
        assert run["config"]["train_split"] == "trainval"
        assert run["config"]["eval_splits"] == ["test"]
        assert run["config"]["token_mask"] == pruned["token_mask"]
        assert run["config"]["segment_mask"] == pruned["segment_mask"]
    parent = store.get_run(result["run_id"])
    assert parent["kind"] == "protocol" and parent["status"] == "completed"
    assert parent["summary"]["test_top1_mean"] == result["test_top1_mean"]
    directory = store.run_dir(result["run_id"])
    assert json.loads((directory / "results.json").read_text())["rows"] == result["rows"]
    assert "test top-1" in (directory / "results.md").read_text()


def test_ties_go_to_more_pruning():
    table = pd.DataFrame({"status": ["completed"] * 3, "val_top1": [50.0, 50.0, 40.0],
                          "token_ratio": [0.0, 0.5, 0.9], "segment_ratio": [0.0] * 3})
    assert pick_best(table, "val_top1") == 1


def _completed(scores: dict[str, float]) -> dict[str, dict]:
    return {t: {"status": "completed", "test_top1_mean": v, "test_top1_std": 0.0}
            for t, v in scores.items()}


def test_paper_means_match_the_published_ones():
    _, scores = suite_report("vtab", _completed({t: 0.0 for t in VTAB_TASKS}),
                             {t: info.group for t, info in VTAB_TASKS.items()}, [])
    paper = {g: v["paper"] for g, v in scores["groups"].items()}
    published = {"Natural": 80.01, "Specialized": 84.43, "Structured": 57.39}
    assert paper == pytest.approx(published, abs=0.006)  # the paper rounds to 2 places
    assert scores["overall"]["paper"] == pytest.approx(73.94, abs=0.006)  # the paper's score
    # by hand: (560.1 + 337.7 + 459.1) / 19, the sums of the per-task figures of each group
    assert scores["flat"]["paper"] == pytest.approx(1356.9 / 19)
    assert round(scores["flat"]["paper"], 2) == 71.42
    fgvc = [PAPER_E2VPT[t] for t in ("cub", "nabirds", "flowers", "dogs", "cars")]
    assert statistics.fmean(fgvc) == pytest.approx(89.22, abs=0.006)


def test_group_mean_and_flat_mean_by_hand():
    ours = {"cifar": 70.0, "dtd": 60.0, "svhn": 80.0,  # Natural: 70
            "eurosat": 90.0,  # Specialized: 90
            "clevr_count": 50.0, "kitti": 40.0}  # Structured: 45
    groups = {t: VTAB_TASKS[t].group for t in ours}
    text, scores = suite_report("vtab", _completed(ours), groups, [])
    assert scores["overall"]["ours"] == pytest.approx((70 + 90 + 45) / 3)  # 68.33
    assert scores["flat"]["ours"] == pytest.approx(390 / 6)  # 65.00
    paper_groups = ((78.6 + 67.8 + 85.3) / 3, 96.8, (71.7 + 75.8) / 2)
    assert scores["overall"]["paper"] == pytest.approx(sum(paper_groups) / 3)
    assert scores["flat"]["paper"] == pytest.approx(
        (78.6 + 67.8 + 85.3 + 96.8 + 71.7 + 75.8) / 6)
    lines = text.splitlines()
    grouped = next(line for line in lines if line.startswith("VTAB mean of group means"))
    assert "(3/3 groups)" in grouped
    assert grouped.split()[-2:] == ["68.33", f"{sum(paper_groups) / 3:.2f}"]
    flat = next(line for line in lines if line.startswith("VTAB flat mean"))
    assert "(6/19 tasks)" in flat and flat.split()[-2:] == ["65.00", "79.33"]


@pytest.mark.slow
def test_suite_prints_group_means_beside_the_paper(tmp_path, tiny_backbone, capsys):
    root = make_vtab_suite(tmp_path / "vtab-1k")
    assert all(8 <= VTAB_TASKS[task].num_classes for task in ("dsprites_loc", "dtd"))
    store = tmp_path / "store"
    code = main(["protocol", "--suite", f"vtab:{root}", "--backbone", tiny_backbone,
                 "--store", str(store), "--create-store", *ARGS])
    out = capsys.readouterr().out
    assert code == 0, out
    result = last_json(out)
    assert set(result["tasks"]) == {"dsprites_loc", "dtd"}
    assert len(result["skipped"]) == len(VTAB_TASKS) - 2
    lines = out.splitlines()
    loc = next(line for line in lines if line.startswith("dsprites_loc"))
    assert loc.split()[1] == "Structured" and loc.split()[-1] == "80.80"
    natural = next(line for line in lines if line.startswith("Natural mean (1/7 tasks)"))
    assert natural.split()[-1] == "67.80"
    assert next(line for line in lines if line.startswith("Specialized mean")).split()[-2:] \
        == ["—", "—"]
    # one task per scored group: both means are the mean of the two tasks
    ours = statistics.fmean(t["test_top1_mean"] for t in result["tasks"].values())
    for label in ("VTAB mean of group means (2/3 groups)", "VTAB flat mean (2/19 tasks)"):
        line = next(line for line in lines if line.startswith(label))
        assert line.split()[-2:] == [f"{ours:.2f}", f"{(80.8 + 67.8) / 2:.2f}"]
    assert "skipped cifar: no folder" in out
    suite = RunStore(store).get_run(result["run_id"])
    assert suite["kind"] == "suite"
    children = RunStore(store).runs().query("parent_id == @result['run_id']")
    assert sorted(children["kind"]) == ["protocol", "protocol"]


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "builtin:position", "--token-ratios", "0.95"], "token_ratio"),
    (["--dataset", "builtin:position", "--seeds", "0", "0"], "repeat"),
    (["--dataset", "builtin:nope"], "unknown builtin task"),
    (["--suite", "imagenet:/tmp"], "bad suite"),
    (["--suite", "vtab:/no/such/folder"], "does not exist"),
])
def test_bad_input_errors_before_any_run(tmp_path, tiny_backbone, capsys, extra, message):
    store = tmp_path / "store"
    code = main(["protocol", "--backbone", tiny_backbone, "--store", str(store), "--create-store",
                 *ARGS, *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert RunStore(store).runs().empty


def test_a_method_without_visual_prompts_is_refused(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    base = _base(tiny_backbone).replace(prompt=PromptConfig(method="linear"))
    with pytest.raises(ValueError, match="no visual prompts"):
        run_protocol(store, base, **GRIDS)
    assert store.runs().empty
