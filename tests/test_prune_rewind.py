"""Pruning a stored run and rewinding it: stored importance, zero and remove modes, sweeps."""

from __future__ import annotations

import pytest
import torch
from timm.data import resolve_model_data_config
from torch.utils.data import DataLoader

from e2vpt_core import PromptConfig, load_adapter, save_adapter
from e2vpt_core.data import build_transform, load_dataset
from e2vpt_core.models import compact_prompts
from e2vpt_core.models import vit as vit_module
from e2vpt_core.prune import (
    compute_importance,
    prune_run,
    rewind_run,
    run_importance,
    sweep_prune,
)
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run
from e2vpt_core.train.evaluate import evaluate

P, R, DEPTH, WIDTH = 8, 4, 2, 48



@pytest.fixture(scope="module")
def parent(tmp_path_factory, tiny_backbone):
    """One trained e2vpt run (P=8, R=4) shared by the tests of this module."""
    store = RunStore(tmp_path_factory.mktemp("store"))
    config = TrainConfig(
        backbone=tiny_backbone, dataset="builtin:position", epochs=2, batch_size=100,
        base_lr=2.0, weight_decay=0.01, eval_splits=("val",), device="cpu",
        prompt=PromptConfig("e2vpt", visual_prompt_len=P, kv_prompt_len=2, num_segments=R))
    result = train_run(config, store)
    assert result.status == "completed", result.reason
    return store, result.run_id, config


def _val_loader(config: TrainConfig, model) -> DataLoader:
    transform = build_transform(config.dataset, resolve_model_data_config(model.backbone),
                                train=False)
    return DataLoader(load_dataset(config.dataset, "val", transform, seed=config.data_seed),
                      batch_size=100)


