"""Parameter budget: trainable parameters of every method on a backbone, the bundled
offline one (the default) included.

Counts come from the real models built on the meta device (shapes only, so even ViT-H
costs no memory). timm's weight init is most of a build even there, so the backbone is
built once per name and each method wraps a copy; torch is imported only when counting,
so the page draws its inputs before the first count."""

from __future__ import annotations

import copy

import pandas as pd
import streamlit as st

from e2vpt_core.config import PromptConfig
from e2vpt_core.methods import REGISTRY
from e2vpt_core.train.config import DEFAULT_BACKBONE

BACKBONES = [DEFAULT_BACKBONE, "vit_base_patch16_224", "vit_small_patch16_224",
             "vit_tiny_patch16_224", "vit_large_patch16_224", "vit_huge_patch14_224"]
COUNT = st.column_config.NumberColumn(format="localized")  # 1,234,567: thousands separated
ROW_PX = 35  # st.dataframe's row (and header) height: the table is as tall as its rows


@st.cache_resource(show_spinner=False, max_entries=4)
def meta_backbone(backbone: str):
    """The backbone on the meta device, built once per name; never changed (each method
    wraps a copy)."""
    import torch

    from e2vpt_core.models.factory import build_backbone

    with torch.device("meta"):
        return build_backbone(backbone)


@st.cache_data(show_spinner="Counting parameters…")
def parameter_table(backbone: str, num_classes: int, prompt_len: int, kv_len: int) -> pd.DataFrame:
    """Trainable parameters of every method: each wraps a copy of the meta backbone."""
    import torch

    from e2vpt_core import create_model

    rows = []
    for method, spec in REGISTRY.items():
        config = PromptConfig.for_method(method, prompt_len, kv_len)
        with torch.device("meta"):
            model = create_model(copy.deepcopy(meta_backbone(backbone)), num_classes, config)
        trainable = sum(p.numel() for _, p in model.trainable_parameters())
        percent = 100.0 * trainable / model.backbone_parameter_count()
        rows.append({"method": method, "trainable params": trainable,
                     "% of backbone": round(percent, 4), "trains": spec.summary})
    return pd.DataFrame(rows)


st.title("E²VPT: parameter budget")
st.write("Deep visual prompts plus key-value prompts on a frozen ViT: how many "
         "parameters each method trains.")
left, right = st.columns([1, 2])
with left:
    backbone = st.selectbox("Backbone", BACKBONES, index=0,
                            format_func=lambda name: f"{name} (bundled, offline)"
                            if name == DEFAULT_BACKBONE else name)
    num_classes = st.number_input("Classes", min_value=1, value=100)
    prompt_len = st.slider("Visual prompt length P", 0, 100, 10)
    kv_len = st.slider("Key-value prompt length T", 0, 50, 5)
with right:
    table = parameter_table(backbone, int(num_classes), prompt_len, kv_len)
    st.dataframe(table, hide_index=True, width="stretch", height=ROW_PX * (len(table) + 1) + 3,
                 column_config={"trainable params": COUNT})
