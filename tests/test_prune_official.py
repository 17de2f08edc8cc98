"""`--preset official`: the official code's settings, trainable masks that decay, signed
scores, int() counts, and rewinds with fixed masks from a fresh init."""

from __future__ import annotations

import json

import pytest
import torch
from app_helpers import by_label, open_page
from cli_helpers import last_json
from vit_helpers import tiny_vit

from app.state import reproduce_command
from e2vpt_core import PromptConfig, create_model, load_adapter
from e2vpt_core.cli import build_parser, main
from e2vpt_core.cli.common import train_config
from e2vpt_core.prune import prune_run, rewind_run
from e2vpt_core.prune.importance import compute_run_importance
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig
from e2vpt_core.train.optim import build_optimizer

P = 6


@pytest.fixture(scope="module")
def official(tmp_path_factory, tiny_backbone):
    store = tmp_path_factory.mktemp("official-store")
    code = main(["train", "--preset", "official", "--backbone", tiny_backbone, "--dataset",
                 "builtin:position", "-P", str(P), "-T", "2", "--epochs", "2",
                 "--warmup-epochs", "1", "--batch-size", "100", "--lr", "2.0", "--wd", "0.01",
                 "--device", "cpu",
                 "--store", str(store), "--json", "--quiet"])
    assert code == 0
    return RunStore(store), RunStore(store).runs()["id"].iloc[0]


def test_the_preset_sets_the_official_prompt():
    config = TrainConfig(preset="official", prompt=PromptConfig("e2vpt", num_segments=8))
    assert config.prompt.num_segments == 16
    assert config.prompt.segment_layout == "interleaved" and config.prompt.trainable_masks
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert not TrainConfig().prompt.trainable_masks
    with pytest.raises(ValueError, match="preset='paper'"):
        TrainConfig(preset="paper")
    with pytest.raises(ValueError, match="trainable_masks"):
        PromptConfig(trainable_masks=1)


def test_preset_masks_are_trainable_and_decay():
    config = TrainConfig(preset="official", weight_decay=0.1, base_lr=2.56, batch_size=100)
    model = create_model(tiny_vit(), 4, config.prompt)
    names = {name for name, _ in model.trainable_parameters()}
    assert {"token_mask", "segment_mask"} <= names
    optimizer = build_optimizer(model, config)
    groups = {id(p): group["weight_decay"] for group in optimizer.param_groups
              for p in group["params"]}
    assert groups[id(model.token_mask)] == groups[id(model.segment_mask)] == 0.1
    model(torch.zeros(2, 3, 32, 32)).sum().mul(0.0).backward()  # zero gradients
    optimizer.step()
    shrunk = 1.0 - config.lr() * config.weight_decay
    torch.testing.assert_close(model.token_mask.detach(), torch.full((10,), shrunk))
    torch.testing.assert_close(model.segment_mask.detach(), torch.full((10, 16), shrunk))
    with model.mask_gradients():
        pass
    assert model.token_mask.requires_grad  # scoring leaves them trainable


def test_the_official_run_trains_its_masks(official):
    store, run_id = official
    model = load_adapter(store.run_dir(run_id) / "adapter")
    assert model.config.trainable_masks and model.config.num_segments == 16
    assert not torch.all(model.token_mask == 1) and not torch.all(model.segment_mask == 1)
    assert model.token_mask.requires_grad


def test_official_scores_are_one_seeded_pass_of_the_training_loader(official):
    store, run_id = official
    first = compute_run_importance(store, run_id)
    again = compute_run_importance(store, run_id)
    assert int(first["batches"]) == 800 // 100  # the training loader drops no full batch
    for key in ("token_signed", "segment_signed"):
        assert torch.equal(first[key], again[key])


def _hand_selection(token: torch.Tensor, segment: torch.Tensor, token_ratio: float,
                    segment_ratio: float) -> tuple[list[int], dict[int, list[int]]]:
    """Lowest signed scores pruned, int(total · percent / 100) counts, at least 4 of 16
    segments kept."""
    pruned = int(len(token) * round(100 * token_ratio) / 100)
    kept = sorted(token.argsort()[pruned:].tolist())
    drop = min(int(16 * round(100 * segment_ratio) / 100), 12)
    return kept, {k: sorted(segment[k].argsort()[drop:].tolist()) for k in kept}


@pytest.mark.parametrize(("token_ratio", "segment_ratio"), [(0.35, 0.7), (0.5, 0.9),
                                                            (0.9, 0.3)])
def test_selection_on_fixed_gradients_equals_a_hand_computation(official, token_ratio,
                                                                segment_ratio):
    store, run_id = official
    generator = torch.Generator().manual_seed(int(10 * token_ratio))
    token = torch.randn(P, generator=generator)
    segment = torch.randn(P, 16, generator=generator)
    store.save_tensors(run_id, "importance", {
        "token": token.abs(), "segment": segment.abs(), "token_signed": token,
        "segment_signed": segment, "batches": torch.tensor(1)})
    result = prune_run(store, run_id, token_ratio, segment_ratio)
    kept, segments = _hand_selection(token, segment, token_ratio, segment_ratio)
    assert result["importance"] == "signed"
    assert result["kept_tokens"] == kept
    assert result["kept_segments"] == [segments[k] for k in kept]


def test_an_official_rewind_fixes_its_masks_from_a_fresh_init(official, capsys):
    store, run_id = official
    child = rewind_run(store, run_id, 0.35, 0.7, epochs=1)
    assert child.status == "completed"
    config = TrainConfig.from_dict(store.get_run(child.run_id)["config"])
    assert config.preset == "official" and not config.prompt.trainable_masks
    assert config.prompt.num_segments == 16 and config.init_from_run is None
    assert len(child.metrics["kept_tokens"]) == P - int(0.35 * P)
    model = load_adapter(store.run_dir(child.run_id) / "adapter")
    assert not model.token_mask.requires_grad
    assert set(model.token_mask.unique().tolist()) == {0.0, 1.0}
    capsys.readouterr()
    assert main(["prune", run_id, "--token-ratio", "0.5", "--evaluate", "--store",
                 str(store.root), "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert 0.0 <= result["val_top1_masked"] <= 100.0


def test_the_train_page_queues_an_official_run(tmp_path, monkeypatch):
    monkeypatch.setenv("E2VPT_STORE", str(tmp_path))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    app = open_page()
    by_label(app.selectbox, "Task").set_value("counting").run()
    by_label(app.checkbox, "Official preset").check().run()
    by_label(app.button, "Start").click().run()
    assert not app.exception and not app.error
    config = RunStore(tmp_path).runs()["config"].map(json.loads).iloc[0]
    assert config["preset"] == "official"
    prompt = config["prompt"]
    assert (prompt["num_segments"], prompt["segment_layout"], prompt["trainable_masks"]) == (
        16, "interleaved", True)


def test_the_reproduce_command_of_an_official_run_names_the_preset():
    config = TrainConfig(preset="official", prompt=PromptConfig("e2vpt", kv_prompt_len=2))
    command, missing = reproduce_command(config.to_dict())
    assert "--preset official" in command and missing == []
    args = build_parser().parse_args(command.split()[1:])
    rebuilt = train_config(args, base_lr=args.lr, weight_decay=args.wd, preset=args.preset)
    assert rebuilt.to_dict() == config.to_dict()
