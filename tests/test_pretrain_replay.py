"""One command rebuilds a pretrained backbone from its recipe chain, stage by stage."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from e2vpt_core.pretrain import PretrainConfig, pretrain
from e2vpt_core.pretrain.replay import main, recorded_stages, replay, stage_configs

TINY = dict(batch_size=4, warmup_steps=1, heldout_size=4, eval_every=2, log_every=1,
            precision="fp32", embed_dim=48, num_heads=4, depth=2)


@pytest.fixture
def chain(tmp_path):
    """A fractal stage stopped after 2 of its 4 scheduled steps, then 2 scene steps."""
    first, second = tmp_path / "first", tmp_path / "second"
    pretrain(PretrainConfig(out=str(first), data="fractal", num_classes=4, steps=4,
                            stop_after=2, **TINY))
    pretrain(PretrainConfig(out=str(second), data="scenes", steps=2, resume_from=str(first),
                            **TINY))
    return second


def test_the_replay_rebuilds_the_same_weights(chain, tmp_path):
    stages = recorded_stages(chain)
    assert [s["args"]["data"] for s in stages] == ["fractal", "scenes"]
    assert [s["complete"] for s in stages] == [False, True]
    recipe = replay(chain, tmp_path / "rebuilt")
    assert recipe["total_steps"] == 4 and recipe["steps_done"] == 2
    assert (tmp_path / "rebuilt" / "stages" / "01-fractal" / "model.safetensors").is_file()
    original = load_file(chain / "model.safetensors")
    rebuilt = load_file(tmp_path / "rebuilt" / "model.safetensors")
    assert original.keys() == rebuilt.keys()
    assert all((original[k] == rebuilt[k]).all() for k in original)


def test_stages_chain_through_fresh_directories_and_stop_where_they_stopped(chain, tmp_path):
    first, second = stage_configs(recorded_stages(chain), tmp_path / "out", threads=2)
    assert (first.resume_from, first.stop_after, first.steps) == (None, 2, 4)
    assert second.resume_from == first.out and second.out == str(tmp_path / "out")
    assert first.threads == second.threads == 2


def test_a_directory_without_a_recipe_or_with_unknown_arguments_is_refused(
        chain, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--out", str(tmp_path / "x")])
    assert "recipe.json not found" in capsys.readouterr().err
    recipe = json.loads((chain / "recipe.json").read_text())
    recipe["args"]["momentum"] = 0.9
    (chain / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match=r"does not know: \['momentum'\]"):
        stage_configs(recorded_stages(chain), tmp_path / "x")
    assert not (tmp_path / "x").exists()
