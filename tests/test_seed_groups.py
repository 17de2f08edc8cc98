"""Seed groups: `e2vpt train --seeds` makes one group of runs equal but for the seed,
`e2vpt groups` reads it as mean ± sd over the seeds, `--compare` gives the verdict."""

from __future__ import annotations

import contextlib
import io
import statistics

import pytest
import torch
from cli_helpers import last_json
from group_helpers import stored_group

from e2vpt_core.cli import main
from e2vpt_core.prune.rewind import rewind_config
from e2vpt_core.prune.selection import Selection
from e2vpt_core.stats import compare_groups
from e2vpt_core.store import RunStore
from e2vpt_core.store.groups import check_seeds, group_members, list_groups
from e2vpt_core.train import TrainConfig

TINY = ["--dataset", "builtin:digits", "--method", "e2vpt", "-P", "2", "-T", "1",
        "--num-segments", "2", "--epochs", "1", "--batch-size", "64", "--quiet"]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone):
    """A store with a two-seed group (`--seeds 0 1`) and one run on its own (`--seed 5`)."""
    root = tmp_path_factory.mktemp("groups")
    code, out, _ = _run(["train", "--backbone", tiny_backbone, *TINY, "--seeds", "0", "1",
                         "--store", str(root), "--create-store", "--json"])
    assert code == 0, out
    group = last_json(out)
    code, out, _ = _run(["train", "--backbone", tiny_backbone, *TINY, "--seed", "5",
                         "--store", str(root), "--json"])
    assert code == 0, out
    return RunStore(root), group, last_json(out)


def test_seeds_make_one_group_of_runs_equal_but_for_the_seed(trained):
    store, group, single = trained
    assert group["n"] == group["n_completed"] == 2 and group["seeds"] == [0, 1]
    ids = [run["run_id"] for run in group["runs"]]
    assert len(set(ids)) == 2 and group["run_ids"] == ids
    assert [run["group_id"] for run in group["runs"]] == [group["group_id"]] * 2
    configs = [store.get_run(run_id)["config"] for run_id in ids]
    assert [c["group_id"] for c in configs] == [group["group_id"]] * 2
    assert [c["seed"] for c in configs] == [0, 1]
    assert {**configs[0], "seed": None} == {**configs[1], "seed": None}
    assert group["group_id"].startswith("e2vpt-digits-")
    assert single["group_id"] is None and single["seed"] == 5
    assert store.get_run(single["run_id"])["config"]["group_id"] is None

    code, out, _ = _run(["runs", "--store", str(store.root), "--json"])
    rows = {row["id"]: row for row in last_json(out)}
    assert code == 0 and len(rows) == 3
    assert [rows[run_id]["group_id"] for run_id in ids] == [group["group_id"]] * 2
    assert rows[single["run_id"]]["group_id"] is None


def test_groups_json_is_the_hand_computed_mean_and_sd_of_the_stored_runs(trained):
    store, group, _ = trained
    code, out, _ = _run(["groups", "--store", str(store.root), "--json"])
    assert code == 0
    [row] = last_json(out)  # the run on its own is no group
    members = group_members(store, group["group_id"])
    assert members == group["run_ids"]
    tests = [store.get_run(run_id)["summary"]["test_top1"] for run_id in members]
    vals = [store.get_run(run_id)["summary"]["val_top1"] for run_id in members]
    assert (row["group_id"], row["n"], row["n_completed"]) == (group["group_id"], 2, 2)
    assert row["test_top1_mean"] == pytest.approx(statistics.fmean(tests))
    assert row["test_top1_sd"] == pytest.approx(statistics.stdev(tests))
    assert row["val_top1_mean"] == pytest.approx(statistics.fmean(vals))
    assert (row["method"], row["task"]) == ("e2vpt", "digits")
    assert row["name"].startswith("e2vpt P2 T1 · digits")


def test_a_failed_seed_counts_in_n_but_not_in_the_mean(tmp_path):
    store = RunStore(tmp_path)
    ids = stored_group(store, "e2vpt-orientation-0001", [70.0, None, 74.0], failed=(1,))
    table = list_groups(store)
    row = table.iloc[0]
    assert (row["n"], row["n_completed"], row["seeds"]) == (3, 2, [0, 1, 2])
    assert row["run_ids"] == ids
    assert row["test_top1_mean"] == pytest.approx(72.0)
    assert row["test_top1_sd"] == pytest.approx(statistics.stdev([70.0, 74.0]))
    assert row["test_top1_text"] == "72.0 ± 2.8 (2 seeds)"
    assert row["status"] in ("2 completed, 1 failed", "1 failed, 2 completed")
    code, out, _ = _run(["groups", "--store", str(tmp_path)])
    assert code == 0 and "72.0 ± 2.8 (2 seeds)" in out and "e2vpt-orientation-0001" in out


