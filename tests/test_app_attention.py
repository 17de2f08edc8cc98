"""What the prompts look at, on the Pruning page: the figures against the probe's numbers
and a given mask, and the lazy section (AppTest) on a tiny trained E²VPT run, marking the
prompts the token slider prunes."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from app_helpers import by_label, open_page, private_store, set_prune_ratios, train_tiny_e2vpt
from PIL import Image
from streamlit.testing.v1 import AppTest

import app.attention_view as attention_view
from app.attention_figures import class_attention_bars, image_source, prompt_patch_heatmaps
from app.attention_view import TITLE, block_kept, default_split, split_options
from e2vpt_core.prune.attention import run_prompt_attention
from e2vpt_core.store import RunStore


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory) -> tuple[Path, str]:
    """One tiny e2vpt run (4 visual and 2 key-value prompts, 2 blocks), trained once."""
    root = tmp_path_factory.mktemp("attention-store")
    run_id = train_tiny_e2vpt(root, tiny_backbone)
    return root, run_id


@pytest.fixture(scope="module")
def probed(trained) -> dict:
    """The probe's own numbers for test image 2, computed apart from the app."""
    return run_prompt_attention(RunStore(trained[0]), trained[1], "test", 2)


def _values(values) -> np.ndarray:
    """Plotly JSON holds arrays as lists (None for NaN) or as base64 typed arrays."""
    if isinstance(values, dict):
        flat = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
        shape = values.get("shape")
        return flat if shape is None else flat.reshape([int(n) for n in str(shape).split(",")])
    return np.asarray(values, dtype=float)


def _heatmaps(figure) -> list:
    return [trace for trace in figure.data if trace.type == "heatmap"]


# ------------------------------------------------------------------------------ figures
def test_each_prompt_map_holds_the_probes_values_on_the_patch_grid(probed):
    rows, cols = probed["grid"]
    for block in range(2):
        figure = prompt_patch_heatmaps(probed["prompt_to_patches"][block], probed["grid"],
                                       block)
        maps = _heatmaps(figure)
        assert len(maps) == 4 and figure.layout.title.text.startswith(f"Block {block}:")
        for prompt, trace in enumerate(maps):
            expected = np.asarray(probed["prompt_to_patches"][block][prompt]).reshape(rows, cols)
            np.testing.assert_array_equal(np.asarray(trace.z), expected)
            assert trace.zmax == pytest.approx(np.max(probed["prompt_to_patches"][block]))
        assert not figure.layout.shapes  # no mask given: nothing marked
        assert [a.text for a in figure.layout.annotations] == [f"prompt {p}" for p in range(4)]


def test_pruned_prompts_are_marked_as_the_given_mask_says():
    maps = np.arange(3 * 6, dtype=float).reshape(3, 6)
    maps[1] = np.nan  # removed from this block
    figure = prompt_patch_heatmaps(maps, (2, 3), 4, kept=[True, True, False],
                                   cls_to_prompts=[0.25, None, 0.125])
    pruned = [trace.meta["pruned"] for trace in _heatmaps(figure)]
    assert pruned == [False, False, True]
    titles = [a.text for a in figure.layout.annotations]
    assert titles == ["prompt 0 · kept<br>class token: 25.0 %", "prompt 1 · not in this block",
                      "prompt 2 · pruned<br>class token: 12.5 %"]
    assert [a.font.color for a in figure.layout.annotations] == [None, None, "#d62728"]
    (frame,) = figure.layout.shapes  # one dashed frame, on the third cell
    assert (frame.xref, frame.yref, frame.line.dash) == ("x3 domain", "y3 domain", "dash")
    assert np.isnan(np.asarray(_heatmaps(figure)[1].z)).all()  # a gap, not zeros
    assert _heatmaps(figure)[0].zmax == 17.0


