"""`--preset official`, the rest of the official code's recipe: the lr stepped once per
epoch (epoch 0 at lr 0), fp32, its head init, int(total · percent / 100) counts, and the
pruning search choosing its (token %, segment %) pair on val."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from cli_helpers import last_json

from e2vpt_core import PromptConfig, create_model, load_adapter
from e2vpt_core.cli import build_parser, main
from e2vpt_core.models import build_backbone
from e2vpt_core.prune import select_masks
from e2vpt_core.prune import sweep as sweep_module
from e2vpt_core.prune.options import DEFAULT_RATIOS
from e2vpt_core.prune.selection import floor_count, prune_count
from e2vpt_core.prune.sweep import default_ratios
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run
from e2vpt_core.train import loop as loop_module
from e2vpt_core.train.optim import epoch_lr_factor

P, EPOCHS, WARMUP, BATCH, BASE_LR = 6, 4, 2, 400, 0.5
WIDTH = 48  # the tiny backbone's embed_dim (vit_helpers.TINY_DIR_ARGS)


def _config(tiny_backbone: str, **changes) -> TrainConfig:
    values = dict(backbone=tiny_backbone, dataset="builtin:position", epochs=EPOCHS,
                  warmup_epochs=WARMUP, batch_size=BATCH, base_lr=BASE_LR, device="cpu",
                  seed=3, preset="official",
                  prompt=PromptConfig("e2vpt", visual_prompt_len=P, kv_prompt_len=2))
    return TrainConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def official(tmp_path_factory, tiny_backbone) -> tuple[RunStore, str, TrainConfig]:
    store = RunStore(tmp_path_factory.mktemp("official-recipe"))
    config = _config(tiny_backbone)
    result = train_run(config, store)
    assert result.status == "completed", result.reason
    return store, result.run_id, config


def test_the_preset_steps_the_lr_once_per_epoch_from_zero(official):
    store, run_id, config = official
    lr = config.base_lr * BATCH / 256
    # by hand, W = 2 of E = 4 epochs: 0/2, 1/2, then ½(1 + cos(π·0)), ½(1 + cos(π·½))
    expected = [0.0, 0.5 * lr, lr, 0.5 * lr]
    rows = store.metrics(run_id, ["train/lr"])
    steps_per_epoch = 800 // BATCH
    assert len(rows) == EPOCHS * steps_per_epoch
    for step, epoch, value in zip(rows["step"], rows["epoch"], rows["value"], strict=True):
        assert epoch == (step - 1) // steps_per_epoch  # logged after the step
        assert value == pytest.approx(expected[epoch], abs=1e-12), (step, epoch)


def test_the_epoch_factor_is_the_vpt_warmup_cosine():
    assert [epoch_lr_factor(e, 10, 100) for e in (0, 1, 9)] == [0.0, 0.1, 0.9]
    assert epoch_lr_factor(10, 10, 100) == 1.0
    assert epoch_lr_factor(55, 10, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert epoch_lr_factor(99, 10, 100) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert epoch_lr_factor(0, 0.1, 1) == 0.0  # W < 1: divided by max(1, W)
    assert epoch_lr_factor(1, 1.5, 2) == pytest.approx(1 / 1.5)  # a fractional W
    assert epoch_lr_factor(0, 0.0, 1) == 1.0  # no warm-up: the cosine from its top


def test_without_the_preset_the_lr_moves_every_step(tmp_path, tiny_backbone):
    store = RunStore(tmp_path)
    config = _config(tiny_backbone, preset=None, epochs=1, warmup_epochs=0.5,
                     eval_splits=())
    result = train_run(config, store)
    assert result.status == "completed", result.reason
    lrs = store.metrics(result.run_id, ["train/lr"])["value"]
    assert lrs.iloc[0] == 0.0 and lrs.iloc[1] > 0.0  # per step: the second step moves


def test_the_preset_trains_in_fp32():
    assert TrainConfig(preset="official", amp=True).amp is False
    assert TrainConfig(amp=True).amp is True  # the default keeps bf16 autocast on a GPU
    stored = TrainConfig(preset="official").to_dict()
    assert stored["amp"] is False and TrainConfig.from_dict(stored).amp is False


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="the GPU side (the CPU side: test_cpu_bf16.py)")
@pytest.mark.parametrize("preset", ["official", None])
def test_on_a_gpu_the_preset_runs_without_autocast(preset, tmp_path, tiny_backbone,
                                                   monkeypatch):
    dtypes: set[torch.dtype] = set()
    real_create = loop_module.create_model

    def recording(*args, **kwargs):
        model = real_create(*args, **kwargs)
        model.head.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
        return model

    monkeypatch.setattr(loop_module, "create_model", recording)
    config = _config(tiny_backbone, preset=preset, epochs=1, warmup_epochs=0.0,
                     device="cuda", eval_splits=("val",))
    assert train_run(config, RunStore(tmp_path)).status == "completed"
    assert dtypes == ({torch.float32} if preset else {torch.bfloat16})


def test_the_head_starts_as_the_official_code_s(official):
    store, run_id, config = official
    init = store.load_tensors(run_id, "init")
    classes = init["head.weight"].shape[0]
    torch.manual_seed(config.prompt_init_seed)  # by hand: nn.Linear's draws, then N(0, 2/C)
    torch.nn.Linear(WIDTH, classes)
    weight = torch.empty(classes, WIDTH).normal_(0.0, math.sqrt(2.0 / classes))
    torch.testing.assert_close(init["head.weight"], weight, rtol=1e-6, atol=0.0)
    assert torch.equal(init["head.bias"], torch.full((classes,), -math.log(99.0)))
    assert init["head.bias"][0].item() == pytest.approx(-4.59512, abs=1e-5)
    assert config.prompt.head_init == "kaiming-normal"


def test_without_the_preset_the_head_keeps_pytorch_s_init(tiny_backbone):
    backbone = build_backbone(tiny_backbone)
    torch.manual_seed(0)
    model = create_model(backbone, 5, PromptConfig("e2vpt", visual_prompt_len=2))
    torch.manual_seed(0)
    plain = torch.nn.Linear(WIDTH, 5)
    assert PromptConfig().head_init == "pytorch"
    assert torch.equal(model.head.weight, plain.weight)
    assert torch.equal(model.head.bias, plain.bias)
    with pytest.raises(ValueError, match="head_init"):
        PromptConfig(head_init="xavier")


def test_the_artifact_reloads_to_the_same_logits_with_or_without_the_field(official,
                                                                           tmp_path):
    store, run_id, _ = official
    source = store.run_dir(run_id) / "adapter"
    model = load_adapter(source)
    assert model.config.head_init == "kaiming-normal"
    older = shutil.copytree(source, tmp_path / "older")  # written before the field existed
    meta = json.loads((older / "adapter_config.json").read_text())
    del meta["prompt_config"]["head_init"]
    (older / "adapter_config.json").write_text(json.dumps(meta))
    reloaded = load_adapter(older)
    assert reloaded.config.head_init == "pytorch"
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval()(images), reloaded.eval()(images))


@pytest.mark.parametrize(("total", "count"), [(90, 63), (170, 119), (180, 126)])
def test_floor_counts_use_an_integer_percent(total, count):
    assert int(0.7 * total) == count - 1  # the float product falls just short
    assert prune_count(0.7, total, 0, "floor") == count == total * 70 // 100
    scores = torch.arange(total, dtype=torch.float32)
    selection = select_masks(scores, torch.zeros(total, 4), 0.7, rounding="floor")
    assert selection.num_kept_tokens == total - count


def test_the_whole_percent_grid_matches_the_official_count():
    for total in range(1, 301):
        for percent in range(0, 91):
            official = int(total * percent / 100)
            assert prune_count(percent / 100, total, 0, "floor") == official, (total, percent)
    for total in range(1, 101):  # the Pruning page's steps k / P keep k
        assert [floor_count(k / total, total) for k in range(total + 1)] == list(
            range(total + 1))


def test_the_official_grid_is_the_default_one_ratio_per_count(official, tiny_backbone):
    _, _, config = official
    tokens, segments = default_ratios(config)
    # P = 6: 10 % … 90 % prune 0, 1, 1, 2, 3, 3, 4, 4, 5 tokens
    assert tokens == (0.1, 0.2, 0.4, 0.5, 0.7, 0.9)
    # R = 16, 4 kept: 1, 3, 4, 6, 8, 9, 11, 12, 12 segments (90 % capped at 12)
    assert segments == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    ten = _config(tiny_backbone, prompt=PromptConfig("e2vpt", visual_prompt_len=10))
    assert len(default_ratios(ten)[0]) * len(default_ratios(ten)[1]) == 72
    assert default_ratios(_config(tiny_backbone, preset=None)) == (DEFAULT_RATIOS, (0.0,))
    args = build_parser().parse_args(["sweep-prune", "some-run"])
    assert args.ratios is None and args.segment_ratios is None and args.select_on == "val"


def test_sweep_prune_takes_the_official_grid_when_given_none(official, monkeypatch, capsys):
    store, run_id, _ = official
    seen: list[tuple[float, float]] = []

    def no_training(_store, _run, _signed, _scores, options, _workers, _progress):
        seen.extend((o["token_ratio"], o["segment_ratio"]) for o in options)
        return [{"token_ratio": t, "segment_ratio": s, "status": "failed", "reason": "stub"}
                for t, s in seen]

    monkeypatch.setattr(sweep_module, "_local_rewinds", no_training)
    assert main(["sweep-prune", run_id, "--store", str(store.root), "--quiet"]) == 1
    tokens, segments = default_ratios(TrainConfig.from_dict(store.get_run(run_id)["config"]))
    assert seen == [(t, s) for t in tokens for s in segments]
    capsys.readouterr()


def test_sweep_prune_selects_on_val_and_records_the_pair(official, capsys):
    store, run_id, _ = official
    capsys.readouterr()
    code = main(["sweep-prune", run_id, "--ratios", "0.5", "--segment-ratios", "0.25", "0.5",
                 "--epochs", "1", "--select-on", "val", "--store", str(store.root),
                 "--json", "--quiet"])
    assert code == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["select_on"] == "val"
    table = summary["table"]
    assert [(r["token_ratio"], r["segment_ratio"]) for r in table] == [(0.5, 0.25), (0.5, 0.5)]
    top = max(r["val_top1"] for r in table)  # ties: more pruning, the later pair
    chosen = [r for r in table if r["val_top1"] == top][-1]
    assert (summary["best_token_ratio"], summary["best_segment_ratio"],
            summary["best_run_id"]) == (chosen["token_ratio"], chosen["segment_ratio"],
                                        chosen["run_id"])
    stored = store.get_run(run_id)["summary"]["prune_sweep"]
    assert stored["select_on"] == "val" and stored["metric"] == "val_top1"
    assert (stored["best_token_ratio"], stored["best_segment_ratio"],
            stored["best_run_id"]) == (chosen["token_ratio"], chosen["segment_ratio"],
                                       chosen["run_id"])


@pytest.mark.parametrize(("split", "message"), [
    ("test", "select_on='test' would choose the prune ratios"),
    ("train", "evaluates ['val', 'test'], not 'train'"),
])
def test_sweep_prune_never_selects_on_test(official, split, message, capsys):
    store, run_id, _ = official
    before = len(store.runs())
    capsys.readouterr()
    assert main(["sweep-prune", run_id, "--ratios", "0.5", "--select-on", split,
                 "--store", str(store.root), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert len(store.runs()) == before
