"""LoRA, SSF and Adapter+: what they train, where they act, their init, their parameter
counts on ViT-B/16, merging LoRA, artifacts, Swin, the CLI and the Train page."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from app_helpers import by_label, open_page
from safetensors.torch import load_file
from swin_helpers import tiny_swin
from timm.models.vision_transformer import VisionTransformer
from vit_helpers import VARIANTS, tiny_vit

from e2vpt_core import METHODS, PromptConfig, create_model, load_adapter, merge_lora, save_adapter
from e2vpt_core.cli import build_parser, main
from e2vpt_core.models.peft_layers import SSF_OPS
from e2vpt_core.store import RunStore

DEPTH = 3
PEFT = ("lora", "ssf", "adapter-plus")
HEAD = {"head.weight", "head.bias"}
ALL_TARGETS = "qkv,proj,fc1,fc2"


def _lora(targets: tuple[str, ...]) -> set[str]:
    return {f"tuners.{b}.{t}.lora_{m}" for b in range(DEPTH) for t in targets for m in "ab"}


EXPECTED = {
    "lora": HEAD | _lora(("qkv",)),
    "lora-all": HEAD | _lora(("qkv", "proj", "fc1", "fc2")),
    "ssf": HEAD | {f"tuners.{b}.{op}.{p}" for b in range(DEPTH) for op in SSF_OPS
                   for p in ("scale", "shift")}
    | {f"ssf_{where}.{p}" for where in ("patch_embed", "norm") for p in ("scale", "shift")},
    "adapter-plus": HEAD | {f"post_adapters.{b}.{m}.{p}" for b in range(DEPTH)
                            for m in ("down", "up") for p in ("weight", "bias")}
    | {f"post_adapters.{b}.scale" for b in range(DEPTH)},
}


def _config(name: str, **fields) -> PromptConfig:
    if name == "lora-all":
        return PromptConfig("lora", lora_targets=ALL_TARGETS, **fields)
    return PromptConfig(name, **fields)


def _randomize(model: torch.nn.Module, seed: int = 3) -> None:
    """Move every trainable tensor away from its init, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in model.trainable_parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator, dtype=param.dtype))


def _with_head_of(model: torch.nn.Module, other: torch.nn.Module) -> torch.nn.Module:
    model.head.load_state_dict(other.head.state_dict())
    return model.eval()


@pytest.mark.parametrize("method", PEFT)
def test_the_new_methods_are_offered_with_the_others(method):
    assert method in METHODS
    for command in ("train", "sweep", "params"):
        assert build_parser().parse_args([command, "--method", method]).method == method


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_method_trains_exactly_its_parameters(name, images):
    # Adapter+'s own drop-path off: what is checked is that the backbone's never trains
    fields = {"adapter_drop_path": 0.0} if name == "adapter-plus" else {}
    model = create_model(tiny_vit(drop_rate=0.5, drop_path_rate=0.5), 5, _config(name, **fields))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == EXPECTED[name]
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert not any(m.training for m in model.backbone.modules())
    logits = model(images)
    assert torch.equal(logits, model(images))  # no dropout anywhere
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    for param_name, param in model.named_parameters():
        assert (param.grad is not None) == (param_name in EXPECTED[name]), param_name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", ["lora-all", "ssf"])
def test_lora_and_ssf_start_as_the_frozen_backbone(name, variant, images):
    linear = create_model(tiny_vit(**VARIANTS[variant]), 5, PromptConfig("linear")).eval()
    model = _with_head_of(create_model(tiny_vit(**VARIANTS[variant]), 5, _config(name)), linear)
    with torch.no_grad():
        torch.testing.assert_close(model(images), linear(images), rtol=0, atol=1e-6)


def test_ssf_acts_after_every_op_it_names(images):
    """SSF with random scales and shifts equals the backbone with each one folded into the
    op it follows (the patch embedding, norm1, qkv, proj, norm2, fc1, fc2, the final norm)."""
    model = create_model(tiny_vit(), 5, PromptConfig("ssf")).double().eval()
    _randomize(model)
    folded = copy.deepcopy(model.backbone)
    pairs = [(folded.patch_embed.proj, model.ssf_patch_embed), (folded.norm, model.ssf_norm)]
    for block, tuner in zip(folded.blocks, model.tuners, strict=True):
        ops = {"norm1": block.norm1, "qkv": block.attn.qkv, "proj": block.attn.proj,
               "norm2": block.norm2, "fc1": block.mlp.fc1, "fc2": block.mlp.fc2}
        pairs += [(ops[name], tuner[name]) for name in SSF_OPS]
    with torch.no_grad():
        for op, ssf in pairs:
            op.weight.mul_(ssf.scale.view(-1, *[1] * (op.weight.dim() - 1)))
            op.bias.mul_(ssf.scale).add_(ssf.shift)
    reference = _with_head_of(
        create_model(folded, 5, PromptConfig("linear")).double(), model)
    with torch.no_grad():
        torch.testing.assert_close(model(images.double()), reference(images.double()),
                                   rtol=0, atol=1e-12)