def test_the_image_lies_exactly_under_the_patch_grid():
    image = np.zeros((32, 48, 3), dtype=np.uint8)
    image[:16, :16] = 255
    source = image_source(image, size=160)
    picture = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
    assert picture.size == (144, 96)  # enlarged by a whole factor (3), never blurred
    assert picture.getpixel((0, 0)) == (255, 255, 255) and picture.getpixel((50, 50)) == (0, 0, 0)
    grey_source = image_source(image, grey=True).split(",", 1)[1]
    grey = Image.open(io.BytesIO(base64.b64decode(grey_source)))
    assert len(set(grey.getpixel((0, 0)))) == 1
    figure = prompt_patch_heatmaps(np.ones((2, 6)), (2, 3), 0, image=source)
    images = [trace for trace in figure.data if trace.type == "image"]
    assert len(images) == 2 and len(_heatmaps(figure)) == 2
    left = images[0].x0 - images[0].dx / 2  # the image spans patches -0.5 … cols - 0.5
    assert left == pytest.approx(-0.5) and left + 144 * images[0].dx == pytest.approx(2.5)
    assert images[0].y0 - images[0].dy / 2 == pytest.approx(-0.5)
    assert 96 * images[0].dy == pytest.approx(2.0)


def test_the_class_tokens_bars_split_prompts_by_the_mask_and_sum_to_one(probed):
    kept = [[True, False, True, False], [False, True, True, True]]
    figure = class_attention_bars(probed["cls_to_prompts"], probed["cls_to_kv"],
                                  probed["cls_to_patches"], kept)
    parts = {trace.name: np.asarray(trace.y) for trace in figure.data}
    assert list(parts) == ["kept visual prompts", "pruned visual prompts", "key-value prompts",
                           "patches", "class token itself"]
    prompts = np.asarray(probed["cls_to_prompts"])
    np.testing.assert_allclose(parts["kept visual prompts"], [prompts[0, [0, 2]].sum(),
                                                              prompts[1, 1:].sum()])
    np.testing.assert_allclose(parts["pruned visual prompts"], [prompts[0, [1, 3]].sum(),
                                                                prompts[1, 0]])
    np.testing.assert_allclose(parts["key-value prompts"], np.sum(probed["cls_to_kv"], axis=1))
    np.testing.assert_allclose(parts["patches"], probed["cls_to_patches"])
    np.testing.assert_allclose(sum(parts.values()), [1.0, 1.0], atol=1e-6)
    assert figure.layout.barmode == "stack" and list(figure.data[0].x) == ["block 0", "block 1"]
    plain = class_attention_bars(probed["cls_to_prompts"], [[], []], probed["cls_to_patches"])
    assert [trace.name for trace in plain.data] == ["visual prompts", "patches",
                                                    "class token itself"]


def test_a_stored_mask_gives_each_blocks_kept_prompts_and_the_split_defaults():
    assert block_kept(None, 0) is None
    assert block_kept((1.0, 0.0, 1.0), 5) == [True, False, True]  # shared by every block
    per_block = ((1.0, 0.0), (0.0, 1.0))
    assert block_kept(per_block, 1) == [False, True]
    run = {"config": {"eval_splits": ["val", "test"], "train_split": "train"}}
    assert split_options(run) == ["val", "test", "train"] and default_split(run) == "test"
    run = {"config": {"eval_splits": ["val"], "train_split": "train"}}
    assert default_split(run) == "val"


# ------------------------------------------------------------------------------ the page
def _charts(app: AppTest) -> dict[str, dict]:
    specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    return {spec["layout"]["title"]["text"]: spec for spec in specs}


def _images(node) -> list:
    """The image elements anywhere under `node` (inside columns and expanders)."""
    found = [node] if getattr(node, "type", None) == "image" else []
    for child in getattr(node, "children", {}).values():
        found += _images(child)
    return found


def _open_section(app: AppTest, run_id: str) -> AppTest:
    """Open the expander (the browser's click sets this state) and rerun."""
    app.session_state[f"attention-open:{run_id}"] = True
    return app.run()


def test_the_section_computes_only_once_opened(trained, tmp_path, monkeypatch):
    private_store(trained[0], tmp_path, monkeypatch)
    calls = []
    original = attention_view.probe
    monkeypatch.setattr(attention_view, "probe",
                        lambda *args: calls.append(args) or original(*args))
    app = open_page("pruning.py")
    assert [e.label for e in app.expander] == [TITLE]
    assert calls == [] and not any(t.startswith("Block") for t in _charts(app))
    _open_section(app, trained[1])
    assert not app.exception, app.exception
    assert [call[2:4] for call in calls] == [("test", 0)]  # the test split by default


