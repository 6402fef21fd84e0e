"""Per-item analyses: McNemar, mixed model, hierarchical bootstrap, probability of improvement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM
from statsmodels.stats.contingency_tables import mcnemar

from jepa_audit.stats.items import (
    hierarchical_bootstrap,
    mcnemar_exact,
    mixed_model_logit,
    probability_of_improvement,
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
    diffs = [rng.integers(-1, 2, size=n).astype(float) for n in (40, 35, 40)]  # ragged item sets
    r1 = hierarchical_bootstrap(diffs, np.random.default_rng(5), reps=500)
    r2 = hierarchical_bootstrap(diffs, np.random.default_rng(5), reps=500)
    assert r1 == r2
    assert r1.point == pytest.approx(100 * np.mean([d.mean() for d in diffs]))
    assert r1.low < r1.point < r1.high
    assert "coarse" in r1.note


def test_hierarchical_bootstrap_one_seed_matches_item_standard_error() -> None:
    d = np.r_[np.ones(30), -np.ones(10), np.zeros(60)]
    r = hierarchical_bootstrap([d], np.random.default_rng(1), reps=4000)
    se = 100 * d.std(ddof=0) / np.sqrt(d.size)
    assert r.point == pytest.approx(20.0)
    # percentile interval of a near-normal bootstrap distribution: point +- 1.96 se
    assert r.low == pytest.approx(20.0 - 1.96 * se, abs=0.25 * se)
    assert r.high == pytest.approx(20.0 + 1.96 * se, abs=0.25 * se)


def test_hierarchical_bootstrap_degenerate_inputs() -> None:
    zero = hierarchical_bootstrap([np.zeros(5), np.zeros(7)], np.random.default_rng(0), reps=50)
    assert (zero.point, zero.low, zero.high) == (0.0, 0.0, 0.0)
    empty = hierarchical_bootstrap([], np.random.default_rng(0))
    assert empty.point is None and empty.note


def _simulate(n_seeds: int, n_items: int, effect: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.5, n_items)
    y, x, item, s = [], [], [], []
    for k in range(n_seeds):
        for arm in (0, 1):
            p = 1.0 / (1.0 + np.exp(-(0.2 + difficulty + effect * arm)))
            y.append(rng.random(n_items) < p)
            x.append(np.full(n_items, arm))
            item.append(np.array([f"i{j:03d}" for j in range(n_items)]))
            s.append(np.full(n_items, f"s{k}"))
    return tuple(np.concatenate(v) for v in (y, x, item, s))


def test_mixed_model_matches_direct_statsmodels_fit() -> None:
    y, x, item, seed = _simulate(3, 40, effect=1.0, seed=2)
    got = mixed_model_logit(y, x, item, seed, rng=np.random.default_rng(11))
    assert got.converged and got.note
    frame = pd.DataFrame({"correct": y.astype(float), "method": x.astype(float), "item": item, "seed": seed})
    model = BinomialBayesMixedGLM.from_formula(
        "correct ~ method", {"item": "0 + C(item)", "seed": "0 + C(seed)"}, frame
    )
    ref = model.fit_vb(fit_method="L-BFGS-B", rng=np.random.default_rng(11))
    assert got.coef == pytest.approx(ref.fe_mean[1], abs=1e-3)
    assert got.sd == pytest.approx(ref.fe_sd[1], rel=1e-2)
    assert got.coef > 0 and got.p < 0.05
    assert got.odds_ratio == pytest.approx(np.exp(got.coef))
    assert (got.n_rows, got.n_items, got.n_seeds) == (240, 40, 3)


def test_mixed_model_is_bounded_and_guarded() -> None:
    y, x, item, seed = _simulate(2, 30, effect=0.5)
    capped = mixed_model_logit(y, x, item, seed, rng=np.random.default_rng(0), max_rows=50)
    assert capped.coef is None and "exceed the cap" in capped.note and not capped.converged
    early = mixed_model_logit(y, x, item, seed, rng=np.random.default_rng(0), maxiter=2)
    assert early.coef is None and "did not converge" in early.note
    timed = mixed_model_logit(y, x, item, seed, rng=np.random.default_rng(0), deadline_s=0.0)
    assert timed.coef is None and "did not finish" in timed.note
    flat = mixed_model_logit(np.ones_like(y), x, item, seed, rng=np.random.default_rng(0))
    assert flat.coef is None and "same outcome" in flat.note
    one_arm = mixed_model_logit(y, np.zeros_like(x), item, seed, rng=np.random.default_rng(0))
    assert one_arm.coef is None and "both" in one_arm.note