def test_merged_lora_gives_the_same_logits_without_lora(images):
    config = PromptConfig("lora", lora_rank=4, lora_alpha=16.0, lora_targets=ALL_TARGETS)
    model = create_model(tiny_vit(), 5, config).double().eval()
    _randomize(model)
    before = copy.deepcopy(model.backbone.state_dict())
    merged = merge_lora(model)
    assert merged.config.method == "linear" and merged.tuners is None
    assert merged.backbone_name is None and merged.backbone is not model.backbone
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # the LoRA model is left as it was
    lora = model.tuners[1]["fc1"]
    delta = merged.backbone.blocks[1].mlp.fc1.weight - before["blocks.1.mlp.fc1.weight"]
    torch.testing.assert_close(delta, 16.0 / 4 * lora.lora_b @ lora.lora_a)
    with torch.no_grad():
        logits = model(images.double())
        assert not torch.allclose(logits, _with_head_of(create_model(
            tiny_vit(), 5, PromptConfig("linear")).double(), model)(images.double()))
        torch.testing.assert_close(merged(images.double()), logits, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="method 'lora'"):
        merge_lora(create_model(tiny_vit(), 5, PromptConfig("ssf")))


def test_lora_init_and_scale():
    model = create_model(tiny_vit(), 5, PromptConfig("lora", lora_rank=4, lora_alpha=2.0))
    lora = model.tuners[0]["qkv"]
    assert set(model.tuners[0]) == {"qkv"}
    assert lora.lora_a.shape == (4, 48) and lora.lora_b.shape == (144, 4)
    assert torch.count_nonzero(lora.lora_b) == 0 and torch.count_nonzero(lora.lora_a) == 4 * 48
    bound = 1 / 48 ** 0.5  # kaiming-uniform with a = √5, nn.Linear's init: 1/√fan_in
    assert 0.9 * bound < lora.lora_a.abs().max() <= bound
    assert lora.scaling == 0.5


def test_adapter_plus_acts_on_each_blocks_output_and_starts_near_identity(images):
    model = create_model(tiny_vit(), 5, PromptConfig("adapter-plus")).double().eval()
    adapter = model.post_adapters[0]
    for layer in (adapter.down, adapter.up):  # Houlsby init: N(0, 0.01) cut at ±2 std
        assert layer.weight.abs().max() <= 0.02 and torch.count_nonzero(layer.bias) == 0
        assert 0.006 < layer.weight.std() < 0.011
    assert adapter.down.weight.shape == (8, 48) and torch.equal(adapter.scale, torch.ones(48))
    linear = create_model(tiny_vit(), 5, PromptConfig("linear")).double()
    _with_head_of(linear, model)
    with torch.no_grad():
        start, frozen = model(images.double()), linear(images.double())
        assert 0 < (start - frozen).abs().max() < 0.05 * frozen.abs().max()
    _randomize(model)
    hooked = copy.deepcopy(model.backbone)  # reference: the adapter as a hook on each block
    for block, post in zip(hooked.blocks, model.post_adapters, strict=True):
        block.register_forward_hook(
            lambda _m, _i, out, post=post: out + post.up(post.act(post.down(out))) * post.scale)
    reference = _with_head_of(create_model(hooked, 5, PromptConfig("linear")).double(), model)
    with torch.no_grad():
        torch.testing.assert_close(model(images.double()), reference(images.double()),
                                   rtol=0, atol=1e-12)


