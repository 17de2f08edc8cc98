"""Activation checkpointing (`set_grad_checkpointing`, timm's convention) changes memory, not
results: the same logits and the same gradient for every trainable tensor, every method."""

from __future__ import annotations

import pytest
import torch
from swin_helpers import tiny_swin
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.methods import FAMILIES, REGISTRY

BACKBONES = {"vit": tiny_vit, "swin": tiny_swin}
CASES = [(name, family, mode) for name, method in REGISTRY.items() for family in FAMILIES
         if method.supports(family) for mode in (("zero", "remove") if method.prunable
                                                  else ("zero",))]


def _logits_and_grads(model, images, labels, seed: int):
    """One training-mode forward and backward, prompt dropout drawn from `seed`."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with model.mask_gradients(per_layer=True) if model.visual_prompts is not None \
            else torch.enable_grad():
        logits = model(images)
        torch.nn.functional.cross_entropy(logits, labels).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


@pytest.mark.parametrize(("name", "family", "mode"), CASES)
def test_checkpointing_gives_the_same_logits_and_gradients(name, family, mode):
    config = PromptConfig(name, num_segments=4, prompt_dropout=0.3, prune_mode=mode)
    model = create_model(BACKBONES[family](), 5, config).train()
    if model.visual_prompts is not None:
        token = torch.ones_like(model.token_mask)
        token[..., 1] = 0
        segment = torch.ones_like(model.segment_mask)
        segment[..., 0, 2] = 0
        model.set_masks(token, segment)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 3, 4])

    plain_logits, plain = _logits_and_grads(model, images, labels, seed=7)
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    logits, grads = _logits_and_grads(model, images, labels, seed=7)
    assert torch.allclose(logits, plain_logits, atol=1e-6)
    assert grads.keys() == plain.keys() and grads
    for key, grad in grads.items():
        assert torch.allclose(grad, plain[key], atol=1e-6, rtol=1e-5), key


def test_checkpointing_recomputes_blocks_in_backward_and_only_when_autograd_records():
    """Checkpointed, the blocks run twice per step (forward, then again in backward); under
    no_grad, and with it off, once."""
    model = create_model(tiny_vit(), 5, PromptConfig("e2vpt", num_segments=4)).train()
    calls = []
    for block in model.backbone.blocks:
        block.attn.qkv.register_forward_hook(lambda *_: calls.append(1))
    images = torch.randn(2, 3, 32, 32)
    depth = len(model.backbone.blocks)

    model(images).sum().backward()
    assert len(calls) == depth
    calls.clear()
    model.set_grad_checkpointing()
    model(images).sum().backward()
    assert len(calls) == 2 * depth
    calls.clear()
    with torch.no_grad():
        model(images)
    assert len(calls) == depth


def test_a_run_and_its_rewind_train_with_checkpointing_as_asked(tmp_path, tiny_backbone,
                                                                 monkeypatch):
    from e2vpt_core.models.common import PromptedModel
    from e2vpt_core.prune import rewind_run
    from e2vpt_core.prune.importance import compute_run_importance
    from e2vpt_core.store import RunStore
    from e2vpt_core.train import TrainConfig, train_run

    seen = []
    setter = PromptedModel.set_grad_checkpointing
    monkeypatch.setattr(PromptedModel, "set_grad_checkpointing",
                        lambda self, enable=True: (seen.append(enable), setter(self, enable)))
    store = RunStore(tmp_path)
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=100, eval_splits=("val",), device="cpu",
                         grad_checkpointing=True,
                         prompt=PromptConfig("vpt-deep", visual_prompt_len=2, num_segments=4))
    parent = train_run(config, store).run_id
    assert seen == [True]
    assert store.get_run(parent)["config"]["grad_checkpointing"] is True
    compute_run_importance(store, parent)
    inherited = rewind_run(store, parent, 0.5, epochs=1)
    assert store.get_run(inherited.run_id)["config"]["grad_checkpointing"] is True
    off = rewind_run(store, parent, 0.5, epochs=1, grad_checkpointing=False)
    assert store.get_run(off.run_id)["config"]["grad_checkpointing"] is False
    assert seen[1:] == [True, False]
