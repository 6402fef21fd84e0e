"""Per-item analyses: McNemar, conditional logit, hierarchical bootstrap, probability of improvement."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.contingency_tables import mcnemar

from jepa_audit.stats.items import (
    conditional_logit,
    hierarchical_bootstrap,
    mcnemar_exact,
    mcnemar_log_odds,
    probability_of_improvement,
    probability_of_improvement_paired,
    seed_level_log_odds,
)


def test_mcnemar_counts_and_p_match_statsmodels_and_binomial() -> None:
    method = np.array([1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    base = np.array([1, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0], dtype=bool)
    r = mcnemar_exact(method, base)
    assert (r.n_items, r.n_method_only, r.n_baseline_only) == (12, 6, 1)
    assert r.p == pytest.approx(mcnemar([[3, 6], [1, 2]], exact=True).pvalue)
    assert r.p == pytest.approx(scipy.stats.binomtest(1, 7, 0.5).pvalue)
    assert r.note is None


def test_mcnemar_without_discordant_items() -> None:
    x = np.array([True, False, True])
    r = mcnemar_exact(x, x.copy())
    assert r.p == 1.0 and r.note == "no discordant items"
    assert mcnemar_exact(np.array([], bool), np.array([], bool)).p is None
    with pytest.raises(ValueError):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_probability_of_improvement_hand_values_and_mann_whitney() -> None:
    assert probability_of_improvement(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == pytest.approx(0.125)
    x = np.array([0.3, 0.3, 0.5])
    assert probability_of_improvement(x, x) == 0.5
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 5, 7).astype(float), rng.integers(0, 5, 6).astype(float)  # many ties
    u = scipy.stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    assert probability_of_improvement(a, b) == pytest.approx(u / (a.size * b.size))
    assert probability_of_improvement(np.array([]), b) is None


def test_hierarchical_bootstrap_is_reproducible_and_centred() -> None:
    rng = np.random.default_rng(0)
    diffs = rng.integers(-1, 2, size=(3, 40)).astype(float)
    r1 = hierarchical_bootstrap(diffs, np.random.default_rng(5), reps=500)
    r2 = hierarchical_bootstrap(list(diffs), np.random.default_rng(5), reps=500)
    assert r1 == r2
    assert r1.point == pytest.approx(100 * diffs.mean())
    assert r1.low < r1.point < r1.high
    assert "coarse" in r1.note and "t-interval" in r1.note and "primary" in r1.note
    with pytest.raises(ValueError, match="n_items"):
        hierarchical_bootstrap([np.zeros(4), np.zeros(5)], np.random.default_rng(0))


def test_hierarchical_bootstrap_redraws_the_same_items_for_every_seed() -> None:
    # two seeds with identical per-item differences: when the same items are drawn for both seeds, the
    # seed level adds nothing and the interval equals the one-seed item bootstrap; independent per-seed
    # item draws would shrink its half-width by about 1/sqrt(2)
    d = np.r_[np.ones(30), -np.ones(10), np.zeros(60)]
    one = hierarchical_bootstrap([d], np.random.default_rng(1), reps=4000)
    two = hierarchical_bootstrap([d, d], np.random.default_rng(1), reps=4000)
    se = 100 * d.std(ddof=0) / np.sqrt(d.size)
    assert two.high - two.low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert two.high - two.low == pytest.approx(one.high - one.low, rel=0.1)


def test_hierarchical_bootstrap_one_seed_matches_item_standard_error() -> None:
    d = np.r_[np.ones(30), -np.ones(10), np.zeros(60)]
    r = hierarchical_bootstrap([d], np.random.default_rng(1), reps=4000)
    se = 100 * d.std(ddof=0) / np.sqrt(d.size)
    assert r.point == pytest.approx(20.0)
    # percentile interval of a near-normal bootstrap distribution: point +- 1.96 se
    assert r.low == pytest.approx(20.0 - 1.96 * se, abs=0.25 * se)
    assert r.high == pytest.approx(20.0 + 1.96 * se, abs=0.25 * se)


def test_hierarchical_bootstrap_degenerate_inputs() -> None:
    zero = hierarchical_bootstrap([np.zeros(5), np.zeros(5)], np.random.default_rng(0), reps=50)
    assert (zero.point, zero.low, zero.high) == (0.0, 0.0, 0.0)
    empty = hierarchical_bootstrap([], np.random.default_rng(0))
    assert empty.point is None and empty.note


def _pairs(method: np.ndarray, base: np.ndarray, seed: np.ndarray | None = None):
    """Long-format arrays for aligned ``(n,)`` outcome vectors (one row per arm and item)."""
    n = method.size
    ids = np.array([f"i{j:04d}" for j in range(n)])
    seed = np.zeros(n, dtype=int) if seed is None else seed
    return np.r_[method, base], np.r_[np.ones(n, bool), np.zeros(n, bool)], np.r_[ids, ids], np.r_[seed, seed]


def _simulate(n_seeds: int, n_items: int, log_or: float, seed: int = 0):
    """Item difficulty N(0, 1.5²), a seed effect shared by both arms, and a method effect of ``log_or``."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.5, n_items)
    seed_shift = np.linspace(-0.6, 0.6, n_seeds)  # seeds differ in their overall (baseline) rate
    ids = np.array([f"i{j:04d}" for j in range(n_items)])
    y, x, item, s = [], [], [], []
    for k in range(n_seeds):
        for arm in (0, 1):
            p = 1.0 / (1.0 + np.exp(-(0.2 + difficulty + seed_shift[k] + log_or * arm)))
            y.append(rng.random(n_items) < p)
            x.append(np.full(n_items, bool(arm)))
            item.append(ids)
            s.append(np.full(n_items, f"s{k}"))
    return tuple(np.concatenate(v) for v in (y, x, item, s))


