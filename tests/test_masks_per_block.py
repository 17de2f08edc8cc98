"""Masks per block (`PromptConfig.masks_per_block`): one token and segment mask per layer."""

from __future__ import annotations

import pytest
import torch
from cli_helpers import last_json
from safetensors.torch import load_file
from swin_helpers import tiny_swin
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model, load_adapter, save_adapter
from e2vpt_core.cli import main
from e2vpt_core.models import compact_prompts
from e2vpt_core.models.layers import expand_segment_mask
from e2vpt_core.prune import ImportanceTracker, select_masks
from e2vpt_core.store import RunStore

L, P, R, WIDTH = 3, 5, 4, 48
CONFIG = PromptConfig("e2vpt", visual_prompt_len=P, kv_prompt_len=2, num_segments=R,
                      masks_per_block=True)
TOKEN_MASK = torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0],
                           [0.0, 0.0, 1.0, 0.0, 0.0],
                           [1.0, 1.0, 1.0, 1.0, 0.0]])


def _segment_mask() -> torch.Tensor:
    mask = torch.ones(L, P, R)
    mask[0, 2, 1] = 0.0
    mask[2, 3, 3] = 0.0
    return mask


def _pair(config: PromptConfig, seed: int = 4):
    """A model with masks per block and one with shared masks holding the same values."""
    per_block = create_model(tiny_vit(seed=seed), 6, config).eval()
    shared = create_model(per_block.backbone, 6, config.replace(masks_per_block=False)).eval()
    state = {k: v for k, v in per_block.state_dict().items()
             if not k.startswith("backbone.") and not k.endswith("_mask")}
    shared.load_state_dict(state, strict=False)
    return per_block, shared


@pytest.mark.parametrize("fields, message", [
    (dict(method="linear"), "needs visual prompts"),
    (dict(method="e2vpt", visual_prompt_len=0), "needs visual prompts"),
])
def test_config_refuses_masks_per_block_without_visual_prompts(fields, message):
    with pytest.raises(ValueError, match=message):
        PromptConfig(**fields, masks_per_block=True)
    with pytest.raises(ValueError, match="must be True or False"):
        PromptConfig("e2vpt", masks_per_block="yes")


def test_mask_shapes_follow_the_prompt_layers():
    model = create_model(tiny_vit(), 6, CONFIG)
    assert model.token_mask.shape == (L, P) and model.segment_mask.shape == (L, P, R)
    shallow = create_model(tiny_vit(), 6, PromptConfig("vpt-shallow", visual_prompt_len=P,
                                                       num_segments=R, masks_per_block=True))
    assert shallow.token_mask.shape == (1, P)
    swin = create_model(tiny_swin(), 5, PromptConfig("e2vpt", visual_prompt_len=P,
                                                     kv_prompt_len=2, masks_per_block=True))
    assert swin.token_mask.shape == (2, P) and swin.segment_mask.shape == (2, P, 8)
    with pytest.raises(ValueError, match=r"mask shape \(5,\) != \(3, 5\)"):
        model.set_masks(torch.ones(P))


@pytest.mark.parametrize("mode", ["zero", "remove"])
def test_the_same_mask_in_every_layer_equals_shared_masks(mode, images):
    per_block, shared = _pair(CONFIG.replace(prune_mode=mode))
    token, segment = TOKEN_MASK[0], _segment_mask()[0]
    shared.set_masks(token, segment)
    per_block.set_masks(token.expand(L, P), segment.expand(L, P, R))
    torch.testing.assert_close(per_block(images), shared(images), rtol=0, atol=0)


def test_zero_mode_equals_masking_each_layer_by_hand(images):
    per_block, reference = _pair(CONFIG)
    per_block.set_masks(TOKEN_MASK, _segment_mask())
    dims = expand_segment_mask(_segment_mask(), WIDTH, "contiguous")
    with torch.no_grad():
        reference.visual_prompts.mul_(TOKEN_MASK[..., None] * dims)
    torch.testing.assert_close(per_block(images), reference(images))
    assert not torch.equal(per_block(images), _pair(CONFIG)[0](images))


