"""Power and MDE of the paired t-test: the table in auxiliaries.md section 6, and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.power import TTestPower

from jepa_audit.stats.power import mde_pp, mde_sd, power_paired_t

ALPHAS = [0.10, 0.05, 0.10 / 22, 0.05 / 22, 0.05 / 44]
# auxiliaries.md section 6: MDE at 80 % power in SD_d units
TABLE = {
    5: [1.36, 1.68, 3.23, 3.87, 4.62],
    10: [0.85, 1.00, 1.51, 1.67, 1.83],
    20: [0.58, 0.66, 0.92, 0.99, 1.07],
}


@pytest.mark.parametrize("n", sorted(TABLE))
def test_mde_matches_design_table(n: int) -> None:
    got = [round(mde_sd(n, a), 2) for a in ALPHAS]
    assert got == TABLE[n]


@pytest.mark.parametrize("n", [5, 10, 20])
@pytest.mark.parametrize("alpha", [0.10, 0.05, 0.10 / 22])
def test_mde_matches_statsmodels_solver(n: int, alpha: float) -> None:
    ref = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=0.8, alternative="two-sided")
    assert mde_sd(n, alpha) == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize(("n", "alpha"), [(3, 0.10), (3, 0.10 / 22), (4, 0.05), (30, 0.10 / 44)])
def test_statsmodels_power_at_mde_is_80_percent(n: int, alpha: float) -> None:
    # statsmodels' own solver gives up at n = 3, alpha = .1/22; its power function still checks ours
    e = mde_sd(n, alpha)
    assert TTestPower().power(effect_size=e, nobs=n, alpha=alpha, alternative="two-sided") == pytest.approx(
        0.8, abs=1e-6
    )


@pytest.mark.parametrize(
    ("effect", "n", "alpha"), [(0.5, 5, 0.1), (1.36, 5, 0.1), (2.0, 10, 0.05 / 22), (4.0, 5, 0.1 / 22)]
)
def test_power_matches_statsmodels(effect: float, n: int, alpha: float) -> None:
    ref = TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided")
    assert power_paired_t(effect, n, alpha) == pytest.approx(ref, rel=1e-6)


def test_power_by_monte_carlo_where_statsmodels_returns_nan() -> None:
    # n = 4, alpha = .05/44: statsmodels' TTestPower().power gives nan here (nct.cdf far in the tail)
    n, alpha = 4, 0.05 / 44
    e = mde_sd(n, alpha)
    x = np.random.default_rng(0).normal(e, 1.0, size=(200_000, n))
    t = x.mean(axis=1) / x.std(axis=1, ddof=1) * np.sqrt(n)
    hit = np.mean(np.abs(t) > scipy.stats.t.ppf(1 - alpha / 2, n - 1))
    assert hit == pytest.approx(0.80, abs=0.005)


def test_power_at_mde_is_target_and_pp_scales_with_sd() -> None:
    e = mde_sd(5, 0.10 / 22, power=0.9)
    assert power_paired_t(e, 5, 0.10 / 22) == pytest.approx(0.9, abs=1e-8)
    assert mde_pp(5, 0.10, sd_pp=1.5) == pytest.approx(1.5 * mde_sd(5, 0.10))
    # auxiliaries.md: with SD_d 0.9-1.7 pp, n = 5 under Bonferroni-22 at alpha .05 detects about 3.5-6.5 pp
    assert mde_pp(5, 0.05 / 22, 0.9) == pytest.approx(3.5, abs=0.05)
    assert mde_pp(5, 0.05 / 22, 1.7) == pytest.approx(6.6, abs=0.05)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        mde_sd(5, 0.0)
    with pytest.raises(ValueError):
        power_paired_t(1.0, 1, 0.1)
