"""The prune-ratio sliders and their mask preview, drawn in the browser.

Every mask the sliders can reach is computed here, once per mount, from the scores
(`select_masks` at each token ratio and at each segment ratio: the two choices are
independent until pruned tokens zero their rows), and sent with the component. Moving a
slider then redraws the preview in the browser, with no round trip to the server;
releasing it reports the pick back, which reruns only the fragment around it, for the
kept-entries and parameter metrics, the accuracy without retraining and the rewind.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from app.pruning_state import ratio_options
from e2vpt_core.prune import select_masks
from e2vpt_core.prune.selection import default_min_segments

_HTML = """
<div class="mask-slider">
  <div class="controls">
    <label><span class="name">Token prune ratio</span> <b class="token-value"></b>
      <input type="range" class="token" aria-label="Token prune ratio" min="0" step="1">
    </label>
    <label><span class="name">Segment prune ratio</span> <b class="segment-value"></b>
      <input type="range" class="segment" aria-label="Segment prune ratio" min="0" step="1">
    </label>
  </div>
  <div class="kept" data-testid="mask-kept"></div>
  <div class="axes"><span class="rows"></span><div class="grid"></div></div>
  <div class="cols"></div>
</div>
"""

_CSS = """
.mask-slider { font-family: var(--st-font, sans-serif); color: var(--st-text-color); }
.controls { display: flex; gap: 2rem; }
.controls label { flex: 1; display: flex; flex-direction: column; gap: .25rem; }
.controls input { width: 100%; accent-color: var(--st-primary-color, #ff4b4b); }
.kept { margin: .5rem 0; font-weight: 600; }
.axes { display: flex; align-items: center; gap: .4rem; }
.rows { writing-mode: vertical-rl; transform: rotate(180deg); font-size: .8rem; }
.cols { text-align: center; font-size: .8rem; }
.grid { flex: 1; display: grid; gap: 1px; max-width: 560px; }
.grid div { height: 14px; border-radius: 2px; }
"""

# Each rerun calls this with the latest data (new scores while a run trains). The sliders
# take `data.start` once, when mounted: later starts only echo picks, and a rerun for an
# older pick must not move a slider the user has moved on since. Every input event
# redraws from the precomputed masks.
_JS = """
export default function (component) {
  const { data, parentElement, setStateValue } = component;
  const root = parentElement.querySelector(".mask-slider");
  const token = root.querySelector("input.token"), segment = root.querySelector("input.segment");
  token.max = data.token_ratios.length - 1;
  segment.max = data.segment_ratios.length - 1;
  if (!root.dataset.mounted) {
    root.dataset.mounted = "1";
    token.value = data.start[0];
    segment.value = data.start[1];
  }
  const pct = (r) => `${+(100 * r).toPrecision(3)} %`;
  const draw = () => {
    const tm = data.token_masks[+token.value], sm = data.segment_masks[+segment.value];
    const perBlock = data.per_block, R = data.segments;
    root.querySelector(".token-value").textContent = pct(data.token_ratios[+token.value]);
    root.querySelector(".segment-value").textContent = pct(data.segment_ratios[+segment.value]);
    const grid = root.querySelector(".grid");
    const cells = [];
    let kept = 0, total = 0;
    tm.forEach((tokens, layer) => tokens.forEach((on, t) => {
      const n = on ? sm[layer][t].reduce((a, b) => a + b, 0) : 0;
      kept += n; total += R;
      if (perBlock) cells.push([n / R, `layer ${layer}, token ${t}: ${n} of ${R} segments kept`]);
      else sm[layer][t].forEach((s, r) => cells.push(
        [on && s ? 1 : 0, `token ${t}, segment ${r}: ${on && s ? "kept" : "pruned"}`]));
    }));
    const columns = perBlock ? tm[0].length : R;
    grid.style.gridTemplateColumns = `repeat(${columns}, 1fr)`;
    grid.replaceChildren(...cells.map(([v, title]) => {
      const cell = document.createElement("div");
      cell.title = title;
      cell.style.background = v > 0 ? `rgba(44, 160, 44, ${0.25 + 0.75 * v})` : "#d9d9d9";
      return cell;
    }));
    root.querySelector(".rows").textContent = perBlock ? "layer" : "prompt token";
    root.querySelector(".cols").textContent = perBlock ? "token" : "segment";
    root.querySelector(".kept").textContent =
      `Mask preview: ${kept} of ${total} token × segment entries kept`;
  };
  token.oninput = segment.oninput = draw;
  token.onchange = segment.onchange = () =>
    setStateValue("pick", [+token.value, +segment.value]);
  draw();
}
"""

MASK_SLIDER = st.components.v2.component("e2vpt.mask_slider", html=_HTML, css=_CSS, js=_JS)


@dataclass(frozen=True)
class SliderMasks:
    """Every mask the two sliders reach: token masks per token ratio, segment masks per
    segment ratio (rows of pruned tokens not yet zeroed), as (rows, P) and (rows, P, R)."""

    token_ratios: list[float]
    segment_ratios: list[float]
    token_masks: list[list[list[int]]]
    segment_masks: list[list[list[list[int]]]]
    per_block: bool

    def data(self, start: tuple[int, int]) -> dict[str, Any]:
        """The component's JSON data, with the slider positions `start`."""
        return {"token_ratios": self.token_ratios, "segment_ratios": self.segment_ratios,
                "token_masks": self.token_masks, "segment_masks": self.segment_masks,
                "per_block": self.per_block, "segments": len(self.segment_masks[0][0][0]),
                "start": list(start)}


def slider_masks(token_scores: torch.Tensor, segment_scores: torch.Tensor,
                 token_ratios: list[float], segment_ratios: list[float],
                 rounding: str = "nearest") -> SliderMasks:
    """The masks `select_masks` gives at every slider position; scores (P,) and (P, R),
    or (L, P) and (L, P, R) with masks per block."""
    def as_rows(mask: torch.Tensor, dims: int) -> list:
        mask = mask if mask.ndim == dims else mask[None]
        return mask.to(torch.int64).tolist()

    per_block = token_scores.ndim == 2
    token_masks = [as_rows(select_masks(token_scores, segment_scores, ratio, 0.0,
                                        rounding=rounding).token_mask, 2)
                   for ratio in token_ratios]
    segment_masks = []
    for ratio in segment_ratios:
        selection = select_masks(token_scores, segment_scores, 0.0, ratio, rounding=rounding)
        segment_masks.append(as_rows(selection.segment_mask, 3))
    return SliderMasks(list(token_ratios), list(segment_ratios), token_masks, segment_masks,
                       per_block)


@functools.lru_cache(maxsize=32)
def reachable_masks(token_scores: torch.Tensor, segment_scores: torch.Tensor,
                    rounding: str = "nearest") -> SliderMasks:
    """`slider_masks` at the ratios the sliders offer (one step per token, or (layer,
    token) pair for scores (L, P), and per segment), kept per scores object: the page's
    scores are cached per version of their files and never written, so the fragment's
    reruns (every few seconds while a run trains) recompute nothing until they change."""
    layers = token_scores.shape[0] if token_scores.ndim == 2 else 1
    segments = segment_scores.shape[-1]
    return slider_masks(token_scores, segment_scores,
                        ratio_options(token_scores.numel(), layers),
                        ratio_options(segments, default_min_segments(segments)), rounding)


def mask_sliders(key: str, masks: SliderMasks, start: tuple[int, int]) -> tuple[int, int] | None:
    """Mount the sliders at positions `start`; the pick the browser reported last, or
    None before the first release."""
    result = MASK_SLIDER(key=key, data=masks.data(start), default={"pick": None},
                         on_pick_change=lambda: None)
    pick = result.pick
    return None if pick is None else (int(pick[0]), int(pick[1]))
