"""Direct computations of token scores, shared by the ViT and Swin score tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.func import functional_call

from e2vpt_core.prune.importance import importance_pass


def direct_taylor(model: torch.nn.Module,
                  batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """(L, P) mean over batches of Σ|∂L/∂p ⊙ p|, by autograd on a copy of the prompts."""
    per_batch = []
    for images, labels in batches:
        prompts = model.visual_prompts.detach().clone().requires_grad_(True)
        logits = functional_call(model, {"visual_prompts": prompts}, (images,))
        grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, labels), prompts)
        per_batch.append((grad * prompts.detach()).abs().sum(-1))
    return torch.stack(per_batch).mean(0).float()


def per_prompt_layer(model: torch.nn.Module, grads: torch.Tensor) -> torch.Tensor:
    """(batches, blocks, P) → (batches, layers, P): shallow prompts have one layer, probed
    in every block."""
    return grads if model.config.deep_prompts else grads.sum(1, keepdim=True)


def check_mask_score(scores: dict, name: str, layer_grads: torch.Tensor) -> None:
    """A stored column score against per-batch mask gradients (batches, layers, P): E|g| and
    E g per layer, and over layers summed first."""
    torch.testing.assert_close(scores[f"{name}_layer_signed"], layer_grads.mean(0).float())
    torch.testing.assert_close(scores[f"{name}_layer"], layer_grads.abs().mean(0).float())
    torch.testing.assert_close(scores[f"{name}_signed"], layer_grads.sum(1).mean(0).float())
    torch.testing.assert_close(scores[name], layer_grads.sum(1).abs().mean(0).float())


def kv_mask_gradients(model: torch.nn.Module,
                      batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      projections: list[torch.nn.Linear],
                      prompt_tokens: Callable[[int], list[int]],
                      prefix: int = 0) -> torch.Tensor:
    """(batches, len(projections), P) dL/dm for an explicit mask m multiplying the prompt
    tokens' key and value rows, placed by forward hooks on the blocks' qkv `projections`;
    block i holds `prompt_tokens(i)` in its rows after `prefix` other rows."""
    grads = []
    for images, labels in batches:
        mask = torch.ones(len(projections), model.prompt_len, dtype=torch.double,
                          requires_grad=True)

        def hook(module, _inputs, output, mask=mask):
            index = projections.index(module)
            tokens = prompt_tokens(index)
            rows = torch.stack([mask[index, token] for token in tokens])
            rest = output.shape[1] - prefix - len(tokens)
            scale = torch.cat([rows.new_ones(prefix), rows, rows.new_ones(rest)])
            width = module.in_features  # queries first, then keys and values
            return torch.cat([output[..., :width], output[..., width:] * scale[:, None]],
                             dim=-1)

        handles = [projection.register_forward_hook(hook) for projection in projections]
        try:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            grads.append(torch.autograd.grad(loss, mask)[0])
        finally:
            for handle in handles:
                handle.remove()
    return torch.stack(grads)


def logit_mask_gradients(model: torch.nn.Module,
                         batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                         probed_blocks: int, prompt_tokens: Callable[[int], list[int]],
                         monkeypatch, attention_calls: int,
                         prefix: int = 0) -> torch.Tensor:
    """(batches, probed_blocks, P) dL/dm for log m added to the prompt tokens' attention
    logit columns, in a hand-written softmax attention replacing
    scaled_dot_product_attention; the first `probed_blocks` of the forward's
    `attention_calls` calls are probed, block i holding `prompt_tokens(i)` after the
    key-value prompts and `prefix` columns."""
    grads = []
    for images, labels in batches:
        mask = torch.ones(probed_blocks, model.prompt_len, dtype=torch.double,
                          requires_grad=True)
        calls = []

        def attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=None, calls=calls,
                      mask=mask, **_):
            block = len(calls)
            calls.append(block)
            logits = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
            if attn_mask is not None:
                logits = logits + attn_mask
            if block < probed_blocks:
                start = k.shape[2] - q.shape[2] + prefix  # key-value prompts come first
                tokens = prompt_tokens(block)
                logs = torch.stack([mask[block, token].log() for token in tokens])
                columns = logits.new_zeros(k.shape[2])
                logits = logits + torch.cat([columns[:start], logs,
                                             columns[start + len(tokens):]])
            return logits.softmax(-1) @ v

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", attention)
        monkeypatch.setattr(model, "skip_unread_tokens", False, raising=False)  # every query
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        monkeypatch.undo()
        assert len(calls) == attention_calls
        grads.append(torch.autograd.grad(loss, mask)[0])
    return torch.stack(grads)


def check_column_scores(model: torch.nn.Module, scores: dict, kv_grads: torch.Tensor,
                        logit_grads: torch.Tensor) -> None:
    """Stored `kv` and `logit` against the direct per-block mask gradients; for deep
    prompts both far above the token-mask gradient that the LayerNorm cancels."""
    check_mask_score(scores, "kv", per_prompt_layer(model, kv_grads))
    check_mask_score(scores, "logit", per_prompt_layer(model, logit_grads))
    if model.config.deep_prompts:
        assert scores["kv"].min() > 100 * scores["token"].max()
        assert scores["logit"].min() > 100 * scores["token"].max()


def check_kept_column_scores(model: torch.nn.Module, token_mask: torch.Tensor, batches,
                             kv_grads: Callable[[], torch.Tensor],
                             logit_grads: Callable[[], torch.Tensor]) -> None:
    """Masks per block in `remove` mode: the column scores follow each layer's kept tokens
    (direct gradients from `kv_grads()` / `logit_grads()`), and a removed token scores 0."""
    segments = model.segment_mask.shape[-1]
    model.set_masks(token_mask, torch.ones(*token_mask.shape, segments))
    scores = importance_pass(model, batches)
    check_column_scores(model, scores, kv_grads(), logit_grads())
    assert torch.all(scores["kv_layer"][token_mask == 0] == 0)
