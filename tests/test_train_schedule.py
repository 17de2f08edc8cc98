"""The recipe: lr scaling, warm-up from 0 then cosine, no decay on the head bias, batches."""

from __future__ import annotations

import math

import pytest
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.methods import METHODS, get_method
from e2vpt_core.train import TrainConfig
from e2vpt_core.train.data import EpochBatchSampler
from e2vpt_core.train.optim import build_optimizer, build_scheduler


def _expected_lr(step: int, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * step / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_lr_is_scaled_by_batch_size():
    assert TrainConfig(base_lr=10.0, batch_size=64).lr() == pytest.approx(2.5)
    assert TrainConfig(epochs=50).warmup == pytest.approx(5.0)


def test_base_lr_defaults_per_method_and_an_explicit_one_wins():
    for method in METHODS:  # each method's registry entry gives its default
        assert TrainConfig(prompt=PromptConfig(method)).base_lr == get_method(method).base_lr
    # what docs/BENCHMARKS.md measured: 0.5 for the deep prompt methods, 0.1 otherwise
    assert [get_method(m).base_lr for m in ("e2vpt", "vpt-deep", "linear", "lora")] == [
        0.5, 0.5, 0.1, 0.1]
    assert TrainConfig(prompt=PromptConfig("e2vpt"), base_lr=2.5).base_lr == 2.5
    assert TrainConfig(prompt={"method": "linear"}).base_lr == 0.1
    stored = TrainConfig(prompt=PromptConfig("e2vpt")).to_dict()
    assert stored["base_lr"] == 0.5
    assert TrainConfig.from_dict(stored).base_lr == 0.5
    with pytest.raises(ValueError, match="base_lr"):
        TrainConfig(base_lr=0.0)


def test_schedule_warms_up_from_zero_then_follows_the_cosine():
    model = create_model(tiny_vit(), 3, PromptConfig("e2vpt"))
    config = TrainConfig(base_lr=4.0, batch_size=64)
    optimizer = build_optimizer(model, config)
    total, warmup = 200, 20
    scheduler = build_scheduler(optimizer, total, warmup)
    for step in range(total):
        scheduler.step_update(step)
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(_expected_lr(step, 1.0, warmup, total), abs=1e-9)
    scheduler.step_update(0)
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_weight_decay_skips_only_the_head_bias():
    model = create_model(tiny_vit(), 3, PromptConfig("e2vpt"))
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.01))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0
               for p in g["params"]}
    undecayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0
                 for p in g["params"]}
    assert undecayed == {"head.bias"}
    assert decayed == {"head.weight", "visual_prompts", "kv_prompts"}
    assert optimizer.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("method", ["ssf", "adapter-plus"])
def test_channel_scales_are_not_decayed_toward_zero(method):
    model = create_model(tiny_vit(), 3, PromptConfig(method))
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.01))
    names = {id(p): n for n, p in model.named_parameters()}
    undecayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0
                 for p in g["params"]}
    scales = {n for n, p in model.named_parameters() if p.requires_grad and n.endswith(".scale")}
    assert scales and undecayed == scales | {"head.bias"}
    shifts = {n for n in names.values() if n.endswith(".shift") or n.endswith("up.weight")}
    assert shifts and not shifts & undecayed


def test_batches_are_seeded_per_epoch_and_split_across_ranks():
    single = EpochBatchSampler(100, 16, seed=3)
    single.set_epoch(2)
    batches = list(single)
    assert [len(b) for b in batches] == [16] * 6 + [4] and len(single) == 7
    assert sorted(sum(batches, [])) == list(range(100))  # every image, every epoch
    again = EpochBatchSampler(100, 16, seed=3)
    again.set_epoch(2)
    assert list(again) == batches
    again.set_epoch(3)
    assert list(again) != batches
    ranks = [EpochBatchSampler(100, 16, seed=3, rank=r, world=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    halves = [list(sampler) for sampler in ranks]
    assert [a + b for a, b in zip(*halves, strict=True)] == batches
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        EpochBatchSampler(100, 16, seed=0, world=3)
    with pytest.raises(ValueError, match="larger than the training set"):
        EpochBatchSampler(10, 16, seed=0)


def test_a_small_dataset_loses_no_image_and_ranks_get_equal_shares():
    """180 images at batch 64: 64, 64, 52 (dropping the last batch lost 52 an epoch). Under
    DDP the last batch is cut to a multiple of the processes: 182 images on 4 ranks end
    with 52 (13 each), and 2 images wait for another epoch."""
    sampler = EpochBatchSampler(180, 64, seed=0)
    assert [len(b) for b in sampler] == [64, 64, 52]
    ranks = [EpochBatchSampler(182, 64, seed=0, rank=r, world=4) for r in range(4)]
    shares = [list(sampler) for sampler in ranks]
    assert [[len(b) for b in share] for share in shares] == [[16, 16, 13]] * 4
    seen = sum((b for share in shares for b in share), [])
    assert len(seen) == len(set(seen)) == 180  # 2 of 182 wait for another epoch


def test_train_config_validation_names_the_field():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=5, warmup_epochs=5)
    config = TrainConfig(prompt=PromptConfig("vpt-deep", visual_prompt_len=3))
    assert TrainConfig.from_dict(config.to_dict()) == config