def test_conditional_logit_one_seed_is_the_matched_pairs_closed_form() -> None:
    b, c = 37, 21  # items only the method gets right, only the baseline
    method = np.r_[np.ones(b, bool), np.zeros(c, bool), np.ones(50, bool), np.zeros(30, bool)]
    base = np.r_[np.zeros(b, bool), np.ones(c, bool), np.ones(50, bool), np.zeros(30, bool)]
    r = conditional_logit(*_pairs(method, base))
    assert r.converged and r.note is None
    assert (r.n_rows, r.n_items, r.n_informative_items, r.n_seeds) == (276, 138, b + c, 1)
    assert r.coef == pytest.approx(np.log(b / c), abs=1e-4)
    assert r.se == pytest.approx(np.sqrt(1 / b + 1 / c), abs=1e-4)
    assert r.z == pytest.approx(r.coef / r.se)
    assert r.p == pytest.approx(2 * scipy.stats.norm.sf(abs(r.z)))
    assert r.odds_ratio == pytest.approx(b / c, rel=1e-4)
    assert r.ci95_low == pytest.approx(np.exp(r.coef - 1.959964 * r.se), rel=1e-6)
    assert r.ci95_high == pytest.approx(np.exp(r.coef + 1.959964 * r.se), rel=1e-6)
    assert set(r.as_dict()) >= {"coef", "se", "odds_ratio", "ci95_low", "ci95_high", "n_informative_items"}


@pytest.mark.slow  # a simulation: fits the model on many simulated audits
def test_conditional_logit_recovers_a_simulated_log_odds_ratio_with_seed_effects() -> None:
    true = -0.4
    y, x, item, seed = _simulate(3, 3_000, true, seed=4)
    r = conditional_logit(y, x, item, seed)
    assert r.converged and (r.n_rows, r.n_items, r.n_seeds) == (18_000, 3_000, 3)
    assert 0 < r.n_informative_items < 3_000
    assert abs(r.coef - true) < 3 * r.se
    assert 0.02 < r.se < 0.1  # ~ 3,000 items, a few thousand discordant pairs
    assert r.ci95_low < np.exp(true) < r.ci95_high


def test_conditional_logit_is_deterministic_and_ignores_row_order() -> None:
    y, x, item, seed = _simulate(2, 300, 0.5, seed=1)
    r1 = conditional_logit(y, x, item, seed)
    assert r1 == conditional_logit(y.copy(), x.copy(), item.copy(), seed.copy())
    order = np.random.default_rng(0).permutation(y.size)
    shuffled = conditional_logit(y[order], x[order], item[order], seed[order])
    assert shuffled.coef == pytest.approx(r1.coef, abs=1e-8) and shuffled.se == pytest.approx(r1.se, rel=1e-6)
    # swapping the arms flips the sign: the estimate is the method-vs-baseline log OR
    swapped = conditional_logit(y, ~x, item, seed)
    assert swapped.coef == pytest.approx(-r1.coef, abs=1e-8) and swapped.se == pytest.approx(r1.se, rel=1e-6)