def test_run_importance_is_stored_and_equals_a_direct_pass(parent):
    store, run_id, config = parent
    result = prune_run(store, run_id, 0.25, 0.25)
    stored = store.load_tensors(run_id, "importance")
    assert stored["token"].shape == (P,) and stored["segment"].shape == (P, R)
    assert int(stored["batches"]) == 800 // config.batch_size
    model = load_adapter(store.run_dir(run_id) / "adapter")
    transform = build_transform(config.dataset, resolve_model_data_config(model.backbone),
                                train=False)
    train = load_dataset(config.dataset, "train", transform, seed=config.data_seed)
    direct = compute_importance(model, DataLoader(train, batch_size=config.batch_size))
    torch.testing.assert_close(stored["token"], direct.token)
    torch.testing.assert_close(stored["segment"], direct.segment)

    assert len(result["kept_tokens"]) == 6
    assert all(len(kept) == 3 for kept in result["kept_segments"])
    masks = store.load_tensors(run_id, "masks")
    assert torch.nonzero(masks["token_mask"]).flatten().tolist() == result["kept_tokens"]
    pruned_entries = 2 * WIDTH + 6 * (WIDTH // R)
    assert result["effective_params"] == result["trainable_params"] - DEPTH * pruned_entries


def test_rewind_from_original_init_keeps_pruned_entries_zero(parent):
    store, run_id, config = parent
    result = rewind_run(store, run_id, 0.25, 0.25, init="original", mode="zero", epochs=1)
    assert result.status == "completed", result.reason
    child = store.get_run(result.run_id)
    assert child["kind"] == "rewind" and child["parent_id"] == run_id
    child_config = TrainConfig.from_dict(child["config"])
    assert (child_config.base_lr, child_config.weight_decay) == (2.0, 0.01)
    assert child_config.epochs == 1 and child_config.init_from_run == run_id
    assert child_config.prompt.prune_mode == "zero"
    summary = child["summary"]
    assert summary["token_ratio"] == 0.25 and summary["segment_ratio"] == 0.25
    assert summary["init"] == "original" and summary["mode"] == "zero"
    assert len(summary["kept_tokens"]) == 6

    masks = store.load_tensors(result.run_id, "masks")
    model = load_adapter(store.run_dir(result.run_id) / "adapter")
    model.set_masks(masks["token_mask"], masks["segment_mask"])
    pruned = model.prompt_mask() == 0  # (P, d)
    prompts = store.load_tensors(result.run_id, "checkpoint")["model/visual_prompts"]
    assert pruned.any()
    assert torch.all(prompts[:, pruned] == 0)
    assert torch.all(prompts[:, ~pruned] != 0)
    original = store.load_tensors(run_id, "init")
    rewound = store.load_tensors(result.run_id, "init")
    kept = ~pruned
    assert torch.equal(rewound["visual_prompts"][:, kept], original["visual_prompts"][:, kept])
    assert torch.equal(rewound["kv_prompts"], original["kv_prompts"])
    assert result.metrics["effective_params"] == (
        result.metrics["trainable_params"] - DEPTH * int(pruned.sum()))


def test_a_fresh_rewind_draws_new_values_and_an_original_one_reuses_the_parents(parent):
    """With the parent's own seed a "fresh" init would be the parent's init again: the
    fresh rewind gets its own init seed, the batch-order seed stays the parent's."""
    store, run_id, config = parent
    parent_init = store.load_tensors(run_id, "init")
    for init in ("fresh", "original"):
        result = rewind_run(store, run_id, 0.0, init=init, epochs=1)
        assert result.status == "completed", result.reason
        child = store.get_run(result.run_id)["config"]
        assert child["seed"] == config.seed
        assert child["init_seed"] == (config.seed + 1 if init == "fresh" else None)
        child_init = store.load_tensors(result.run_id, "init")
        same = [torch.equal(child_init[name], parent_init[name])
                for name in ("visual_prompts", "kv_prompts")]
        assert same == ([False, False] if init == "fresh" else [True, True])


def test_remove_mode_trains_short_and_its_compact_artifact_is_smaller(
        parent, tmp_path, monkeypatch):
    store, run_id, config = parent
    run_importance(store, run_id)  # scored with all P tokens: not part of what is recorded
    lengths = set()
    block_forward = vit_module.prompted_block_forward

    def recording(block, x, *args):
        lengths.add(x.shape[1])
        return block_forward(block, x, *args)

    monkeypatch.setattr(vit_module, "prompted_block_forward", recording)
    result = rewind_run(store, run_id, 0.5, init="fresh", mode="remove", epochs=1)
    monkeypatch.undo()
    assert result.status == "completed", result.reason
    assert lengths == {1 + 4 + 16}  # CLS + 4 kept prompts + 16 patches, train and eval
    fresh = store.load_tensors(result.run_id, "init")["visual_prompts"]
    assert not torch.equal(fresh, store.load_tensors(run_id, "init")["visual_prompts"])

    model = load_adapter(store.run_dir(result.run_id) / "adapter").eval()
    assert model.config.prune_mode == "remove" and len(model.kept_tokens()) == 4
    val = _val_loader(config, model)
    top1 = evaluate(model, val, model.num_classes, torch.device("cpu"))["top1"]
    assert top1 == result.metrics["val_top1"]

    compact = compact_prompts(model)
    save_adapter(compact, tmp_path / "compact")
    images = next(iter(val))[0][:8]
    reloaded = load_adapter(tmp_path / "compact").eval()
    torch.testing.assert_close(reloaded(images), model(images))
    compact_size = (tmp_path / "compact" / "adapter_model.safetensors").stat().st_size
    zero_size = (store.run_dir(run_id) / "adapter" / "adapter_model.safetensors").stat().st_size
    assert compact_size < zero_size
    assert reloaded.visual_prompts.shape == (DEPTH, 4, WIDTH)


def test_sweep_records_accuracy_params_and_timing(parent):
    store, run_id, _ = parent
    table = sweep_prune(store, run_id, ratios=(0.25, 0.5), epochs=1, timing_repeats=2)
    assert list(table["token_ratio"]) == [0.25, 0.5]
    assert list(table["status"]) == ["completed", "completed"]
    assert list(table["num_kept_tokens"]) == [6, 4]
    assert table["effective_params"].iloc[0] > table["effective_params"].iloc[1]
    assert (table["ms_zero"] > 0).all() and (table["ms_remove"] > 0).all()
    assert table["best"].sum() == 1
    best = table[table["best"]].iloc[0]
    assert best["val_top1"] == table["val_top1"].max()
    summary = store.get_run(run_id)["summary"]["prune_sweep"]
    assert summary["best"]["run_id"] == best["run_id"]
    assert [row["run_id"] for row in summary["table"]] == list(table["run_id"])
    for child in table["run_id"]:
        assert store.get_run(child)["parent_id"] == run_id


def test_a_combined_sweep_prunes_tokens_and_segments_at_one_ratio(parent):
    store, run_id, _ = parent
    table = sweep_prune(store, run_id, ratios=(0.5,), combined=True, epochs=1,
                        timing_repeats=1)
    assert list(zip(table["token_ratio"], table["segment_ratio"], strict=True)) == [(0.5, 0.5)]
    child = store.get_run(table["run_id"].iloc[0])["summary"]
    assert len(child["kept_tokens"]) == P // 2
    assert [len(kept) for kept in child["kept_segments"]] == [R // 2] * (P // 2)
    count = _run_count(store)
    with pytest.raises(ValueError, match="combined=True"):
        sweep_prune(store, run_id, ratios=(0.5,), segment_ratios=(0.25,), combined=True)
    assert _run_count(store) == count


def _run_count(store: RunStore) -> int:
    return sum(path.is_dir() for path in store.root.iterdir())


def test_bad_rewinds_are_refused_before_any_run(parent):
    store, run_id, config = parent
    count = _run_count(store)
    with pytest.raises(ValueError, match="token_ratio"):
        rewind_run(store, run_id, 0.95)
    with pytest.raises(ValueError, match="init"):
        rewind_run(store, run_id, 0.5, init="lottery")
    with pytest.raises(ValueError, match="mode"):
        rewind_run(store, run_id, 0.5, mode="drop")
    with pytest.raises(ValueError, match="epochs"):
        rewind_run(store, run_id, 0.5, epochs=0)
    with pytest.raises(KeyError, match="no run"):
        rewind_run(store, "missing", 0.5)
    linear = store.create_run(config.replace(prompt=PromptConfig("linear")).to_dict())
    store.set_status(linear, "completed")
    with pytest.raises(ValueError, match="no visual prompts"):
        rewind_run(store, linear, 0.5)
    queued = store.create_run(config.to_dict())
    with pytest.raises(ValueError, match="not completed"):
        rewind_run(store, queued, 0.5)
    store.set_status(queued, "completed")  # but never trained: no init values stored
    with pytest.raises(ValueError, match="no stored init"):
        rewind_run(store, queued, 0.5, init="original")
    with pytest.raises(ValueError, match="workers"):
        sweep_prune(store, run_id, ratios=(0.5,), workers=0)
    assert _run_count(store) == count + 2
