"""Prompt tuning learns on the bundled backbone: the default recipe fits a small subset.

Accuracy on the built-in tasks' test sets is measured in benchmarks/offline_signal.py (see
docs/BENCHMARKS.md); this checks only the behaviour behind it, fast: gradients reach the
prompts through the frozen backbone, and the default optimiser and learning rate move them
far enough to fit 32 training images.
"""

from __future__ import annotations

import json

import pytest
import torch

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.data import builtin_classes, generate_builtin
from e2vpt_core.pretrain import to_input
from e2vpt_core.train import TrainConfig
from e2vpt_core.train.config import DEFAULT_BACKBONE
from e2vpt_core.train.optim import build_optimizer


@pytest.mark.slow
@pytest.mark.parametrize("task", ["digits", "orientation"])
def test_default_recipe_fits_a_small_builtin_subset(task):
    torch.manual_seed(0)
    images, labels = generate_builtin(task, "train")
    x, y = to_input(images[:32], torch.device("cpu")), torch.from_numpy(labels[:32].copy())
    num_classes = len(builtin_classes(task))
    model = create_model(DEFAULT_BACKBONE, num_classes, PromptConfig("e2vpt"), pretrained=True)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = build_optimizer(model, TrainConfig())
    model.train()
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 4 / num_classes, (accuracy, losses[::10])
    assert losses[-1] < 0.7 * losses[0]
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, frozen[key]), f"the frozen backbone moved: {key}"


def test_rows_of_different_recipes_get_their_own_columns(capsys):
    from benchmarks.offline_signal import print_table

    def row(column, seed, score, lr=None, epochs=None):
        return {"task": "counting", "column": column, "seed": seed, "score": score,
                "epochs": epochs, "lr": lr, "backbone": None}

    rows = [row("pixels", 0, 20.0), row("e2vpt", 0, 70.0, lr=0.5), row("e2vpt", 1, 74.0, lr=0.5),
            row("e2vpt", 0, 50.0, lr=1.0), row("e2vpt", 0, 60.0, epochs=10), row("linear", 0, 66.0)]
    print_table(rows, ["counting"])
    header, _, line = capsys.readouterr().out.splitlines()
    assert header.split(" | ")[1:] == [
        "pixels", "e2vpt, lr 0.5", "e2vpt, lr 1", "e2vpt, epochs 10", "linear |"]
    assert line.split(" | ")[1:] == [
        "20.0 (1)", "72.0 ± 2.8 (2)", "50.0 (1)", "60.0 (1)", "66.0 (1) |"]


def test_engine_rows_record_the_lr_they_ran_with(tmp_path, monkeypatch, capsys):
    """Without --lr each method runs at its own default, and the row says which number that
    was, so rows from before and after a change of default never share a column."""
    from benchmarks import offline_signal
    from e2vpt_core.methods import get_method

    prompt_lr, other_lr = get_method("e2vpt").base_lr, get_method("linear").base_lr
    seen = []

    def fake_train_run(config, store):
        seen.append((config.prompt.method, config.base_lr))
        return type("Result", (), {"metrics": {"test_top1": 50.0}})()

    monkeypatch.setattr(offline_signal, "train_run", fake_train_run)
    monkeypatch.setattr(offline_signal, "training_precision", lambda amp, device: "bf16 autocast")
    results = tmp_path / "rows.jsonl"
    results.write_text(json.dumps({"task": "counting", "column": "e2vpt", "seed": 0,
                                   "score": 40.0, "epochs": None, "lr": None,
                                   "backbone": None}) + "\n")
    monkeypatch.setattr("sys.argv", ["offline_signal", "--tasks", "counting", "--methods",
                                     "linear", "e2vpt", "--references", "--results",
                                     str(results)])
    offline_signal.main()
    assert seen == [("linear", other_lr), ("e2vpt", prompt_lr)]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["lr"] for r in rows] == [None, other_lr, prompt_lr]
    assert [r.get("precision") for r in rows] == [None, "bf16 autocast", "bf16 autocast"]
    header = capsys.readouterr().out.splitlines()[-3]
    assert header.split(" | ")[1:] == [
        "e2vpt", f"linear, lr {other_lr:g}, precision bf16 autocast",
        f"e2vpt, lr {prompt_lr:g}, precision bf16 autocast |"]
