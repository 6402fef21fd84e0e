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

__all__ = ["power_paired_t", "mde_sd", "mde_pp"]


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