def test_adapter_plus_drops_its_branch_per_sample_in_training_only():
    from e2vpt_core.models.peft_layers import AdapterPlus

    torch.manual_seed(0)
    adapter = AdapterPlus(16, 4, drop_path=0.5).double()
    torch.nn.init.normal_(adapter.up.weight)
    x = torch.randn(400, 3, 16, dtype=torch.double)
    branch = adapter.up(adapter.act(adapter.down(x))) * adapter.scale  # (B, N, d)
    adapter.eval()
    torch.testing.assert_close(adapter(x), x + branch, rtol=0, atol=0)
    adapter.train()
    delta = adapter(x) - x
    dropped = delta.flatten(1).abs().amax(1) == 0  # per sample: all of it or none
    kept = ~dropped
    torch.testing.assert_close(delta[kept], branch[kept] / 0.5)  # kept: scaled by 1/(1 - p)
    assert 0.4 < dropped.double().mean() < 0.6
    model = create_model(tiny_vit(), 5, PromptConfig("adapter-plus", adapter_drop_path=0.2))
    assert model.post_adapters[0].drop_path.drop_prob == 0.2
    none = create_model(tiny_vit(), 5, PromptConfig("adapter-plus", adapter_drop_path=0.0))
    assert isinstance(none.post_adapters[0].drop_path, torch.nn.Identity)


@pytest.fixture(scope="module")
def vit_b_meta() -> VisionTransformer:
    with torch.device("meta"):
        return VisionTransformer(img_size=224, patch_size=16, embed_dim=768, depth=12,
                                 num_heads=12)


def _count(backbone: VisionTransformer, config: PromptConfig) -> dict[str, float]:
    with torch.device("meta"):
        return create_model(copy.deepcopy(backbone), 100, config).parameter_summary()


@pytest.mark.parametrize("config, formula", [
    # LoRA: r·(d_in + d_out) per adapted layer; fused qkv 768 → 2304 (as PEFT's "qkv" target)
    (PromptConfig("lora"), 12 * 8 * (768 + 3 * 768)),
    (PromptConfig("lora", lora_rank=4, lora_targets=ALL_TARGETS),
     12 * 4 * ((768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768))),
    # SSF: γ and β after qkv (3d), proj (d), fc1 (4d), fc2 (d), norm1, norm2 (d each), then
    # the patch embedding and the final norm
    (PromptConfig("ssf"), 2 * (12 * (3 + 1 + 4 + 1 + 1 + 1) + 2) * 768),
    # Adapter+: down d·r + r, up r·d + d, scale d, per block
    (PromptConfig("adapter-plus"), 12 * (2 * 768 * 8 + 8 + 2 * 768)),
    (PromptConfig("adapter-plus", adapter_bottleneck=32), 12 * (2 * 768 * 32 + 32 + 2 * 768)),
])
def test_vit_b_parameter_counts_match_the_papers_formulas(vit_b_meta, config, formula):
    summary = _count(vit_b_meta, config)
    assert summary["backbone_params"] == 85_798_656  # the tuners are not backbone
    assert summary["trainable_params"] == formula + 768 * 100 + 100
    assert summary["trainable_percent"] == pytest.approx(
        100 * (formula + 76_900) / 85_798_656)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_artifact_round_trip_gives_bit_identical_logits(name, tmp_path, images):
    config = _config(name, lora_rank=3, lora_alpha=5.0, adapter_bottleneck=6)
    model = create_model(tiny_vit(), 5, config).eval()
    _randomize(model)
    save_adapter(model, tmp_path / "a")
    saved = set(load_file(tmp_path / "a" / "adapter_model.safetensors"))
    assert saved == EXPECTED[name] | {"token_mask", "segment_mask"}
    loaded = load_adapter(tmp_path / "a", backbone=tiny_vit()).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    with torch.no_grad():  # and the loaded tensors matter: the backbone alone differs
        assert not torch.equal(create_model(tiny_vit(), 5, PromptConfig("linear"))
                               .eval().forward_embedding(images),
                               loaded.forward_embedding(images))


@pytest.mark.parametrize("method", ["lora", "ssf"])
def test_swin_refuses_lora_and_ssf_by_name(method):
    with pytest.raises(ValueError, match=f"method '{method}' .*ViT.*not for Swin"):
        create_model(tiny_swin(), 5, PromptConfig(method))