def test_conditional_logit_skip_notes() -> None:
    y, x, item, seed = _simulate(2, 30, 0.5)
    one_arm = conditional_logit(y, np.zeros_like(x), item, seed)
    assert (
        one_arm.coef is None and not one_arm.converged and "both the method and the baseline" in one_arm.note
    )
    # the arms agree on every item in every seed, though each item's outcome flips between the seeds
    agree = np.arange(10) % 2 == 0
    rows = [_pairs(outcome, outcome, np.full(10, k)) for k, outcome in enumerate((agree, ~agree))]
    same = conditional_logit(*(np.concatenate(parts) for parts in zip(*rows, strict=True)))
    assert same.n_informative_items == 10 and same.n_seeds == 2
    assert same.coef is None and same.note == "not estimable: no item where the two arms differ"
    flat = conditional_logit(*_pairs(np.ones(8, bool), np.ones(8, bool)))
    assert flat.n_informative_items == 0 and flat.note == "not estimable: no item where the two arms differ"
    empty = conditional_logit(np.array([], bool), np.array([], bool), np.array([]), np.array([]))
    assert empty.coef is None and empty.n_rows == 0 and empty.note == "skipped: no rows"
    wins = conditional_logit(*_pairs(np.r_[np.ones(5, bool), np.zeros(5, bool)], np.zeros(10, bool)))
    assert wins.coef is None and not wins.converged and "separation" in wins.note
    assert all(v is None for k, v in wins.as_dict().items() if k in ("coef", "se", "z", "p", "odds_ratio"))
    with pytest.raises(ValueError, match="same length"):
        conditional_logit(y, x[:-1], item, seed)


def test_paired_probability_of_improvement() -> None:
    # a method 2 pp better on every seed: the paired version says 1.0, the unpaired one much less
    base = np.array([0.50, 0.55, 0.60, 0.65, 0.70])
    assert probability_of_improvement_paired(base + 0.02 - base) == 1.0
    assert probability_of_improvement(base + 0.02, base) == pytest.approx(0.6)
    d = np.array([1.0, -1.0, 0.0, 2.0])
    assert probability_of_improvement_paired(d) == pytest.approx((2 + 0.5) / 4)
    assert probability_of_improvement_paired(np.array([])) is None


def test_mcnemar_log_odds_closed_form_and_continuity_correction() -> None:
    assert mcnemar_log_odds(12, 4) == pytest.approx(np.log(3.0))
    assert mcnemar_log_odds(3, 0) == pytest.approx(np.log(3.5 / 0.5))
    assert mcnemar_log_odds(0, 0) == 0.0
    with pytest.raises(ValueError):
        mcnemar_log_odds(-1, 2)


def test_seed_level_log_odds_is_a_t_test_across_seeds() -> None:
    b, c = [30, 25, 41, 22, 35], [20, 28, 30, 0, 25]
    r = seed_level_log_odds(b, c)
    lo = np.log(np.array([30 / 20, 25 / 28, 41 / 30, 22.5 / 0.5, 35 / 25]))
    ref = scipy.stats.ttest_1samp(lo, 0.0)
    assert r.n == 5 and r.log_odds == pytest.approx(lo.tolist())
    assert r.t == pytest.approx(ref.statistic) and r.p_t == pytest.approx(ref.pvalue)
    assert r.mean_log_odds == pytest.approx(lo.mean()) and r.odds_ratio == pytest.approx(np.exp(lo.mean()))
    ci = ref.confidence_interval(0.95)
    assert (r.ci95_low, r.ci95_high) == pytest.approx((ci.low, ci.high))
    one = seed_level_log_odds([3], [1])
    assert one.p_t is None and "n = 1" in one.note
    with pytest.raises(ValueError):
        seed_level_log_odds([1, 2], [1])
