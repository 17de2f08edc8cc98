"""Controls that give an answer: verdict rows from hand-made tables, and `sweep-prune
--controls random` on a tiny run (same counts, a verdict per ratio, importance-only best)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from cli_helpers import last_json

from e2vpt_core.cli import main
from e2vpt_core.prune.controls import (
    curve_verdicts,
    nearest_ratio,
    rewind_verdicts,
    sweep_verdicts,
    verdict_rows,
)
from e2vpt_core.prune.sweep import pick_best
from e2vpt_core.stats import compare_to_draws
from e2vpt_core.store import RunStore


def _row(order: str, ratio: float, top1: float, seed: int | None = None, **more) -> dict:
    return {"order": order, "seed": seed, "token_ratio": ratio, "segment_ratio": 0.0,
            "top1": top1, **more}


def test_rows_of_one_ratio_meet_however_the_ratio_was_computed():
    rows = [_row("importance", 0.1 + 0.2, 70.0),  # 0.30000000000000004
            *(_row("random", 0.3, top1, seed) for seed, top1 in enumerate((50, 53, 47))),
            _row("random", 0.6, 40.0, 0)]  # a ratio without its subject: no verdict
    [found] = verdict_rows(rows, "top1", "val")
    assert found.token_ratio == 0.3 and found.draws == (50.0, 53.0, 47.0)
    assert found.verdict == compare_to_draws(70.0, [50, 53, 47], split="val")
    assert found.text() == f"at 30 % of tokens pruned, {found.verdict.sentence}"
    assert found.text().startswith("at 30 % of tokens pruned, importance keeps 70.0 % val "
                                   "against 50.0 ± 3.0 for random masks (3 draws): +20.0")


def test_the_split_is_named_and_failed_or_repeated_draws_count_once():
    rows = [_row("importance", 0.5, 61.0, segment_ratio=0.25),
            _row("random", 0.5, 40.0, 0, segment_ratio=0.25),
            _row("random", 0.5, 40.0, 0, segment_ratio=0.25),  # the same draw again
            _row("random", 0.5, 90.0, 1, segment_ratio=0.25, status="failed"),
            _row("random", 0.5, float("nan"), 2, segment_ratio=0.25)]
    [found] = verdict_rows(rows, "top1", "test")
    assert found.draws == (40.0,)
    assert found.text() == ("at 50 % of tokens and 25 % of segments pruned, importance keeps "
                            "61.0 % test against 40.0 for random masks (1 draw): +21.0 "
                            "points; too few draws to tell")
    assert found.table_row()["test_top1"] == 61.0 and found.table_row()["split"] == "test"


def test_a_curve_gives_importance_and_reverse_against_its_draws_on_its_split():
    rows = [_row("importance", 0.25, 80.0), _row("reverse", 0.25, 20.0),
            *(_row("random", 0.25, v, s) for s, v in enumerate((50, 55, 45, 52, 48))),
            _row("importance", 0.5, 60.0), _row("reverse", 0.5, 10.0),
            *(_row("random", 0.5, v, s) for s, v in enumerate((30, 35, 25, 32, 28)))]
    found = curve_verdicts({"split": "val", "rows": rows})
    assert [(v.token_ratio, v.subject) for v in found] == [
        (0.25, "importance"), (0.25, "reverse"), (0.5, "importance"), (0.5, "reverse")]
    reverse = found[3]
    assert reverse.verdict == compare_to_draws(10.0, [30, 35, 25, 32, 28],
                                               subject="the reverse order", split="val")
    assert "the reverse order keeps 10.0 % val against 30.0 ± 3.8" in reverse.text()
    assert nearest_ratio(found, 0.4) == 0.5 and nearest_ratio(found, 0.3) == 0.25
    assert nearest_ratio([], 0.3) is None


def test_only_rows_of_the_sweeps_order_compete_for_best():
    table = pd.DataFrame([
        {"order": "importance", "token_ratio": 0.3, "segment_ratio": 0.0, "status": "completed",
         "val_top1": 60.0},
        {"order": "random", "token_ratio": 0.3, "segment_ratio": 0.0, "status": "completed",
         "val_top1": 75.0},
        {"order": "importance", "token_ratio": 0.6, "segment_ratio": 0.0, "status": "completed",
         "val_top1": 60.0}])
    assert pick_best(table, "val_top1", "importance") == 2  # a tie: more pruning
    assert pick_best(table, "val_top1") == 1  # without an order, as before
    assert pick_best(table[table["order"] == "random"], "val_top1", "importance") is None


def test_sweep_entries_name_their_split_and_say_why_one_is_missing():
    table = [{"order": "importance", "seed": None, "token_ratio": 0.5, "segment_ratio": 0.0,
              "status": "completed", "val_top1": 70.0, "test_top1": 68.0},
             *({"order": "random", "seed": s, "token_ratio": 0.5, "segment_ratio": 0.0,
                "status": "completed", "val_top1": v, "test_top1": v - 1}
               for s, v in enumerate((50.0, 60.0))),
             {"order": "importance", "seed": None, "token_ratio": 0.7, "segment_ratio": 0.0,
              "status": "failed", "val_top1": None, "test_top1": None},
             {"order": "random", "seed": 0, "token_ratio": 0.7, "segment_ratio": 0.0,
              "status": "completed", "val_top1": 30.0, "test_top1": 29.0}]
    first, second = sweep_verdicts(table, "val")
    assert first["verdict"] == compare_to_draws(70.0, [50.0, 60.0], split="val").to_dict()
    assert first["verdict_test"] == compare_to_draws(68.0, [49.0, 59.0],
                                                     split="test").to_dict()
    assert " % val against " in first["verdict_text"]
    assert " % test against " in first["verdict_test_text"]
    assert (second["token_ratio"], second["verdict"], second["verdict_test"]) == (0.7, None,
                                                                                  None)
    assert second["verdict_text"] == ("at 70 % of tokens pruned, no verdict on val: the "
                                      "importance rewind or every random one failed")
    json.dumps([first, second])  # plain data


def test_rewind_verdicts_compare_only_rewinds_trained_alike():
    def child(order: str, val: float, seed: float | None = None, epochs: int = 2,
              parent: str = "p", **more) -> dict:
        return {"id": f"{order}{seed}{epochs}{val}", "parent_id": parent, "kind": "rewind",
                "status": "completed", "order": order, "order_seed": seed,
                "token_ratio": 0.5, "segment_ratio": 0.0, "init": "fresh", "mode": "zero",
                "token_scores": "mask", "val_top1": val, "test_top1": 1.0,
                "config": json.dumps({"epochs": epochs}), **more}

    runs = [child("importance", 70.0), child("random", 50.0, 0.0), child("random", 54.0, 1.0),
            child("random", 99.0, 2.0, epochs=5),  # trained longer: not a draw of this one
            child("random", 10.0, 3.0, parent="other"),
            child("random", 11.0, 4.0, status="running"),
            {"id": "p", "kind": "train", "parent_id": None, "val_top1": 80.0},
            child(float("nan"), 65.0)]  # a rewind from before orders were recorded
    found = rewind_verdicts(runs, "p")
    assert len(found) == 1
    assert found[0].verdict == compare_to_draws(70.0, [50.0, 54.0], split="val")
    assert found[0].text().startswith(
        "at 50 % of tokens pruned (fresh init, zero mode, 2 epochs, mask scores), "
        "importance keeps 70.0 % val against 52.0 ± 2.8 for random masks (2 draws)")
    assert rewind_verdicts(runs, "p", split="test")[0].split == "test"


P, R = 8, 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone):
    store = tmp_path_factory.mktemp("controls-store")
    assert main(["train", "--backbone", tiny_backbone, "--dataset", "builtin:position",
                 "--method", "e2vpt", "-P", str(P), "-T", "2", "--num-segments", str(R),
                 "--epochs", "1", "--batch-size", "100", "--lr", "2.0", "--device", "cpu",
                 "--store", str(store), "--json", "--quiet"]) == 0
    return str(store), str(RunStore(store).runs()["id"].iloc[0])


def test_sweep_prune_with_random_controls_gives_a_verdict_per_ratio(trained, capsys):
    store_dir, run_id = trained
    store = RunStore(store_dir)
    capsys.readouterr()
    code = main(["sweep-prune", run_id, "--ratios", "0.25", "0.5", "--segment-ratios", "0.25",
                 "--epochs", "1", "--controls", "random", "--random-seeds", "0", "1",
                 "--store", store_dir, "--json", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = last_json(out)
    table = result["table"]
    assert [(row["token_ratio"], row["order"], row["seed"]) for row in table] == [
        (0.25, "importance", None), (0.25, "random", 0), (0.25, "random", 1),
        (0.5, "importance", None), (0.5, "random", 0), (0.5, "random", 1)]
    assert all(row["status"] == "completed" for row in table)
    for ratio in (0.25, 0.5):
        rows = [row for row in table if row["token_ratio"] == ratio]
        masks = [store.load_tensors(row["run_id"], "masks") for row in rows]
        for name in ("token_mask", "segment_mask"):  # the same counts, other entries
            assert len({float(m[name].sum()) for m in masks}) == 1, (ratio, name)
        assert any(not torch.equal(masks[0]["segment_mask"], m["segment_mask"])
                   for m in masks[1:])
        config = store.get_run(rows[1]["run_id"])["config"]
        assert config["token_mask"] == masks[1]["token_mask"].tolist()
        assert store.get_run(rows[1]["run_id"])["summary"]["order_seed"] == 0

    importance = [row for row in table if row["order"] == "importance"]
    best = max(importance, key=lambda row: (row["val_top1"], row["token_ratio"]))
    assert result["best_run_id"] == best["run_id"]
    assert [row["run_id"] for row in table if row["best"]] == [best["run_id"]]

    assert [(v["token_ratio"], v["segment_ratio"], v["split"]) for v in result["verdicts"]] \
        == [(0.25, 0.25, "val"), (0.5, 0.25, "val")]
    for entry, subject in zip(result["verdicts"], importance, strict=True):
        draws = [row for row in table
                 if row["order"] == "random" and row["token_ratio"] == entry["token_ratio"]]
        for key, split in (("verdict", "val"), ("verdict_test", "test")):
            expected = compare_to_draws(subject[f"{split}_top1"],
                                        [row[f"{split}_top1"] for row in draws], split=split)
            assert entry[key] == expected.to_dict()
            assert entry[f"{key}_text"] in out.splitlines()  # printed, one line each
            assert f" % {split} against " in entry[f"{key}_text"]
    stored = store.get_run(run_id)["summary"]["prune_sweep"]
    assert stored["verdicts"] == result["verdicts"]


def test_one_random_seed_still_sweeps_and_says_too_few_draws(trained, capsys):
    store_dir, run_id = trained
    capsys.readouterr()
    assert main(["sweep-prune", run_id, "--ratios", "0.5", "--epochs", "1", "--controls",
                 "random", "--random-seeds", "3", "--store", store_dir, "--json",
                 "--quiet"]) == 0
    result = last_json(capsys.readouterr().out)
    assert [row["seed"] for row in result["table"]] == [None, 3]
    [entry] = result["verdicts"]
    assert entry["verdict"]["p_value"] is None and not entry["verdict"]["clear"]
    assert entry["verdict_text"].endswith("too few draws to tell")


def test_controls_none_is_todays_sweep_and_random_order_refuses_random_controls(trained,
                                                                                 capsys):
    store_dir, run_id = trained
    capsys.readouterr()
    assert main(["sweep-prune", run_id, "--order", "random", "--controls", "random",
                 "--ratios", "0.5", "--store", store_dir]) == 2
    assert "random controls need masks of another order" in capsys.readouterr().err
    assert main(["sweep-prune", run_id, "--ratios", "0.5", "--epochs", "1", "--store",
                 store_dir, "--json", "--quiet"]) == 0
    result = last_json(capsys.readouterr().out)
    assert "verdicts" not in result
    assert [(row["order"], row["seed"]) for row in result["table"]] == [("importance", None)]
