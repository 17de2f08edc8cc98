"""The Pruning page's answers to its controls: does a mask order beat random masks of the
same counts, by more than the random draws' spread?

The rows come from `e2vpt_core.prune.controls` (shared with `e2vpt sweep-prune --controls
random`); this module only draws them, under the no-retrain curve and the rewind chart.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from e2vpt_core.prune.controls import (
    ControlVerdict,
    curve_verdicts,
    nearest_ratio,
    rewind_verdicts,
)

SELECTION_SPLIT = "val"  # rewinds are compared where a sweep picks its best ratio
TEST = ("a difference is clear when the value is unlikely (p < 0.05) as one more random "
        "draw (a t prediction interval from the draws); sd: the difference in units of the "
        "draws' standard deviation")


def _table(verdicts: list[ControlVerdict]) -> None:
    st.dataframe(pd.DataFrame([verdict.table_row() for verdict in verdicts]),
                 hide_index=True, width="stretch")


def curve_verdict_view(curve: dict[str, Any], token_ratio: float) -> None:
    """Under the no-retrain curve: the scores' order and the reverse order against the
    random draws at the sliders' token ratio (or the nearest computed one), then every
    ratio in an expander; one split on both sides, the curve's."""
    verdicts = curve_verdicts(curve)
    at = nearest_ratio(verdicts, token_ratio)
    if at is None:
        st.caption("No verdict: the curve has no random draws to compare with.")
        return
    for verdict in (v for v in verdicts if v.token_ratio == at):
        st.markdown(verdict.text())
    st.caption(f"Each mask order against the random masks of the same counts, on "
               f"{curve['split']}, without retraining: {TEST}.")
    with st.expander("Verdict at every ratio"):
        _table(verdicts)


def rewind_verdict_view(runs: pd.DataFrame, parent_id: str) -> None:
    """Beside the rewind chart: each importance rewind against the random-mask rewinds of
    the same ratios, trained alike, on val, wherever such controls were rewound."""
    if runs.empty:
        return
    verdicts = rewind_verdicts(runs.to_dict("records"), parent_id, SELECTION_SPLIT)
    if not verdicts:
        st.caption("Verdicts appear here once a rewound ratio has random-mask rewinds "
                   "beside it (Random-mask controls).")
        return
    for verdict in verdicts:
        st.markdown(verdict.text())
    st.caption(f"Rewinds of the scored masks against rewinds of random masks with the same "
               f"counts, init, mode and epochs, on {SELECTION_SPLIT} (the split a sweep picks "
               f"its ratio on, whatever split the chart shows): {TEST}.")
    if len(verdicts) > 1:
        with st.expander("Rewind verdicts as a table"):
            _table(verdicts)
