"""Column scores (`kv`, `logit`) on Swin, against direct computations: autograd on an
explicit mask placed by hooks on the first stage's key/value rows, and a hand-written
window attention adding log m to the prompts' logit columns."""

from __future__ import annotations

import pytest
import torch
from score_helpers import check_mask_score, per_prompt_layer
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
    """(batches, first-stage blocks, P) dL/dm for m multiplying the prompts' key and value
    rows in every window, by forward hooks on the first stage's qkv projections."""
    blocks = model.backbone.layers[0].blocks
    width = model.stage_widths[0]
    grads = []
    for images, labels in batches:
        mask = torch.ones(len(blocks), P, dtype=torch.double, requires_grad=True)
        handles = []
        for index, block in enumerate(blocks):
            def hook(_module, _inputs, output, index=index, mask=mask):
                tokens = _prompt_tokens(model, index)
                rows = torch.stack([mask[index, token] for token in tokens])
                scale = torch.cat([rows, rows.new_ones(output.shape[1] - len(tokens))])
                return torch.cat([output[..., :width], output[..., width:] * scale[:, None]],
                                 dim=-1)
            handles.append(block.attn.qkv.register_forward_hook(hook))
        try:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            grads.append(torch.autograd.grad(loss, mask)[0])
        finally:
            for handle in handles:
                handle.remove()
    return torch.stack(grads)


def _logit_mask_gradients(model, batches, monkeypatch) -> torch.Tensor:
    """(batches, first-stage blocks, P) dL/dm for log m added to the prompts' logit columns
    of every window, in a hand-written attention replacing scaled_dot_product_attention."""
    first = len(model.backbone.layers[0].blocks)
    grads = []
    for images, labels in batches:
        mask = torch.ones(first, P, dtype=torch.double, requires_grad=True)
        calls = []

        def attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=None, calls=calls,
                      mask=mask):
            block = len(calls)
            calls.append(block)
            logits = q @ k.transpose(-2, -1) * scale + attn_mask
            if block < first:
                start = k.shape[2] - q.shape[2]  # the key-value prompts' columns come first
                tokens = _prompt_tokens(model, block)
                logs = torch.stack([mask[block, token].log() for token in tokens])
                columns = torch.zeros(k.shape[2], dtype=q.dtype)
                columns = torch.cat([columns[:start], logs, columns[start + len(tokens):]])
                logits = logits + columns
            return logits.softmax(-1) @ v

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", attention)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        monkeypatch.undo()
        assert len(calls) == sum(model.stage_depths)
        grads.append(torch.autograd.grad(loss, mask)[0])
    return torch.stack(grads)


@pytest.mark.parametrize("method", ["e2vpt", "vpt-deep", "vpt-shallow"])
def test_swin_column_scores_equal_autograd_on_explicit_masks(method, batches, monkeypatch):
    model = _model(method)
    scores = importance_pass(model, batches)
    check_mask_score(scores, "kv", per_prompt_layer(model, _kv_mask_gradients(model, batches)))
    logit = _logit_mask_gradients(model, batches, monkeypatch)
    check_mask_score(scores, "logit", per_prompt_layer(model, logit))
    torch.testing.assert_close(pick(scores, token_scores="kv").token, scores["kv"])
    if model.config.deep_prompts:  # the LayerNorm cancels the token mask, not these
        assert scores["kv"].min() > 100 * scores["token"].max()
        assert scores["logit"].min() > 100 * scores["token"].max()


def test_swin_scores_follow_the_kept_tokens_in_remove_mode(batches, monkeypatch):
    model = _model(prune_mode="remove", masks_per_block=True)
    token_mask = torch.ones(2, P)
    token_mask[0, 1] = token_mask[1, 0] = 0.0
    model.set_masks(token_mask, torch.ones(2, P, R))
    scores = importance_pass(model, batches)
    check_mask_score(scores, "kv", _kv_mask_gradients(model, batches))
    check_mask_score(scores, "logit", _logit_mask_gradients(model, batches, monkeypatch))
    assert torch.all(scores["kv_layer"][token_mask == 0] == 0)


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
