"""Parameter budget: trainable parameters of every method on a backbone, the bundled
offline one included."""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from e2vpt_core import PromptConfig, create_model
from e2vpt_core.methods import REGISTRY
from e2vpt_core.train.config import DEFAULT_BACKBONE

BACKBONES = [DEFAULT_BACKBONE, "vit_base_patch16_224", "vit_small_patch16_224",
             "vit_tiny_patch16_224", "vit_large_patch16_224", "vit_huge_patch14_224"]
COUNT = st.column_config.NumberColumn(format="localized")  # 1,234,567: thousands separated


@st.cache_data(show_spinner="Counting parameters…")
def parameter_table(backbone: str, num_classes: int, prompt_len: int, kv_len: int) -> pd.DataFrame:
    """Counts on the meta device: shapes only, so even ViT-H costs no memory."""
    rows = []
    for method, spec in REGISTRY.items():
        config = PromptConfig.for_method(method, prompt_len, kv_len)
        with torch.device("meta"):
            model = create_model(backbone, num_classes, config)
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
    backbone = st.selectbox("Backbone", BACKBONES, index=BACKBONES.index("vit_base_patch16_224"),
                            format_func=lambda name: f"{name} (bundled, offline)"
                            if name == DEFAULT_BACKBONE else name)
    num_classes = st.number_input("Classes", min_value=1, value=100)
    prompt_len = st.slider("Visual prompt length P", 0, 100, 10)
    kv_len = st.slider("Key-value prompt length T", 0, 50, 5)
with right:
    table = parameter_table(backbone, int(num_classes), prompt_len, kv_len)
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"trainable params": COUNT})
