"""Importance scores against a direct autograd computation, and the running tracker."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.prune import ImportanceTracker, compute_importance, normalize_segment_scores
from e2vpt_core.prune.importance import importance_pass

CONFIG = PromptConfig("e2vpt", visual_prompt_len=5, kv_prompt_len=2, num_segments=4,
                      prompt_dropout=0.5)



@pytest.fixture(scope="module")
def model():
    return create_model(tiny_vit(seed=2), 4, CONFIG).double()


@pytest.fixture(scope="module")
def loader():
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(12, 3, 32, 32, generator=generator).double()
    labels = torch.randint(0, 4, (12,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=4, shuffle=False)


def _direct_gradients(model, loader):
    """dL/dmask per batch, by autograd on mask tensors passed in functionally (eval mode)."""
    was_training = model.training
    model.eval()
    grads = []
    for images, labels in loader:
        token = model.token_mask.detach().clone().requires_grad_(True)
        segment = model.segment_mask.detach().clone().requires_grad_(True)
        logits = functional_call(model, {"token_mask": token, "segment_mask": segment},
                                 (images,))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        grads.append(torch.autograd.grad(loss, (token, segment)))
    model.train(was_training)
    return torch.stack([g[0] for g in grads]), torch.stack([g[1] for g in grads])


def test_scores_equal_mean_abs_and_mean_signed_gradients(model, loader):
    token_grads, segment_grads = _direct_gradients(model, loader)
    model.train()  # prompt dropout 0.5 would make the scores random if left on
    paper = compute_importance(model, loader)
    reference = compute_importance(model, loader, signed=True)
    assert model.training
    assert paper.batches == reference.batches == 3
    torch.testing.assert_close(paper.token, token_grads.abs().mean(0).float())
    torch.testing.assert_close(paper.segment, segment_grads.abs().mean(0).float())
    torch.testing.assert_close(reference.token, token_grads.mean(0).float())
    torch.testing.assert_close(reference.segment, segment_grads.mean(0).float())
    # |mean| ≤ mean |·|, strictly where signs differ across batches
    assert torch.all(paper.segment >= reference.segment.abs() - 1e-9)
    assert (reference.segment < 0).any()
    flips = (segment_grads > 0).any(0) & (segment_grads < 0).any(0)
    assert flips.any()
    assert torch.all(paper.segment[flips] > reference.segment[flips].abs())


def test_scoring_leaves_parameters_and_their_gradients_alone(model, loader):
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.head.weight.grad = torch.full_like(model.head.weight, 7.0)
    model.visual_prompts.grad = None
    compute_importance(model, loader, max_batches=1)
    assert torch.all(model.head.weight.grad == 7.0)
    assert model.visual_prompts.grad is None and model.kv_prompts.grad is None
    assert model.token_mask.grad is None and not model.token_mask.requires_grad
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    model.head.weight.grad = None


def test_token_mask_gradient_is_the_sum_of_its_segment_gradients(model, loader):
    """Why `token_scores='segments'` exists: pre-norm LayerNorm makes a whole-token scaling
    (nearly) invisible, so dL/dtoken is only the row sum of the segment gradients."""
    scores = importance_pass(model, loader)
    torch.testing.assert_close(scores["token_signed"], scores["segment_signed"].sum(-1))
    assert scores["token"].max() < 1e-3 * scores["segment"].max()
    by_segments = compute_importance(model, loader, token_scores="segments")
    torch.testing.assert_close(by_segments.token, scores["segment"].sum(-1))
    with pytest.raises(ValueError, match="token_scores"):
        compute_importance(model, loader, token_scores="bogus")


def test_normalised_segment_scores_are_unit_rows_with_the_same_order(model, loader):
    raw = compute_importance(model, loader)
    normalized = compute_importance(model, loader, normalize=True)
    torch.testing.assert_close(normalized.segment.norm(dim=-1), torch.ones(5))
    assert torch.equal(raw.segment.argsort(-1), normalized.segment.argsort(-1))
    assert torch.equal(raw.token, normalized.token)
    assert torch.equal(normalize_segment_scores(torch.zeros(2, 3)), torch.zeros(2, 3))


class _FakeMasks:
    masks_per_block = False

    def __init__(self, token, segment):
        self.token_mask = torch.nn.Parameter(torch.ones_like(token), requires_grad=False)
        self.segment_mask = torch.nn.Parameter(torch.ones_like(segment), requires_grad=False)
        self.token_mask.grad, self.segment_mask.grad = token, segment

    def layer_mask_grads(self):
        return None


def test_tracker_running_mean_and_bias_corrected_ema():
    steps = [(torch.tensor([1.0, -2.0]), torch.tensor([[1.0], [-1.0]])),
             (torch.tensor([-3.0, 2.0]), torch.tensor([[3.0], [1.0]])),
             (torch.tensor([2.0, 5.0]), torch.tensor([[-2.0], [4.0]]))]
    mean, ema = ImportanceTracker(), ImportanceTracker(decay=0.5)
    for token, segment in steps:
        mean.update(_FakeMasks(token, segment))
        ema.update(_FakeMasks(token, segment))
    snap = mean.snapshot()
    assert int(snap["steps"]) == 3
    torch.testing.assert_close(snap["token"], torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(snap["token_signed"], torch.tensor([0.0, 5.0 / 3.0]))
    torch.testing.assert_close(snap["segment"], torch.tensor([[2.0], [2.0]]))
    # EMA 0.5: weights 0.125, 0.25, 0.5 over (1 - 0.125)
    expected = (0.125 * 1.0 + 0.25 * 3.0 + 0.5 * 2.0) / 0.875
    assert ema.snapshot()["token"][0].item() == pytest.approx(expected)
    constant = ImportanceTracker(decay=0.9)
    constant.update(_FakeMasks(torch.tensor([4.0]), torch.tensor([[4.0]])))
    assert constant.snapshot()["token"].item() == pytest.approx(4.0)


def test_tracker_reads_a_real_backward_and_matches_a_pass(model, loader):
    tracker = ImportanceTracker()
    model.eval()
    for images, labels in loader:
        with model.mask_gradients():
            torch.nn.functional.cross_entropy(model(images), labels).backward()
        tracker.update(model)
    for param in model.parameters():
        param.grad = None
    snap, scores = tracker.snapshot(), importance_pass(model, loader)
    for key in ("token", "segment", "token_signed", "segment_signed"):
        torch.testing.assert_close(snap[key], scores[key])


def test_per_layer_scores_split_the_mask_gradient_by_layer(model, loader):
    """Per-layer gradient of token k at layer l = d/dε L(prompt[l, k] · (1 + ε)) at ε = 0
    = <dL/dprompt[l, k], prompt[l, k]> (masks at 1); segments likewise over their dims."""
    model.eval()
    for param in model.parameters():
        param.grad = None
    images, labels = next(iter(loader))
    plain = model(images)
    with model.mask_gradients(per_layer=True):
        probed = model(images)
        torch.nn.functional.cross_entropy(probed, labels).backward()
    assert torch.equal(plain, probed)  # the probes are ones: same forward
    token_layer, segment_layer = model.layer_mask_grads()
    prompts, grads = model.visual_prompts.detach(), model.visual_prompts.grad
    layers, tokens, width = prompts.shape
    contribution = (grads * prompts).reshape(layers, tokens, CONFIG.num_segments, -1).sum(-1)
    torch.testing.assert_close(segment_layer, contribution)
    torch.testing.assert_close(token_layer, contribution.sum(-1))
    torch.testing.assert_close(token_layer.sum(0), model.token_mask.grad)
    torch.testing.assert_close(segment_layer.sum(0), model.segment_mask.grad)
    model.clear_mask_grads()
    assert model.layer_mask_grads() is None and model.token_mask.grad is None
    for param in model.parameters():
        param.grad = None
    scores = importance_pass(model, loader)
    assert scores["token_layer"].shape == (layers, tokens)
    assert scores["segment_layer"].shape == (layers, tokens, CONFIG.num_segments)
    torch.testing.assert_close(scores["token_layer"].sum(0) >= scores["token"] - 1e-9,
                               torch.ones(tokens, dtype=torch.bool))


def test_tracker_and_pass_refuse_bad_use(model):
    with pytest.raises(ValueError, match="mask_gradients"):
        ImportanceTracker().update(_no_grad_masks())
    with pytest.raises(ValueError, match="no updates"):
        ImportanceTracker().snapshot()
    with pytest.raises(ValueError, match="decay"):
        ImportanceTracker(decay=1.0)
    with pytest.raises(ValueError, match="no batches"):
        importance_pass(model, [])
    linear = create_model(tiny_vit(), 4, PromptConfig("linear"))
    with pytest.raises(ValueError, match="no visual prompts"):
        importance_pass(linear, [])


def _no_grad_masks():
    masks = _FakeMasks(torch.ones(2), torch.ones(2, 1))
    masks.token_mask.grad = None
    return masks
