"""Mean ± sd and verdicts against hand computations, and the wording at the edges."""

import math

import pytest

from e2vpt_core.stats import compare_groups, compare_to_draws, summarize


def _welch_by_hand(a, b):
    """Welch's t and Welch–Satterthwaite degrees of freedom, written out."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se2 = va / len(a) + vb / len(b)
    df = se2 ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return (ma - mb) / math.sqrt(se2), df, math.sqrt(se2)


def _t_two_sided_p(t, df, steps=200_000):
    """P(|T| > |t|) for Student's t by integrating its density (midpoint rule)."""
    const = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    upper = abs(t) + 400.0
    width = (upper - abs(t)) / steps
    tail = sum(const * (1 + (abs(t) + (i + 0.5) * width) ** 2 / df) ** (-(df + 1) / 2)
               for i in range(steps)) * width
    return 2 * tail


def test_summary_is_mean_and_sample_sd():
    summary = summarize([70.0, 72.0, 77.0])
    assert summary.n == 3
    assert summary.mean == pytest.approx(73.0)
    assert summary.sd == pytest.approx(math.sqrt(((3 ** 2) + 1 + 16) / 2))
    assert summary.text() == "73.0 ± 3.6 (3 seeds)"


def test_summary_of_one_value_and_of_failed_runs():
    assert summarize([61.25]).text(2) == "61.25 (1 seed)"
    assert summarize([61.0, float("nan"), None]).n == 1
    with pytest.raises(ValueError, match="no finite values"):
        summarize([float("nan")])


def test_welch_matches_the_hand_computation():
    a, b = [75.4, 76.2, 74.6, 75.5], [73.9, 72.6, 75.0]
    t, df, se = _welch_by_hand(a, b)
    verdict = compare_groups(a, b, "VPT-deep", "E²VPT")
    assert verdict.difference == pytest.approx(sum(a) / 4 - sum(b) / 3)
    assert verdict.uncertainty == pytest.approx(se)
    assert verdict.p_value == pytest.approx(_t_two_sided_p(t, df), rel=1e-4)
    assert (verdict.n_a, verdict.n_b) == (4, 3)
    assert verdict.sentence.startswith("VPT-deep − E²VPT: +")
    assert "over 4 vs 3 seeds" in verdict.sentence


def test_a_large_gap_is_clear_and_names_the_higher_group():
    verdict = compare_groups([60.1, 60.3, 59.9], [70.2, 69.8, 70.0], "E²VPT", "VPT-deep")
    assert verdict.clear and verdict.p_value < 1e-4
    assert verdict.sentence.endswith("VPT-deep is higher")
    assert "over 3 seeds" in verdict.sentence


def test_overlapping_groups_give_no_clear_difference():
    verdict = compare_groups([75.4, 74.1, 76.0], [73.9, 75.8, 74.9], "a", "b")
    assert not verdict.clear
    assert verdict.sentence.endswith("no clear difference")


def test_one_seed_gives_no_test():
    verdict = compare_groups([75.0], [73.0, 74.0], "a", "b")
    assert verdict.p_value is None and not verdict.clear
    assert "too few seeds" in verdict.sentence
    assert "+1.5 points over 1 vs 2 seeds" in verdict.sentence


def test_equal_means_and_zero_spread():
    same = compare_groups([70.0, 70.0], [70.0, 70.0], "a", "b")
    assert not same.clear and same.p_value == 1.0 and same.difference == 0.0
    assert "±0.0 ± 0.0 points" in same.sentence and "no spread" in same.sentence
    apart = compare_groups([71.0, 71.0], [70.0, 70.0], "a", "b")
    assert apart.clear and apart.sentence.endswith("a is higher")


def test_a_value_against_random_draws_by_hand():
    draws = [44.0, 41.5, 47.0, 43.0, 45.0]
    verdict = compare_to_draws(64.5, draws, split="val")
    mean = sum(draws) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in draws) / 4)
    t = (64.5 - mean) / (sd * math.sqrt(1 + 1 / 5))
    assert verdict.difference == pytest.approx(64.5 - mean)
    assert verdict.uncertainty == pytest.approx(sd)
    assert verdict.p_value == pytest.approx(_t_two_sided_p(t, 4), rel=1e-3)
    assert verdict.clear
    assert verdict.sentence == (
        f"importance keeps 64.5 % val against {mean:.1f} ± {sd:.1f} for random masks "
        f"(5 draws): +{64.5 - mean:.1f} points, {(64.5 - mean) / sd:.1f} sd")


def test_a_value_inside_the_draws_spread_is_no_clear_difference():
    verdict = compare_to_draws(86.0, [86.4, 85.1, 87.2, 86.9, 85.8], control="reverse order")
    assert not verdict.clear
    assert "for reverse order (5 draws): -0.3 points" in verdict.sentence
    assert verdict.sentence.endswith("no clear difference")


def test_draws_without_spread_or_too_few_give_no_test():
    flat = compare_to_draws(50.0, [40.0, 40.0, 40.0])
    assert flat.p_value is None and not flat.clear and "no spread" in flat.sentence
    single = compare_to_draws(50.0, [40.0], control="reverse order")
    assert single.p_value is None and "too few draws" in single.sentence
    assert "against 40.0 for reverse order (1 draw)" in single.sentence
