"""Glyph scenes: formula- and font-generated pretraining images for the bundled backbone.

A scene is 1-5 glyphs (letters and symbols of the DejaVu fonts Debian ships, never
digits or anything that renders like one) placed at random size, position, slant and
colour on a noisy background, smaller glyphs drawn over larger ones. Two labels come
with it, both about *which glyphs* are present, never about how many, where, how turned
or how far: the set of glyph classes in the image (multi-label), and per 4x4 patch the
class of the glyph covering it (background otherwise), a synthetic segmentation map.
A third map comes with it, the image's own foreground coverage at 2x2-pixel cells: a
self-supervised target (the scene's ink, as MAE reconstructs pixels), not a label.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..data.synth import SIZE, background, contrast_colours, finish, luminance, paint

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
)
# Latin, Greek and Cyrillic letters and a handful of symbols; numbers are dropped below.
_CODE_RANGES = ((0x21, 0x7F), (0x391, 0x3CA), (0x410, 0x450), (0xA7, 0xA8), (0xB6, 0xB7),
                (0x2190, 0x2195), (0x2605, 0x2606), (0x2660, 0x2668))
_RENDER = 40  # glyphs are rendered at this size, then fitted into SIZE x SIZE
_PATCH = 4
LAYOUT_CELL = 2  # px per cell of the foreground-coverage map
MAX_OBJECTS = 5


class FontsMissing(RuntimeError):
    """The DejaVu fonts (Debian's fonts-dejavu-core) are not installed."""


def _font_paths() -> list[Path]:
    paths = [FONT_DIR / name for name in FONT_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FontsMissing(f"glyph scenes need the DejaVu fonts; missing: {', '.join(missing)}")
    return paths


def _render(char: str, font: ImageFont.FreeTypeFont) -> np.ndarray | None:
    """The glyph's coverage, cropped to its ink and fitted centred into SIZE x SIZE."""
    canvas = Image.new("L", (2 * _RENDER, 2 * _RENDER))
    ImageDraw.Draw(canvas).text((_RENDER // 2, _RENDER // 4), char, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        return None
    ink = canvas.crop(box)
    scale = (SIZE - 2) / max(ink.size)
    w, h = max(1, round(ink.width * scale)), max(1, round(ink.height * scale))
    fitted = Image.new("L", (SIZE, SIZE))
    fitted.paste(ink.resize((w, h), Image.LANCZOS), ((SIZE - w) // 2, (SIZE - h) // 2))
    return np.asarray(fitted, np.float32) / 255


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


@functools.lru_cache(maxsize=1)
def glyph_bank() -> tuple[tuple[str, ...], np.ndarray]:
    """(classes, masks (classes, fonts, SIZE, SIZE) in [0, 1]), built once per process.

    A character is kept only if every font has it, it is not a number, and its render in
    DejaVu Sans overlaps no digit's and no kept glyph's by IoU > 0.7 (so 'O' next to '0',
    'l' next to '1' and Greek 'Α' next to Latin 'A' are gone).
    """
    fonts = [ImageFont.truetype(str(p), _RENDER) for p in _font_paths()]
    blockers = [_render(str(d), f) for f in fonts for d in range(10)]
    missing = [_render("\ue000", f) for f in fonts]  # what an absent glyph renders as
    chars, masks = [], []
    for lo, hi in _CODE_RANGES:
        for char in map(chr, range(lo, hi)):
            if unicodedata.category(char)[0] in "NZC":
                continue
            renders = [_render(char, f) for f in fonts]
            if any(r is None or (m is not None and np.array_equal(r, m))
                   for r, m in zip(renders, missing, strict=True)):
                continue
            if any(_iou(r, b) > 0.7 for r in renders for b in blockers):
                continue
            if any(_iou(renders[0], kept[0]) > 0.7 for kept in masks):
                continue
            chars.append(char)
            masks.append(renders)
    return tuple(chars), np.asarray(masks, np.float32)


@dataclass
class SceneBatch:
    images: np.ndarray  # uint8 (n, SIZE, SIZE, 3)
    present: np.ndarray  # float32 (n, classes): 1 for each glyph class in the image
    patch_labels: np.ndarray  # int64 (n, (SIZE / 4)^2): glyph class per patch, `classes` = none
    layout: np.ndarray  # float32 (n, (SIZE / 2)^2): share of each 2x2 cell covered by ink


def render_scenes(rng: np.random.Generator, n: int) -> SceneBatch:
    """``n`` glyph scenes drawn from ``rng`` (deterministic given its state)."""
    _, bank = glyph_bank()
    classes, fonts = bank.shape[:2]
    count = rng.integers(1, MAX_OBJECTS + 1, n)
    shape = (n, MAX_OBJECTS)
    cls = rng.integers(0, classes, shape)
    font = rng.integers(0, fonts, shape)
    size = -np.sort(-rng.uniform(6, 26, shape), axis=1)  # large first, small ones on top
    angle = rng.uniform(-0.35, 0.35, shape)
    stretch = np.exp(rng.uniform(-0.25, 0.25, shape))
    cx, cy = rng.uniform(3, SIZE - 3, shape), rng.uniform(3, SIZE - 3, shape)
    alpha = _warp(bank[cls, font].reshape(-1, SIZE, SIZE), size, angle, stretch, cx, cy)
    alpha = alpha.reshape(n, MAX_OBJECTS, SIZE, SIZE)
    alpha *= (np.arange(MAX_OBJECTS) < count[:, None])[..., None, None]
    alpha *= rng.uniform(0.75, 1.0, shape)[..., None, None]
    img = background(rng, n)
    colours = contrast_colours(rng, luminance(img), shape)
    visible = np.empty_like(alpha)
    for k in range(MAX_OBJECTS):
        paint(img, alpha[:, k], colours[:, k])
        visible[:, k] = alpha[:, k] * np.prod(1 - alpha[:, k + 1:], axis=1)
    area = visible.sum(axis=(2, 3))  # (n, MAX_OBJECTS) visible pixels
    seen = area >= 6
    seen[np.arange(n), area.argmax(axis=1)] = True  # every scene names at least one glyph
    present = np.zeros((n, classes), np.float32)
    rows = np.repeat(np.arange(n), MAX_OBJECTS)
    present[rows[seen.ravel()], cls.ravel()[seen.ravel()]] = 1
    g = SIZE // _PATCH
    cover = visible.reshape(n, MAX_OBJECTS, g, _PATCH, g, _PATCH).mean(axis=(3, 5))
    owner = cover.argmax(axis=1)  # (n, g, g)
    labels = np.take_along_axis(cls, owner.reshape(n, -1), axis=1)
    labels[cover.max(axis=1).reshape(n, -1) < 0.25] = classes
    c = SIZE // LAYOUT_CELL
    ink = visible.sum(axis=1).clip(0, 1)  # (n, SIZE, SIZE)
    layout = ink.reshape(n, c, LAYOUT_CELL, c, LAYOUT_CELL).mean(axis=(2, 4)).reshape(n, -1)
    return SceneBatch(finish(rng, img), present, labels.astype(np.int64),
                      layout.astype(np.float32))


def _warp(masks: np.ndarray, size: np.ndarray, angle: np.ndarray, stretch: np.ndarray,
          cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Place each SIZE x SIZE mask at centre (cx, cy), side ``size`` px, turned by
    ``angle`` and stretched in width, by one batched affine resampling."""
    cos, sin = np.cos(angle).ravel(), np.sin(angle).ravel()
    sx = (SIZE / size * stretch).ravel()  # output → input scale, per axis
    sy = (SIZE / size / stretch).ravel()
    # input = diag(sx, sy) · R(-angle) · (output - centre), in [-1, 1] coordinates
    m = np.empty((cos.size, 2, 3), np.float32)
    m[:, 0, 0], m[:, 0, 1] = sx * cos, sx * sin
    m[:, 1, 0], m[:, 1, 1] = -sy * sin, sy * cos
    centre = np.stack([cx.ravel() * 2 / SIZE - 1, cy.ravel() * 2 / SIZE - 1], axis=1)
    m[:, :, 2] = -np.einsum("nij,nj->ni", m[:, :, :2], centre)
    theta = torch.from_numpy(m)
    grid = F.affine_grid(theta, [cos.size, 1, SIZE, SIZE], align_corners=False)
    src = torch.from_numpy(np.ascontiguousarray(masks))[:, None]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0].numpy()