def test_adapter_plus_on_swin_acts_on_every_block_output(tmp_path):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = create_model(tiny_swin(), 5, PromptConfig("adapter-plus", adapter_bottleneck=4))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == HEAD | {f"post_adapters.{s}.{b}.{m}.{p}" for s in range(2) for b in range(2)
                            for m in ("down", "up") for p in ("weight", "bias")} | {
        f"post_adapters.{s}.{b}.scale" for s in range(2) for b in range(2)}
    assert model.post_adapters[1][0].down.weight.shape == (4, 48)  # stage 1 is 48 wide
    model.eval()
    _randomize(model)
    save_adapter(model, tmp_path / "swin")
    loaded = load_adapter(tmp_path / "swin", backbone=tiny_swin()).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    model.double()
    hooked = copy.deepcopy(model.backbone)
    for s, stage in enumerate(hooked.layers):
        for b, block in enumerate(stage.blocks):
            post = model.post_adapters[s][b]
            block.register_forward_hook(
                lambda _m, _i, out, post=post: out + post.up(post.act(post.down(out)))
                * post.scale)
    reference = _with_head_of(create_model(hooked, 5, PromptConfig("linear")).double(), model)
    with torch.no_grad():
        torch.testing.assert_close(model(images.double()), reference(images.double()),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("fields, message", [
    ({"lora_rank": 0}, "lora_rank"),
    ({"lora_rank": 2.0}, "lora_rank"),
    ({"lora_alpha": 0}, "lora_alpha"),
    ({"lora_alpha": float("nan")}, "lora_alpha"),
    ({"lora_alpha": True}, "lora_alpha"),
    ({"lora_targets": ""}, "lora_targets"),
    ({"lora_targets": "qkv,q"}, "lora_targets"),
    ({"lora_targets": ["qkv"]}, "lora_targets"),
    ({"adapter_bottleneck": 0}, "adapter_bottleneck"),
    ({"adapter_drop_path": 1.0}, "adapter_drop_path"),
    ({"adapter_drop_path": -0.1}, "adapter_drop_path"),
])
def test_bad_settings_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=f"PromptConfig.{message}"):
        PromptConfig("lora", **fields)


def test_lora_targets_are_stored_in_one_order_and_old_configs_load():
    config = PromptConfig("lora", lora_targets=" fc2, qkv ")
    assert config.lora_targets == "qkv,fc2" and config.lora_target_names == ("qkv", "fc2")
    assert PromptConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    old = {k: v for k, v in PromptConfig("adapter").to_dict().items()
           if not k.startswith("lora_")}  # an artifact saved before LoRA existed
    assert PromptConfig.from_dict(old).lora_rank == 8


def test_cli_flags_reach_the_model(tiny_backbone, capsys):
    assert main(["params", "--backbone", tiny_backbone, "--method", "lora", "--lora-rank", "4",
                 "--lora-alpha", "2", "--lora-targets", "fc2,qkv", "--num-classes", "10",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["lora_rank"], summary["lora_alpha"], summary["lora_targets"]) == (
        4, 2.0, "qkv,fc2")
    # the stored backbone: 2 blocks of width 48, MLP 192
    assert summary["trainable_params"] == 2 * 4 * ((48 + 144) + (192 + 48)) + 48 * 10 + 10
    assert main(["params", "--backbone", tiny_backbone, "--method", "adapter-plus",
                 "--adapter-bottleneck", "2", "--adapter-drop-path", "0.2",
                 "--num-classes", "10", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["trainable_params"] == 2 * (2 * 48 * 2 + 2 + 2 * 48) + 48 * 10 + 10


def test_the_train_page_sets_lora_and_adapter_widths(tmp_path, monkeypatch):
    monkeypatch.setenv("E2VPT_STORE", str(tmp_path))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    app = open_page()
    by_label(app.selectbox, "Method").set_value("adapter-plus").run()
    assert by_label(app.number_input, "Adapter bottleneck").value == 8
    assert by_label(app.number_input, "Adapter drop-path rate").value == 0.1
    assert not any(w.label == "LoRA rank r" for w in app.number_input)
    by_label(app.selectbox, "Method").set_value("lora").run()
    by_label(app.number_input, "LoRA rank r").set_value(4).run()
    by_label(app.number_input, "LoRA alpha (updates × alpha / r)").set_value(16.0).run()
    by_label(app.multiselect, "LoRA on").select("fc1").run()
    by_label(app.button, "Start").click().run()
    assert not app.exception and not app.error
    store = RunStore(tmp_path)
    prompt = store.get_run(store.jobs()["run_id"][0])["config"]["prompt"]
    assert (prompt["method"], prompt["lora_rank"], prompt["lora_alpha"],
            prompt["lora_targets"]) == ("lora", 4, 16.0, "qkv,fc1")
