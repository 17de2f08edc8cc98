"""Vectorised numpy generators for the built-in offline tasks (32x32 RGB uint8 images).

Each generator takes a seeded ``numpy.random.Generator`` and a sample count and returns
``(images uint8 (n, 32, 32, 3), labels int64 (n,))`` with balanced labels. Backgrounds
carry random colour, gradient and low-frequency noise, objects a random contrast sign,
and images pixel noise, so that raw pixels are not linearly separable while the concept
(count, distance, position ...) stays visible.
"""

from __future__ import annotations

import functools

import numpy as np

from .common import balanced_labels

SIZE = 32
_YY, _XX = (np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5)

Sample = tuple[np.ndarray, np.ndarray]

TEXTURE_CLASSES = (
    "stripes", "checkers", "dots", "crosshatch", "rings", "waves", "blotches", "speckle",
)


@functools.lru_cache(maxsize=8)
def _upsample_matrix(k: int) -> np.ndarray:
    """Bilinear interpolation matrix (SIZE, k) mapping k cell values onto SIZE pixels."""
    pos = np.clip((np.arange(SIZE) + 0.5) * k / SIZE - 0.5, 0, k - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, k - 1)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((SIZE, k), np.float32)
    np.add.at(m, (np.arange(SIZE), lo), 1 - w)
    np.add.at(m, (np.arange(SIZE), hi), w)
    return m


def _upsample(low: np.ndarray) -> np.ndarray:
    """Smoothly upsample (n, k, k[, c]) grids to (n, SIZE, SIZE[, c])."""
    m = _upsample_matrix(low.shape[1])
    if low.ndim == 3:
        return m @ low.astype(np.float32) @ m.T
    channels_first = np.moveaxis(low.astype(np.float32), -1, 1)
    return np.moveaxis(m @ channels_first @ m.T, 1, -1)


def _col(v: np.ndarray) -> np.ndarray:
    """Per-sample values (n,) shaped to broadcast over an (n, H, W) image."""
    return np.asarray(v, np.float32)[:, None, None]


def background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random colour + gradient + blotchy low-frequency noise, float (n, H, W, 3) in [0, 1]."""
    grey = rng.uniform(0.1, 0.9, (n, 1, 1, 1))
    tint = rng.uniform(-0.15, 0.15, (n, 1, 1, 3))
    theta = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0.0, 0.3, n)
    ramp = (np.cos(theta)[:, None, None] * (_XX - 16) + np.sin(theta)[:, None, None] * (_YY - 16))
    ramp = ramp / SIZE * amp[:, None, None]
    blotch = _upsample(rng.normal(0, 0.07, (n, 5, 5, 3)))
    return np.clip(grey + tint + ramp[..., None] + blotch, 0, 1).astype(np.float32)


def contrast_colours(
    rng: np.random.Generator, ref: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Colours whose luminance differs from ``ref`` (n,) by 0.3-0.55, either sign."""
    ref = ref.reshape((-1,) + (1,) * (len(shape) - 1))
    delta = rng.uniform(0.3, 0.55, shape)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    sign = np.where(ref + delta > 1, -1.0, np.where(ref - delta < 0, 1.0, sign))
    lum = np.clip(ref + sign * delta, 0, 1)
    chroma = rng.uniform(-0.25, 0.25, shape + (3,))
    chroma -= chroma.mean(axis=-1, keepdims=True)
    return np.clip(lum[..., None] + chroma, 0, 1).astype(np.float32)


