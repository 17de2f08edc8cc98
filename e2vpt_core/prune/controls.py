"""Controls that give an answer: a mask order's accuracy against random masks of the same
counts, as one verdict per ratio.

A curve or a chart of random draws leaves the reader to judge the gap; these rows say
whether it is larger than the draws' spread (`stats.compare_to_draws`), on a named split,
the same split on both sides. They are built from plain rows (a sweep's table, a stored
no-retrain curve, the store's runs frame), so the CLI and the app say the same thing.
Torch-free and pandas-free.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..stats import Verdict, compare_to_draws

SUBJECTS = {"importance": "importance", "reverse": "the reverse order"}
# Rewinds compared with each other must have been trained alike (random masks do not
# depend on the scores, so `token_scores` only tells importance rewinds apart).
REWIND_SETTINGS = ("init", "mode", "epochs")
DIGITS = 6  # ratios equal to this many decimals are one ratio (0.1 + 0.2 is 0.3)
_SETTING_TEXT = {"init": "{} init", "mode": "{} mode", "token_scores": "{} scores"}


@dataclass(frozen=True)
class ControlVerdict:
    """One order's accuracy at one ratio pair against the random draws there."""

    token_ratio: float
    segment_ratio: float
    subject: str  # the order tested: importance or reverse
    split: str
    value: float
    draws: tuple[float, ...]  # the random masks' accuracies, one per seed
    verdict: Verdict
    settings: tuple[tuple[str, Any], ...] = ()  # how the compared rows were made

    def text(self) -> str:
        """The verdict's sentence, prefixed by where (and, for rewinds, how) it holds."""
        how = ", ".join(_setting(key, value) for key, value in self.settings
                        if value is not None)
        where = _where(self.token_ratio, self.segment_ratio)
        return f"{where}{f' ({how})' if how else ''}, {self.verdict.sentence}"

    def table_row(self) -> dict[str, Any]:
        """A flat row for a verdict table."""
        verdict = self.verdict
        return {"token_ratio": self.token_ratio, "segment_ratio": self.segment_ratio,
                **dict(self.settings), "order": self.subject, "split": self.split,
                f"{self.split}_top1": self.value,
                "random_mean": self.value - verdict.difference,
                "random_sd": verdict.uncertainty, "draws": verdict.n_b,
                "difference": verdict.difference, "p_value": verdict.p_value,
                "clear": verdict.clear}


def _setting(key: str, value: Any) -> str:
    if key == "epochs":
        return f"{value} epoch{'s' if value != 1 else ''}"
    return _SETTING_TEXT.get(key, key + " {}").format(value)


def _where(token_ratio: float, segment_ratio: float) -> str:
    """'at 50 % of tokens pruned', or '… of tokens and 25 % of segments pruned'."""
    tokens = f"at {100 * token_ratio:.3g} % of tokens"
    if segment_ratio:
        return f"{tokens} and {100 * segment_ratio:.3g} % of segments pruned"
    return f"{tokens} pruned"


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value)


