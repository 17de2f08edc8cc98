"""Pretraining the bundled offline backbone on generated images: loop, tasks, generators, files.

`python -m e2vpt_core.pretrain --help` lists the recipe's flags; docs/BACKBONE.md is the
resulting model's card.
"""

from .loop import (
    BUILTIN_MEAN,
    BUILTIN_STD,
    BUILTIN_VIT_TINY_KWARGS,
    PretrainConfig,
    main,
    parse_args,
    pretrain,
    to_input,
)

__all__ = ["BUILTIN_MEAN", "BUILTIN_STD", "BUILTIN_VIT_TINY_KWARGS", "PretrainConfig", "main",
           "parse_args", "pretrain", "to_input"]
