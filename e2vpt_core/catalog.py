"""What ships with the toolkit, by name: the built-in tasks and the bundled backbones.

Names and descriptions only, without torch, so that the app's forms and the CLI's help
list them without importing a model or a dataset. The generators live in
`e2vpt_core.data.builtin`, the loaders in `e2vpt_core.models.factory`.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_TASKS: dict[str, str] = {
    "digits": "handwritten digit 0-9 (scikit-learn 8x8 digits, placed, scaled, rotated)",
    "counting": "number of small shapes, 1-8 (like CLEVR-count)",
    "distance": "depth bucket of the nearest object on a ground plane, 6 (like CLEVR-dist)",
    "position": "x-position bucket of one shape, 8 (like dSprites-loc)",
    "orientation": "angle bucket of an elongated shape, 8 x 22.5 deg (like dSprites-ori)",
    "texture": "procedural texture family, 8 (like DTD)",
}

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Names that are not timm's, each a directory in timm's hub layout (config.json with the
# architecture, model args and pretrained config, plus model.safetensors).
# The lineage: builtin-vit-tiny (fractals) → -scenes (glyph scenes) → -layout, the default
# (glyph scenes with the CLS layout target, --layout-weight). The ancestors stay for
# comparison (see docs/BENCHMARKS.md).
BUILTIN_DESCRIPTIONS: dict[str, str] = {
    "builtin-vit-tiny-layout": "a small ViT pretrained offline on fractals, then glyph scenes "
    "(letters and symbols, no digits) with its CLS token also reconstructing where the ink "
    "is (the default)",
    "builtin-vit-tiny-scenes": "the same ViT before the CLS layout target (the previous "
    "default; reads position near chance)",
    "builtin-vit-tiny": "the same ViT after its fractal pretraining only (the first default; "
    "reads the built-in tasks far worse)",
}
DEFAULT_BACKBONE = "builtin-vit-tiny-layout"  # TrainConfig.backbone
BUILTIN_BACKBONES: dict[str, Path] = {name: ASSETS / name for name in BUILTIN_DESCRIPTIONS}