def _key(value: Any) -> Any:
    """A group key: ratios rounded, so 0.1 + 0.2 and 0.3 are one ratio; a missing number
    (NaN in a frame) is None, so that two missing values are one key."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return round(float(value), DIGITS) if math.isfinite(value) else None


def verdict_rows(rows: Iterable[Mapping[str, Any]], value: str, split: str,
                 subjects: Sequence[str] = ("importance",), settings: Sequence[str] = (),
                 per_subject: Sequence[str] = ()) -> list[ControlVerdict]:
    """Each subject order's `value` against the `random` rows of its group, one verdict
    per (token ratio, segment ratio, `settings`) and subject row, sorted by ratio.

    Rows need `order`, `token_ratio` and `value` (`segment_ratio` is 0 when absent; a
    `status` other than completed, or a missing value, leaves a row out). Random rows
    count once per `seed`; subject rows of a group count once per `per_subject` values
    (the newest first, as the store lists runs). A group without a subject row or
    without a random row has no verdict."""
    groups: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        if row.get("status", "completed") != "completed" or not _finite(row.get(value)):
            continue
        order = row.get("order") if isinstance(row.get("order"), str) else "importance"
        segment = row.get("segment_ratio")
        ratio = (_key(row["token_ratio"]), _key(segment if _finite(segment) else 0.0))
        group = groups.setdefault(ratio + tuple(_key(row.get(k)) for k in settings),
                                  {"subjects": {}, "draws": {}})
        if order == "random":
            group["draws"].setdefault(_key(row.get("seed")), float(row[value]))
        elif order in subjects:
            identity = (order, *(_key(row.get(k)) for k in per_subject))
            group["subjects"].setdefault(identity, float(row[value]))
    found = []
    for key, group in sorted(groups.items(), key=lambda item: item[0][:2]):
        if not group["draws"]:
            continue
        draws = tuple(group["draws"].values())
        for (order, *extra), tested in group["subjects"].items():
            verdict = compare_to_draws(tested, draws, subject=SUBJECTS.get(order, order),
                                       split=split)
            found.append(ControlVerdict(
                key[0], key[1], order, split, tested, draws, verdict,
                tuple(zip(settings, key[2:], strict=True))
                + tuple(zip(per_subject, extra, strict=True))))
    return found


def nearest_ratio(verdicts: Sequence[ControlVerdict], token_ratio: float) -> float | None:
    """The computed token ratio closest to `token_ratio` (a slider's), or None."""
    if not verdicts:
        return None
    return min((v.token_ratio for v in verdicts), key=lambda r: (abs(r - token_ratio), r))


def curve_verdicts(curve: Mapping[str, Any]) -> list[ControlVerdict]:
    """A stored no-retrain curve (`rewind.run_curve`): the scores' order and the reverse
    order against the random draws, at every ratio, on the curve's split."""
    return verdict_rows(curve["rows"], "top1", curve["split"], ("importance", "reverse"))


def sweep_verdicts(table: Sequence[Mapping[str, Any]], split: str = "val",
                   subject: str = "importance") -> list[dict[str, Any]]:
    """One entry per ratio pair of a sweep with random controls: `verdict` on `split` (the
    split the best row is selected on) and, when the rewinds were tested, `verdict_test`,
    each with its sentence (`verdict_text`, `verdict_test_text`); a verdict is None where
    the subject's rewind or every random one failed."""
    splits = {"verdict": split}
    if split != "test" and any(_finite(row.get("test_top1")) for row in table):
        splits["verdict_test"] = "test"
    found = {name: {(v.token_ratio, v.segment_ratio): v
                    for v in verdict_rows(table, f"{on}_top1", on, (subject,))}
             for name, on in splits.items()}
    pairs = dict.fromkeys((_key(row["token_ratio"]), _key(row.get("segment_ratio") or 0.0))
                          for row in table if row.get("order", subject) == subject)
    entries = []
    for pair in pairs:
        entry: dict[str, Any] = {"token_ratio": pair[0], "segment_ratio": pair[1],
                                 "split": split}
        for name, on in splits.items():
            verdict = found[name].get(pair)
            entry[name] = None if verdict is None else verdict.verdict.to_dict()
            entry[f"{name}_text"] = verdict.text() if verdict is not None else (
                f"{_where(*pair)}, no verdict on {on}: the {subject} rewind or every "
                "random one failed")
        entries.append(entry)
    return entries


def rewind_verdicts(runs: Iterable[Mapping[str, Any]], parent_id: str,
                    split: str = "val") -> list[ControlVerdict]:
    """The parent's finished importance rewinds against its random-mask rewinds of the
    same ratios, trained alike (`REWIND_SETTINGS`), on `split`: rows of the store's runs
    frame (`RunStore.runs().to_dict('records')`)."""
    rows = []
    for run in runs:
        if run.get("parent_id") != parent_id or run.get("kind") != "rewind" \
                or not _finite(run.get("token_ratio")):
            continue
        config = run.get("config")
        config = json.loads(config) if isinstance(config, str) else config or {}
        rows.append({**run, "epochs": config.get("epochs"), "seed": run.get("order_seed")})
    return verdict_rows(rows, f"{split}_top1", split, settings=REWIND_SETTINGS,
                        per_subject=("token_scores",))
