"""The pruning commands' choices and defaults, as plain data.

No torch here: the CLI's parser and the app's forms list these without loading a model,
and `importance`, `selection`, `rewind` and `sweep` import them from here.
"""

from __future__ import annotations

TOKEN_SCORES = ("mask", "segments", "kv", "logit", "taylor", "loo")
UNSIGNED = ("taylor", "loo")  # no signed variant: absolute values inside the sum / a loss rise
MAX_RATIO = 0.9
ORDERS = ("importance", "random", "reverse")
CONTROLS = ("none", "random")  # what a sweep rewinds beside its masks
DEFAULT_RANDOM_SEEDS = (0, 1, 2)  # draws of random-mask controls per ratio
ROUNDINGS = ("nearest", "floor")
INITS = ("fresh", "original")
MODES = ("zero", "remove")
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # token ratios of a sweep
DEFAULT_SEGMENT_RATIOS = (0.0, 0.25, 0.5)  # segment ratios of the protocol's sweep

# What `loo` is, said once (CLI help, README, docs/METHOD.md and the Pruning page agree):
# `noretrain.leave_one_out` on the run's training split, read with the eval transform.
LEAVE_ONE_OUT = ("exact leave-one-out: the rise in mean loss on the training split (eval "
                 "transform) when the token is removed from every layer; P + 1 passes")