def _hand_forward(model, images: torch.Tensor) -> torch.Tensor:
    """timm's blocks on [CLS, the layer's kept prompts, patches]: lengths differ by layer."""
    backbone = model.backbone
    x = backbone.norm_pre(backbone._pos_embed(backbone.patch_embed(images)))
    dims = expand_segment_mask(model.segment_mask, WIDTH, "contiguous")
    in_x = 0
    for layer, block in enumerate(backbone.blocks):
        kept = torch.nonzero(model.token_mask[layer]).flatten()
        prompts = (model.visual_prompts[layer] * dims[layer])[kept]
        x = torch.cat([x[:, :1], prompts.expand(len(x), -1, -1), x[:, 1 + in_x:]], dim=1)
        in_x = len(kept)
        x = block(x)
    x = backbone.norm(torch.cat([x[:, :1], x[:, 1 + in_x:]], dim=1))
    return model.head(backbone.forward_head(x, pre_logits=True))


def test_remove_mode_gives_each_layer_its_own_length_and_compacts(images, tmp_path):
    config = PromptConfig("vpt-deep", visual_prompt_len=P, num_segments=R,
                          masks_per_block=True, prune_mode="remove")
    model = create_model(tiny_vit(seed=5), 6, config).eval()
    model.set_masks(TOKEN_MASK, _segment_mask())
    expected = _hand_forward(model, images)
    torch.testing.assert_close(model(images), expected)

    compacted = compact_prompts(model).eval()
    assert compacted.visual_prompts.shape == (L, 4, WIDTH)  # layer 0 keeps 4 of 5
    assert compacted.config.prune_mode == "remove"
    assert compacted.token_mask.sum(dim=1).tolist() == [4.0, 1.0, 4.0]
    torch.testing.assert_close(compacted(images), expected)
    assert (compacted.parameter_summary()["effective_params"]
            == model.parameter_summary()["effective_params"])
    save_adapter(model, tmp_path / "full")
    save_adapter(compacted, tmp_path / "compact")
    full = load_file(tmp_path / "full" / "adapter_model.safetensors")["visual_prompts"]
    small = load_file(tmp_path / "compact" / "adapter_model.safetensors")["visual_prompts"]
    assert small.numel() < full.numel()
    reloaded = load_adapter(tmp_path / "compact", backbone=model.backbone).eval()
    torch.testing.assert_close(reloaded(images), expected)


def test_gradients_per_block_equal_the_shared_masks_split_by_layer(images):
    per_block, shared = _pair(CONFIG)
    labels = torch.arange(len(images)) % 6
    tracker = ImportanceTracker()
    with per_block.mask_gradients():
        torch.nn.functional.cross_entropy(per_block(images), labels).backward()
    tracker.update(per_block)
    with shared.mask_gradients(per_layer=True):
        torch.nn.functional.cross_entropy(shared(images), labels).backward()
    token_layer, segment_layer = shared.layer_mask_grads()
    assert per_block.token_mask.grad.shape == (L, P)
    torch.testing.assert_close(per_block.token_mask.grad, token_layer)
    torch.testing.assert_close(per_block.segment_mask.grad, segment_layer)
    scores = tracker.snapshot()
    torch.testing.assert_close(scores["segment"], shared.segment_mask.grad.abs())
    torch.testing.assert_close(scores["segment_layer"], segment_layer.abs())
    assert scores["segment_layer"].abs().sum() > 0


