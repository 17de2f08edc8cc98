"""Seed groups and controls: mean ± sd, and a plain verdict on whether a difference is larger
than its noise.

Two verdicts cover what the toolkit compares:

- `compare_groups`: two groups of runs that differ in one thing (method, mask order), one
  accuracy per seed on each side. Welch's t-test, which does not assume equal spreads.
- `compare_to_draws`: one value (the importance mask's accuracy) against repeated draws of
  a control (random masks with the same counts). The value is tested as one more draw from
  the control's distribution (a t prediction interval), so five draws with a small spread
  can still say "no clear difference".

Accuracies are percentages, so differences are in points. Torch-free, and scipy (seconds
to import) is imported only where a test is computed, so a page that shows mean ± sd alone
stays quick.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (sd is 0 for a single value) of `n` values."""

    n: int
    mean: float
    sd: float

    def text(self, digits: int = 1) -> str:
        """'73.9 ± 1.1 (3 seeds)', or '73.9 (1 seed)'."""
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''}"
        if self.n == 1:
            return f"{self.mean:.{digits}f} ({seeds})"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f} ({seeds})"


def summarize(values: Sequence[float]) -> Summary:
    """Summary of finite values; NaN (a failed or unevaluated run) is left out."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        raise ValueError("no finite values to summarize")
    sd = statistics.stdev(kept) if len(kept) > 1 else 0.0
    return Summary(len(kept), statistics.fmean(kept), sd)


@dataclass(frozen=True)
class Verdict:
    """A difference with its uncertainty, its p-value and one sentence that says it plainly.

    `clear` is True when the difference is larger than its noise at `ALPHA`; `p_value` is
    None where no test is possible (a single value on a side that needs a spread)."""

    difference: float
    uncertainty: float
    p_value: float | None
    n_a: int
    n_b: int
    clear: bool
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _signed(value: float, digits: int = 1) -> str:
    text = f"{value:+.{digits}f}"
    return "±0.0" if text in ("+0.0", "-0.0") else text


def _conclusion(clear: bool, difference: float, higher: str, lower: str) -> str:
    if not clear:
        return "no clear difference"
    return f"{higher if difference > 0 else lower} is higher"


def compare_groups(a: Sequence[float], b: Sequence[float], label_a: str, label_b: str,
                   alpha: float = ALPHA) -> Verdict:
    """`label_a − label_b` over seeds: Welch's t-test on the two groups' accuracies.

    The uncertainty is the standard error of the difference of means. One seed on either
    side gives no test; zero spread on both sides makes any non-zero difference clear."""
    first, second = summarize(a), summarize(b)
    difference = first.mean - second.mean
    seeds = f"over {first.n} vs {second.n} seeds" if first.n != second.n \
        else f"over {first.n} seed{'s' if first.n != 1 else ''}"
    head = f"{label_a} − {label_b}: {_signed(difference)}"
    if first.n < 2 or second.n < 2:
        return Verdict(difference, math.nan, None, first.n, second.n, False,
                       f"{head} points {seeds}: too few seeds to tell (need 2 on each side)")
    error = math.sqrt(first.sd ** 2 / first.n + second.sd ** 2 / second.n)
    if error == 0.0:
        clear = difference != 0.0
        p_value = 0.0 if clear else 1.0
        detail = "no spread across seeds"
    else:
        from scipy import stats as scipy_stats

        p_value = float(scipy_stats.ttest_ind(
            [float(v) for v in a if v is not None and math.isfinite(float(v))],
            [float(v) for v in b if v is not None and math.isfinite(float(v))],
            equal_var=False).pvalue)
        clear = p_value < alpha
        detail = f"Welch p = {p_value:.2g}"
    return Verdict(difference, error, p_value, first.n, second.n, clear,
                   f"{head} ± {error:.1f} points {seeds} ({detail}): "
                   f"{_conclusion(clear, difference, label_a, label_b)}")


def compare_to_draws(value: float, draws: Sequence[float], subject: str = "importance",
                     control: str = "random masks", split: str = "val",
                     alpha: float = ALPHA) -> Verdict:
    """One value against draws of a control, e.g. "importance keeps 64.5 % val against
    44.1 ± 3.0 for random masks (5 draws): +20.4 points, 6.8 sd".

    The test asks whether `value` could be one more draw: t = d / (s·√(1 + 1/n)) with n − 1
    degrees of freedom. Fewer than 2 draws, or draws without spread, give no p-value."""
    drawn = summarize(draws)
    difference = float(value) - drawn.mean
    count = f"{drawn.n} draw{'s' if drawn.n != 1 else ''}"
    against = f"{drawn.mean:.1f} ± {drawn.sd:.1f}" if drawn.n > 1 else f"{drawn.mean:.1f}"
    head = (f"{subject} keeps {float(value):.1f} % {split} against {against} for {control} "
            f"({count}): {_signed(difference)} points")
    if drawn.n < 2 or drawn.sd == 0.0:
        reason = "too few draws to tell" if drawn.n < 2 else "the draws have no spread"
        return Verdict(difference, drawn.sd, None, 1, drawn.n, False, f"{head}; {reason}")
    from scipy import stats as scipy_stats

    scale = drawn.sd * math.sqrt(1.0 + 1.0 / drawn.n)
    p_value = float(2.0 * scipy_stats.t.sf(abs(difference) / scale, drawn.n - 1))
    clear = p_value < alpha
    sds = difference / drawn.sd
    ending = f", {sds:.1f} sd" if clear else f", {sds:.1f} sd: no clear difference"
    return Verdict(difference, drawn.sd, p_value, 1, drawn.n, clear, head + ending)
