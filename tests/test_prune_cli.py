"""`e2vpt prune`, `e2vpt rewind` and `e2vpt sweep-prune`, called as the CLI tests call `train`."""

from __future__ import annotations

import pytest
import torch
from cli_helpers import last_json

from e2vpt_core import load_adapter
from e2vpt_core.cli import main
from e2vpt_core.prune import rewind_run
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig
from e2vpt_core.train.data import eval_loader
from e2vpt_core.train.evaluate import evaluate

P, R = 8, 4




@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone):
    store = tmp_path_factory.mktemp("cli-store")
    code = main(["train", "--backbone", tiny_backbone, "--dataset", "builtin:position",
                 "--method", "e2vpt", "-P", str(P), "-T", "2", "--num-segments", str(R),
                 "--epochs", "2", "--batch-size", "100", "--lr", "2.0", "--device", "cpu",
                 "--store", str(store), "--json", "--quiet"])
    assert code == 0
    run_id = RunStore(store).runs()["id"].iloc[0]
    return str(store), run_id


def test_prune_json_lists_kept_tokens_segments_and_effective_params(trained, capsys):
    store, run_id = trained
    capsys.readouterr()
    assert main(["prune", run_id, "--token-ratio", "0.5", "--segment-ratio", "0.5",
                 "--store", store, "--json"]) == 0
    out = capsys.readouterr().out
    result = last_json(out)
    assert out.startswith(f"run {run_id}: pruned 4 of 8 tokens")
    assert len(result["kept_tokens"]) == 4
    assert all(isinstance(token, int) for token in result["kept_tokens"])
    assert [len(kept) for kept in result["kept_segments"]] == [2] * 4
    per_layer = 4 * 48 + 4 * 2 * (48 // R)  # 4 whole tokens + 2 segments of each kept one
    assert result["effective_params"] == result["trainable_params"] - 2 * per_layer
    masks = RunStore(store).load_tensors(run_id, "masks")
    assert torch.nonzero(masks["token_mask"]).flatten().tolist() == result["kept_tokens"]
    for token, kept in zip(result["kept_tokens"], result["kept_segments"], strict=True):
        assert torch.nonzero(masks["segment_mask"][token]).flatten().tolist() == kept

    assert main(["prune", run_id, "--token-ratio", "0.5", "--signed", "--token-scores",
                 "segments", "--store", store, "--json"]) == 0
    signed = last_json(capsys.readouterr().out)
    assert signed["importance"] == "signed" and signed["token_scores"] == "segments"
    assert result["importance"] == "abs"


def test_rewind_json_is_the_train_result_plus_the_ratios(trained, capsys):
    store, run_id = trained
    capsys.readouterr()
    code = main(["rewind", run_id, "--token-ratio", "0.25", "--segment-ratio", "0.25",
                 "--init", "original", "--mode", "remove", "--epochs", "1", "--store", store,
                 "--json", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = last_json(out)
    assert result["status"] == "completed"
    for key in ("run_id", "val_top1", "test_top1", "trainable_params", "effective_params"):
        assert key in result, key
    assert (result["token_ratio"], result["segment_ratio"]) == (0.25, 0.25)
    assert len(result["kept_tokens"]) == 6 and result["mode"] == "remove"
    assert out.splitlines()[0].startswith(f"run {result['run_id']}: completed")
    child = RunStore(store).get_run(result["run_id"])
    assert child["kind"] == "rewind" and child["parent_id"] == run_id
    assert child["config"]["init_from_run"] == run_id


def test_a_rewind_that_fails_to_train_exits_1(trained, capsys):
    store_dir, run_id = trained
    store = RunStore(store_dir)
    config = TrainConfig.from_dict(store.get_run(run_id)["config"]).replace(base_lr=1e38)
    doomed = store.create_run(config.to_dict())
    store.set_status(doomed, "completed")
    store.save_tensors(doomed, "importance", store.load_tensors(run_id, "importance"))
    capsys.readouterr()
    assert main(["rewind", doomed, "--token-ratio", "0.5", "--epochs", "1", "--store",
                 store_dir, "--json", "--quiet"]) == 1
    result = last_json(capsys.readouterr().out)
    assert result["status"] == "failed" and "non-finite" in result["reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rewind", "missing-run", "--token-ratio", "0.5"], "no run 'missing-run'"),
        (["prune", "missing-run", "--token-ratio", "0.5"], "no run 'missing-run'"),
        (["sweep-prune", "missing-run"], "no run 'missing-run'"),
        (["rewind", "{run}", "--token-ratio", "0.95"], "token_ratio=0.95"),
        (["prune", "{run}", "--token-ratio", "0.5", "--segment-ratio", "-0.1"],
         "segment_ratio=-0.1"),
        (["sweep-prune", "{run}", "--ratios", "0.5", "1.0"], "token_ratio=1.0"),
        (["rewind", "{run}", "--token-ratio", "0.5", "--epochs", "0"], "epochs=0"),
        (["rewind", "{linear}", "--token-ratio", "0.5"], "no visual prompts"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_run(args, message, trained, capsys):
    store_dir, run_id = trained
    store = RunStore(store_dir)
    config = TrainConfig.from_dict(store.get_run(run_id)["config"])
    linear = store.create_run({**config.to_dict(), "prompt": {"method": "linear"}})
    store.set_status(linear, "completed")
    before = sum(path.is_dir() for path in store.root.iterdir())
    args = [arg.format(run=run_id, linear=linear) for arg in args]
    capsys.readouterr()
    assert main([*args, "--store", store_dir]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert sum(path.is_dir() for path in store.root.iterdir()) == before


@pytest.mark.slow
def test_sweep_prune_with_two_processes_matches_sequential_rewinds(trained, capsys):
    store, run_id = trained
    capsys.readouterr()
    code = main(["sweep-prune", run_id, "--ratios", "0.25", "0.5", "--epochs", "1",
                 "--workers", "2", "--store", store, "--json", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = last_json(out)
    table = result["table"]
    assert [row["token_ratio"] for row in table] == [0.25, 0.5]
    assert all(row["status"] == "completed" for row in table)
    best = max(table, key=lambda row: (row["val_top1"], row["token_ratio"]))
    assert result["best_run_id"] == best["run_id"] and best["best"]
    for row in table:
        again = rewind_run(RunStore(store), run_id, row["token_ratio"], epochs=1)
        assert again.metrics["val_top1"] == row["val_top1"]
        assert again.metrics["effective_params"] == row["effective_params"]


@pytest.mark.parametrize(("order", "mode"), [("importance", "zero"), ("random", "remove"),
                                             ("reverse", "zero")])
def test_prune_evaluate_equals_a_parent_masked_by_hand(order, mode, trained, capsys):
    store_dir, run_id = trained
    store = RunStore(store_dir)
    capsys.readouterr()
    args = ["prune", run_id, "--token-ratio", "0.5", "--segment-ratio", "0.25", "--evaluate",
            "--mode", mode, "--order", order, "--seed", "3", "--store", store_dir, "--json"]
    assert main(args) == 0
    out = capsys.readouterr().out
    result = last_json(out)
    assert result["order"] == order and result["mode"] == mode
    assert f"val top-1 without retraining: {result['val_top1_masked']:.2f}" in out

    config = TrainConfig.from_dict(store.get_run(run_id)["config"])
    model = load_adapter(store.run_dir(run_id) / "adapter")
    loader = eval_loader(config, model.backbone, "val")
    parent = evaluate(model, loader, model.num_classes, torch.device("cpu"))["top1"]
    assert result["val_top1_parent"] == pytest.approx(parent)
    assert result["val_top1_parent"] == pytest.approx(store.get_run(run_id)["summary"]["val_top1"])
    token, segment = torch.zeros(P), torch.zeros(P, R)
    for kept, segments in zip(result["kept_tokens"], result["kept_segments"], strict=True):
        token[kept] = 1.0
        segment[kept, segments] = 1.0
    assert token.sum() == 4 and segment.sum() == 4 * 3
    model.set_masks(token, segment)
    model.config = model.config.replace(prune_mode=mode)
    by_hand = evaluate(model, loader, model.num_classes, torch.device("cpu"))["top1"]
    assert result["val_top1_masked"] == pytest.approx(by_hand)

    assert main(args) == 0
    assert last_json(capsys.readouterr().out)["kept_tokens"] == result["kept_tokens"]
