"""Figures of what the prompts look at: pure functions from the attention probe's numbers
(`e2vpt_core.prune.attention.run_prompt_attention`) to plotly figures.

No Streamlit here, so each figure is unit-tested without a browser. A prompt the probe
reports as absent from a block (NaN, or None in its JSON) stays a gap, never a zero.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

COLUMNS = 5  # prompt maps per row of the grid
PRUNED = "#d62728"
# Inferno fading to transparent at zero: the image shows through where a prompt looks little
OVER_IMAGE = [[0.0, "rgba(0, 0, 4, 0)"], [0.25, "rgba(87, 16, 110, 0.45)"],
              [0.5, "rgba(188, 55, 84, 0.65)"], [0.75, "rgba(249, 142, 9, 0.8)"],
              [1.0, "rgba(252, 255, 164, 0.9)"]]
_PART_COLOURS = {"kept visual prompts": "#2ca02c", "pruned visual prompts": PRUNED,
                 "visual prompts": "#2ca02c", "key-value prompts": "#9467bd",
                 "patches": "#1f77b4", "class token itself": "#bbbbbb"}


def image_source(image: np.ndarray, size: int = 160, grey: bool = False) -> str:
    """An (H, W, 3) uint8 image as a PNG data URI about `size` pixels wide: small images
    are enlarged by whole pixels (sharp under the patch grid), large ones shrunk, so the
    figure does not carry a full-size copy per prompt; `grey` keeps the colours for the
    heatmap drawn over it."""
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if grey:
        picture = picture.convert("L").convert("RGB")
    scale = size / max(picture.size)
    if scale > 1:
        factor = math.floor(scale)
        picture = picture.resize((picture.width * factor, picture.height * factor),
                                 Image.Resampling.NEAREST)
    elif scale < 1:
        picture = picture.resize((max(1, round(picture.width * scale)),
                                  max(1, round(picture.height * scale))),
                                 Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _values(rows: object) -> np.ndarray:
    return np.asarray(rows, dtype=float)  # None (the probe's JSON for NaN) becomes NaN


def _image_trace(source: str, grid: tuple[int, int]) -> go.Image:
    """The image stretched over the patch grid's cells (patch (r, c) centred on (c, r))."""
    raw = base64.b64decode(source.split(",", 1)[1])
    width, height = Image.open(io.BytesIO(raw)).size
    dx, dy = grid[1] / width, grid[0] / height
    return go.Image(source=source, x0=-0.5 + dx / 2, y0=-0.5 + dy / 2, dx=dx, dy=dy,
                    hoverinfo="skip")


