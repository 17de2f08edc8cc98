"""Masks: `zero` and `remove` prune modes, `compact_prompts()`, segment layouts, mask gradients."""

from __future__ import annotations

import pytest
import torch
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.models import compact_prompts
from e2vpt_core.models.layers import expand_segment_mask, segment_of_dim

TOKEN_MASK = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
CONFIG = PromptConfig("e2vpt", visual_prompt_len=5, kv_prompt_len=2, num_segments=4)


def _segment_mask():
    mask = torch.ones(5, 4)
    mask[0, 1] = 0.0
    mask[4, 3] = 0.0
    return mask


def _pruned_model(mode: str):
    model = create_model(tiny_vit(seed=4), 6, CONFIG.replace(prune_mode=mode)).eval()
    model.set_masks(TOKEN_MASK, _segment_mask())
    return model


def test_segment_layouts():
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    contiguous = expand_segment_mask(mask, 8, "contiguous")
    interleaved = expand_segment_mask(mask, 8, "interleaved")
    assert contiguous.tolist() == [[1, 1, 0, 0, 1, 1, 1, 1]]
    assert interleaved.tolist() == [[1, 0, 1, 1, 1, 0, 1, 1]]
    assert segment_of_dim(8, 4, "contiguous").tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert segment_of_dim(8, 4, "interleaved").tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_zero_mode_equals_zeroing_by_hand(images):
    model = _pruned_model("zero")
    by_hand = create_model(tiny_vit(seed=4), 6, CONFIG).eval()
    by_hand.load_state_dict(model.state_dict())
    with torch.no_grad():
        by_hand.visual_prompts.mul_(model.prompt_mask())
        by_hand.token_mask.fill_(1.0)
        by_hand.segment_mask.fill_(1.0)
    with torch.no_grad():
        assert torch.allclose(model(images), by_hand(images), atol=1e-6)
        unpruned = create_model(tiny_vit(seed=4), 6, CONFIG).eval()
        unpruned.load_state_dict({**model.state_dict(), "token_mask": torch.ones(5),
                                  "segment_mask": torch.ones(5, 4)})
        assert not torch.allclose(model(images), unpruned(images), atol=1e-4)


def _model_with_only_kept_prompts(model):
    kept = TOKEN_MASK.nonzero().flatten()
    small = create_model(tiny_vit(seed=4), 6, CONFIG.replace(visual_prompt_len=len(kept))).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    state["visual_prompts"] = (model.visual_prompts * model.prompt_mask())[:, kept].detach()
    state["token_mask"] = torch.ones(len(kept))
    state["segment_mask"] = torch.ones(len(kept), 4)
    small.load_state_dict(state, strict=False)
    return small


def test_remove_mode_equals_model_built_with_kept_prompts(images):
    model = _pruned_model("remove")
    reference = _model_with_only_kept_prompts(model)
    with torch.no_grad():
        assert torch.allclose(model(images), reference(images), atol=1e-6)
        assert not torch.allclose(model(images), _pruned_model("zero")(images), atol=1e-4)


@pytest.mark.parametrize("mode", ["zero", "remove"])
def test_compact_equals_remove_mode(mode, images):
    model = _pruned_model(mode)
    compacted = compact_prompts(model)
    assert compacted.visual_prompts.shape == (3, 3, 48)
    assert compacted.backbone is model.backbone
    assert compacted.backbone_source == model.backbone_source
    remove = _pruned_model("remove")
    with torch.no_grad():
        assert torch.allclose(compacted(images), remove(images), atol=1e-6)
    assert (compacted.parameter_summary()["trainable_params"]
            < model.parameter_summary()["trainable_params"])
    assert (compacted.parameter_summary()["effective_params"]
            == model.parameter_summary()["effective_params"])


def test_remove_mode_runs_a_shorter_sequence(images):
    lengths = {}
    for mode in ("zero", "remove"):
        model = _pruned_model(mode)

        def record(module, args, mode=mode):
            lengths[mode] = args[0].shape[1]

        model.backbone.blocks[1].norm1.register_forward_pre_hook(record)
        model(images)
    assert lengths == {"zero": 1 + 5 + 16, "remove": 1 + 3 + 16}


def test_mask_gradients_are_readable_and_match_finite_differences(images):
    model = create_model(tiny_vit(seed=5), 6, CONFIG).double().eval()
    images = images.double()
    targets = torch.tensor([0, 1, 2, 3])

    def loss_fn():
        return torch.nn.functional.cross_entropy(model(images), targets)

    with model.mask_gradients():
        loss_fn().backward()
    assert not model.token_mask.requires_grad
    grad = model.token_mask.grad.clone()
    assert model.segment_mask.grad.shape == (5, 4)
    eps = 1e-4  # the gradient is ~1e-6 (LayerNorm's scale invariance): a smaller step
    # leaves the difference to the loss's rounding
    with torch.no_grad():
        model.token_mask[2] += eps
        plus = loss_fn()
        model.token_mask[2] -= 2 * eps
        minus = loss_fn()
    assert grad[2].item() == pytest.approx(((plus - minus) / (2 * eps)).item(), rel=1e-4)


def test_set_masks_validates():
    model = create_model(tiny_vit(), 6, CONFIG)
    with pytest.raises(ValueError, match="shape"):
        model.set_masks(torch.ones(4))
    with pytest.raises(ValueError, match="0 and 1"):
        model.set_masks(torch.full((5,), 0.5))