def test_selection_per_block_ranks_all_layers_and_keeps_one_per_layer():
    token = torch.tensor([[0.1, 0.2, 0.3, 0.4],     # layer 0 scores lowest everywhere
                          [5.0, 1.0, 6.0, 7.0],
                          [8.0, 2.0, 9.0, 3.0]])
    segment = torch.rand(3, 4, 8, generator=torch.Generator().manual_seed(0))
    half = select_masks(token, segment, 0.5)  # round(0.5 · 12) = 6 pairs pruned
    assert half.kept_tokens == [[3], [0, 2, 3], [0, 2]]
    assert half.num_kept_tokens == 6 and half.to_dict()["masks_per_block"]
    previous = torch.ones(3, 4)
    for ratio in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9):
        selection = select_masks(token, segment, ratio, segment_ratio=0.9)
        assert bool(torch.all(selection.token_mask <= previous)), ratio
        assert selection.token_mask.sum(dim=1).min() >= 1
        assert selection.num_kept_tokens == 12 - min(int(ratio * 12 + 0.5), 9)
        for layer, tokens in enumerate(selection.kept_segments):
            assert [len(kept) for kept in tokens] == [2] * len(tokens)  # floor 8 // 4
            assert len(tokens) == len(selection.kept_tokens[layer])
        previous = selection.token_mask
    with pytest.raises(ValueError, match=r"segment scores must have shape \(3, 4, 'R'\)"):
        select_masks(token, segment[0], 0.5)


def test_prune_and_rewind_a_run_with_masks_per_block(tmp_path, tiny_backbone, capsys):
    store = str(tmp_path / "store")
    assert main(["train", "--backbone", tiny_backbone, "--dataset", "builtin:position",
                 "-P", "4", "-T", "2", "--num-segments", str(R), "--masks-per-block",
                 "--epochs", "1", "--batch-size", "100", "--lr", "2.0", "--device", "cpu",
                 "--store", store, "--create-store", "--json", "--quiet"]) == 0
    run_id = last_json(capsys.readouterr().out)["run_id"]
    assert main(["prune", run_id, "--token-ratio", "0.5", "--segment-ratio", "0.25",
                 "--token-scores", "segments", "--store", store, "--json"]) == 0
    out = capsys.readouterr().out
    pruned = last_json(out)
    assert "pruned 4 of 8 (layer, token) pairs" in out  # tiny backbone: 2 blocks × P=4
    assert len(pruned["kept_tokens"]) == 2 and pruned["num_kept_tokens"] == 4
    assert all(kept for kept in pruned["kept_tokens"])
    scores = RunStore(store).load_tensors(run_id, "importance")
    assert scores["segment_layer"].shape == (2, 4, R)

    assert main(["rewind", run_id, "--token-ratio", "0.5", "--segment-ratio", "0.25",
                 "--token-scores", "segments", "--mode", "remove", "--epochs", "1",
                 "--store", store, "--json", "--quiet"]) == 0
    child = last_json(capsys.readouterr().out)
    assert child["status"] == "completed" and child["kept_tokens"] == pruned["kept_tokens"]
    model = load_adapter(RunStore(store).run_dir(child["run_id"]) / "adapter")
    assert model.token_mask.shape == (2, 4)
    pruned_entries = model.prompt_mask().detach() == 0
    assert bool(torch.all(model.visual_prompts.detach()[pruned_entries] == 0))
    assert child["effective_params"] == (
        child["trainable_params"] - int(pruned_entries.sum()))


def test_swin_layers_of_the_first_stage_take_their_own_masks(images):
    config = PromptConfig("e2vpt", visual_prompt_len=P, kv_prompt_len=2, num_segments=R,
                          masks_per_block=True, prune_mode="remove")
    per_block = create_model(tiny_swin(seed=2), 5, config).eval()
    shared = create_model(per_block.backbone, 5, config.replace(masks_per_block=False)).eval()
    shared.load_state_dict({k: v for k, v in per_block.state_dict().items()
                            if not k.endswith("_mask")}, strict=False)
    shared.set_masks(TOKEN_MASK[0], _segment_mask()[0])
    per_block.set_masks(TOKEN_MASK[0].expand(2, P), _segment_mask()[0].expand(2, P, R))
    torch.testing.assert_close(per_block(images), shared(images), rtol=0, atol=0)
    per_block.set_masks(TOKEN_MASK[:2], _segment_mask()[:2])
    assert [len(p) for p in per_block.stage_prompts()[0]] == [4, 1]
    assert not torch.allclose(per_block(images), shared(images))
