"""Paired seed-level statistics: one arm minus the baseline, seed by seed.

Every function takes ``d``, a ``(n_seeds,)`` float array of paired differences (method − baseline,
already in the unit the caller wants, e.g. percentage points) and returns plain floats. Nothing here
reads files or draws random numbers. Degenerate inputs (``n < 2`` or zero variance), for which the
statistics are undefined (scipy would answer NaN or ±inf), give ``None`` and a note, never NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats

__all__ = [
    "PairedResult",
    "T_TEST_FIELDS",
    "TEST_FIELDS",
    "pair_by_seed",
    "paired_t",
    "ci95",
    "hedges_gz",
    "wilcoxon_p",
    "signflip_p",
    "signflip_floor",
    "degenerate_reason",
    "paired_comparison",
]

#: Largest n for which the exact sign-flip enumeration (2^n patterns) is attempted.
SIGNFLIP_MAX_N = 24
_REL_TOL = 1e-12
#: The t-test's fields of a :class:`PairedResult`, in table order: what every paired table row carries.
T_TEST_FIELDS: tuple[str, ...] = ("mean_diff", "sd_diff", "ci95_low", "ci95_high", "t", "p_t")
#: The t-test's fields, then the rank tests' p-values and the effect size: the tests of a comparison row.
TEST_FIELDS: tuple[str, ...] = (*T_TEST_FIELDS, "p_wilcoxon", "p_signflip", "hedges_gz")


@dataclass(frozen=True, kw_only=True)
class PairedResult:
    """Paired comparison of one method against the baseline over shared seeds.

    Units: ``mean_diff``, ``sd_diff``, ``ci95_low`` and ``ci95_high`` are in the unit of ``d``
    (percentage points in the audit). ``t`` is the paired t statistic, ``p_*`` two-sided p-values,
    ``hedges_gz`` the bias-corrected standardized mean difference. ``note`` is set, and the inferential
    fields are ``None``, when the comparison is degenerate.
    """

    n: int
    mean_diff: float | None
    sd_diff: float | None
    ci95_low: float | None
    ci95_high: float | None
    t: float | None
    p_t: float | None
    p_wilcoxon: float | None
    p_signflip: float | None
    hedges_gz: float | None
    note: str | None = None

    @property
    def degenerate(self) -> bool:
        """True when the t-test is undefined (it still counts in its family's m, with no p-value)."""
        return self.p_t is None

    def as_dict(self, fields: Sequence[str] | None = None) -> dict[str, float | int | str | None]:
        """The result as a dict: every field in declaration order, or only ``fields`` in the order given
        (e.g. :data:`TEST_FIELDS` for a table row that places ``n`` and ``note`` itself)."""
        out = asdict(self)
        if fields is None:
            return out
        unknown = [f for f in fields if f not in out]
        if unknown:
            raise ValueError(f"PairedResult has no field(s) {unknown}; fields: {list(out)}")
        return {f: out[f] for f in fields}


def pair_by_seed(
    method: Mapping[Hashable, float], baseline: Mapping[Hashable, float]
) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """Align two ``{seed: score}`` maps on the seeds both have with a finite score.

    Returns ``(seeds, a, b)``: the shared seeds in sorted order and two ``(n_shared,)`` float arrays
    of the method's and the baseline's scores on them.
    """
    shared = [s for s in method if s in baseline and _finite(method[s]) and _finite(baseline[s])]
    seeds = sorted(shared, key=lambda s: (type(s).__name__, s))
    a = np.array([float(method[s]) for s in seeds], dtype=float)
    b = np.array([float(baseline[s]) for s in seeds], dtype=float)
    return seeds, a, b


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and bool(np.isfinite(x))


def degenerate_reason(d: np.ndarray) -> str | None:
    """Why the paired t-test is undefined for ``d`` (shape ``(n,)``), or ``None`` when it is defined."""
    d = np.asarray(d, dtype=float)
    if d.size < 2:
        return f"n = {d.size} < 2 shared seeds: no variance, statistics undefined"
    if np.ptp(d) <= _REL_TOL * max(1.0, float(np.max(np.abs(d)))):
        return (
            f"zero variance: all {d.size} differences equal {float(d[0]):+.4g}; "
            "t, p and CI undefined (counted in m, never rejected)"
        )
    return None


def _is_constant_nonzero(d: np.ndarray) -> bool:
    """n ≥ 2 differences, all equal and non-zero: the t statistic is ±inf, but the sign-flip test is defined."""
    return d.size >= 2 and degenerate_reason(d) is not None and abs(float(d[0])) > 0.0


def paired_t(d: np.ndarray) -> tuple[float, float]:
    """Two-sided one-sample t-test of ``d`` (shape ``(n,)``) against 0, df = n − 1: ``(t, p)``.

    Identical to ``scipy.stats.ttest_rel(a, b)`` for ``d = a − b``. Requires a non-degenerate ``d``.
    """
    res = scipy.stats.ttest_1samp(np.asarray(d, dtype=float), 0.0)
    return float(res.statistic), float(res.pvalue)


def ci95(d: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """t-interval for the mean of ``d`` (shape ``(n,)``): mean ± t(1 − (1 − level)/2, n − 1)·sd/√n."""
    d = np.asarray(d, dtype=float)
    n = d.size
    half = scipy.stats.t.ppf(0.5 + level / 2.0, n - 1) * d.std(ddof=1) / np.sqrt(n)
    m = float(d.mean())
    return m - float(half), m + float(half)


def hedges_gz(d: np.ndarray) -> float:
    """Hedges' g_z of ``d`` (shape ``(n,)``): (mean/sd)·(1 − 3/(4(n − 1) − 1)), sd with ddof = 1.

    Needs n ≥ 3: at n = 2 the correction factor is 0, so g_z would be 0 whatever the data.
    """
    d = np.asarray(d, dtype=float)
    n = d.size
    if n < 3:
        raise ValueError(f"hedges_gz needs n >= 3 differences, got {n}")
    return float(d.mean() / d.std(ddof=1) * (1.0 - 3.0 / (4.0 * (n - 1) - 1.0)))


def wilcoxon_p(d: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of ``d`` as ``scipy.stats.wilcoxon(d)`` computes it.

    scipy's defaults: zeros dropped (``zero_method="wilcox"``), exact null distribution for small n
    without ties or zeros, normal approximation otherwise. ``None`` when scipy cannot answer.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = float(scipy.stats.wilcoxon(np.asarray(d, dtype=float)).pvalue)
        except ValueError:
            return None
    return p if np.isfinite(p) else None


def _sign_patterns(n: int, start: int, stop: int) -> np.ndarray:
    codes = np.arange(start, stop, dtype=np.int64)[:, None]
    bits = (codes >> np.arange(n, dtype=np.int64)) & 1
    return 1.0 - 2.0 * bits  # (stop - start, n) of ±1


def signflip_p(d: np.ndarray, chunk: int = 1 << 16) -> float | None:
    """Exact two-sided sign-flip permutation p-value of ``d`` (shape ``(n,)``).

    Enumerates all 2^n sign patterns (identity included); statistic |mean|; counts patterns whose
    |mean| ≥ the observed one, with a relative tolerance of 1e-12 for floating-point ties. ``None``
    when n > ``SIGNFLIP_MAX_N`` (exact enumeration infeasible) or n = 0.
    """
    d = np.asarray(d, dtype=float)
    n = d.size
    if n == 0 or n > SIGNFLIP_MAX_N:
        return None
    observed = abs(float(d.sum()))
    threshold = observed - _REL_TOL * max(float(np.abs(d).sum()), np.finfo(float).tiny)
    total = 1 << n
    count = 0
    for start in range(0, total, chunk):
        sums = _sign_patterns(n, start, min(total, start + chunk)) @ d
        count += int(np.count_nonzero(np.abs(sums) >= threshold))
    return count / total


def signflip_floor(n: int) -> float:
    """Smallest two-sided p-value the exact sign-flip test (and exact Wilcoxon) can reach: 2/2^n."""
    return min(1.0, 2.0 / float(1 << n)) if n >= 1 else 1.0


def paired_comparison(d: np.ndarray) -> PairedResult:
    """All seed-level statistics of ``d`` (shape ``(n,)``, method − baseline per shared seed).

    Degenerate ``d`` (n < 2 or zero variance) keeps the descriptive ``n``, ``mean_diff`` and
    ``sd_diff`` where they are defined and sets every inferential field to ``None`` with a note.
    """
    d = np.asarray(d, dtype=float)
    n = int(d.size)
    reason = degenerate_reason(d)
    if reason is not None:
        mean = float(d.mean()) if n >= 1 else None
        sd = 0.0 if n >= 2 else None
        p_flip = None
        if _is_constant_nonzero(d):
            # every seed moved the same way by the same amount: t is undefined, but the exact sign-flip
            # test is not (it reaches its floor 2/2^n); report it so the direction is not lost
            p_flip = signflip_p(d)
            reason += (
                f"; the same non-zero difference on every seed: sign-flip p = {p_flip:.4g} "
                f"(its floor 2/2^{n}) is the only test defined"
            )
        return PairedResult(
            n=n, mean_diff=mean, sd_diff=sd, ci95_low=None, ci95_high=None, t=None, p_t=None, p_wilcoxon=None,
            p_signflip=p_flip, hedges_gz=None, note=reason,
        )  # fmt: skip
    t, p = paired_t(d)
    low, high = ci95(d)
    notes = []
    if n > SIGNFLIP_MAX_N:
        notes.append(f"exact sign-flip not computed: n = {n} > {SIGNFLIP_MAX_N}")
    if n < 3:
        notes.append(
            f"hedges_gz undefined at n = {n} < 3 (its correction 1 − 3/(4(n−1) − 1) is 0 at n = 2); "
            f"t-test with df = {n - 1}: the sign-flip and Wilcoxon floor is {signflip_floor(n):g}, so no "
            "non-parametric check can support it"
        )
    return PairedResult(
        n=n,
        mean_diff=float(d.mean()),
        sd_diff=float(d.std(ddof=1)),
        ci95_low=low,
        ci95_high=high,
        t=t,
        p_t=p,
        p_wilcoxon=wilcoxon_p(d),
        p_signflip=signflip_p(d),
        hedges_gz=hedges_gz(d) if n >= 3 else None,
        note="; ".join(notes) if notes else None,
    )
