"""Power of the two-sided paired t-test and its minimum detectable effect (MDE).

Effects are in units of SD_d (the standard deviation of the paired differences) unless a function
says otherwise; multiply by the observed SD_d (percentage points) to get an MDE in pp. The power of
the two-sided test at level α with n pairs and standardized effect δ is
P(|T'| > t_{1−α/2, n−1}) with T' ~ noncentral t(df = n − 1, nc = δ·√n).
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.stats

__all__ = ["power_paired_t", "mde_sd", "mde_pp", "power_nonsup", "seeds_needed"]


def power_paired_t(effect_sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test for a true effect of ``effect_sd`` SD_d, n pairs, level α."""
    if n < 2:
        raise ValueError(f"power needs n ≥ 2 pairs, got {n}")
    df = n - 1
    crit = scipy.stats.t.ppf(1.0 - alpha / 2.0, df)
    nc = effect_sd * np.sqrt(n)
    upper = float(scipy.stats.nct.sf(crit, df, nc))
    # P(T' < −crit) written as the upper tail of the mirrored distribution: scipy's nct.cdf returns
    # NaN far in the lower tail for large nc, where this term is negligible anyway.
    lower = float(scipy.stats.nct.sf(crit, df, -nc))
    return upper + (lower if np.isfinite(lower) else 0.0)


def mde_sd(n: int, alpha: float, power: float = 0.80) -> float:
    """Smallest effect (in SD_d units) the two-sided paired t-test detects with the given power.

    ``n``: number of pairs (seeds); ``alpha``: the per-test level actually applied (α for a single
    cell, α/m for Bonferroni over a family of m).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not alpha < power < 1.0:
        raise ValueError(f"power must be in (alpha, 1), got {power}")
    hi = 1.0
    while power_paired_t(hi, n, alpha) < power:
        hi *= 2.0
        if hi > 1e6:
            raise ValueError(f"no effect reaches power {power} at n = {n}, alpha = {alpha}")
    return float(scipy.optimize.brentq(lambda e: power_paired_t(e, n, alpha) - power, 0.0, hi, xtol=1e-10))


def mde_pp(n: int, alpha: float, sd_pp: float, power: float = 0.80) -> float:
    """MDE in percentage points: :func:`mde_sd` times the SD of the differences ``sd_pp`` (pp)."""
    return mde_sd(n, alpha, power) * float(sd_pp)


def power_nonsup(sesoi_sd: float, n: int, alpha: float) -> float:
    """Power of the one-sided non-superiority t-test (H0: mean ≥ Δ vs H1: mean < Δ, level α) when the true mean
    difference is 0 and Δ = ``sesoi_sd`` SD_d: P(T' < −t_{1−α, n−1}), T' ~ noncentral t(n − 1, −Δ√n); written as
    the upper tail of the mirrored distribution, as :func:`power_paired_t` does."""
    if n < 2:
        raise ValueError(f"power needs n ≥ 2 pairs, got {n}")
    crit = scipy.stats.t.ppf(1.0 - alpha, n - 1)
    return float(scipy.stats.nct.sf(crit, n - 1, sesoi_sd * np.sqrt(n)))


def seeds_needed(sesoi_pp: float, sd_pp: float, alpha: float, power: float = 0.80, n_max: int = 10_000) -> int | None:
    """The fewest seeds n (≥ 2) at which the non-superiority test at one-sided level ``alpha`` (α/m: Holm's
    first step, the level every member of the family is sure to be tested at) rules out a gain of
    ``sesoi_pp`` with probability ``power`` when there is no effect, at paired SD ``sd_pp`` (pp). None when
    ``sd_pp`` is not positive or no n ≤ ``n_max`` reaches it."""
    if not (sd_pp > 0 and sesoi_pp > 0):
        return None
    effect = float(sesoi_pp) / float(sd_pp)
    if power_nonsup(effect, n_max, alpha) < power:
        return None
    lo, hi = 1, 2  # power rises with n: double, then bisect for the first n that reaches it
    while power_nonsup(effect, hi, alpha) < power:
        lo, hi = hi, min(n_max, hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_nonsup(effect, mid, alpha) >= power else (mid, hi)
    return hi