def test_a_group_of_one_seed_has_no_sd(tmp_path):
    store = RunStore(tmp_path)
    stored_group(store, "linear-orientation-0002", [55.0], method="linear")
    row = list_groups(store).iloc[0]
    assert row["test_top1_sd"] is None and row["test_top1_text"] == "55.0 (1 seed)"


def test_seeds_and_seed_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--seed", "1", "--seeds", "0", "1", "--store", str(tmp_path)])
    assert stop.value.code == 2
    assert "not allowed with argument --seed" in capsys.readouterr().err
    assert not (tmp_path / "store.sqlite").exists()


@pytest.mark.parametrize(("seeds", "message"), [
    (["0", "1", "0"], "--seeds repeats [0]"),
    (["2", "-1"], "--seeds -1"),
])
def test_bad_seeds_create_no_run(seeds, message, tmp_path):
    code, _, err = _run(["train", "--seeds", *seeds, "--store", str(tmp_path),
                         "--create-store", "--epochs", "1"])
    assert code == 2 and message in err and "Traceback" not in err
    assert RunStore(tmp_path).runs().empty


def test_check_seeds():
    assert check_seeds([3, 0, 7]) == [3, 0, 7]
    with pytest.raises(ValueError, match="at least one"):
        check_seeds([])


def test_compare_prints_the_verdict_on_test_top1(tmp_path):
    store = RunStore(tmp_path)
    stored_group(store, "e2vpt-orientation-000a", [70.0, 72.0, 71.0])
    stored_group(store, "vpt-deep-orientation-000b", [60.0, 61.5, 59.0], method="vpt-deep")
    expected = compare_groups([70.0, 72.0, 71.0], [60.0, 61.5, 59.0],
                              "e2vpt P10 T5 · orientation", "vpt-deep P10 · orientation")
    argv = ["groups", "--compare", "e2vpt-orientation-000a", "vpt-deep-orientation-000b",
            "--store", str(tmp_path)]
    code, out, _ = _run(argv)
    assert code == 0 and out.splitlines()[0] == f"test top-1: {expected.sentence}"
    assert "e2vpt P10 T5 · orientation is higher" in out
    code, out, _ = _run([*argv, "--json"])
    verdict = last_json(out)
    assert code == 0 and verdict["split"] == "test"
    assert verdict == {"split": "test", "group_a": "e2vpt-orientation-000a",
                       "group_b": "vpt-deep-orientation-000b", **expected.to_dict()}
    assert verdict["clear"] is True and verdict["p_value"] < 0.05


def test_unknown_groups_are_named_in_one_line(tmp_path):
    store = RunStore(tmp_path)
    stored_group(store, "e2vpt-orientation-000c", [70.0, 71.0])
    with pytest.raises(KeyError, match="no group 'nope'"):
        group_members(store, "nope")
    code, _, err = _run(["groups", "--compare", "e2vpt-orientation-000c", "nope",
                         "--store", str(tmp_path)])
    assert code == 2 and "no group 'nope'" in err and "Traceback" not in err
    code, _, err = _run(["groups", "--compare", "e2vpt-orientation-000c",
                         "e2vpt-orientation-000c", "--store", str(tmp_path)])
    assert code == 2 and "twice" in err
    stored_group(store, "e2vpt-orientation-000d", [None, None], failed=(0, 1))
    code, _, err = _run(["groups", "--compare", "e2vpt-orientation-000c",
                         "e2vpt-orientation-000d", "--store", str(tmp_path)])
    assert code == 2 and "'e2vpt-orientation-000d' has no test top-1 yet" in err


def test_a_rewind_of_a_member_is_no_member():
    parent = TrainConfig(dataset="builtin:orientation", seed=1, group_id="e2vpt-x-0001")
    selection = Selection(torch.ones(10), torch.ones(10, 8), list(range(10)),
                          [list(range(8))] * 10, 0.0, 0.0)
    child = rewind_config(parent, "20260101-000000-abcd", selection)
    assert child.group_id is None and child.seed == 1
