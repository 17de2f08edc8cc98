"""Token scores for deep prompts, each against a direct computation: autograd on an
explicit mask placed by hooks (keys/values) or by a hand-written attention (logits), the
prompts' own gradient (Σ|g ⊙ p|), and explicit removal (leave-one-out)."""

from __future__ import annotations

import pytest
import torch
from score_helpers import (
    check_column_scores,
    check_kept_column_scores,
    direct_taylor,
    kv_mask_gradients,
    logit_mask_gradients,
)
from torch.utils.data import DataLoader, TensorDataset
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.prune import compute_importance, noretrain, select_masks
from e2vpt_core.prune.importance import importance_pass, pick
from e2vpt_core.prune.noretrain import in_memory, leave_one_out, masked_metrics
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

P, T, R = 5, 2, 4
PREFIX = 1  # the tiny ViT's CLS token


def _model(method: str = "e2vpt", **fields) -> torch.nn.Module:
    kv = T if method == "e2vpt" else None
    config = PromptConfig(method, visual_prompt_len=P, kv_prompt_len=kv, num_segments=R,
                          **fields)
    return create_model(tiny_vit(seed=4), 4, config).double().eval()


@pytest.fixture(scope="module")
def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(12, 3, 32, 32, generator=generator).double()
    labels = torch.randint(0, 4, (12,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=4, shuffle=False)


def _prompt_columns(model, block: int) -> list[int]:
    """Tokens whose columns block `block` holds, in sequence order."""
    layer = block if model.config.deep_prompts else 0
    kept = model.layer_kept_tokens()[layer].tolist()
    return kept if model.config.prune_mode == "remove" else list(range(P))


def _kv_mask_gradients(model, loader) -> torch.Tensor:
    """(batches, depth, P) dL/dm for an explicit mask m on the prompts' key and value rows
    of every block."""
    projections = [block.attn.qkv for block in model.backbone.blocks]
    return kv_mask_gradients(model, loader, projections,
                             lambda index: _prompt_columns(model, index), PREFIX)


def _logit_mask_gradients(model, loader, monkeypatch) -> torch.Tensor:
    """(batches, depth, P) dL/dm for log m added to the prompts' attention logits."""
    blocks = len(model.backbone.blocks)
    return logit_mask_gradients(model, loader, blocks,
                                lambda index: _prompt_columns(model, index), monkeypatch,
                                attention_calls=blocks, prefix=PREFIX)


@pytest.mark.parametrize("method", ["e2vpt", "vpt-deep", "vpt-shallow"])
def test_key_value_and_logit_scores_equal_autograd_on_explicit_masks(method, loader,
                                                                     monkeypatch):
    model = _model(method)
    check_column_scores(model, importance_pass(model, loader),
                        _kv_mask_gradients(model, loader),
                        _logit_mask_gradients(model, loader, monkeypatch))


def test_scores_follow_the_kept_columns_in_remove_mode(loader, monkeypatch):
    model = _model(prune_mode="remove", masks_per_block=True)
    token_mask = torch.ones(3, P)
    token_mask[0, 1] = token_mask[2, 0] = token_mask[2, 3] = 0.0
    check_kept_column_scores(model, token_mask, loader,
                             lambda: _kv_mask_gradients(model, loader),
                             lambda: _logit_mask_gradients(model, loader, monkeypatch))


def test_taylor_score_sums_absolute_gradient_times_prompt(loader):
    model = _model()
    expected = direct_taylor(model, loader)
    scores = importance_pass(model, loader)
    torch.testing.assert_close(scores["taylor_layer"], expected)
    torch.testing.assert_close(scores["taylor"], expected.sum(0))
    # the absolute value inside the sum: the signed inner product is the token mask's
    # gradient, which the LayerNorm cancels
    assert scores["taylor"].min() > 100 * scores["token"].max()
    picked = compute_importance(model, loader, token_scores="taylor")
    torch.testing.assert_close(picked.token, expected.sum(0))
    with pytest.raises(ValueError, match="no signed variant"):
        compute_importance(model, loader, signed=True, token_scores="taylor")


def test_a_minus_infinity_logit_bias_removes_the_token(loader):
    model, removed = _model(), _model(prune_mode="remove")
    images = next(iter(loader))[0]
    mask = torch.ones(P)
    mask[2] = 0.0
    removed.set_masks(mask, torch.ones(P, R) * mask[:, None])
    with torch.no_grad(), model.column_probes() as (_scale, bias):
        bias[:, 2] = float("-inf")
        probed = model(images)
    torch.testing.assert_close(probed, removed(images))


def _removed(model, token: int, layer: int | None = None) -> torch.nn.Module:
    """A model built without `token` (in `layer` only, with masks per block): the prompt
    tensor has one row fewer; every other trained tensor is copied."""
    config = model.config
    if layer is None:
        smaller = create_model(model.backbone, 4, config.replace(visual_prompt_len=P - 1))
    else:
        smaller = create_model(model.backbone, 4,
                               config.replace(visual_prompt_len=P, prune_mode="remove"))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    keep = [k for k in range(P) if k != token]
    if layer is None:
        state["visual_prompts"] = state["visual_prompts"][:, keep]
        state["token_mask"] = state["token_mask"][..., keep]
        state["segment_mask"] = state["segment_mask"][..., keep, :]
    else:
        state["token_mask"] = state["token_mask"].clone()
        state["token_mask"][layer, token] = 0.0
    smaller.load_state_dict(state, strict=False)
    return smaller.double().eval()


def _mean_loss(model, loader) -> float:
    losses = [torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
              for x, y in loader]
    return float(sum(losses) / len(loader.dataset))


@pytest.mark.parametrize("per_block", [False, True])
def test_leave_one_out_equals_explicit_removal(per_block, loader):
    model = _model(masks_per_block=per_block)
    with torch.no_grad():
        scores = leave_one_out(model, in_memory(loader))
        full = _mean_loss(model, loader)
        expected = [_mean_loss(_removed(model, k), loader) - full for k in range(P)]
        torch.testing.assert_close(scores["loo"], torch.tensor(expected), rtol=1e-5,
                                   atol=1e-7)
        if per_block:
            layer = [[_mean_loss(_removed(model, k, at), loader) - full for k in range(P)]
                     for at in range(3)]
            torch.testing.assert_close(scores["loo_layer"], torch.tensor(layer), rtol=1e-5,
                                       atol=1e-7)
        else:
            assert "loo_layer" not in scores
    picked = pick({**importance_pass(model, loader), **scores}, token_scores="loo")
    torch.testing.assert_close(picked.token, scores["loo"])


def test_masked_metrics_restore_the_model(loader):
    model = _model()
    batches = in_memory(loader)
    before = model(batches[0][0])
    token = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    metrics = masked_metrics(model, batches, token, torch.ones(P, R), "remove")
    assert set(metrics) == {"top1", "loss"}
    assert model.config.prune_mode == "zero" and torch.all(model.token_mask == 1)
    torch.testing.assert_close(model(batches[0][0]), before)


def test_masks_per_block_rank_layer_token_pairs_by_the_new_scores(loader):
    model = _model(masks_per_block=True)
    scores = {**importance_pass(model, loader), **leave_one_out(model, in_memory(loader))}
    for name in ("kv", "logit", "taylor", "loo"):
        picked = pick(scores, token_scores=name, per_layer=True)
        torch.testing.assert_close(picked.token, scores[f"{name}_layer"])
        selection = select_masks(picked.token, picked.segment, 0.5)
        assert selection.num_kept_tokens == 15 - 8  # round(0.5 · 3 layers · 5 tokens)
        lowest = picked.token.flatten().argmin()
        assert selection.token_mask.flatten()[lowest] == 0


def _trained_position_run(backbone: str, store_dir, prompts: int) -> tuple[RunStore, str]:
    """A one-epoch E²VPT run on the built-in position task, evaluated on val."""
    config = TrainConfig(backbone=backbone, dataset="builtin:position", epochs=1,
                         batch_size=100, eval_splits=("val",), device="cpu",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=prompts,
                                             kv_prompt_len=1, num_segments=4))
    store = RunStore(store_dir)
    return store, train_run(config, store).run_id