def paint(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-composite a per-sample colour (n, 3) through a mask (n, H, W) in place."""
    img += alpha[..., None] * (colour[:, None, None, :] - img)


def _shape_alpha(shape: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Anti-aliased disk (0), square (1) or diamond (2) masks, (n, H, W) in [0, 1]."""
    dx, dy = np.abs(_XX - _col(cx)), np.abs(_YY - _col(cy))
    dist = np.where(
        _col(shape) == 0,
        np.hypot(dx, dy),
        np.where(_col(shape) == 1, np.maximum(dx, dy), (dx + dy) / np.sqrt(2) + 0.3),
    )
    return np.clip(_col(r) - dist + 0.5, 0, 1)


def finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add per-image Gaussian pixel noise and quantise to uint8."""
    sigma = rng.uniform(0.01, 0.06, (img.shape[0], 1, 1, 1)).astype(np.float32)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def luminance(img: np.ndarray) -> np.ndarray:
    return img.mean(axis=(1, 2, 3))


def _specks(
    rng: np.random.Generator, img: np.ndarray, max_count: int, r: tuple[float, float]
) -> None:
    """Paint 0..max_count small round distractors of random colour and opacity."""
    n = img.shape[0]
    count = rng.integers(0, max_count + 1, n)
    for k in range(max_count):
        alpha = _shape_alpha(
            np.zeros(n, int), rng.uniform(1, 31, n), rng.uniform(1, 31, n), rng.uniform(*r, n)
        )
        alpha *= _col(rng.uniform(0.4, 0.9, n) * (k < count))
        paint(img, alpha, contrast_colours(rng, luminance(img), (n,)))


@functools.lru_cache(maxsize=1)
def _digits_source() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=8)
def digit_pools(seed: int) -> dict[str, np.ndarray]:
    """Disjoint per-class pools of original digits: 45% train, 15% val, 40% test."""
    _, y = _digits_source()
    rng = np.random.default_rng([seed, 8])
    pools: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        a, b = round(0.45 * len(idx)), round(0.60 * len(idx))
        pools["train"].append(idx[:a])
        pools["val"].append(idx[a:b])
        pools["test"].append(idx[b:])
    return {k: np.concatenate(v) for k, v in pools.items()}


def gen_digits(rng: np.random.Generator, n: int, pool: np.ndarray) -> Sample:
    """Scikit-learn 8x8 digits drawn from ``pool``, rotated, scaled and placed at random."""
    src_x, src_y = _digits_source()
    labels = balanced_labels(rng, n, 10)
    pool_y = src_y[pool]
    idx = np.empty(n, np.int64)
    for c in range(10):
        members = pool[pool_y == c]
        where = np.flatnonzero(labels == c)
        idx[where] = members[rng.integers(0, len(members), len(where))]
    src = np.pad(src_x[idx], ((0, 0), (1, 1), (1, 1)))
    scale = rng.uniform(16, 26, n)
    half_room = (SIZE - scale) / 2
    cx = 16 + rng.uniform(-1, 1, n) * half_room
    cy = 16 + rng.uniform(-1, 1, n) * half_room
    theta = rng.uniform(-0.25, 0.25, n)
    dx, dy = _XX - _col(cx), _YY - _col(cy)
    cos, sin = _col(np.cos(theta)), _col(np.sin(theta))
    su = np.clip((cos * dx + sin * dy) / _col(scale) * 8 + 4.5, 0, 9)
    sv = np.clip((-sin * dx + cos * dy) / _col(scale) * 8 + 4.5, 0, 9)
    u0, v0 = np.minimum(su.astype(int), 8), np.minimum(sv.astype(int), 8)
    wu, wv = su - u0, sv - v0
    rows = np.arange(n)[:, None, None]
    value = (
        src[rows, v0, u0] * (1 - wu) * (1 - wv)
        + src[rows, v0, u0 + 1] * wu * (1 - wv)
        + src[rows, v0 + 1, u0] * (1 - wu) * wv
        + src[rows, v0 + 1, u0 + 1] * wu * wv
    )
    img = background(rng, n)
    _specks(rng, img, 2, (1.0, 2.5))
    alpha = np.clip(value * _col(rng.uniform(1.0, 1.6, n)), 0, 1)
    paint(img, alpha, contrast_colours(rng, luminance(img), (n,)))
    return finish(rng, img), labels


def gen_counting(rng: np.random.Generator, n: int, max_count: int = 8) -> Sample:
    """1..max_count non-overlapping small shapes on a jittered 4x4 cell layout."""
    labels = balanced_labels(rng, n, max_count)
    cells = np.argsort(rng.random((n, 16)), axis=1)[:, :max_count]
    cx = (cells % 4) * 8 + 4 + rng.uniform(-1, 1, cells.shape)
    cy = (cells // 4) * 8 + 4 + rng.uniform(-1, 1, cells.shape)
    radius = rng.uniform(1.5, 2.5, cells.shape)
    shape = rng.integers(0, 3, cells.shape)
    img = background(rng, n)
    colours = contrast_colours(rng, luminance(img), cells.shape)
    for k in range(max_count):
        rows = np.flatnonzero(k <= labels)
        alpha = _shape_alpha(shape[rows, k], cx[rows, k], cy[rows, k], radius[rows, k])
        part = img[rows]
        paint(part, alpha, colours[rows, k])
        img[rows] = part
    return finish(rng, img), labels


def gen_distance(rng: np.random.Generator, n: int, buckets: int = 6) -> Sample:
    """Objects on a ground plane in perspective; label = depth bucket of the nearest one.

    Closeness t in (0, 1] (1 = at the camera) sets both the ground-contact row and the
    size; the nearest object's t is drawn inside the label's bucket, the others farther.
    """
    labels = balanced_labels(rng, n, buckets)
    edges = np.linspace(0.15, 1.0, buckets + 1)
    horizon = rng.uniform(7, 12, n)
    sky = background(rng, n)
    ground = background(rng, n)
    img = np.where(_YY[None, :, :, None] < _col(horizon)[..., None], sky, ground)
    others = 3
    t_near = rng.uniform(edges[labels], edges[labels + 1])
    t = np.concatenate(
        [t_near[:, None], rng.uniform(0.08, 1, (n, others)) * (t_near[:, None] - 0.04)], axis=1
    )
    present = np.concatenate(
        [np.ones((n, 1), bool), rng.random((n, others)) < 0.6], axis=1
    ) & (t > 0.06)
    order = np.argsort(t, axis=1)
    t, present = np.take_along_axis(t, order, 1), np.take_along_axis(present, order, 1)
    radius = 0.6 + 4.4 * t
    contact = horizon[:, None] + t * (SIZE - 0.5 - horizon[:, None])
    cx = rng.uniform(3, 29, t.shape)
    shape = rng.integers(0, 3, t.shape)
    colours = contrast_colours(rng, luminance(ground), t.shape)
    for k in range(t.shape[1]):
        alpha = _shape_alpha(shape[:, k], cx[:, k], contact[:, k] - radius[:, k], radius[:, k])
        paint(img, alpha * _col(present[:, k]), colours[:, k])
    return finish(rng, img), labels


def gen_position(rng: np.random.Generator, n: int, buckets: int = 8) -> Sample:
    """One shape; label = bucket of its x-centre over [5, 27) px; small specks distract."""
    labels = balanced_labels(rng, n, buckets)
    cx = 5 + (labels + rng.random(n)) * (22 / buckets)
    cy = rng.uniform(6, 26, n)
    img = background(rng, n)
    _specks(rng, img, 3, (0.6, 1.1))
    alpha = _shape_alpha(rng.integers(0, 3, n), cx, cy, rng.uniform(2.5, 4.5, n))
    paint(img, alpha, contrast_colours(rng, luminance(img), (n,)))
    return finish(rng, img), labels


def gen_orientation(rng: np.random.Generator, n: int, buckets: int = 8) -> Sample:
    """One elongated ellipse or bar; label = bucket of its angle in [0, 180) degrees."""
    labels = balanced_labels(rng, n, buckets)
    theta = (labels + rng.random(n)) * (np.pi / buckets)
    half_len, half_w = rng.uniform(6, 10, n), rng.uniform(1.4, 2.4, n)
    dx, dy = _XX - _col(rng.uniform(11, 21, n)), _YY - _col(rng.uniform(11, 21, n))
    cos, sin = _col(np.cos(theta)), _col(np.sin(theta))
    a, b = cos * dx + sin * dy, -sin * dx + cos * dy
    ellipse = np.sqrt((a / _col(half_len)) ** 2 + (b / _col(half_w)) ** 2)
    bar = np.maximum(np.abs(a) / _col(half_len), np.abs(b) / _col(half_w))
    shape_dist = np.where(_col(rng.random(n) < 0.5), ellipse, bar)
    alpha = np.clip((1 - shape_dist) * _col(half_w) + 0.5, 0, 1)
    img = background(rng, n)
    _specks(rng, img, 2, (1.5, 2.5))
    paint(img, alpha, contrast_colours(rng, luminance(img), (n,)))
    return finish(rng, img), labels


def _soft(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(3 * x)


def _texture(rng: np.random.Generator, kind: int, m: int) -> np.ndarray:
    """Pattern values in [0, 1], (m, H, W), for one texture class with random parameters."""
    theta = _col(rng.uniform(0, np.pi, m))
    f = _col(rng.uniform(0.1, 0.25, m))
    ph1, ph2 = _col(rng.uniform(0, 2 * np.pi, m)), _col(rng.uniform(0, 2 * np.pi, m))
    a = np.cos(theta) * _XX + np.sin(theta) * _YY
    b = -np.sin(theta) * _XX + np.cos(theta) * _YY
    name = TEXTURE_CLASSES[kind]
    if name == "stripes":
        return _soft(np.sin(2 * np.pi * f * a + ph1))
    if name == "checkers":
        return _soft(2 * np.sin(2 * np.pi * f * a + ph1) * np.sin(2 * np.pi * f * b + ph2))
    if name == "dots":
        u, v = (f * a + ph1) % 1 - 0.5, (f * b + ph2) % 1 - 0.5
        radius = _col(rng.uniform(0.2, 0.33, m))
        return np.clip((radius - np.hypot(u, v)) / f + 0.5, 0, 1)
    if name == "crosshatch":
        width = _col(rng.uniform(0.6, 1.0, m))
        du, dv = np.abs((f * a + ph1) % 1 - 0.5) / f, np.abs((f * b + ph2) % 1 - 0.5) / f
        return np.clip(width - np.minimum(du, dv) + 0.5, 0, 1)
    if name == "rings":
        r = np.hypot(_XX - _col(rng.uniform(-8, 40, m)), _YY - _col(rng.uniform(-8, 40, m)))
        return _soft(np.sin(2 * np.pi * f * r + ph1))
    if name == "waves":
        bend = _col(rng.uniform(1.5, 3.0, m)) * np.sin(
            2 * np.pi * _col(rng.uniform(0.05, 0.12, m)) * b + ph2
        )
        return _soft(np.sin(2 * np.pi * f * a + bend + ph1))
    if name == "blotches":
        field = _upsample(rng.normal(0, 1, (m, 6, 6)))
        return _soft((field - np.median(field, axis=(1, 2), keepdims=True)) * 2)
    cells = rng.random((m, 16, 16)) < _col(rng.uniform(0.2, 0.5, m))
    return np.repeat(np.repeat(cells, 2, axis=1), 2, axis=2).astype(np.float32)


def gen_texture(rng: np.random.Generator, n: int) -> Sample:
    """Eight procedural texture families with random scale, angle, phase and colours."""
    labels = balanced_labels(rng, n, len(TEXTURE_CLASSES))
    pattern = np.empty((n, SIZE, SIZE), np.float32)
    for kind in range(len(TEXTURE_CLASSES)):
        where = np.flatnonzero(labels == kind)
        pattern[where] = _texture(rng, kind, len(where))
    base = background(rng, n)
    ink = contrast_colours(rng, luminance(base), (n,))
    img = base + pattern[..., None] * (ink[:, None, None, :] - base)
    return finish(rng, img), labels