def prompt_patch_heatmaps(prompt_to_patches: Sequence[Sequence[float | None]] | np.ndarray,
                          grid: Sequence[int], block: int,
                          kept: Sequence[bool] | None = None,
                          cls_to_prompts: Sequence[float | None] | None = None,
                          image: str | None = None) -> go.Figure:
    """One small heatmap per visual prompt: its attention (P, patches) over the patch grid
    (rows, cols), drawn over `image` (an `image_source`) when given. One colour range for
    the block, so prompts compare; a prompt `kept` says is pruned gets a red title and a
    dashed frame; `cls_to_prompts` adds the class token's attention on each prompt."""
    maps = _values(prompt_to_patches)
    rows_grid, cols_grid = int(grid[0]), int(grid[1])
    title = f"Block {block}: each prompt's attention over the image patches"
    if maps.size == 0:
        figure = go.Figure()
        figure.update_layout(title=title, annotations=[{
            "text": "no visual prompts", "showarrow": False, "xref": "paper", "yref": "paper",
            "x": 0.5, "y": 0.5}], xaxis={"visible": False}, yaxis={"visible": False})
        return figure
    prompts = maps.shape[0]
    maps = maps.reshape(prompts, rows_grid, cols_grid)
    top = float(np.nanmax(maps)) if np.isfinite(maps).any() else 1.0
    columns = min(prompts, COLUMNS)
    rows = math.ceil(prompts / columns)
    labels = []
    for prompt in range(prompts):
        label = f"prompt {prompt}"
        if not np.isfinite(maps[prompt]).any():
            label += " · not in this block"
        elif kept is not None:
            label += " · kept" if kept[prompt] else " · pruned"
        if cls_to_prompts is not None and cls_to_prompts[prompt] is not None \
                and np.isfinite(cls_to_prompts[prompt]):
            label += f"<br>class token: {100 * cls_to_prompts[prompt]:.1f} %"
        labels.append(label)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=labels,
                           horizontal_spacing=0.02, vertical_spacing=0.35 / rows)
    for prompt in range(prompts):
        row, col = prompt // columns + 1, prompt % columns + 1
        if image is not None:
            figure.add_trace(_image_trace(image, (rows_grid, cols_grid)), row=row, col=col)
        pruned = kept is not None and not kept[prompt]
        figure.add_trace(go.Heatmap(
            z=maps[prompt], zmin=0.0, zmax=top,
            colorscale=OVER_IMAGE if image is not None else "Inferno", showscale=prompt == 0,
            colorbar={"title": "attention", "thickness": 12},
            name=f"prompt {prompt}" + (" (pruned)" if pruned else ""),
            meta={"prompt": prompt, "pruned": pruned},
            hovertemplate=f"prompt {prompt}, patch row %{{y}}, column %{{x}}: "
                          "%{z:.3g}<extra></extra>"), row=row, col=col)
        if pruned:
            figure.add_shape(type="rect", xref="x domain", yref="y domain", x0=0, x1=1,
                             y0=0, y1=1, line={"color": PRUNED, "width": 2, "dash": "dash"},
                             row=row, col=col)
    for annotation, prompt in zip(figure.layout.annotations, range(prompts), strict=True):
        annotation.font.size = 12
        if kept is not None and not kept[prompt]:
            annotation.font.color = PRUNED
    figure.update_xaxes(visible=False, constrain="domain")
    figure.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for index in range(1, prompts + 1):  # square patches in every cell
        suffix = "" if index == 1 else str(index)
        figure.update_layout({f"yaxis{suffix}": {"scaleanchor": f"x{suffix}"}})
    figure.update_layout(title=title, height=120 + 190 * rows, margin={"t": 110})
    return figure


def class_attention_bars(cls_to_prompts: Sequence[Sequence[float | None]] | np.ndarray,
                         cls_to_kv: Sequence[Sequence[float]] | np.ndarray,
                         cls_to_patches: Sequence[float] | np.ndarray,
                         kept: Sequence[Sequence[bool]] | None = None) -> go.Figure:
    """Where the class token's attention goes, one stacked bar per block: visual prompts
    (split into kept and pruned by `kept`, (blocks, P)), key-value prompts, patches, and
    the rest (the class token itself), so each bar sums to one."""
    prompts = _values(cls_to_prompts)
    blocks = len(cls_to_patches)
    prompts = prompts.reshape(blocks, -1)
    kv = _values(cls_to_kv).reshape(blocks, -1)
    patches = _values(cls_to_patches)
    parts: dict[str, np.ndarray] = {}
    if kept is None:
        parts["visual prompts"] = np.nansum(prompts, axis=1)
    else:
        mask = np.asarray(kept, dtype=bool).reshape(prompts.shape)
        parts["kept visual prompts"] = np.nansum(np.where(mask, prompts, 0.0), axis=1)
        parts["pruned visual prompts"] = np.nansum(np.where(mask, 0.0, prompts), axis=1)
    if kv.shape[1]:
        parts["key-value prompts"] = kv.sum(axis=1)
    parts["patches"] = patches
    parts["class token itself"] = np.clip(1.0 - sum(parts.values()), 0.0, None)
    names = [f"block {block}" for block in range(blocks)]
    figure = go.Figure([go.Bar(x=names, y=values, name=name, marker_color=_PART_COLOURS[name],
                               hovertemplate=f"%{{x}}, {name}: %{{y:.1%}}<extra></extra>")
                        for name, values in parts.items()])
    figure.update_layout(title="Where the class token's attention goes, per block",
                         barmode="stack", yaxis={"title": "share of its attention",
                                                 "range": [0, 1], "tickformat": ".0%"},
                         legend={"traceorder": "normal"})
    return figure
