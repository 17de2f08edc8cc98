"""The Pruning page's "what the prompts look at" section: one image of a split, and per block
where the class token's attention goes and each visual prompt's attention over the patches,
with the prompts the token slider prunes marked.

Lazy: the expander tracks whether it is open and runs nothing while closed, so opening the
page costs nothing extra. The numbers are `e2vpt attention`'s
(`e2vpt_core.prune.attention.run_prompt_attention`, imported only when needed), kept per
(run, split, image) and version of the run's adapter files. The marking uses the mask the
sliders' fragment leaves in the session (`mask_view`), never one computed here; a slider
release reruns only that fragment, so while the section is open a small fragment checks
every second whether that mask moved on, and then redraws the page.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from app.attention_figures import class_attention_bars, image_source, prompt_patch_heatmaps
from e2vpt_core.store import RunStore

TITLE = "What the prompts look at"
_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
_SHOWN_PIXELS = 192  # the image beside the controls, enlarged by whole pixels up to this


def split_options(run: dict) -> list[str]:
    """The splits an image can be picked from: the run's evaluation splits, then its
    training split."""
    config = run["config"]
    splits = [*config.get("eval_splits", ["val", "test"]), config.get("train_split", "train")]
    return list(dict.fromkeys(splits))


def default_split(run: dict) -> str:
    """Test when the run has a test split, else val, else its first split."""
    options = split_options(run)
    return next((split for split in ("test", "val") if split in options), options[0])


def block_kept(token_mask: tuple | None, block: int) -> list[bool] | None:
    """Which visual prompts block `block` keeps under a token mask as the sliders store it
    ((P,), or (layers, P) with masks per block); None without a mask."""
    if token_mask is None:
        return None
    rows = token_mask if token_mask and isinstance(token_mask[0], tuple) else (token_mask,)
    return [bool(value) for value in rows[block if len(rows) > 1 else 0]]


def _slider_token_mask(mask_key: str) -> tuple | None:
    """The token mask the sliders' fragment stored last (`mask_view`), or None."""
    stored = st.session_state.get(mask_key)
    return None if stored is None else stored[0]


def _adapter_version(store: RunStore, run_id: str) -> tuple | None:
    """What changes when the run's adapter is rewritten (files replaced: new inodes)."""
    directory = store.run_dir(run_id) / "adapter"
    try:
        return tuple((stat.st_mtime_ns, stat.st_size, stat.st_ino)
                      for stat in (directory.joinpath(name).stat() for name in _ADAPTER_FILES))
    except FileNotFoundError:
        return None


@st.cache_data(max_entries=32, show_spinner=False)
def _split_size(store_root: str, run_id: str, split: str, version: tuple) -> int:
    """How many images the split holds (read without decoding them)."""
    from e2vpt_core.data import load_dataset
    from e2vpt_core.train.config import TrainConfig

    config = TrainConfig.from_dict(RunStore(store_root).get_run(run_id)["config"])
    return len(load_dataset(config.dataset, split, None, seed=config.data_seed))


@st.cache_data(max_entries=32, show_spinner=False)
def probe(store_root: str, run_id: str, split: str, index: int, version: tuple,
          ) -> dict[str, Any]:
    """`run_prompt_attention` on one image, with the image itself (`image`), for one
    version of the run's adapter; errors (an index outside the split, a backbone the probe
    does not handle) are raised, not kept."""
    from e2vpt_core.prune.attention import run_prompt_attention

    result = run_prompt_attention(RunStore(store_root), run_id, split, index, with_pixels=True)
    result["image"] = result.pop("pixels")
    return result


def _enlarged(image: np.ndarray) -> np.ndarray:
    factor = max(1, _SHOWN_PIXELS // max(image.shape[:2]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def attention_section(store: RunStore, run: dict, mask_key: str, token_ratio: float) -> None:
    """The lazy expander; `mask_key` is where the sliders keep their mask, `token_ratio`
    the token slider's current ratio."""
    section = st.expander(TITLE, key=f"attention-open:{run['id']}", on_change="rerun")
    with section:
        if not section.open:
            return
        version = _adapter_version(store, run["id"])
        if run["status"] != "completed" or version is None:
            st.caption("Available once the run has completed: the maps are computed with "
                       "its trained prompts.")
            return
        drawn = _slider_token_mask(mask_key)
        st.fragment(attention_view)(store, run, version, drawn, token_ratio)
        st.fragment(run_every=1)(_follow_mask)(mask_key, drawn)


def _follow_mask(mask_key: str, drawn: tuple | None) -> None:
    """Redraw the page once the sliders' mask differs from the one the section drew."""
    if _slider_token_mask(mask_key) != drawn:
        st.rerun()


def attention_view(store: RunStore, run: dict, version: tuple, token_mask: tuple | None,
                   token_ratio: float) -> None:
    """The image picker, the class token's attention per block, and the chosen block's
    prompt maps (a fragment: picking an image or a block redraws only this)."""
    run_id, options = run["id"], split_options(run)
    left, right = st.columns([1, 3])
    split = left.selectbox("Split", options, index=options.index(default_split(run)),
                           key=f"attention-split:{run_id}")
    try:
        size = _split_size(str(store.root), run_id, split, version)
        index = int(left.number_input(f"Image (0 to {size - 1})", min_value=0,
                                      max_value=size - 1, value=0, step=1,
                                      key=f"attention-index:{run_id}:{split}"))
        with st.spinner("Computing the attention of this image…"):
            found = probe(str(store.root), run_id, split, index, version)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as error:
        st.warning(f"Cannot show the attention: {error}")
        return
    left.image(_enlarged(found["image"]),
               output_format="PNG",
               caption=f"{split} split, image {index} of {size}, class "
                       f"{found['class']}, as the model sees it")
    blocks = len(found["cls_to_patches"])
    kept = None if token_mask is None else [block_kept(token_mask, b) for b in range(blocks)]
    right.plotly_chart(class_attention_bars(found["cls_to_prompts"], found["cls_to_kv"],
                                            found["cls_to_patches"], kept),
                       key=f"attention-bars:{run_id}")
    block = st.radio("Block", list(range(blocks)), horizontal=True,
                     format_func=lambda b: f"block {b}", key=f"attention-block:{run_id}")
    if token_mask is None:
        st.caption("Kept and pruned prompts are marked once the run has importance scores "
                   "for the sliders above.")
    else:
        st.caption(f"Marked as the token slider prunes them now ({100 * token_ratio:.3g} % "
                   "of the prompt tokens pruned): a pruned prompt has a red title and a "
                   "dashed frame.")
    st.caption("Each visual prompt's attention over the image's patches in this block, "
               "averaged over the heads, on one colour scale; under each name, the class "
               "token's attention on that prompt.")
    st.plotly_chart(prompt_patch_heatmaps(
        found["prompt_to_patches"][block], found["grid"], block,
        kept=None if kept is None else kept[block],
        cls_to_prompts=found["cls_to_prompts"][block],
        image=image_source(found["image"], grey=True)), key=f"attention-maps:{run_id}")
