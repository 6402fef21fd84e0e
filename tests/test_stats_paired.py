"""Seed-level paired statistics against scipy, exact enumeration and hand-checked values."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats

from jepa_audit.stats.paired import (
    T_TEST_FIELDS,
    TEST_FIELDS,
    ci95,
    hedges_gz,
    pair_by_seed,
    paired_comparison,
    paired_t,
    signflip_floor,
    signflip_p,
    wilcoxon_p,
)

# method and baseline scores on the same five seeds (fractions, as in results.jsonl)
A = np.array([0.52, 0.55, 0.49, 0.61, 0.58])
B = np.array([0.50, 0.51, 0.50, 0.55, 0.57])

CASES = [
    np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
    np.array([2.0, -1.0, 3.5, 0.5, 1.0]),
    np.array([1.0, 1.0, -1.0, 2.0, 2.0]),  # ties in |d|
    np.array([0.0, 0.0, 1.5, -0.5, 2.0]),  # zero differences
    np.array([-3.0, 1.0, -2.0, -2.0, 0.0, 4.0, -1.0]),
    100.0 * (A - B),
]


def _signflip_reference(d: np.ndarray) -> Fraction:
    """Slow exact enumeration in rational arithmetic (no floating-point ties)."""
    q = [Fraction(str(x)) for x in d]
    observed = abs(sum(q))
    hits = sum(
        abs(sum(s * x for s, x in zip(signs, q, strict=True))) >= observed
        for signs in itertools.product((1, -1), repeat=len(q))
    )
    return Fraction(hits, 2 ** len(q))


@pytest.mark.parametrize("d", CASES)
def test_paired_t_matches_scipy_ttest_rel(d: np.ndarray) -> None:
    base = np.linspace(40.0, 60.0, d.size)
    ref = scipy.stats.ttest_rel(base + d, base)
    t, p = paired_t(d)
    assert t == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-10)


@pytest.mark.parametrize("d", CASES)
def test_ci95_matches_scipy_t_interval(d: np.ndarray) -> None:
    low, high = ci95(d)
    ref = scipy.stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=scipy.stats.sem(d))
    assert (low, high) == pytest.approx(ref, rel=1e-10)
    ref2 = scipy.stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ref2.low, ref2.high), rel=1e-10)


def test_ci95_uses_2776_at_n5() -> None:
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, sd sqrt(2.5)
    low, high = ci95(d)
    assert high - 3.0 == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert low == pytest.approx(6.0 - high)


def test_hedges_gz_known_values_and_invariances() -> None:
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # (3 / sqrt(2.5)) * (1 - 3/15), computed by hand
    assert hedges_gz(d) == pytest.approx(1.5178932778, rel=1e-9)
    assert hedges_gz(7.5 * d) == pytest.approx(hedges_gz(d))
    assert hedges_gz(-d) == pytest.approx(-hedges_gz(d))
    # d_z = t / sqrt(n): the bias factor is the only difference from scipy's t
    d2 = CASES[1]
    dz = scipy.stats.ttest_1samp(d2, 0.0).statistic / math.sqrt(d2.size)
    assert hedges_gz(d2) / dz == pytest.approx(1.0 - 3.0 / 15.0)


@pytest.mark.parametrize("d", CASES)
def test_wilcoxon_is_scipy_default(d: np.ndarray) -> None:
    assert wilcoxon_p(d) == pytest.approx(scipy.stats.wilcoxon(d).pvalue, rel=1e-12)


@pytest.mark.parametrize("d", CASES)
def test_signflip_matches_scipy_permutation_test_and_exact_enumeration(d: np.ndarray) -> None:
    p = signflip_p(d)
    ref = scipy.stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    )
    assert p == pytest.approx(ref.pvalue, rel=1e-12)
    assert p == pytest.approx(float(_signflip_reference(d)), rel=1e-12)


def test_signflip_float_ties_count_as_ties() -> None:
    # 0.1 + 0.2 - 0.3 is 5.55e-17 in floating point but 0 exactly: every pattern ties, p = 1.
    d = np.array([0.1, 0.2, -0.3])
    assert _signflip_reference(d) == 1
    assert signflip_p(d) == 1.0
    # |mean| ties between different patterns: {1, 1, 2}: observed 4, flips giving ±4 are the two extremes
    assert signflip_p(np.array([1.0, 1.0, 2.0])) == pytest.approx(2 / 8)


def test_floors_at_n5_and_n10() -> None:
    assert signflip_floor(5) == 0.0625
    assert signflip_floor(10) == pytest.approx(0.001953125)
    up = np.array([0.4, 1.1, 2.0, 0.7, 1.6])  # all positive: the most extreme outcome
    assert signflip_p(up) == 0.0625
    assert wilcoxon_p(up) == 0.0625
    assert scipy.stats.wilcoxon(up).pvalue == 0.0625


def test_pair_by_seed_uses_shared_finite_seeds_only() -> None:
    method = {82: 0.5, 23: 0.6, 37: 0.7, 4: float("nan")}
    base = {82: 0.4, 23: 0.5, 84: 0.9, 4: 0.3}
    seeds, a, b = pair_by_seed(method, base)
    assert seeds == [23, 82]
    assert a.tolist() == [0.6, 0.5]
    assert b.tolist() == [0.5, 0.4]


def test_paired_comparison_matches_scipy_field_by_field() -> None:
    d = 100.0 * (A - B)
    r = paired_comparison(d)
    ref = scipy.stats.ttest_rel(100 * A, 100 * B)
    assert r.n == 5 and r.note is None and not r.degenerate
    assert r.mean_diff == pytest.approx(2.4)  # (2 + 4 - 1 + 6 + 1) / 5
    assert r.sd_diff == pytest.approx(np.std(d, ddof=1))
    assert r.t == pytest.approx(ref.statistic)
    assert r.p_t == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (r.ci95_low, r.ci95_high) == pytest.approx((ci.low, ci.high))
    assert r.p_wilcoxon == pytest.approx(scipy.stats.wilcoxon(d).pvalue)
    assert r.p_signflip == pytest.approx(float(_signflip_reference(np.round(d, 10))))


@pytest.mark.parametrize(
    ("d", "n", "mean", "sd", "fragment"),
    [
        (np.array([]), 0, None, None, "n = 0 < 2"),
        (np.array([2.5]), 1, 2.5, None, "n = 1 < 2"),
        (np.array([2.0, 2.0, 2.0]), 3, 2.0, 0.0, "zero variance"),
        (np.zeros(5), 5, 0.0, 0.0, "zero variance"),
        # equal up to floating-point noise: 100 x (0.53 - 0.51) vs 100 x (0.63 - 0.61) ...
        (100.0 * (np.array([0.53, 0.63, 0.73]) - np.array([0.51, 0.61, 0.71])), 3, 2.0, 0.0, "zero variance"),
    ],
)
def test_degenerate_comparisons_have_null_statistics_and_a_note(d, n, mean, sd, fragment) -> None:
    r = paired_comparison(d)
    assert r.degenerate
    assert r.n == n
    assert (r.mean_diff is None) == (mean is None)
    if mean is not None:
        assert r.mean_diff == pytest.approx(mean)
    assert r.sd_diff == sd
    for name in ("ci95_low", "ci95_high", "t", "p_t", "p_wilcoxon", "hedges_gz"):
        assert getattr(r, name) is None, name
    # a constant non-zero difference keeps its exact sign-flip p (the floor 2/2^n); zero or n < 2 do not
    if mean and n >= 2:
        assert r.p_signflip == pytest.approx(2.0 / 2**n) and "sign-flip p" in r.note
    else:
        assert r.p_signflip is None
    assert fragment in r.note
    assert not any(isinstance(v, float) and math.isnan(v) for v in r.as_dict().values())


def test_constant_nonzero_difference_gets_the_exact_sign_flip_p() -> None:
    d = np.full(5, 2.0)
    r = paired_comparison(d)
    assert r.p_t is None and r.t is None and r.degenerate
    ref = scipy.stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    ).pvalue
    assert r.p_signflip == pytest.approx(0.0625) == pytest.approx(ref)
    assert "0.0625" in r.note


def test_n2_has_no_hedges_gz_and_notes_the_floor() -> None:
    d = np.array([1.0, 3.0])
    r = paired_comparison(d)
    assert r.p_t == pytest.approx(scipy.stats.ttest_1samp(d, 0.0).pvalue)
    assert r.hedges_gz is None and "hedges_gz undefined" in r.note and "floor is 0.5" in r.note
    with pytest.raises(ValueError, match="n >= 3"):
        hedges_gz(d)
    assert paired_comparison(np.array([1.0, 3.0, 2.0])).hedges_gz is not None


def test_large_n_skips_only_the_exact_sign_flip() -> None:
    d = np.random.default_rng(0).normal(1.0, 1.0, size=30)
    r = paired_comparison(d)
    assert r.p_signflip is None and "sign-flip" in r.note and not r.degenerate
    assert r.p_t == pytest.approx(scipy.stats.ttest_1samp(d, 0.0).pvalue)


def test_as_dict_gives_the_named_fields_in_the_order_given() -> None:
    """The comparison rows (``TEST_FIELDS``) and the manipulation rows (``T_TEST_FIELDS``) take their statistics
    from ``as_dict``: the values are the result's own, in the tables' order; an unknown name is an error."""
    r = paired_comparison(100.0 * (A - B))
    full = r.as_dict()
    assert list(full)[0] == "n" and full["note"] is None and full["p_t"] == r.p_t
    rows = r.as_dict(TEST_FIELDS)
    assert list(rows) == ["mean_diff", "sd_diff", "ci95_low", "ci95_high", "t", "p_t", "p_wilcoxon", "p_signflip",
                          "hedges_gz"]  # fmt: skip
    assert rows == {k: getattr(r, k) for k in TEST_FIELDS}
    assert list(r.as_dict(T_TEST_FIELDS)) == list(TEST_FIELDS[:6]) == list(T_TEST_FIELDS)
    with pytest.raises(ValueError, match="no field"):
        r.as_dict(("mean_diff", "p_value"))