def test_a_large_eval_split_is_streamed_not_held(monkeypatch, tiny_backbone, tmp_path):
    store, run_id = _trained_position_run(tiny_backbone, tmp_path, prompts=2)
    _, held, _ = noretrain.run_batches(store, run_id)
    monkeypatch.setattr(noretrain, "MAX_IN_MEMORY", 100)
    model, streamed, _ = noretrain.run_batches(store, run_id)
    assert isinstance(held, list) and isinstance(streamed, DataLoader)
    ones = torch.ones(2), torch.ones(2, 4)
    assert masked_metrics(model, held, *ones) == masked_metrics(model, streamed, *ones)


def test_stored_leave_one_out_is_scored_on_the_training_split(tiny_backbone, tmp_path):
    """Scored on val, the split the no-retrain curves are measured on, leave-one-out would
    choose in-sample; it reads the training split (eval transform), as the gradient scores."""
    store, run_id = _trained_position_run(tiny_backbone, tmp_path, prompts=3)
    stored = noretrain.run_leave_one_out(store, run_id)
    model, train_batches, split = noretrain.run_batches(store, run_id, "train")
    _, val_batches, _ = noretrain.run_batches(store, run_id)
    assert split == "train"
    with torch.no_grad():
        torch.testing.assert_close(stored["loo"], leave_one_out(model, train_batches)["loo"])
        assert not torch.allclose(stored["loo"], leave_one_out(model, val_batches)["loo"])
    assert store.has_tensors(run_id, noretrain.LOO)


def test_column_scores_are_refused_on_blocks_they_cannot_resequence(loader):
    from timm.models.vision_transformer import ResPostBlock

    model = create_model(tiny_vit(seed=4, block_fn=ResPostBlock), 4,
                         PromptConfig("vpt-deep", visual_prompt_len=P, num_segments=R)).double()
    assert not model.supports_column_probes()
    scores = importance_pass(model, loader)
    assert "kv" not in scores and "taylor" in scores
    with pytest.raises(ValueError, match="standard ViT or Swin blocks"):
        pick(scores, token_scores="kv")
    with pytest.raises(ValueError, match="standard vision_transformer.Block; block 0 is "
                                         "ResPostBlock"):
        model.column_probes().__enter__()
