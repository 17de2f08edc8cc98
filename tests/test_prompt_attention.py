"""The attention probe against a hand-written forward: what the prompts look at, per block."""

from __future__ import annotations

import math

import pytest
import torch
from vit_helpers import tiny_vit

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.models.attention import prompt_attention


def _hand_weights(model, image: torch.Tensor) -> list[torch.Tensor]:
    """Per block, head-averaged softmax(q kᵀ / √d) written out from the weights, with the
    masked prompts inserted (only the kept ones in `remove` mode) and the KV prompts first."""
    backbone, config = model.backbone, model.config
    x = backbone.norm_pre(backbone._pos_embed(backbone.patch_embed(image[None])))
    prompts = model.visual_prompts * model.prompt_mask()
    kept = model.layer_kept_tokens()
    prefix, held, weights = model.num_prefix_tokens, 0, []
    for index, block in enumerate(backbone.blocks):
        layer = index if config.deep_prompts else 0
        if index == 0 or config.deep_prompts:
            rows = prompts[layer]
            if config.prune_mode == "remove":
                rows = rows[kept[layer]]
            x = torch.cat([x[:, :prefix], rows[None], x[:, prefix + held:]], dim=1)
            held = rows.shape[0]
        attn = block.attn
        h = block.norm1(x)
        qkv = h @ attn.qkv.weight.T + attn.qkv.bias
        heads, dim = attn.num_heads, attn.head_dim
        q, k, v = (qkv[0, :, i * heads * dim:(i + 1) * heads * dim]
                   .reshape(-1, heads, dim).transpose(0, 1) for i in range(3))
        if model.kv_prompts is not None:
            k = torch.cat([model.kv_prompts[index], k], dim=1)
            v = torch.cat([model.kv_prompts[index], v], dim=1)
        w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dim), dim=-1)
        weights.append(w.mean(0))
        out = (w @ v).transpose(0, 1).reshape(1, -1, heads * dim)
        x = x + out @ attn.proj.weight.T + attn.proj.bias
        x = x + block.mlp(block.norm2(x))
    return weights


@pytest.mark.parametrize("mode", ["zero", "remove"])
@pytest.mark.parametrize("method", ["e2vpt", "vpt-deep", "vpt-shallow"])
def test_weights_equal_a_hand_written_attention_with_masks(method, mode):
    torch.manual_seed(0)
    config = PromptConfig(method, visual_prompt_len=4, num_segments=4, prune_mode=mode,
                          **({"kv_prompt_len": 3} if method == "e2vpt" else {}))
    model = create_model(tiny_vit(), 5, config).eval()
    with torch.no_grad():
        model.visual_prompts.normal_(0, 1.0)  # prompts that matter
        if model.kv_prompts is not None:
            model.kv_prompts.normal_(0, 1.0)
    model.set_masks(torch.tensor([1.0, 0.0, 1.0, 1.0]),
                    torch.tensor([[1.0, 1, 0, 1]] * 4))
    image = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(3))
    probe = prompt_attention(model, image)
    with torch.no_grad():
        hand = _hand_weights(model, image)

    prefix, patches = 1, model.backbone.patch_embed.num_patches
    kv = config.kv_prompt_len
    order = [0, 2, 3] if mode == "remove" else [0, 1, 2, 3]
    assert probe.grid == (4, 4) and probe.prompt_to_patches.shape == (3, 4, patches)
    for index, w in enumerate(hand):
        held = w.shape[0] - prefix - patches
        assert held == len(order)  # every block holds the (kept) prompts
        prompt_cols = kv + prefix + torch.arange(held)
        patch_cols = slice(kv + prefix + held, kv + prefix + held + patches)
        assert torch.allclose(probe.cls_to_prompts[index, order], w[0, prompt_cols], atol=1e-5)
        assert torch.allclose(probe.cls_to_kv[index], w[0, :kv], atol=1e-5)
        assert torch.allclose(probe.cls_to_patches[index], w[0, patch_cols].sum(), atol=1e-5)
        assert torch.allclose(probe.prompt_to_patches[index, order],
                              w[prefix + torch.arange(held), patch_cols], atol=1e-5)
        if mode == "remove":
            assert torch.isnan(probe.cls_to_prompts[index, 1])
        total = probe.cls_to_prompts[index].nansum() + probe.cls_to_kv[index].sum() \
            + probe.cls_to_patches[index] + w[0, kv:kv + prefix].sum()
        assert torch.allclose(total, torch.tensor(1.0), atol=1e-5)  # every column counted


def test_methods_without_prompts_and_swin_are_refused():
    from swin_helpers import tiny_swin

    image = torch.randn(3, 32, 32)
    with pytest.raises(ValueError, match="has no prompts"):
        prompt_attention(create_model(tiny_vit(), 5, PromptConfig("lora")), image)
    with pytest.raises(ValueError, match="ViT backbones"):
        prompt_attention(create_model(tiny_swin(), 5, PromptConfig("vpt-deep")), image)
    with pytest.raises(ValueError, match="class token"):
        prompt_attention(create_model(tiny_vit(class_token=False, global_pool="avg"), 5,
                                      PromptConfig("e2vpt")), image)


def test_a_forward_the_probe_cannot_reproduce_is_refused(monkeypatch):
    model = create_model(tiny_vit(), 5, PromptConfig("e2vpt", num_segments=4)).eval()
    monkeypatch.setattr(model.backbone.blocks[1].attn, "scale", 0.5)  # not what SDPA used
    with pytest.raises(RuntimeError, match="block 1: the recomputed attention differs"):
        prompt_attention(model, torch.randn(3, 32, 32))


def test_the_cli_reports_a_stored_runs_attention(tmp_path, tiny_backbone, capsys):
    from cli_helpers import last_json

    from e2vpt_core.cli import main
    from e2vpt_core.store import RunStore
    from e2vpt_core.train import TrainConfig, train_run

    store = RunStore(tmp_path)
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=100, eval_splits=("val",), device="cpu",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=3, kv_prompt_len=2,
                                             num_segments=4))
    run_id = train_run(config, store).run_id
    assert main(["attention", run_id, "--store", str(tmp_path), "--split", "val",
                 "--index", "5", "--json"]) == 0
    out = capsys.readouterr().out
    result = last_json(out)
    assert (result["run_id"], result["split"], result["index"]) == (run_id, "val", 5)
    blocks = len(result["cls_to_prompts"])
    assert blocks == 2 and len(result["cls_to_prompts"][0]) == 3
    assert len(result["cls_to_kv"][0]) == 2 and result["kept_tokens"] == [1, 1, 1]
    assert "block | visual prompts | key-value prompts | patches" in out
    assert main(["attention", run_id, "--store", str(tmp_path), "--index", "100000"]) == 2
    assert "--index 100000 is outside split 'test'" in capsys.readouterr().err
