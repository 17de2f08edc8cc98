"""The frozen-feature probes: what they read is what timm's forward computes, and the
token-position probe reads a token's grid index from its content, and only from it."""

from __future__ import annotations

import numpy as np
import timm
import torch

from benchmarks.feature_probe import representations
from benchmarks.token_position_probe import patch_tokens_per_block, token_index_accuracy
from e2vpt_core.pretrain import to_input


def _tiny_vit(position_scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32,
                              depth=2, num_heads=2, num_classes=0).eval()
    with torch.no_grad():
        model.pos_embed.copy_(torch.randn_like(model.pos_embed) * position_scale)
    return model


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)


def _timm_forward(model: torch.nn.Module,
                  images: np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """timm's own forward_features, and every block's output caught by a hook on the way."""
    outputs = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: outputs.append(out))
             for block in model.blocks]
    with torch.no_grad():
        final = model.forward_features(to_input(images, torch.device("cpu")))
    for hook in hooks:
        hook.remove()
    return final, outputs


def test_tokens_per_depth_are_the_blocks_outputs_in_patch_order():
    model = _tiny_vit(1.0)
    images = _images(3, 0)
    tokens = patch_tokens_per_block(model, images)
    _, outputs = _timm_forward(model, images)
    assert len(tokens) == 3  # the input to block 1, then after each of the two blocks
    for depth, output in enumerate(outputs, start=1):
        expected = output[:, model.num_prefix_tokens:].reshape(3 * 16, 32)
        np.testing.assert_allclose(tokens[depth], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_the_probe_reads_the_position_embedding_and_nothing_else():
    train, test = _images(40, 1), _images(40, 2)  # noise: no patch looks like its place
    with_position = token_index_accuracy(_tiny_vit(1.0), train, test)
    without = token_index_accuracy(_tiny_vit(0.0), train, test)
    assert len(with_position) == len(without) == 3
    assert with_position[0] > 95.0  # chance is 1/16 = 6.25 %
    assert without[0] < 20.0


def test_feature_probe_representations_are_timms_final_and_per_block_cls():
    model = _tiny_vit(1.0)
    images = _images(3, 3)
    features = representations(model, images)
    final, outputs = _timm_forward(model, images)
    cls_per_block = [out[:, 0] for out in outputs]
    np.testing.assert_allclose(features["cls"], final[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features["patches"], final[:, 1:].mean(1).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features["grid"], final[:, 1:].flatten(1).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features["blocks"], torch.cat(cls_per_block, 1).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(features["pixels"], images.reshape(3, -1) / 255.0)