def test_the_heatmaps_show_the_probe_and_mark_what_the_slider_prunes(trained, probed, tmp_path,
                                                                     monkeypatch):
    private_store(trained[0], tmp_path, monkeypatch)
    app = _open_section(open_page("pruning.py"), trained[1])
    by_label(app.number_input, "Image (0 to 999)").set_value(2).run()
    assert not app.exception and not app.warning, (app.exception, app.warning)
    (image,) = _images(app.main)
    assert image.proto.imgs[0].caption.startswith(f"test split, image 2 of 1000, class "
                                                  f"{probed['class']}")
    charts = _charts(app)
    maps = charts["Block 0: each prompt's attention over the image patches"]
    heatmaps = [t for t in maps["data"] if t["type"] == "heatmap"]
    for prompt, trace in enumerate(heatmaps):  # the probe's numbers, prompt by prompt
        np.testing.assert_allclose(_values(trace["z"]).ravel(),
                                   probed["prompt_to_patches"][0][prompt], rtol=1e-6)
    assert not any(trace["meta"]["pruned"] for trace in heatmaps)  # nothing pruned at 0 %

    set_prune_ratios(app, token=0.5)
    assert not app.exception, app.exception
    token_mask = app.session_state[f"mask:{trained[1]}"][0]  # what the sliders' view keeps
    assert sorted(token_mask) == [0.0, 0.0, 1.0, 1.0]
    by_label(app.radio, "Block").set_value(1).run()
    charts = _charts(app)
    maps = charts["Block 1: each prompt's attention over the image patches"]
    heatmaps = [t for t in maps["data"] if t["type"] == "heatmap"]
    assert [t["meta"]["pruned"] for t in heatmaps] == [not kept for kept in token_mask]
    assert len(maps["layout"]["shapes"]) == 2
    np.testing.assert_allclose(_values(heatmaps[3]["z"]).ravel(),
                               probed["prompt_to_patches"][1][3], rtol=1e-6)
    bars = {t["name"]: _values(t["y"])
            for t in charts["Where the class token's attention goes, per block"]["data"]}
    pruned = [p for p, kept in enumerate(token_mask) if not kept]
    np.testing.assert_allclose(bars["pruned visual prompts"],
                               np.asarray(probed["cls_to_prompts"])[:, pruned].sum(1),
                               rtol=1e-6)
    assert any("50 % of the prompt tokens pruned" in c.value for c in app.caption)


def test_a_run_still_training_says_when_the_maps_come(trained, tmp_path, monkeypatch):
    store = private_store(trained[0], tmp_path, monkeypatch)
    store.set_status(trained[1], "running")
    app = _open_section(open_page("pruning.py"), trained[1])
    assert not app.exception, app.exception
    assert any("Available once the run has completed" in c.value for c in app.caption)
    assert not any(t.startswith("Block") for t in _charts(app))


def test_the_pixels_are_the_models_input_with_its_normalisation_undone(trained):
    from timm.data import resolve_model_data_config

    from e2vpt_core.artifacts import load_adapter
    from e2vpt_core.train.config import TrainConfig
    from e2vpt_core.train.data import eval_loader

    store = RunStore(trained[0])
    result = run_prompt_attention(store, trained[1], "test", 2, with_pixels=True)
    backbone = load_adapter(store.run_dir(trained[1]) / "adapter").backbone
    config = TrainConfig.from_dict(store.get_run(trained[1])["config"])
    image = eval_loader(config, backbone, "test", batch_size=1).dataset[2][0]
    data = resolve_model_data_config(backbone)
    pixels = result["pixels"]
    assert pixels.dtype == np.uint8 and pixels.shape == (*image.shape[1:], 3)
    mean, std = np.array(data["mean"]), np.array(data["std"])
    back = (pixels.astype(np.float64) / 255 - mean) / std  # (H, W, 3)
    channels = image.permute(1, 2, 0).expand(-1, -1, 3).numpy()
    assert np.abs(back - channels).max() <= 0.5 / 255 / std.min() + 1e-6
    assert "pixels" not in run_prompt_attention(store, trained[1], "test", 2)
