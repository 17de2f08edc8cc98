"""Column scores (`kv`, `logit`) on Swin, against direct computations: autograd on an
explicit mask placed by hooks on the first stage's key/value rows, and a hand-written
window attention adding log m to the prompts' logit columns."""

from __future__ import annotations

import pytest
import torch
from score_helpers import (
    check_column_scores,
    check_kept_column_scores,
    kv_mask_gradients,
    logit_mask_gradients,
)
from swin_helpers import tiny_swin

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.prune.importance import importance_pass, pick

P, R = 3, 4


def _model(method: str = "e2vpt", **fields) -> torch.nn.Module:
    config = PromptConfig(method, visual_prompt_len=P, num_segments=R,
                          kv_prompt_len=1 if method == "e2vpt" else None, **fields)
    return create_model(tiny_swin(seed=2), 5, config).double().eval()


@pytest.fixture(scope="module")
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 32, 32, generator=generator).double()
    labels = torch.tensor([0, 1, 2, 3])
    return [(images[:2], labels[:2]), (images[2:], labels[2:])]


def _prompt_tokens(model, block: int) -> list[int]:
    """The prompt tokens in front of every window of first-stage block `block`."""
    layer = block if model.config.deep_prompts else 0
    if model.config.prune_mode == "remove":
        return model.layer_kept_tokens()[layer].tolist()
    return list(range(P))


def _kv_mask_gradients(model, batches) -> torch.Tensor:
    """(batches, first-stage blocks, P) dL/dm for an explicit mask m on the prompts' key
    and value rows in every window of the first stage's blocks."""
    projections = [block.attn.qkv for block in model.backbone.layers[0].blocks]
    return kv_mask_gradients(model, batches, projections,
                             lambda index: _prompt_tokens(model, index))


def _logit_mask_gradients(model, batches, monkeypatch) -> torch.Tensor:
    """(batches, first-stage blocks, P) dL/dm for log m added to the prompts' logit columns
    of every window of the first stage's blocks."""
    return logit_mask_gradients(model, batches, model.stage_depths[0],
                                lambda index: _prompt_tokens(model, index), monkeypatch,
                                attention_calls=sum(model.stage_depths))


@pytest.mark.parametrize("method", ["e2vpt", "vpt-deep", "vpt-shallow"])
def test_swin_column_scores_equal_autograd_on_explicit_masks(method, batches, monkeypatch):
    model = _model(method)
    scores = importance_pass(model, batches)
    check_column_scores(model, scores, _kv_mask_gradients(model, batches),
                        _logit_mask_gradients(model, batches, monkeypatch))
    torch.testing.assert_close(pick(scores, token_scores="kv").token, scores["kv"])


def test_swin_scores_follow_the_kept_tokens_in_remove_mode(batches, monkeypatch):
    model = _model(prune_mode="remove", masks_per_block=True)
    token_mask = torch.ones(2, P)
    token_mask[0, 1] = token_mask[1, 0] = 0.0
    check_kept_column_scores(model, token_mask, batches,
                             lambda: _kv_mask_gradients(model, batches),
                             lambda: _logit_mask_gradients(model, batches, monkeypatch))


def test_a_minus_infinity_logit_bias_removes_the_swin_token(batches):
    model, removed = _model(), _model(prune_mode="remove")
    mask = torch.tensor([1.0, 0.0, 1.0])
    removed.set_masks(mask, torch.ones(P, R) * mask[:, None])
    images = batches[0][0]
    with torch.no_grad(), model.column_probes() as (_scale, bias):
        bias[:, 1] = float("-inf")
        probed = model(images)
    torch.testing.assert_close(probed, removed(images))
    with torch.no_grad():
        torch.testing.assert_close(model(images), _model()(images))  # probes closed: as built
