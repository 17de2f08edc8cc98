"""FractalDB-style images from random iterated function systems (IFS).

The offline default backbone is pretrained on these images instead of natural
photos (Kataoka et al., ACCV 2020; Nakashima et al., AAAI 2022): each class is
one random 2-D IFS, each sample is that system rendered by the chaos game with
small per-sample variations.  Everything is vectorised over samples *and*
points, so a single core renders thousands of 32 px images per second and a
training loop can draw fresh images for every step.

A system is a float array of shape (K, 6), one row ``(a, b, c, d, e, f)`` per
affine map ``(x, y) -> (a x + b y + e, c x + d y + f)``; map k is picked with
probability proportional to ``|a d - b c|``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

MAX_MAPS = 4
# Largest singular value a map may have: strictly contracting maps guarantee
# a bounded attractor, so the chaos game never diverges.
MAX_CONTRACTION = 0.98
_BURN_IN = 6


def map_probabilities(systems: np.ndarray) -> np.ndarray:
    """Map probabilities ∝ |det| (FractalDB's rule), shape (..., K).

    Padded maps (all-zero rows) get probability 0; a tiny floor keeps a
    system whose determinants are all ~0 well defined.
    """
    det = np.abs(systems[..., 0] * systems[..., 3] - systems[..., 1] * systems[..., 2])
    active = np.any(systems != 0, axis=-1)
    w = np.where(active, det + 1e-6, 0.0)
    return w / w.sum(axis=-1, keepdims=True)


def spectral_norms(systems: np.ndarray) -> np.ndarray:
    """Largest singular value of each map's linear part, shape (..., K)."""
    a, b, c, d = (systems[..., i] for i in range(4))
    s = a * a + b * b + c * c + d * d
    det = a * d - b * c
    return np.sqrt(np.maximum((s + np.sqrt(np.maximum(s * s - 4 * det * det, 0.0))) / 2, 0.0))


def _pad(systems: Sequence[np.ndarray]) -> np.ndarray:
    """Stack systems with 2..4 maps into one (N, MAX_MAPS, 6) float32 array."""
    out = np.zeros((len(systems), MAX_MAPS, 6), dtype=np.float32)
    for i, s in enumerate(systems):
        out[i, : len(s)] = s
    return out


def _chaos_game(
    params: np.ndarray, rng: np.random.Generator, n_chains: int, n_steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``n_chains`` chaos-game chains per system, all systems at once.

    ``params`` is (B, MAX_MAPS, 6).  Returns x, y and the index of the map
    that produced each point, each of shape (B, n_chains * n_steps), after
    discarding a burn-in so the chains have reached the attractor.
    """
    b = params.shape[0]
    cdf = np.cumsum(map_probabilities(params), axis=-1)[:, : MAX_MAPS - 1, None]
    flat = params.reshape(b * MAX_MAPS, 6)
    base = (np.arange(b, dtype=np.intp) * MAX_MAPS)[:, None]
    # Start on the attractor: the fixed point of map 0 belongs to it, so a
    # short burn-in only has to spread the chains apart.
    a, bb, c, d, e, f = (params[:, 0, i] for i in range(6))
    det = (1 - a) * (1 - d) - bb * c
    x = np.repeat((((1 - d) * e + bb * f) / det)[:, None], n_chains, axis=1)
    y = np.repeat(((c * e + (1 - a) * f) / det)[:, None], n_chains, axis=1)
    u = rng.random((_BURN_IN + n_steps, b, n_chains), dtype=np.float32)
    xs = np.empty((n_steps, b, n_chains), dtype=np.float32)
    ys = np.empty_like(xs)
    ks = np.empty((n_steps, b, n_chains), dtype=np.intp)
    for t in range(_BURN_IN + n_steps):
        k = (u[t] > cdf[:, 0]).astype(np.intp)
        for j in range(1, MAX_MAPS - 1):
            k += u[t] > cdf[:, j]
        p = flat[base + k]
        x, y = p[..., 0] * x + p[..., 1] * y + p[..., 4], p[..., 2] * x + p[..., 3] * y + p[..., 5]
        if t >= _BURN_IN:
            xs[t - _BURN_IN], ys[t - _BURN_IN], ks[t - _BURN_IN] = x, y, k

    def gather(a: np.ndarray) -> np.ndarray:
        return a.transpose(1, 0, 2).reshape(b, -1)

    return gather(xs), gather(ys), gather(ks)


def _to_canvas(
    x: np.ndarray, y: np.ndarray, canvas: int, scale: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Fit each row's points into the canvas (aspect kept) → flat pixel index."""
    lo_x, hi_x = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    lo_y, hi_y = y.min(axis=1, keepdims=True), y.max(axis=1, keepdims=True)
    extent = np.maximum(np.maximum(hi_x - lo_x, hi_y - lo_y), 1e-6)
    s = scale[:, None] * (canvas - 1) / extent
    cx = (canvas - 1) / 2 + shift[:, :1] * canvas
    cy = (canvas - 1) / 2 + shift[:, 1:] * canvas
    px = np.rint((x - (lo_x + hi_x) / 2) * s + cx).astype(np.intp)
    py = np.rint((y - (lo_y + hi_y) / 2) * s + cy).astype(np.intp)
    np.clip(px, 0, canvas - 1, out=px)
    np.clip(py, 0, canvas - 1, out=py)
    rows = np.arange(x.shape[0], dtype=np.intp)[:, None] * (canvas * canvas)
    return rows + py * canvas + px


def filling_rates(
    systems: Sequence[np.ndarray], canvas: int = 64, n_points: int = 16384, seed: int = 0
) -> np.ndarray:
    """Fraction of a ``canvas``² grid covered by each system's attractor.

    FractalDB's filter: a system whose attractor collapses to a point or a
    thin curve covers almost nothing and makes a useless class.
    """
    params = _pad(systems)
    rng = np.random.default_rng(seed)
    n_chains = 256
    x, y, _ = _chaos_game(params, rng, n_chains, max(1, n_points // n_chains))
    b = len(systems)
    idx = _to_canvas(x, y, canvas, np.ones(b), np.zeros((b, 2)))
    hit = np.bincount(idx.ravel(), minlength=b * canvas * canvas) > 0
    return hit.reshape(b, -1).mean(axis=1)


def sample_ifs_classes(
    num_classes: int,
    seed: int,
    min_maps: int = 2,
    max_maps: int = MAX_MAPS,
    fill_range: tuple[float, float] = (0.1, 1.0),
    canvas: int = 64,
) -> list[np.ndarray]:
    """Draw ``num_classes`` random contracting IFS that pass the filling filter.

    Parameters are uniform in [-1, 1] (as in FractalDB); candidates with a
    non-contracting map or a filling rate outside ``fill_range`` are
    rejected.  Deterministic given ``seed``.
    """
    if not 2 <= min_maps <= max_maps <= MAX_MAPS:
        raise ValueError(f"need 2 <= min_maps <= max_maps <= {MAX_MAPS}")
    rng = np.random.default_rng(seed)
    accepted: list[np.ndarray] = []
    while len(accepted) < num_classes:
        n_maps = rng.integers(min_maps, max_maps + 1, size=256)
        cands = rng.uniform(-1, 1, (256, MAX_MAPS, 6)).astype(np.float32)
        cands[np.arange(MAX_MAPS)[None, :] >= n_maps[:, None]] = 0
        ok = np.all(spectral_norms(cands) < MAX_CONTRACTION, axis=1)
        systems = [c[:k] for c, k, good in zip(cands, n_maps, ok, strict=True) if good]
        if not systems:
            continue
        fill = filling_rates(systems, canvas=canvas, seed=int(rng.integers(2**31)))
        lo, hi = fill_range
        accepted += [s for s, f in zip(systems, fill, strict=True) if lo <= f <= hi]
    return accepted[:num_classes]


def _perturb(params: np.ndarray, rng: np.random.Generator, weight: float) -> np.ndarray:
    """FractalDB-style "weight" variation: scale one parameter of one map.

    The factor is uniform in [1 - weight, 1 + weight]; a map pushed past
    ``MAX_CONTRACTION`` is shrunk back so the chaos game stays bounded.
    """
    b = params.shape[0]
    p = params.copy()
    n_active = np.maximum(np.any(p != 0, axis=-1).sum(axis=1), 1)
    m = (rng.random(b) * n_active).astype(np.intp)
    j = rng.integers(0, 6, size=b)
    p[np.arange(b), m, j] *= rng.uniform(1 - weight, 1 + weight, size=b).astype(np.float32)
    norm = spectral_norms(p)[..., None]
    p[..., :4] *= np.minimum(1.0, MAX_CONTRACTION / np.maximum(norm, 1e-12))
    return p


def render_fractals(
    systems: Sequence[np.ndarray],
    labels: np.ndarray,
    rng: np.random.Generator,
    size: int = 32,
    supersample: int = 2,
    points_per_pixel: float = 1.0,
    weight: float = 0.2,
    augment: bool = True,
) -> np.ndarray:
    """Render one image per label as uint8 (N, size, size, 3).

    Each image is the class system, perturbed (``weight``), flipped, scaled
    and shifted at random, drawn with a random colour per map on a random dark
    background at ``supersample`` × the resolution and area-averaged down
    (anti-aliasing).  ``augment=False`` gives the plain centred attractor.
    """
    labels = np.asarray(labels, dtype=np.intp)
    n = len(labels)
    canvas = size * supersample
    params = _pad(systems)[labels]
    if augment:
        params = _perturb(params, rng, weight)
        # Flipping the picture = conjugating every map by diag(sx, sy).
        sx, sy = np.where(rng.random((2, n)) < 0.5, -1, 1).astype(np.float32)
        params[:, :, 1] *= (sx * sy)[:, None]
        params[:, :, 2] *= (sx * sy)[:, None]
        params[:, :, 4] *= sx[:, None]
        params[:, :, 5] *= sy[:, None]
        scale = rng.uniform(0.6, 1.0, n)
        shift = rng.uniform(-0.5, 0.5, (n, 2)) * (1 - scale)[:, None]
        palette = rng.uniform(0.25, 1.0, (n, MAX_MAPS, 3)).astype(np.float32)
        background = rng.uniform(0.0, 0.2, (n, 3)).astype(np.float32)
    else:
        scale, shift = np.full(n, 0.9), np.zeros((n, 2))
        palette = np.ones((n, MAX_MAPS, 3), dtype=np.float32)
        background = np.zeros((n, 3), dtype=np.float32)
    n_chains = 64
    n_steps = max(1, int(np.ceil(points_per_pixel * canvas * canvas / n_chains)))
    x, y, k = _chaos_game(params, rng, n_chains, n_steps)
    idx = _to_canvas(x, y, canvas, scale, shift)
    # Hits per (pixel, map); a pixel's colour is the mean colour of its hits.
    cells = canvas * canvas
    hits = np.bincount((idx * MAX_MAPS + k).ravel(), minlength=n * cells * MAX_MAPS)
    hits = hits.reshape(n, cells, MAX_MAPS).astype(np.float32)
    count = (hits[..., 0] + hits[..., 1] + hits[..., 2] + hits[..., 3])[..., None]
    img = np.where(count > 0, (hits @ palette) / np.maximum(count, 1), background[:, None])
    img = img.reshape(n, size, supersample, size, supersample, 3)
    out = sum(img[:, :, i, :, j] for i in range(supersample) for j in range(supersample))
    return (out * (255 / supersample**2) + 0.5).astype(np.uint8)


class FractalStream:
    """Endless, reproducible stream of fresh (images, labels) batches.

    Every batch is newly rendered (labels drawn uniformly over the classes),
    so a training loop never sees the same image twice and cannot overfit
    the samples, only learn the classes.
    """

    def __init__(
        self,
        systems: Sequence[np.ndarray],
        batch_size: int,
        seed: int | np.random.SeedSequence,
        size: int = 32,
    ) -> None:
        self.systems = list(systems)
        self.batch_size = batch_size
        self.size = size
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch: uint8 images (B, size, size, 3) and int64 labels (B,)."""
        labels = self.rng.integers(0, len(self.systems), size=self.batch_size)
        return render_fractals(self.systems, labels, self.rng, size=self.size), labels

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.next_batch()


def fixed_set(
    systems: Sequence[np.ndarray],
    n_images: int,
    seed: int | np.random.SeedSequence,
    size: int = 32,
    chunk: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed labelled set (labels cycle over the classes) for held-out checks.

    Use a seed different from the training stream's: same classes, unseen
    samples.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images) % len(systems)
    parts = [
        render_fractals(systems, labels[i : i + chunk], rng, size=size)
        for i in range(0, n_images, chunk)
    ]
    return np.concatenate(parts), labels.astype(np.int64)
